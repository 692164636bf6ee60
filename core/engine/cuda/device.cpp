#include "core/engine/cuda/device.h"

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <iostream>
#include <mutex>

#include "core/engine/plan.h"

namespace kiln {

namespace {

std::mutex overrideMutex;
std::optional<CudaDeviceInfo> deviceOverride;

void check(cudaError_t status, const char* what) {
  KILN_CHECK(status == cudaSuccess, what, " failed: ", cudaGetErrorString(status));
}

}  // namespace

CudaDeviceInfo currentCudaDevice() {
  {
    std::lock_guard<std::mutex> lock(overrideMutex);
    if (deviceOverride) return *deviceOverride;
  }
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  KILN_CHECK(status == cudaSuccess && count > 0,
             "no CUDA device is available (", cudaGetErrorString(status),
             "); CUDA engines need an NVIDIA GPU. Build for the CPU backend instead.");
  CudaDeviceInfo info;
  check(cudaGetDevice(&info.ordinal), "cudaGetDevice");
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, info.ordinal), "cudaGetDeviceProperties");
  info.name = properties.name;
  info.computeCapabilityMajor = properties.major;
  info.computeCapabilityMinor = properties.minor;
  check(cudaRuntimeGetVersion(&info.cudaRuntimeVersion), "cudaRuntimeGetVersion");
  info.cudnnVersion = static_cast<int>(cudnnGetVersion());
  return info;
}

void overrideCudaDeviceForTesting(std::optional<CudaDeviceInfo> info) {
  std::lock_guard<std::mutex> lock(overrideMutex);
  deviceOverride = std::move(info);
}

BuildTarget currentCudaTarget() {
  const CudaDeviceInfo device = currentCudaDevice();
  BuildTarget target;
  target.backend = Backend::kCuda;
  target.deviceName = device.name;
  target.computeCapabilityMajor = device.computeCapabilityMajor;
  target.computeCapabilityMinor = device.computeCapabilityMinor;
  target.cudaVersion = device.cudaRuntimeVersion;
  target.cudnnVersion = device.cudnnVersion;
  return target;
}

void checkRunsOnCurrentDevice(const BuildTarget& target, bool allowOtherGpu) {
  if (target.backend != Backend::kCuda) return;
  const CudaDeviceInfo device = currentCudaDevice();
  if (device.computeCapabilityMajor == target.computeCapabilityMajor &&
      device.computeCapabilityMinor == target.computeCapabilityMinor) {
    return;
  }
  const std::string message =
      concat("this engine was built for ", target.deviceName, " (compute capability ",
             target.computeCapabilityMajor, ".", target.computeCapabilityMinor, "), but the ",
             "current GPU is ", device.name, " (compute capability ",
             device.computeCapabilityMajor, ".", device.computeCapabilityMinor,
             "). Kiln engines are specific to the GPU they were built on: rebuild the engine on "
             "this GPU (compile the model again).");
  if (!allowOtherGpu) {
    throw PlanError(message + " To try it anyway, load with allow_other_gpu=True.");
  }
  std::cerr << "kiln: warning: " << message << " Running it anyway (allow_other_gpu=True); "
            << "kernels and their choices may be slow or fail on this GPU.\n";
}

}  // namespace kiln

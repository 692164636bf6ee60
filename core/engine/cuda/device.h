// The GPU an engine is built for and runs on: what it is, and whether a plan fits it.
#pragma once

#include <optional>
#include <string>

#include "core/engine/engine.h"

namespace kiln {

struct CudaDeviceInfo {
  int ordinal = 0;
  std::string name;
  int computeCapabilityMajor = 0;
  int computeCapabilityMinor = 0;
  int cudaRuntimeVersion = 0;
  int cudnnVersion = 0;
};

// The current CUDA device. Throws Error when there is none.
CudaDeviceInfo currentCudaDevice();
// Makes currentCudaDevice report `info` instead of the real device (nullopt restores it), so
// that tests can pretend to be another GPU.
void overrideCudaDeviceForTesting(std::optional<CudaDeviceInfo> info);

// The build target of an engine built on the current device.
BuildTarget currentCudaTarget();

// Throws PlanError saying to rebuild when an engine built for `target` cannot run on the
// current device (another compute capability). With `allowOtherGpu` it only warns, on stderr.
void checkRunsOnCurrentDevice(const BuildTarget& target, bool allowOtherGpu);

}  // namespace kiln

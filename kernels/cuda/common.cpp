#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

void throwCudaError(cudaError_t status, const char* call, const char* file, int line) {
  throw CudaError(std::string(call) + " failed with " + cudaGetErrorName(status) + " (" +
                  cudaGetErrorString(status) + ") at " + file + ":" + std::to_string(line));
}

StreamTimer::StreamTimer() {
  KILN_CUDA_CHECK(cudaEventCreate(&start_));
  const cudaError_t status = cudaEventCreate(&stop_);
  if (status != cudaSuccess) {
    cudaEventDestroy(start_);
    throwCudaError(status, "cudaEventCreate(&stop_)", __FILE__, __LINE__);
  }
}

StreamTimer::~StreamTimer() {
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
}

void StreamTimer::start(cudaStream_t stream) { KILN_CUDA_CHECK(cudaEventRecord(start_, stream)); }

float StreamTimer::stop(cudaStream_t stream) {
  KILN_CUDA_CHECK(cudaEventRecord(stop_, stream));
  KILN_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0.0f;
  KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

void throwCudaError(cudaError_t status, const char* call, const char* file, int line) {
  throw CudaError(std::string(call) + " failed with " + cudaGetErrorName(status) + " (" +
                  cudaGetErrorString(status) + ") at " + file + ":" + std::to_string(line));
}

}  // namespace kiln::cuda_kernels

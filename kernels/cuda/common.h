// What every CUDA kernel family of Kiln shares: element types and shapes (kernels/common's,
// shared with the CPU kernels), status checking.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/common/kernel_types.h"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::cuda_kernels {

using kernels::scalarName;
using kernels::scalarSize;
using kernels::ScalarType;
using kernels::Shape;
using kernels::shapeVolume;

// A failed CUDA, cuBLAS(Lt) or cuDNN call. The backend prefixes the layer's name.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws CudaError naming the call, the file and the status.
void throwCudaError(cudaError_t status, const char* call, const char* file, int line);

#define KILN_CUDA_CHECK(call)                                                        \
  do {                                                                               \
    cudaError_t kiln_status_ = (call);                                               \
    if (kiln_status_ != cudaSuccess)                                                 \
      ::kiln::cuda_kernels::throwCudaError(kiln_status_, #call, __FILE__, __LINE__); \
  } while (0)

// Checks that the last kernel launch was accepted (bad configuration, no kernel image).
#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())

// Times work enqueued on a stream between start() and stop(), for build-time choices between
// kernels (never on the execution path: stop() synchronizes).
class StreamTimer {
 public:
  StreamTimer();
  ~StreamTimer();
  StreamTimer(const StreamTimer&) = delete;
  StreamTimer& operator=(const StreamTimer&) = delete;

  void start(cudaStream_t stream);
  // Milliseconds between start() and now on `stream`, once the stream has got here.
  float stop(cudaStream_t stream);

 private:
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

}  // namespace kiln::cuda_kernels

// What every CUDA kernel family of Kiln shares: element types and shapes (kernels/common's,
// shared with the CPU kernels), status checking.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/common/kernel_types.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
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

// The fastest of a build-time choice's candidates and its time a launch.
struct TimedCandidate {
  size_t index = 0;
  float ms = 0.0f;
};

// Which of `count` candidates runs fastest on `stream`, or nullopt when none launched.
// `launch(i)` enqueues candidate i once and says whether it could; one that cannot is passed
// over. Each is launched once to warm up, then timed in interleaved rounds and ranked by its best
// round: a GPU's clocks ramp up over its first milliseconds of load (an idle H200 reads 345 MHz,
// 1980 under load), so candidates timed one after another would be timed at different clocks and
// the first ones would look slow. `times`, when given, receives each candidate's best time a
// launch (negative for one that could not launch).
std::optional<TimedCandidate> fastestCandidate(size_t count, cudaStream_t stream,
                                               const std::function<bool(size_t)>& launch,
                                               std::vector<float>* times = nullptr);

}  // namespace kiln::cuda_kernels

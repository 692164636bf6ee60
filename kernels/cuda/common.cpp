#include "kernels/cuda/common.h"

#include <algorithm>
#include <limits>

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

std::optional<TimedCandidate> fastestCandidate(size_t count, cudaStream_t stream,
                                               const std::function<bool(size_t)>& launch,
                                               std::vector<float>* times) {
  constexpr int kRounds = 3;
  constexpr int kLaunchesPerRound = 2;
  constexpr float kNotLaunched = -1.0f;
  std::vector<float> best(count, std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < count; ++i) {
    if (!launch(i)) best[i] = kNotLaunched;
  }
  StreamTimer timer;
  for (int round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < count; ++i) {
      if (best[i] == kNotLaunched) continue;
      timer.start(stream);
      bool launched = true;
      for (int l = 0; l < kLaunchesPerRound && launched; ++l) launched = launch(i);
      const float ms = timer.stop(stream) / kLaunchesPerRound;
      best[i] = launched ? std::min(best[i], ms) : kNotLaunched;
    }
  }
  std::optional<TimedCandidate> fastest;
  for (size_t i = 0; i < count; ++i) {
    if (best[i] != kNotLaunched && (!fastest || best[i] < fastest->ms)) {
      fastest = TimedCandidate{i, best[i]};
    }
  }
  if (times != nullptr) *times = best;
  return fastest;
}

}  // namespace kiln::cuda_kernels

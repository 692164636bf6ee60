// fastestCandidate (kernels/cuda/common.h), the timing behind Kiln's build-time choices of
// convolution and GEMM algorithms. Candidates here are host functions that hold the stream for
// a set time, so the stream's time is known without depending on a kernel's speed.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <optional>
#include <thread>
#include <vector>

#include "kernels/cuda/common.h"
#include "tests/cpp/cuda/cuda_test_util.h"

namespace {

using kiln::cuda_kernels::fastestCandidate;
using kiln::cuda_kernels::TimedCandidate;
using kiln::cuda_test::Stream;

// Candidates whose launches hold the stream for their time, and for `slowdown` times that over
// the stream's first `slowLaunches` launches: a GPU whose clocks are still ramping up.
struct RampingCandidates {
  std::vector<int> microseconds;
  int slowLaunches = 0;
  int slowdown = 1;
  int launches = 0;
  std::deque<int> holds;  // per launch, in stream order; a deque keeps the held ones in place

  static void CUDART_CB hold(void* us) {
    std::this_thread::sleep_for(std::chrono::microseconds(*static_cast<int*>(us)));
  }

  bool launch(size_t candidate, cudaStream_t stream) {
    const int factor = launches++ < slowLaunches ? slowdown : 1;
    holds.push_back(microseconds.at(candidate) * factor);
    return cudaLaunchHostFunc(stream, hold, &holds.back()) == cudaSuccess;
  }
};

// Timed one after another, the first candidate would take every slow launch and lose to a
// candidate half again as slow; ranked by their best interleaved round, it wins.
TEST(CudaTiming, TheFastestCandidateWinsWhileClocksRampUp) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  RampingCandidates candidates;
  candidates.microseconds = {2000, 3000};
  candidates.slowLaunches = 6;
  candidates.slowdown = 4;
  const std::optional<TimedCandidate> fastest = fastestCandidate(
      2, stream.get(), [&](size_t i) { return candidates.launch(i, stream.get()); });
  stream.synchronize();
  ASSERT_TRUE(fastest.has_value());
  EXPECT_EQ(fastest->index, 0u);
  EXPECT_GE(fastest->ms, 1.9f);
  EXPECT_LT(fastest->ms, 6.0f);
}

TEST(CudaTiming, CandidatesThatCannotLaunchArePassedOver) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  RampingCandidates candidates;
  candidates.microseconds = {100, 2000, 100};
  // Candidate 0 cannot launch at all, candidate 2 fails on its fourth launch (in a timed round).
  int thirdLaunches = 0;
  const std::optional<TimedCandidate> fastest = fastestCandidate(3, stream.get(), [&](size_t i) {
    if (i == 0) return false;
    if (i == 2 && ++thirdLaunches == 4) return false;
    return candidates.launch(i, stream.get());
  });
  stream.synchronize();
  ASSERT_TRUE(fastest.has_value());
  EXPECT_EQ(fastest->index, 1u);

  EXPECT_FALSE(fastestCandidate(2, stream.get(), [](size_t) { return false; }).has_value());
  EXPECT_FALSE(fastestCandidate(0, stream.get(), [](size_t) { return true; }).has_value());
}

}  // namespace

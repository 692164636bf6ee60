#include "kernels/cuda/squeeze_excitation.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/activation_device.cuh"
#include "kernels/cuda/reduce_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using reduce_detail::isAligned16;
using reduce_detail::kVectorWidth;
using reduce_detail::loadVector;
using reduce_detail::toFloat;
using reduce_detail::visitFloatType;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Pooling blocks a launch aims at (a few waves of the GPU's multiprocessors), and the fewest
// plane rows a chunk gets: a small batch splits its plane, a large one does not.
constexpr int64_t kTargetBlocks = 512;
constexpr int64_t kMinRowsPerChunk = 32;

struct PoolingSplit {
  int64_t chunks;
  int64_t rowsPerChunk;
};

PoolingSplit poolingSplit(const SqueezeExcitationParams& p) {
  const int64_t byBlocks = (kTargetBlocks + p.batch - 1) / std::max<int64_t>(p.batch, 1);
  const int64_t byRows = (p.plane + kMinRowsPerChunk - 1) / kMinRowsPerChunk;
  const int64_t wanted = std::max<int64_t>(1, std::min(byBlocks, byRows));
  const int64_t rows = std::max<int64_t>(1, (p.plane + wanted - 1) / wanted);
  // No empty chunk: every partial sum is written.
  return {std::max<int64_t>(1, (p.plane + rows - 1) / rows), rows};
}

// partials[(n * chunks + chunk) * C + c] = the sum of x[n, rows of the chunk, c]. Each thread
// owns one vector of kVec channels and every rowsInParallel-th row of the chunk; threads of the
// same vector fold their sums in shared memory.
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    poolPartialsKernel(const T* __restrict__ x, int64_t plane, int64_t channels,
                       int64_t rowsPerChunk, float* __restrict__ partials) {
  __shared__ float folded[kThreads * kVec];
  const int64_t n = blockIdx.y;
  const int64_t chunk = blockIdx.x;
  const int64_t chunks = gridDim.x;
  const int vectors = static_cast<int>((channels + kVec - 1) / kVec);
  const int64_t begin = chunk * rowsPerChunk;
  const int64_t end = min(plane, begin + rowsPerChunk);
  const T* sample = x + n * plane * channels;
  float* out = partials + (n * chunks + chunk) * channels;
  for (int first = 0; first < vectors; first += kThreads) {
    const int width = min(vectors - first, kThreads);
    const int rowsInParallel = kThreads / width;
    const int lane = static_cast<int>(threadIdx.x) % width;
    const int rowLane = static_cast<int>(threadIdx.x) / width;
    const int vector = first + lane;
    float acc[kVec] = {};
    if (rowLane < rowsInParallel) {
      for (int64_t row = begin + rowLane; row < end; row += rowsInParallel) {
        T values[kVec];
        loadVector<T, kVec>(sample + row * channels + static_cast<int64_t>(vector) * kVec, values);
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[e] += toFloat(values[e]);
      }
    }
    // Row lanes of one vector fold in a fixed order: the result does not depend on timing.
#pragma unroll
    for (int e = 0; e < kVec; ++e) folded[threadIdx.x * kVec + e] = acc[e];
    __syncthreads();
    if (rowLane == 0) {
      for (int r = 1; r < rowsInParallel; ++r) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[e] += folded[(r * width + lane) * kVec + e];
      }
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const int64_t c = static_cast<int64_t>(vector) * kVec + e;
        if (c < channels) out[c] = acc[e];
      }
    }
    __syncthreads();
  }
}

// One block a sample: the mean from the chunks' partial sums, then
// out = w2 @ act(w1 @ mean + b1) + b2. A warp computes one hidden unit at a time (its lanes
// stride along w1's row, coalesced); a thread computes one output at a time.
template <typename T, typename Act>
__global__ void __launch_bounds__(kThreads)
    mlpKernel(const float* __restrict__ partials, int64_t chunks, int64_t plane, int64_t channels,
              int64_t hidden, int64_t outFeatures, const T* __restrict__ w1,
              const T* __restrict__ b1, const T* __restrict__ w2, const T* __restrict__ b2,
              Act activation, T* __restrict__ out) {
  extern __shared__ float vectors[];  // channels + hidden floats
  float* mean = vectors;
  float* hiddenValues = vectors + channels;
  const int64_t n = blockIdx.x;
  const float inversePlane = 1.0f / static_cast<float>(plane);
  for (int64_t c = threadIdx.x; c < channels; c += kThreads) {
    float sum = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      sum += partials[(n * chunks + chunk) * channels + c];
    }
    mean[c] = sum * inversePlane;
  }
  __syncthreads();
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int64_t j = warp; j < hidden; j += kWarps) {
    const T* row = w1 + j * channels;
    float dot = 0.0f;
    for (int64_t c = lane; c < channels; c += 32) dot += toFloat(row[c]) * mean[c];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    }
    if (lane == 0) hiddenValues[j] = activation(dot + (b1 != nullptr ? toFloat(b1[j]) : 0.0f));
  }
  __syncthreads();
  for (int64_t k = threadIdx.x; k < outFeatures; k += kThreads) {
    const T* row = w2 + k * hidden;
    float dot = b2 != nullptr ? toFloat(b2[k]) : 0.0f;
    for (int64_t j = 0; j < hidden; ++j) dot += toFloat(row[j]) * hiddenValues[j];
    out[n * outFeatures + k] = reduce_detail::fromAccumulator<T>(dot);
  }
}

struct Identity {
  __device__ __forceinline__ float operator()(float x) const { return x; }
};

template <typename T, int kVec>
void launchPooling(const SqueezeExcitationParams& p, const PoolingSplit& split, const T* x,
                   float* partials, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(split.chunks), static_cast<unsigned>(p.batch));
  poolPartialsKernel<T, kVec>
      <<<grid, kThreads, 0, stream>>>(x, p.plane, p.channels, split.rowsPerChunk, partials);
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void run(const SqueezeExcitationParams& p, const SqueezeExcitationTensors& t, void* workspace,
         cudaStream_t stream) {
  const PoolingSplit split = poolingSplit(p);
  auto* partials = static_cast<float*>(workspace);
  const T* x = static_cast<const T*>(t.x);
  constexpr int kVec = kVectorWidth<T>;
  if (p.channels % kVec == 0 && isAligned16(x)) {
    launchPooling<T, kVec>(p, split, x, partials, stream);
  } else {
    launchPooling<T, 1>(p, split, x, partials, stream);
  }
  const auto launchMlp = [&](auto activation) {
    const size_t sharedBytes = static_cast<size_t>(p.channels + p.hidden) * sizeof(float);
    mlpKernel<T><<<static_cast<unsigned>(p.batch), kThreads, sharedBytes, stream>>>(
        partials, split.chunks, p.plane, p.channels, p.hidden, p.outFeatures,
        static_cast<const T*>(t.w1), static_cast<const T*>(t.b1), static_cast<const T*>(t.w2),
        static_cast<const T*>(t.b2), activation, static_cast<T*>(t.out));
    KILN_CUDA_CHECK_LAUNCH();
  };
  if (p.hasHiddenActivation) {
    activation_detail::withFloatActivation(p.hiddenActivation.type,
                                           static_cast<float>(p.hiddenActivation.alpha),
                                           static_cast<float>(p.hiddenActivation.beta), launchMlp);
  } else {
    launchMlp(Identity{});
  }
}

[[noreturn]] void invalid(const std::string& what) {
  throw std::invalid_argument("squeeze-and-excitation: " + what);
}

}  // namespace

bool squeezeExcitationFits(int64_t channels, int64_t hidden) {
  return channels > 0 && hidden > 0 && channels + hidden <= kernels::kMaxSqueezeExcitationFeatures;
}

size_t squeezeExcitationWorkspaceSize(const SqueezeExcitationParams& params) {
  const PoolingSplit split = poolingSplit(params);
  return static_cast<size_t>(params.batch * split.chunks * params.channels) * sizeof(float);
}

size_t squeezeExcitationWorkspaceBound(const SqueezeExcitationParams& params) {
  // chunks <= ceil(kTargetBlocks / batch), so batch * chunks <= batch + kTargetBlocks.
  return static_cast<size_t>((params.batch + kTargetBlocks) * params.channels) * sizeof(float);
}

void squeezeExcitation(const SqueezeExcitationParams& params,
                       const SqueezeExcitationTensors& tensors, void* workspace,
                       cudaStream_t stream) {
  if (!squeezeExcitationFits(params.channels, params.hidden)) {
    invalid(std::to_string(params.channels) + " channels and " + std::to_string(params.hidden) +
            " hidden features do not fit one block's shared memory (at most " +
            std::to_string(kernels::kMaxSqueezeExcitationFeatures) + " together)");
  }
  if (params.outFeatures <= 0) invalid("the output needs at least one feature");
  if (params.batch == 0) return;
  if (tensors.x == nullptr || tensors.w1 == nullptr || tensors.w2 == nullptr ||
      tensors.out == nullptr || workspace == nullptr) {
    invalid("x, w1, w2, out and the workspace must be device pointers, got a null one");
  }
  if (params.batch > 65535) {
    invalid("a batch of " + std::to_string(params.batch) +
            " is more than one launch takes (65535)");
  }
  visitFloatType(params.type, "squeeze-and-excitation", [&](auto tag) {
    using T = typename decltype(tag)::type;
    run<T>(params, tensors, workspace, stream);
  });
}

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/convolution_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/convolution_device.cuh"

namespace kiln::cuda_kernels::convolution_detail {
namespace {

constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover the rest; 65536 blocks of 256 threads oversubscribe 132 SMs many times.
constexpr int64_t kMaxBlocks = 65536;

unsigned blocksFor(int64_t units) {
  const int64_t blocks = (units + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks));
}

bool isAligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

// Bias + activation on 16-byte packs of N elements. Either all N share one channel (NCHW with
// a plane size that is a multiple of N) or they are N consecutive channels (NHWC with a channel
// count that is a multiple of N): one division a pack.
template <typename T, typename Index, bool kConsecutiveChannels>
__global__ void __launch_bounds__(kThreadsPerBlock)
    biasActivationPackKernel(T* __restrict__ out, const T* __restrict__ bias,
                             const T* __restrict__ residual, Index packs, Index inner,
                             Index channels, ConvolutionActivation activation) {
  constexpr int kPack = static_cast<int>(16 / sizeof(T));
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index v = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; v < packs;
       v += stride) {
    const Index first = v * kPack;
    const Index channel = kConsecutiveChannels ? first % channels : (first / inner) % channels;
    uint4 word = reinterpret_cast<const uint4*>(out)[v];
    T values[kPack];
    memcpy(values, &word, sizeof(word));
    T added[kPack] = {};
    if (residual != nullptr) {
      const uint4 residualWord = reinterpret_cast<const uint4*>(residual)[v];
      memcpy(added, &residualWord, sizeof(residualWord));
    }
#pragma unroll
    for (int j = 0; j < kPack; ++j) {
      float value = toFloat(values[j]);
      if (bias != nullptr) value += toFloat(bias[kConsecutiveChannels ? channel + j : channel]);
      if (residual != nullptr) value += toFloat(added[j]);
      values[j] = fromFloat<T>(activate(value, activation));
    }
    memcpy(&word, values, sizeof(word));
    reinterpret_cast<uint4*>(out)[v] = word;
  }
}

// One element a step; channel = (e / inner) % channels (inner is 1 for NHWC).
template <typename T, typename Index>
__global__ void __launch_bounds__(kThreadsPerBlock)
    biasActivationKernel(T* __restrict__ out, const T* __restrict__ bias,
                         const T* __restrict__ residual, Index count, Index inner, Index channels,
                         ConvolutionActivation activation) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index e = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += stride) {
    float value = toFloat(out[e]);
    if (bias != nullptr) value += toFloat(bias[(inner == 1 ? e : e / inner) % channels]);
    if (residual != nullptr) value += toFloat(residual[e]);
    out[e] = fromFloat<T>(activate(value, activation));
  }
}

template <typename T, typename Index>
void biasActivation(T* out, const T* bias, const T* residual, int64_t count, int64_t inner,
                    int64_t channels, bool channelsLast, ConvolutionActivation activation,
                    cudaStream_t stream) {
  constexpr int64_t kPack = 16 / sizeof(T);
  const bool aligned = isAligned16(out) && (residual == nullptr || isAligned16(residual));
  if (aligned && !channelsLast && inner % kPack == 0) {
    const int64_t packs = count / kPack;
    biasActivationPackKernel<T, Index, false><<<blocksFor(packs), kThreadsPerBlock, 0, stream>>>(
        out, bias, residual, static_cast<Index>(packs), static_cast<Index>(inner),
        static_cast<Index>(channels), activation);
  } else if (aligned && channelsLast && channels % kPack == 0) {
    const int64_t packs = count / kPack;
    biasActivationPackKernel<T, Index, true><<<blocksFor(packs), kThreadsPerBlock, 0, stream>>>(
        out, bias, residual, static_cast<Index>(packs), static_cast<Index>(inner),
        static_cast<Index>(channels), activation);
  } else {
    biasActivationKernel<T, Index><<<blocksFor(count), kThreadsPerBlock, 0, stream>>>(
        out, bias, residual, static_cast<Index>(count), static_cast<Index>(inner),
        static_cast<Index>(channels), activation);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

// Dims in memory order (outermost first), padded to 5 with leading ones.
constexpr int kMaxDims = 5;
struct WindowGeometry {
  long long dst[kMaxDims];
  long long src[kMaxDims];
  long long shift[kMaxDims];
  int channelAxis;
};

template <typename T, typename Index>
__global__ void __launch_bounds__(kThreadsPerBlock)
    windowCopyKernel(const T* __restrict__ src, T* __restrict__ dst, const T* __restrict__ bias,
                     Index count, WindowGeometry geometry, ConvolutionActivation activation) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index e = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += stride) {
    Index coordinates[kMaxDims];
    Index rest = e;
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      const Index size = static_cast<Index>(geometry.dst[d]);
      coordinates[d] = rest % size;
      rest /= size;
    }
    long long srcIndex = 0;
    bool inside = true;
    Index channel = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      const long long coordinate = static_cast<long long>(coordinates[d]) + geometry.shift[d];
      inside = inside && coordinate >= 0 && coordinate < geometry.src[d];
      srcIndex = srcIndex * geometry.src[d] + coordinate;
      if (d == geometry.channelAxis) channel = coordinates[d];
    }
    float value = inside ? toFloat(src[srcIndex]) : 0.0f;
    if (bias != nullptr) value += toFloat(bias[channel]);
    dst[e] = fromFloat<T>(activate(value, activation));
  }
}

// Calls fn(T{}) with T the storage type of a floating-point `type`.
template <typename Fn>
void visitFloatType(ScalarType type, Fn&& fn) {
  switch (type) {
    case ScalarType::kFloat32:
      fn(float{});
      return;
    case ScalarType::kFloat16:
      fn(__half{});
      return;
    case ScalarType::kBFloat16:
      fn(__nv_bfloat16{});
      return;
    default:
      throw std::invalid_argument(std::string("convolution: element type ") + scalarName(type) +
                                  " is not supported; use float32, float16 or bfloat16");
  }
}

constexpr int64_t kMax32BitCount = std::numeric_limits<int32_t>::max();

}  // namespace

void launchBiasActivation(ScalarType type, TensorLayout layout, int64_t batch, int64_t channels,
                          int64_t spatialVolume, void* out, const void* bias, const void* residual,
                          ConvolutionActivation activation, cudaStream_t stream) {
  const int64_t count = batch * channels * spatialVolume;
  if (count == 0 ||
      (bias == nullptr && residual == nullptr && activation == ConvolutionActivation::kNone)) {
    return;
  }
  const bool channelsLast = layout == TensorLayout::kNHWC;
  const int64_t inner = channelsLast ? 1 : spatialVolume;
  visitFloatType(type, [&](auto tag) {
    using T = decltype(tag);
    T* typedOut = static_cast<T*>(out);
    const T* typedBias = static_cast<const T*>(bias);
    const T* typedResidual = static_cast<const T*>(residual);
    if (count <= kMax32BitCount) {
      biasActivation<T, uint32_t>(typedOut, typedBias, typedResidual, count, inner, channels,
                                  channelsLast, activation, stream);
    } else {
      biasActivation<T, uint64_t>(typedOut, typedBias, typedResidual, count, inner, channels,
                                  channelsLast, activation, stream);
    }
  });
}

void launchWindowCopy(const WindowCopy& copy, const void* src, void* dst, const void* bias,
                      cudaStream_t stream) {
  const size_t rank = copy.dstDims.size();
  if ((rank != 4 && rank != 5) || copy.srcDims.size() != rank || copy.shift.size() != rank - 2) {
    throw std::invalid_argument("convolution window copy: needs 4 or 5 dims and a shift of " +
                                std::string("the spatial rank"));
  }
  // NCHW order -> memory order: NHWC moves the channel dim last.
  Shape dstOrder = copy.dstDims;
  Shape srcOrder = copy.srcDims;
  Shape shiftOrder(rank, 0);
  for (size_t i = 2; i < rank; ++i) shiftOrder[i] = copy.shift[i - 2];
  size_t channelAxis = 1;
  if (copy.layout == TensorLayout::kNHWC) {
    for (Shape* dims : {&dstOrder, &srcOrder, &shiftOrder}) {
      const int64_t channels = (*dims)[1];
      dims->erase(dims->begin() + 1);
      dims->push_back(channels);
    }
    channelAxis = rank - 1;
  }
  WindowGeometry geometry{};
  const size_t lead = kMaxDims - rank;
  for (size_t d = 0; d < kMaxDims; ++d) {
    geometry.dst[d] = d < lead ? 1 : dstOrder[d - lead];
    geometry.src[d] = d < lead ? 1 : srcOrder[d - lead];
    geometry.shift[d] = d < lead ? 0 : shiftOrder[d - lead];
  }
  geometry.channelAxis = static_cast<int>(lead + channelAxis);
  const int64_t count = shapeVolume(copy.dstDims);
  if (count == 0) return;
  visitFloatType(copy.type, [&](auto tag) {
    using T = decltype(tag);
    const T* typedSrc = static_cast<const T*>(src);
    T* typedDst = static_cast<T*>(dst);
    const T* typedBias = static_cast<const T*>(bias);
    if (count <= kMax32BitCount) {
      windowCopyKernel<T, uint32_t><<<blocksFor(count), kThreadsPerBlock, 0, stream>>>(
          typedSrc, typedDst, typedBias, static_cast<uint32_t>(count), geometry, copy.activation);
    } else {
      windowCopyKernel<T, uint64_t><<<blocksFor(count), kThreadsPerBlock, 0, stream>>>(
          typedSrc, typedDst, typedBias, static_cast<uint64_t>(count), geometry, copy.activation);
    }
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace kiln::cuda_kernels::convolution_detail

#include "kernels/cuda/pooling.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "kernels/cuda/reduce_device.cuh"

namespace kiln::cuda_kernels::reduce_detail {
namespace {

constexpr int kBlockThreads = 256;
constexpr int64_t kMaxGridBlocks = 65536;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Pooling runs as 3-D; missing leading spatial dims have size 1 (as in the CPU reference).
using Dims3 = std::array<int64_t, 3>;

Dims3 toDims3(const Shape& shape, size_t rank, int64_t fill, const char* what) {
  if (rank == 0 || rank > 3 || shape.size() != rank) {
    throw std::invalid_argument(
        std::string("pooling: ") + what + " needs the spatial rank, 1 to 3 (got " +
        std::to_string(shape.size()) + " values for rank " + std::to_string(rank) + ")");
  }
  Dims3 dims = {fill, fill, fill};
  for (size_t i = 0; i < rank; ++i) dims[3 - rank + i] = shape[i];
  return dims;
}

// Window rules of every output, in 32-bit spatial coordinates.
struct PoolingGeometry {
  int in[3];
  int out[3];
  int kernel[3];
  int stride[3];
  int prePadding[3];
  int dilation[3];
  int paddedEnd[3];  // taps at or past in + postPadding never count
  bool average;
  bool countIncludePad;
  bool adaptive;
  bool wideAdaptive;  // o * in may pass 2^31: adaptive bounds in 64-bit
};

int toInt(int64_t value, const char* what) {
  if (value < 0 || value > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string("pooling: ") + what + " " + std::to_string(value) +
                                " is negative or too large");
  }
  return static_cast<int>(value);
}

// torch's adaptive window along one dim: [floor(o * in / out), ceil((o + 1) * in / out)).
__device__ __forceinline__ void adaptiveWindow(int o, int in, int out, bool wide, int& start,
                                               int& end) {
  if (wide) {
    start = static_cast<int>(static_cast<int64_t>(o) * in / out);
    end = static_cast<int>((static_cast<int64_t>(o + 1) * in + out - 1) / out);
  } else {
    start = static_cast<int>(static_cast<unsigned>(o * in) / static_cast<unsigned>(out));
    end = static_cast<int>(static_cast<unsigned>((o + 1) * in + out - 1) /
                           static_cast<unsigned>(out));
  }
}

// kLanes neighbouring channels of one pixel, loaded and stored as one 16-byte word.
template <typename T, int kLanes>
struct alignas(sizeof(T) * kLanes) ChannelLanes {
  T value[kLanes];
};

// One thread kLanes output elements. Channels-first (kLanes 1): neighbours are neighbouring
// output columns; channels-last: neighbouring channels, so reads are coalesced, and with
// kLanes > 1 each tap is one vector load (scalar 2-byte loads made ResNet-50's fp16 stem max pool
// bound by load instructions, at about a seventh of the memory bandwidth).
template <typename T, typename Index, bool kChannelsLast, int kLanes>
__global__ void __launch_bounds__(kBlockThreads)
    poolingKernel(const T* x, T* y, Index outVectors, PoolingGeometry g, Divisor<Index> outWidth,
                  Divisor<Index> outHeight, Divisor<Index> outDepth, Divisor<Index> channelVectors,
                  Index channelCount) {
  static_assert(kChannelsLast || kLanes == 1, "only channels-last pooling runs in lanes");
  using Lanes = ChannelLanes<T, kLanes>;
  const Index inPlane = static_cast<Index>(g.in[0]) * g.in[1] * g.in[2];
  for (Index o = blockIdx.x * blockDim.x + threadIdx.x; o < outVectors;
       o += gridDim.x * blockDim.x) {
    Index rest = o;
    Index channelVector = 0;
    if constexpr (kChannelsLast) channelVectors.divmod(rest, rest, channelVector);
    Index position[3];
    Index image;  // the (batch, channel) plane, or the batch index when channels last
    outWidth.divmod(rest, rest, position[2]);
    outHeight.divmod(rest, rest, position[1]);
    outDepth.divmod(rest, image, position[0]);
    const T* base;
    Index elementStride;
    if constexpr (kChannelsLast) {
      base = x + image * inPlane * channelCount + channelVector * kLanes;
      elementStride = channelCount;
    } else {
      base = x + image * inPlane;
      elementStride = 1;
    }
    int start[3];
    int taps[3];
    int step[3];
    int end[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const int p = static_cast<int>(position[i]);
      if (g.adaptive) {
        int stop;
        adaptiveWindow(p, g.in[i], g.out[i], g.wideAdaptive, start[i], stop);
        taps[i] = stop - start[i];
        step[i] = 1;
        end[i] = g.in[i];
      } else {
        start[i] = p * g.stride[i] - g.prePadding[i];
        taps[i] = g.kernel[i];
        step[i] = g.dilation[i];
        end[i] = g.paddedEnd[i];
      }
    }
    float maximum[kLanes];
    float sum[kLanes];
#pragma unroll
    for (int lane = 0; lane < kLanes; ++lane) {
      maximum[lane] = -INFINITY;
      sum[lane] = 0.0f;
    }
    int inside = 0;
    int padded = 0;
    for (int a = 0; a < taps[0]; ++a) {
      const int d = start[0] + a * step[0];
      if (d >= end[0]) break;
      const bool dInside = d >= 0 && d < g.in[0];
      for (int b = 0; b < taps[1]; ++b) {
        const int h = start[1] + b * step[1];
        if (h >= end[1]) break;
        const bool hInside = dInside && h >= 0 && h < g.in[1];
        for (int c = 0; c < taps[2]; ++c) {
          const int w = start[2] + c * step[2];
          if (w >= end[2]) break;
          ++padded;
          if (!hInside || w < 0 || w >= g.in[2]) continue;
          const Index offset =
              ((static_cast<Index>(d) * g.in[1] + h) * g.in[2] + w) * elementStride;
          const Lanes tap = *reinterpret_cast<const Lanes*>(base + offset);
          ++inside;
#pragma unroll
          for (int lane = 0; lane < kLanes; ++lane) {
            const float value = toFloat(tap.value[lane]);
            sum[lane] += value;
            if (value > maximum[lane] || isnan(value)) maximum[lane] = value;  // NaN wins
          }
        }
      }
    }
    const int divisor = g.countIncludePad ? padded : inside;
    Lanes result;
#pragma unroll
    for (int lane = 0; lane < kLanes; ++lane) {
      float value = maximum[lane];
      if (g.average) value = divisor > 0 ? sum[lane] / static_cast<float>(divisor) : 0.0f;
      result.value[lane] = fromAccumulator<T>(value);
    }
    *reinterpret_cast<Lanes*>(y + o * kLanes) = result;
  }
}

template <typename T, typename Index, bool kChannelsLast, int kLanes>
void launchPoolingKernel(const PoolingGeometry& geometry, int64_t batch, int64_t channels,
                         const T* x, T* y, cudaStream_t stream) {
  const int64_t outPlane = int64_t{geometry.out[0]} * geometry.out[1] * geometry.out[2];
  const int64_t outVectors = batch * channels * outPlane / kLanes;
  const unsigned grid = static_cast<unsigned>(
      std::clamp<int64_t>(ceilDiv(outVectors, kBlockThreads), 1, kMaxGridBlocks));
  poolingKernel<T, Index, kChannelsLast, kLanes><<<grid, kBlockThreads, 0, stream>>>(
      x, y, static_cast<Index>(outVectors), geometry, Divisor<Index>(geometry.out[2]),
      Divisor<Index>(geometry.out[1]), Divisor<Index>(geometry.out[0]),
      Divisor<Index>(channels / kLanes), static_cast<Index>(channels));
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T, typename Index>
void launchPoolingWith(const PoolingGeometry& geometry, int64_t batch, int64_t channels,
                       bool channelsLast, const T* x, T* y, cudaStream_t stream) {
  if (!channelsLast) {
    launchPoolingKernel<T, Index, false, 1>(geometry, batch, channels, x, y, stream);
    return;
  }
  // 16-byte lanes when every pixel's channels start on a 16-byte boundary.
  constexpr int kLanes = 16 / sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(y) % 16 == 0 && channels % kLanes == 0;
  if (aligned) {
    launchPoolingKernel<T, Index, true, kLanes>(geometry, batch, channels, x, y, stream);
  } else {
    launchPoolingKernel<T, Index, true, 1>(geometry, batch, channels, x, y, stream);
  }
}

void launchPooling(const PoolingGeometry& geometry, ScalarType type, int64_t batch,
                   int64_t channels, bool channelsLast, const void* x, void* y,
                   cudaStream_t stream) {
  if (batch < 0 || channels < 0) {
    throw std::invalid_argument("pooling: batch and channels must not be negative");
  }
  const int64_t inVolume =
      batch * channels * int64_t{geometry.in[0]} * geometry.in[1] * geometry.in[2];
  const int64_t outVolume =
      batch * channels * int64_t{geometry.out[0]} * geometry.out[1] * geometry.out[2];
  visitFloatType(type, "pooling", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (outVolume == 0) return;
    if (fitsIndex32(std::max(inVolume, outVolume))) {
      launchPoolingWith<T, uint32_t>(geometry, batch, channels, channelsLast,
                                     static_cast<const T*>(x), static_cast<T*>(y), stream);
    } else {
      launchPoolingWith<T, uint64_t>(geometry, batch, channels, channelsLast,
                                     static_cast<const T*>(x), static_cast<T*>(y), stream);
    }
  });
}

}  // namespace
}  // namespace kiln::cuda_kernels::reduce_detail

namespace kiln::cuda_kernels {

void pooling(const PoolingParams& params, const void* x, void* out, cudaStream_t stream) {
  using namespace reduce_detail;
  const size_t rank = params.kernel.size();
  const Dims3 in = toDims3(params.inSpatial, rank, 1, "inSpatial");
  const Dims3 outDims = toDims3(params.outSpatial, rank, 1, "outSpatial");
  const Dims3 kernel = toDims3(params.kernel, rank, 1, "kernel");
  const Dims3 stride = toDims3(params.stride, rank, 1, "stride");
  const Dims3 prePadding = toDims3(params.prePadding, rank, 0, "prePadding");
  const Dims3 postPadding = toDims3(params.postPadding, rank, 0, "postPadding");
  const Dims3 dilation = toDims3(params.dilation, rank, 1, "dilation");
  PoolingGeometry geometry{};
  for (int i = 0; i < 3; ++i) {
    geometry.in[i] = toInt(in[i], "input size");
    geometry.out[i] = toInt(outDims[i], "output size");
    geometry.kernel[i] = toInt(kernel[i], "kernel size");
    geometry.stride[i] = toInt(stride[i], "stride");
    geometry.prePadding[i] = toInt(prePadding[i], "padding");
    geometry.dilation[i] = toInt(dilation[i], "dilation");
    geometry.paddedEnd[i] = toInt(in[i] + postPadding[i], "padded input size");
    if (stride[i] == 0 || dilation[i] == 0) {
      throw std::invalid_argument("pooling: stride and dilation must be positive");
    }
    // The last window's first tap, o * stride, and its taps must stay in 32-bit coordinates.
    toInt((outDims[i] + 1) * stride[i] + kernel[i] * dilation[i], "window reach");
  }
  geometry.average = params.mode == PoolingMode::kAverage;
  geometry.countIncludePad = params.countIncludePad;
  geometry.adaptive = false;
  geometry.wideAdaptive = false;
  launchPooling(geometry, params.type, params.batch, params.channels, params.channelsLast, x, out,
                stream);
}

namespace {

// Global pooling as a reduction over the plane: rows (channels first) or columns (last); nullopt
// when the pooling is not global.
std::optional<ReduceParams> globalPoolingReduction(const AdaptivePoolingParams& params) {
  using namespace reduce_detail;
  const size_t rank = params.inSpatial.size();
  const Dims3 in = toDims3(params.inSpatial, rank, 1, "inSpatial");
  const Dims3 outDims = toDims3(params.outSpatial, rank, 1, "outSpatial");
  const int64_t inPlane = in[0] * in[1] * in[2];
  if (outDims != Dims3{1, 1, 1} || inPlane <= 0) return std::nullopt;
  visitFloatType(params.type, "adaptive pooling", [](auto) {});
  ReduceParams reduce;
  reduce.function = params.mode == PoolingMode::kMax ? ReduceFunction::kMax : ReduceFunction::kMean;
  reduce.type = params.type;
  if (params.channelsLast) {
    reduce.inShape = {params.batch, inPlane, params.channels};
    reduce.reduced = {false, true, false};
  } else {
    reduce.inShape = {params.batch * params.channels, inPlane};
    reduce.reduced = {false, true};
  }
  return reduce;
}

}  // namespace

size_t adaptivePoolingWorkspaceSize(const AdaptivePoolingParams& params) {
  const std::optional<ReduceParams> reduction = globalPoolingReduction(params);
  return reduction ? reduceWorkspaceSize(*reduction) : 0;
}

size_t adaptivePoolingWorkspaceBound(const AdaptivePoolingParams& params) {
  const std::optional<ReduceParams> reduction = globalPoolingReduction(params);
  return reduction ? reduceWorkspaceBound(*reduction) : 0;
}

void adaptivePooling(const AdaptivePoolingParams& params, const void* x, void* out, void* workspace,
                     cudaStream_t stream) {
  using namespace reduce_detail;
  if (const std::optional<ReduceParams> reduction = globalPoolingReduction(params)) {
    cuda_kernels::reduce(*reduction, x, out, workspace, stream);
    return;
  }
  const size_t rank = params.inSpatial.size();
  const Dims3 in = toDims3(params.inSpatial, rank, 1, "inSpatial");
  const Dims3 outDims = toDims3(params.outSpatial, rank, 1, "outSpatial");
  PoolingGeometry geometry{};
  bool wide = false;
  for (int i = 0; i < 3; ++i) {
    geometry.in[i] = toInt(in[i], "input size");
    geometry.out[i] = toInt(outDims[i], "output size");
    geometry.kernel[i] = 1;
    geometry.stride[i] = 1;
    geometry.dilation[i] = 1;
    geometry.paddedEnd[i] = geometry.in[i];
    wide = wide || (outDims[i] + 1) * in[i] + outDims[i] > std::numeric_limits<int>::max();
  }
  geometry.average = params.mode == PoolingMode::kAverage;
  geometry.countIncludePad = false;
  geometry.adaptive = true;
  geometry.wideAdaptive = wide;
  launchPooling(geometry, params.type, params.batch, params.channels, params.channelsLast, x, out,
                stream);
}

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/normalization.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/reduce_device.cuh"

namespace kiln::cuda_kernels::reduce_detail {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kRowBlockThreads = 512;
constexpr int kWarpMaxItems = 32;  // floats a lane holds in the warp-per-row kernel
constexpr int64_t kMaxGridBlocks = 65536;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned gridFor(int64_t items, int64_t itemsPerBlock) {
  return static_cast<unsigned>(
      std::clamp<int64_t>(ceilDiv(items, itemsPerBlock), 1, kMaxGridBlocks));
}

// Calls fn(TypeTag<T>{}, TypeTag<P>{}) with the storage types of the tensor and its parameters.
template <typename Fn>
void visitTensorAndParameterTypes(ScalarType type, ScalarType parameterType, const char* kernel,
                                  Fn&& fn) {
  visitFloatType(type, kernel, [&](auto tensorTag) {
    using T = typename decltype(tensorTag)::type;
    if (parameterType == ScalarType::kFloat32) {
      fn(tensorTag, TypeTag<float>{});
    } else if (parameterType == type) {
      fn(tensorTag, TypeTag<T>{});
    } else {
      throw std::invalid_argument(std::string(kernel) + ": parameters of type " +
                                  scalarName(parameterType) + " with a " + scalarName(type) +
                                  " tensor; give them as float32 or " + scalarName(type));
    }
  });
}

// ---- batch norm -------------------------------------------------------------------------------

// y = x * factor + shift for channel c, folded as the CPU reference folds it.
template <typename P>
__device__ __forceinline__ void channelAffine(const P* scale, const P* bias, const P* mean,
                                              const P* var, uint64_t c, float epsilon,
                                              float& factor, float& shift) {
  const float inverseStd = 1.0f / sqrtf(toFloat(var[c]) + epsilon);
  factor = scale != nullptr ? inverseStd * toFloat(scale[c]) : inverseStd;
  shift = (bias != nullptr ? toFloat(bias[c]) : 0.0f) - toFloat(mean[c]) * factor;
}

// kVec elements per thread step: with kVec > 1 the contiguous dim (spatial, or channels when
// channels last) is a multiple of kVec, so a vector lies in one plane (one channel) or covers
// kVec consecutive channels.
template <typename T, typename P, int kVec, bool kChannelsLast, typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    batchNormKernel(const T* x, const P* scale, const P* bias, const P* mean, const P* var, T* out,
                    Index vectors, Divisor<Index> spatial, Divisor<Index> channels, float epsilon) {
  for (Index v = blockIdx.x * blockDim.x + threadIdx.x; v < vectors; v += gridDim.x * blockDim.x) {
    const Index first = v * kVec;
    Index quotient;
    Index channel;
    if constexpr (kChannelsLast) {
      channels.divmod(first, quotient, channel);
    } else {
      Index plane;
      Index position;
      spatial.divmod(first, plane, position);
      channels.divmod(plane, quotient, channel);
    }
    T values[kVec];
    loadVector(x + first, values);
    float factor;
    float shift;
    if constexpr (!kChannelsLast) {
      channelAffine(scale, bias, mean, var, channel, epsilon, factor, shift);
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if constexpr (kChannelsLast) {
        channelAffine(scale, bias, mean, var, channel + j, epsilon, factor, shift);
      }
      values[j] = fromAccumulator<T>(fmaf(toFloat(values[j]), factor, shift));
    }
    storeVector(out + first, values);
  }
}

template <typename T, typename P, int kVec, bool kChannelsLast>
void launchBatchNormWith(const BatchNormParams& params, const T* x, const P* scale, const P* bias,
                         const P* mean, const P* var, T* out, cudaStream_t stream) {
  const int64_t volume = params.batch * params.channels * params.spatial;
  const int64_t vectors = volume / kVec;
  const unsigned grid = gridFor(vectors, kBlockThreads);
  const float epsilon = static_cast<float>(params.epsilon);
  if (fitsIndex32(volume)) {
    batchNormKernel<T, P, kVec, kChannelsLast, uint32_t><<<grid, kBlockThreads, 0, stream>>>(
        x, scale, bias, mean, var, out, static_cast<uint32_t>(vectors),
        Divisor<uint32_t>(params.spatial), Divisor<uint32_t>(params.channels), epsilon);
  } else {
    batchNormKernel<T, P, kVec, kChannelsLast, uint64_t><<<grid, kBlockThreads, 0, stream>>>(
        x, scale, bias, mean, var, out, static_cast<uint64_t>(vectors),
        Divisor<uint64_t>(params.spatial), Divisor<uint64_t>(params.channels), epsilon);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T, typename P, bool kChannelsLast>
void launchBatchNorm(const BatchNormParams& params, const T* x, const P* scale, const P* bias,
                     const P* mean, const P* var, T* out, cudaStream_t stream) {
  constexpr int kWidth = kVectorWidth<T>;
  const int64_t contiguous = kChannelsLast ? params.channels : params.spatial;
  if (contiguous % kWidth == 0 && isAligned16(x) && isAligned16(out)) {
    launchBatchNormWith<T, P, kWidth, kChannelsLast>(params, x, scale, bias, mean, var, out,
                                                     stream);
  } else {
    launchBatchNormWith<T, P, 1, kChannelsLast>(params, x, scale, bias, mean, var, out, stream);
  }
}

// ---- layer norm -------------------------------------------------------------------------------

// Parameters [start, start + kVec) as floats: in 16-byte loads when `vector` says the pointer is
// 16-byte aligned (start is a multiple of kVec); element by element they would take 8 to 16 load
// instructions for each vector of the row.
template <typename P, int kVec>
__device__ __forceinline__ void loadParameters(const P* parameters, int start, bool vector,
                                               float (&values)[kVec]) {
  constexpr int kPerLoad = 16 / static_cast<int>(sizeof(P));
  if constexpr (kVec % kPerLoad == 0) {
    if (vector) {
#pragma unroll
      for (int part = 0; part < kVec / kPerLoad; ++part) {
        P raw[kPerLoad];
        loadVector(parameters + start + part * kPerLoad, raw);
#pragma unroll
        for (int j = 0; j < kPerLoad; ++j) values[part * kPerLoad + j] = toFloat(raw[j]);
      }
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) values[j] = toFloat(parameters[start + j]);
}

// Rows of up to 32 * kVectors * kVec elements, one warp a row, held in registers: mean, then the
// variance of the centred values (two passes, no cancellation), without reading memory twice.
// vectorParameters: scale and bias (those given) are 16-byte aligned.
template <typename T, typename P, int kVec, int kVectors>
__global__ void __launch_bounds__(kBlockThreads)
    layerNormRowsWarpKernel(const T* in, const T* residualIn, const P* scale, const P* bias, T* out,
                            int64_t rows, int cols, float epsilon, bool vectorParameters) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kBlockThreads / 32) + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x % 32;
  const T* x = in + row * cols;
  T* y = out + row * cols;
  auto add = [](float a, float b) { return a + b; };
  float values[kVectors][kVec];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    const int start = (lane + k * 32) * kVec;
    if (start < cols) {
      T raw[kVec];
      loadVector(x + start, raw);
      if (residualIn != nullptr) {
        T added[kVec];
        loadVector(residualIn + row * cols + start, added);
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          raw[j] = fromAccumulator<T>(toFloat(raw[j]) + toFloat(added[j]));
        }
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        values[k][j] = toFloat(raw[j]);
        sum += values[k][j];
      }
    }
  }
  const float mean = groupReduce<32>(sum, add, static_cast<float*>(nullptr)) / cols;
  float squares = 0.0f;
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    if ((lane + k * 32) * kVec < cols) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        values[k][j] -= mean;
        squares += values[k][j] * values[k][j];
      }
    }
  }
  const float variance = groupReduce<32>(squares, add, static_cast<float*>(nullptr)) / cols;
  const float inverseStd = 1.0f / sqrtf(variance + epsilon);
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    const int start = (lane + k * 32) * kVec;
    if (start < cols) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) values[k][j] *= inverseStd;
      float affine[kVec];
      if (scale != nullptr) {
        loadParameters(scale, start, vectorParameters, affine);
#pragma unroll
        for (int j = 0; j < kVec; ++j) values[k][j] *= affine[j];
      }
      if (bias != nullptr) {
        loadParameters(bias, start, vectorParameters, affine);
#pragma unroll
        for (int j = 0; j < kVec; ++j) values[k][j] += affine[j];
      }
      T raw[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) raw[j] = fromAccumulator<T>(values[k][j]);
      storeVector(y + start, raw);
    }
  }
}

// Count, mean and sum of squared deviations of a part of a row (Welford), merged with Chan's
// formula.
struct WelfordStats {
  float count;
  float mean;
  float m2;
};

__device__ __forceinline__ WelfordStats shuffleXor(WelfordStats stats, int offset) {
  return {__shfl_xor_sync(0xffffffffu, stats.count, offset),
          __shfl_xor_sync(0xffffffffu, stats.mean, offset),
          __shfl_xor_sync(0xffffffffu, stats.m2, offset)};
}

__device__ __forceinline__ WelfordStats combineWelford(WelfordStats a, WelfordStats b) {
  if (b.count == 0.0f) return a;
  if (a.count == 0.0f) return b;
  const float count = a.count + b.count;
  const float delta = b.mean - a.mean;
  const float ratio = b.count / count;
  return {count, a.mean + delta * ratio, a.m2 + b.m2 + delta * delta * a.count * ratio};
}

// Long rows, one block a row: a Welford pass, then a pass that writes.
template <typename T, typename P>
__global__ void __launch_bounds__(kRowBlockThreads)
    layerNormRowsBlockKernel(const T* in, const T* residualIn, const P* scale, const P* bias,
                             T* out, int64_t cols, float epsilon) {
  __shared__ WelfordStats shared[kRowBlockThreads / 32];
  const T* x = in + blockIdx.x * cols;
  const T* residual = residualIn != nullptr ? residualIn + blockIdx.x * cols : nullptr;
  T* y = out + blockIdx.x * cols;
  // x + residual as the unfused add stores it.
  auto element = [&](int64_t i, T raw) {
    return residual != nullptr ? toFloat(fromAccumulator<T>(toFloat(raw) + toFloat(residual[i])))
                               : toFloat(raw);
  };
  WelfordStats stats{0.0f, 0.0f, 0.0f};
  visitRange<kRowBlockThreads>(x, cols, threadIdx.x, [&](int64_t i, T raw) {
    const float value = element(i, raw);
    stats.count += 1.0f;
    const float delta = value - stats.mean;
    stats.mean += delta / stats.count;
    stats.m2 += delta * (value - stats.mean);
  });
  stats = groupReduce<kRowBlockThreads>(stats, combineWelford, shared);
  const float mean = stats.mean;
  const float inverseStd = 1.0f / sqrtf(fmaxf(stats.m2, 0.0f) / cols + epsilon);
  transformRange<kRowBlockThreads>(x, y, cols, threadIdx.x, [&](int64_t i, T raw) {
    float value = (element(i, raw) - mean) * inverseStd;
    if (scale != nullptr) value *= toFloat(scale[i]);
    if (bias != nullptr) value += toFloat(bias[i]);
    return fromAccumulator<T>(value);
  });
}

template <typename T, typename P, int kVec, int kVectors>
bool tryLaunchLayerNormWarp(int64_t vectorsPerLane, const LayerNormParams& params, const T* x,
                            const T* residual, const P* scale, const P* bias, T* out,
                            cudaStream_t stream) {
  if constexpr (kVectors * kVec > kWarpMaxItems) {
    return false;
  } else {
    if (vectorsPerLane > kVectors) {
      return tryLaunchLayerNormWarp<T, P, kVec, kVectors * 2>(vectorsPerLane, params, x, residual,
                                                              scale, bias, out, stream);
    }
    layerNormRowsWarpKernel<T, P, kVec, kVectors>
        <<<static_cast<unsigned>(ceilDiv(params.rows, kBlockThreads / 32)), kBlockThreads, 0,
           stream>>>(
            x, residual, scale, bias, out, params.rows, static_cast<int>(params.cols),
            static_cast<float>(params.epsilon),
            (scale == nullptr || isAligned16(scale)) && (bias == nullptr || isAligned16(bias)));
    KILN_CUDA_CHECK_LAUNCH();
    return true;
  }
}

template <typename T, typename P>
void launchLayerNorm(const LayerNormParams& params, const T* x, const T* residual, const P* scale,
                     const P* bias, T* out, cudaStream_t stream) {
  constexpr int kWidth = kVectorWidth<T>;
  const bool vectorized = params.cols % kWidth == 0 && isAligned16(x) && isAligned16(out) &&
                          (residual == nullptr || isAligned16(residual));
  const int64_t perLane = ceilDiv(ceilDiv(params.cols, vectorized ? kWidth : 1), 32);
  const bool launched = vectorized ? tryLaunchLayerNormWarp<T, P, kWidth, 1>(
                                         perLane, params, x, residual, scale, bias, out, stream)
                                   : tryLaunchLayerNormWarp<T, P, 1, 1>(
                                         perLane, params, x, residual, scale, bias, out, stream);
  if (launched) return;
  if (params.rows > 0x7fffffff) {
    throw std::invalid_argument("layer norm: more rows than one launch can take");
  }
  layerNormRowsBlockKernel<T, P>
      <<<static_cast<unsigned>(params.rows), kRowBlockThreads, 0, stream>>>(
          x, residual, scale, bias, out, params.cols, static_cast<float>(params.epsilon));
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace
}  // namespace kiln::cuda_kernels::reduce_detail

namespace kiln::cuda_kernels {

void batchNorm(const BatchNormParams& params, const void* x, const void* scale, const void* bias,
               const void* mean, const void* var, void* out, cudaStream_t stream) {
  if (params.batch < 0 || params.channels < 0 || params.spatial < 0) {
    throw std::invalid_argument("batch norm: batch, channels and spatial must not be negative");
  }
  if (params.batch * params.channels * params.spatial == 0) return;
  if (mean == nullptr || var == nullptr) {
    throw std::invalid_argument("batch norm needs the running mean and variance");
  }
  using namespace reduce_detail;
  visitTensorAndParameterTypes(
      params.type, params.parameterType, "batch norm", [&](auto tensorTag, auto parameterTag) {
        using T = typename decltype(tensorTag)::type;
        using P = typename decltype(parameterTag)::type;
        const auto* typedScale = static_cast<const P*>(scale);
        const auto* typedBias = static_cast<const P*>(bias);
        const auto* typedMean = static_cast<const P*>(mean);
        const auto* typedVar = static_cast<const P*>(var);
        if (params.channelsLast) {
          launchBatchNorm<T, P, true>(params, static_cast<const T*>(x), typedScale, typedBias,
                                      typedMean, typedVar, static_cast<T*>(out), stream);
        } else {
          launchBatchNorm<T, P, false>(params, static_cast<const T*>(x), typedScale, typedBias,
                                       typedMean, typedVar, static_cast<T*>(out), stream);
        }
      });
}

void layerNorm(const LayerNormParams& params, const void* x, const void* scale, const void* bias,
               const void* residual, void* out, cudaStream_t stream) {
  if (params.rows < 0 || params.cols < 0) {
    throw std::invalid_argument("layer norm: rows and cols must not be negative");
  }
  if (params.rows == 0 || params.cols == 0) return;
  using namespace reduce_detail;
  visitTensorAndParameterTypes(
      params.type, params.parameterType, "layer norm", [&](auto tensorTag, auto parameterTag) {
        using T = typename decltype(tensorTag)::type;
        using P = typename decltype(parameterTag)::type;
        launchLayerNorm<T, P>(params, static_cast<const T*>(x), static_cast<const T*>(residual),
                              static_cast<const P*>(scale), static_cast<const P*>(bias),
                              static_cast<T*>(out), stream);
      });
}

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/depthwise_convolution.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace kiln::cuda_kernels {
namespace {

constexpr int kThreads = 256;
// Staged weights a block, in floats (32 KiB of shared memory, under the 48 KiB that needs no
// opt-in): the block's channels times the taps.
constexpr int kStagedWeights = 8192;
// Channel vectors a block covers at most: 32 vectors are 512 bytes of one pixel in fp16.
constexpr int kMaxVectorsPerBlock = 32;

struct DepthwiseGeometry {
  int64_t channels;
  int64_t inH, inW, outH, outW;
  int kernelH, kernelW;
  int strideH, strideW;
  int padH, padW;
  int dilationH, dilationW;
  int64_t columnTiles;  // ceil(outW / outputs a thread)
  int64_t tiles;        // batch * outH * columnTiles
  int vectorsPerBlock;
  bool relu;
};

template <typename T>
__device__ __forceinline__ float toFloat(T value) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(value);
  } else {
    return value;
  }
}

template <typename T>
__device__ __forceinline__ T fromFloat(float value) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(value);
  } else {
    return value;
  }
}

// V consecutive elements as floats: one 16-byte load when V elements fill 16 bytes.
template <typename T, int V>
__device__ __forceinline__ void loadVector(const T* __restrict__ p, float (&values)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    const uint4 word = __ldg(reinterpret_cast<const uint4*>(p));
    T elements[V];
    memcpy(elements, &word, sizeof(word));
#pragma unroll
    for (int e = 0; e < V; ++e) values[e] = toFloat(elements[e]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) values[e] = toFloat(p[e]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void storeVector(T* __restrict__ p, const float (&values)[V]) {
  T elements[V];
#pragma unroll
  for (int e = 0; e < V; ++e) elements[e] = fromFloat<T>(values[e]);
  if constexpr (V * sizeof(T) == 16) {
    uint4 word;
    memcpy(&word, elements, sizeof(word));
    *reinterpret_cast<uint4*>(p) = word;
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) p[e] = elements[e];
  }
}

template <int V>
__device__ __forceinline__ void readStaged(const float* staged, float (&values)[V]) {
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int e = 0; e < V; e += 4) {
      const float4 four = *reinterpret_cast<const float4*>(staged + e);
      values[e] = four.x;
      values[e + 1] = four.y;
      values[e + 2] = four.z;
      values[e + 3] = four.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) values[e] = staged[e];
  }
}

// staged[tap * blockChannels + k] = weight[(c0 + k) * taps + tap] for the block's channels:
// the weights of one channel are contiguous (K, kh, kw, 1), so the reads are coalesced.
template <typename T>
__device__ __forceinline__ void stageWeights(float* staged, const T* __restrict__ weight,
                                             int64_t c0, int64_t channels, int blockChannels,
                                             int taps) {
  const int count = static_cast<int>(min(static_cast<int64_t>(blockChannels), channels - c0));
  for (int i = threadIdx.x; i < count * taps; i += blockDim.x) {
    const int k = i / taps;
    const int tap = i - k * taps;
    staged[tap * blockChannels + k] = toFloat(weight[(c0 + k) * taps + tap]);
  }
}

// Where a thread works: its channel (first of V) and its tile of output columns.
struct ThreadWork {
  int64_t channel;
  int channelInBlock;
  int64_t n, oh, ow0;
};

template <int V>
__device__ __forceinline__ bool threadWork(const DepthwiseGeometry& g, int outputs,
                                           ThreadWork& work) {
  const int tilesPerBlock = kThreads / g.vectorsPerBlock;
  const int vector = threadIdx.x % g.vectorsPerBlock;
  const int tileInBlock = threadIdx.x / g.vectorsPerBlock;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * tilesPerBlock + tileInBlock;
  work.channelInBlock = vector * V;
  work.channel = static_cast<int64_t>(blockIdx.y) * g.vectorsPerBlock * V + work.channelInBlock;
  if (tileInBlock >= tilesPerBlock || tile >= g.tiles || work.channel >= g.channels) return false;
  const int64_t column = tile % g.columnTiles;
  const int64_t row = tile / g.columnTiles;
  work.oh = row % g.outH;
  work.n = row / g.outH;
  work.ow0 = column * outputs;
  return true;
}

// out = activation(acc + bias + residual) at the thread's columns that exist.
template <typename T, int V, int kOutputs>
__device__ __forceinline__ void writeOutputs(const DepthwiseGeometry& g, const ThreadWork& work,
                                             float (&acc)[kOutputs][V], const T* __restrict__ bias,
                                             const T* __restrict__ residual, T* __restrict__ out) {
  float shift[V] = {};
  if (bias != nullptr) {
#pragma unroll
    for (int e = 0; e < V; ++e) shift[e] = toFloat(bias[work.channel + e]);
  }
#pragma unroll
  for (int j = 0; j < kOutputs; ++j) {
    const int64_t ow = work.ow0 + j;
    if (ow >= g.outW) break;
    const int64_t offset = ((work.n * g.outH + work.oh) * g.outW + ow) * g.channels + work.channel;
    float added[V] = {};
    if (residual != nullptr) loadVector<T, V>(residual + offset, added);
    float values[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float value = acc[j][e] + shift[e] + added[e];
      // ReLU that keeps NaN, as cuDNN's CUDNN_PROPAGATE_NAN and torch do.
      values[e] = g.relu && value < 0.0f ? 0.0f : value;
    }
    storeVector<T, V>(out + offset, values);
  }
}

// kOutputs consecutive output columns a thread, kernel width and horizontal stride fixed, no
// horizontal dilation: each of the (kOutputs - 1) * kStrideW + kKernelW input vectors of a
// kernel row is loaded once and feeds every output that reads it.
template <typename T, int V, int kKernelW, int kStrideW, int kOutputs>
__global__ void __launch_bounds__(kThreads)
    depthwiseRowKernel(DepthwiseGeometry g, const T* __restrict__ x, const T* __restrict__ weight,
                       const T* __restrict__ bias, const T* __restrict__ residual,
                       T* __restrict__ out) {
  extern __shared__ float staged[];
  const int blockChannels = g.vectorsPerBlock * V;
  stageWeights(staged, weight, static_cast<int64_t>(blockIdx.y) * blockChannels, g.channels,
               blockChannels, g.kernelH * kKernelW);
  __syncthreads();
  ThreadWork work;
  if (!threadWork<V>(g, kOutputs, work)) return;

  constexpr int kSpan = (kOutputs - 1) * kStrideW + kKernelW;
  const int64_t iw0 = work.ow0 * kStrideW - g.padW;
  float acc[kOutputs][V] = {};
  for (int kh = 0; kh < g.kernelH; ++kh) {
    const int64_t ih = work.oh * g.strideH - g.padH + static_cast<int64_t>(kh) * g.dilationH;
    if (ih < 0 || ih >= g.inH) continue;
    float taps[kKernelW][V];
#pragma unroll
    for (int kw = 0; kw < kKernelW; ++kw) {
      readStaged<V>(staged + (kh * kKernelW + kw) * blockChannels + work.channelInBlock, taps[kw]);
    }
    const T* row = x + (work.n * g.inH + ih) * g.inW * g.channels + work.channel;
#pragma unroll
    for (int s = 0; s < kSpan; ++s) {
      const int64_t iw = iw0 + s;
      if (iw < 0 || iw >= g.inW) continue;
      float values[V];
      loadVector<T, V>(row + iw * g.channels, values);
#pragma unroll
      for (int j = 0; j < kOutputs; ++j) {
        const int kw = s - j * kStrideW;
        if (kw < 0 || kw >= kKernelW) continue;
#pragma unroll
        for (int e = 0; e < V; ++e) acc[j][e] = fmaf(values[e], taps[kw][e], acc[j][e]);
      }
    }
  }
  writeOutputs<T, V, kOutputs>(g, work, acc, bias, residual, out);
}

// Any kernel size, stride and dilation; one output column a thread.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    depthwiseGenericKernel(DepthwiseGeometry g, const T* __restrict__ x,
                           const T* __restrict__ weight, const T* __restrict__ bias,
                           const T* __restrict__ residual, T* __restrict__ out) {
  extern __shared__ float staged[];
  const int blockChannels = g.vectorsPerBlock * V;
  stageWeights(staged, weight, static_cast<int64_t>(blockIdx.y) * blockChannels, g.channels,
               blockChannels, g.kernelH * g.kernelW);
  __syncthreads();
  ThreadWork work;
  if (!threadWork<V>(g, 1, work)) return;

  float acc[1][V] = {};
  for (int kh = 0; kh < g.kernelH; ++kh) {
    const int64_t ih = work.oh * g.strideH - g.padH + static_cast<int64_t>(kh) * g.dilationH;
    if (ih < 0 || ih >= g.inH) continue;
    const T* row = x + (work.n * g.inH + ih) * g.inW * g.channels + work.channel;
    for (int kw = 0; kw < g.kernelW; ++kw) {
      const int64_t iw = work.ow0 * g.strideW - g.padW + static_cast<int64_t>(kw) * g.dilationW;
      if (iw < 0 || iw >= g.inW) continue;
      float values[V];
      loadVector<T, V>(row + iw * g.channels, values);
      float taps[V];
      readStaged<V>(staged + (kh * g.kernelW + kw) * blockChannels + work.channelInBlock, taps);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[0][e] = fmaf(values[e], taps[e], acc[0][e]);
    }
  }
  writeOutputs<T, V, 1>(g, work, acc, bias, residual, out);
}

bool isFloatType(ScalarType type) {
  return type == ScalarType::kFloat32 || type == ScalarType::kFloat16 ||
         type == ScalarType::kBFloat16;
}

int vectorElements(ScalarType type) { return static_cast<int>(16 / scalarSize(type)); }

int64_t taps(const ConvolutionParams& params) { return shapeVolume(params.kernel); }

// Kernel widths and horizontal strides the row kernel is instantiated for.
bool rowKernelApplies(const ConvolutionParams& params) {
  const int64_t width = params.kernel.back();
  const int64_t stride = params.stride.back();
  return (width == 3 || width == 5 || width == 7) && (stride == 1 || stride == 2) &&
         params.dilation.back() == 1;
}

bool isAligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

template <typename T, int V, int kKernelW, int kStrideW>
void launchRowKernel(int outputs, dim3 grid, size_t sharedBytes, const DepthwiseGeometry& g,
                     const ConvolutionTensors& t, cudaStream_t stream) {
  const auto* x = static_cast<const T*>(t.x);
  const auto* weight = static_cast<const T*>(t.weight);
  const auto* bias = static_cast<const T*>(t.bias);
  const auto* residual = static_cast<const T*>(t.residual);
  auto* out = static_cast<T*>(t.out);
  switch (outputs) {
    case 1:
      depthwiseRowKernel<T, V, kKernelW, kStrideW, 1>
          <<<grid, kThreads, sharedBytes, stream>>>(g, x, weight, bias, residual, out);
      break;
    case 2:
      depthwiseRowKernel<T, V, kKernelW, kStrideW, 2>
          <<<grid, kThreads, sharedBytes, stream>>>(g, x, weight, bias, residual, out);
      break;
    default:
      depthwiseRowKernel<T, V, kKernelW, kStrideW, 4>
          <<<grid, kThreads, sharedBytes, stream>>>(g, x, weight, bias, residual, out);
      break;
  }
}

template <typename T, int V, int kKernelW>
void launchRowKernelOfWidth(int64_t stride, int outputs, dim3 grid, size_t sharedBytes,
                            const DepthwiseGeometry& g, const ConvolutionTensors& t,
                            cudaStream_t stream) {
  if (stride == 1) {
    launchRowKernel<T, V, kKernelW, 1>(outputs, grid, sharedBytes, g, t, stream);
  } else {
    launchRowKernel<T, V, kKernelW, 2>(outputs, grid, sharedBytes, g, t, stream);
  }
}

[[noreturn]] void invalid(const ConvolutionParams& params, const std::string& what) {
  throw std::invalid_argument("depthwise convolution: " + what + " in " + describe(params));
}

// Launches V-element vectors a thread (V = 1: one channel) with `outputs` columns a thread, on
// the row kernel when it is instantiated for the params, else on the generic one.
template <typename T, int V>
void launch(const ConvolutionParams& params, int outputs, const ConvolutionTensors& tensors,
            cudaStream_t stream) {
  const bool rows = V > 1 && rowKernelApplies(params);
  if (!rows) outputs = 1;
  const bool twoDims = params.kernel.size() == 2;
  DepthwiseGeometry g{};
  g.channels = params.inChannels;
  g.inH = twoDims ? params.inSpatial[0] : 1;
  g.inW = params.inSpatial.back();
  g.outH = twoDims ? params.outSpatial[0] : 1;
  g.outW = params.outSpatial.back();
  g.kernelH = static_cast<int>(twoDims ? params.kernel[0] : 1);
  g.kernelW = static_cast<int>(params.kernel.back());
  g.strideH = static_cast<int>(twoDims ? params.stride[0] : 1);
  g.strideW = static_cast<int>(params.stride.back());
  g.padH = static_cast<int>(twoDims ? params.prePadding[0] : 0);
  g.padW = static_cast<int>(params.prePadding.back());
  g.dilationH = static_cast<int>(twoDims ? params.dilation[0] : 1);
  g.dilationW = static_cast<int>(params.dilation.back());
  g.columnTiles = (g.outW + outputs - 1) / outputs;
  g.tiles = params.batch * g.outH * g.columnTiles;
  g.relu = params.activation == ConvolutionActivation::kRelu;
  const int64_t vectors = (g.channels + V - 1) / V;
  g.vectorsPerBlock = static_cast<int>(
      std::min<int64_t>({vectors, kMaxVectorsPerBlock, kStagedWeights / (taps(params) * V)}));
  const int tilesPerBlock = kThreads / g.vectorsPerBlock;
  const dim3 grid(static_cast<unsigned>((g.tiles + tilesPerBlock - 1) / tilesPerBlock),
                  static_cast<unsigned>((vectors + g.vectorsPerBlock - 1) / g.vectorsPerBlock));
  const size_t sharedBytes =
      static_cast<size_t>(taps(params) * g.vectorsPerBlock * V) * sizeof(float);
  if (!rows) {
    depthwiseGenericKernel<T, V><<<grid, kThreads, sharedBytes, stream>>>(
        g, static_cast<const T*>(tensors.x), static_cast<const T*>(tensors.weight),
        static_cast<const T*>(tensors.bias), static_cast<const T*>(tensors.residual),
        static_cast<T*>(tensors.out));
  } else if (g.kernelW == 3) {
    launchRowKernelOfWidth<T, V, 3>(g.strideW, outputs, grid, sharedBytes, g, tensors, stream);
  } else if (g.kernelW == 5) {
    launchRowKernelOfWidth<T, V, 5>(g.strideW, outputs, grid, sharedBytes, g, tensors, stream);
  } else {
    launchRowKernelOfWidth<T, V, 7>(g.strideW, outputs, grid, sharedBytes, g, tensors, stream);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launchOfType(const ConvolutionParams& params, int outputs, const ConvolutionTensors& tensors,
                  cudaStream_t stream) {
  constexpr int kVector = static_cast<int>(16 / sizeof(T));
  const bool vectors = params.inChannels % kVector == 0 && isAligned16(tensors.x) &&
                       isAligned16(tensors.out) &&
                       (tensors.residual == nullptr || isAligned16(tensors.residual)) &&
                       taps(params) * kVector <= kStagedWeights;
  if (vectors) {
    launch<T, kVector>(params, outputs, tensors, stream);
  } else {
    launch<T, 1>(params, outputs, tensors, stream);
  }
}

}  // namespace

bool depthwiseConvolutionApplies(const ConvolutionParams& params) {
  const size_t rank = params.kernel.size();
  return !params.transposed && params.layout == TensorLayout::kNHWC && (rank == 1 || rank == 2) &&
         params.groups == params.inChannels && params.outChannels == params.inChannels &&
         isFloatType(params.type) && taps(params) <= kStagedWeights &&
         params.inSpatial.size() == rank && params.outSpatial.size() == rank &&
         params.stride.size() == rank && params.prePadding.size() == rank &&
         params.dilation.size() == rank;
}

std::vector<int> depthwiseConvolutionVariants(const ConvolutionParams& params) {
  if (!depthwiseConvolutionApplies(params)) return {};
  const bool vectors = params.inChannels % vectorElements(params.type) == 0 &&
                       taps(params) * vectorElements(params.type) <= kStagedWeights;
  if (vectors && rowKernelApplies(params)) return {1, 2, 4};
  return {1};
}

void depthwiseConvolution(const ConvolutionParams& params, int outputsPerThread,
                          const ConvolutionTensors& tensors, cudaStream_t stream) {
  if (!depthwiseConvolutionApplies(params)) {
    invalid(params,
            "Kiln's depthwise kernels need a forward 1-D or 2-D NHWC convolution with "
            "groups == inChannels == outChannels");
  }
  if (outputsPerThread != 1 && outputsPerThread != 2 && outputsPerThread != 4) {
    invalid(params,
            "outputsPerThread is " + std::to_string(outputsPerThread) + "; it must be 1, 2 or 4");
  }
  if (params.batch == 0 || shapeVolume(params.outSpatial) == 0) return;
  if (tensors.x == nullptr || tensors.weight == nullptr || tensors.out == nullptr) {
    invalid(params, "x, weight and out must be device pointers, got a null one");
  }
  switch (params.type) {
    case ScalarType::kFloat32:
      launchOfType<float>(params, outputsPerThread, tensors, stream);
      break;
    case ScalarType::kFloat16:
      launchOfType<__half>(params, outputsPerThread, tensors, stream);
      break;
    default:
      launchOfType<__nv_bfloat16>(params, outputsPerThread, tensors, stream);
      break;
  }
}

}  // namespace kiln::cuda_kernels

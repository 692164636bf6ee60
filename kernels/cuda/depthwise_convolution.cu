#include "kernels/cuda/depthwise_convolution.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/convolution_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using convolution_detail::activate;
using convolution_detail::fromFloat;
using convolution_detail::toFloat;

constexpr int kThreads = 256;
// Staged weights a block, in floats (32 KiB of shared memory, under the 48 KiB that needs no
// opt-in): the block's channels times the taps.
constexpr int kStagedWeights = 8192;
// Channel vectors a block covers at most: 32 vectors of 16 bytes are 512 bytes of one pixel.
constexpr int kMaxVectorsPerBlock = 32;

struct DepthwiseGeometry {
  int64_t channels;    // output channels: multiplier * inChannels
  int64_t inChannels;  // output channel c reads input channel c / multiplier
  int multiplier;
  int64_t inH, inW, outH, outW;
  int kernelH, kernelW;
  int strideH, strideW;
  int padH, padW;
  int dilationH, dilationW;
  int64_t columnTiles;  // ceil(outW / outputs a thread)
  int64_t tiles;        // batch * outH * columnTiles
  int vectorsPerBlock;
  ConvolutionActivation activation;
  ConvolutionActivation inputActivation;  // on each input read inside the image
};

// The word a vector of N elements of T is loaded and stored as: 16, 8 or 4 bytes.
template <int kBytes>
struct WordOf;
template <>
struct WordOf<16> {
  using type = uint4;
};
template <>
struct WordOf<8> {
  using type = uint2;
};
template <>
struct WordOf<4> {
  using type = uint32_t;
};
template <typename T, int N>
constexpr bool kIsWord = N * sizeof(T) == 16 || N * sizeof(T) == 8 || N * sizeof(T) == 4;
template <typename T, int N>
using WordFor = typename WordOf<static_cast<int>(N * sizeof(T))>::type;

// The N elements of a word as floats.
template <typename T, int N>
__device__ __forceinline__ void unpack(const WordFor<T, N>& word, float (&values)[N]) {
  T elements[N];
  memcpy(elements, &word, sizeof(word));
#pragma unroll
  for (int e = 0; e < N; ++e) values[e] = toFloat(elements[e]);
}

// N consecutive elements as floats: one load when they fill a word (16, 8 or 4 bytes).
template <typename T, int N>
__device__ __forceinline__ void loadVector(const T* __restrict__ p, float (&values)[N]) {
  if constexpr (kIsWord<T, N>) {
    unpack<T, N>(__ldg(reinterpret_cast<const WordFor<T, N>*>(p)), values);
  } else {
#pragma unroll
    for (int e = 0; e < N; ++e) values[e] = toFloat(p[e]);
  }
}

// N floats as the word of N elements of T.
template <typename T, int N>
__device__ __forceinline__ WordFor<T, N> pack(const float (&values)[N]) {
  T elements[N];
#pragma unroll
  for (int e = 0; e < N; ++e) elements[e] = fromFloat<T>(values[e]);
  WordFor<T, N> word;
  memcpy(&word, elements, sizeof(word));
  return word;
}

template <typename T, int N>
__device__ __forceinline__ void storeVector(T* __restrict__ p, const float (&values)[N]) {
  if constexpr (kIsWord<T, N>) {
    *reinterpret_cast<WordFor<T, N>*>(p) = pack<T, N>(values);
  } else {
#pragma unroll
    for (int e = 0; e < N; ++e) p[e] = fromFloat<T>(values[e]);
  }
}

// The input activation on values read from inside the image (padding stays zero). The branch is
// uniform across the grid.
template <int N>
__device__ __forceinline__ void activateInputs(float (&values)[N],
                                               ConvolutionActivation activation) {
  if (activation == ConvolutionActivation::kNone) return;
#pragma unroll
  for (int e = 0; e < N; ++e) values[e] = activate(values[e], activation);
}

// The inputs of V consecutive output channels from the V / M input channels that feed them, each
// M of them in turn.
template <int V, int M>
__device__ __forceinline__ void widen(const float (&inputs)[V / M], float (&values)[V]) {
#pragma unroll
  for (int e = 0; e < V; ++e) values[e] = inputs[e / M];
}

// The inputs of V consecutive output channels at multiplier M as floats, `p` pointing at the
// first one's input channel.
template <typename T, int V, int M>
__device__ __forceinline__ void loadInputs(const T* __restrict__ p, float (&values)[V]) {
  static_assert(V % M == 0, "whole input channels a vector");
  if constexpr (M == 1) {
    loadVector<T, V>(p, values);
  } else {
    float inputs[V / M];
    loadVector<T, V / M>(p, inputs);
    widen<V, M>(inputs, values);
  }
}

// The input channel of output channel c, the first of a vector. Kernels on vectors of V > 1
// channels are instantiated for the multiplier M they run at; those on one channel a thread take
// any multiplier, divided in 32 bits (the grid's dims bound the channels far below 2^32).
template <int V, int M>
__device__ __forceinline__ int64_t inputChannel(const DepthwiseGeometry& g, int64_t c) {
  if constexpr (V == 1) {
    return static_cast<uint32_t>(c) / static_cast<uint32_t>(g.multiplier);
  } else {
    return c / M;
  }
}

template <int V>
__device__ __forceinline__ void readStaged(const float* staged, float (&values)[V]) {
  if constexpr (V == 2) {
    const float2 two = *reinterpret_cast<const float2*>(staged);
    values[0] = two.x;
    values[1] = two.y;
  } else if constexpr (V % 4 == 0) {
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

// staged[tap * blockChannels + k] = weight[(c0 + k) * taps + tap] for the block's channels, 0
// past the last channel: the weights of one channel are contiguous (K, kh, kw, 1), so the
// reads are coalesced.
template <typename T>
__device__ __forceinline__ void stageWeights(float* staged, const T* __restrict__ weight,
                                             int64_t c0, int64_t channels, int blockChannels,
                                             int taps) {
  for (int i = threadIdx.x; i < blockChannels * taps; i += blockDim.x) {
    const int k = i / taps;
    const int tap = i - k * taps;
    staged[tap * blockChannels + k] =
        c0 + k < channels ? toFloat(weight[(c0 + k) * taps + tap]) : 0.0f;
  }
}

// The staged weights of one kernel row (K taps) of the thread's channels; `staged` points at
// the row's first tap of them.
template <int V, int K>
__device__ __forceinline__ void readTapRow(const float* staged, int blockChannels,
                                           float (&taps)[K][V]) {
#pragma unroll
  for (int kw = 0; kw < K; ++kw) readStaged<V>(staged + kw * blockChannels, taps[kw]);
}

// One kernel row for kOutputs consecutive output columns at horizontal stride S: each of the
// (kOutputs - 1) * S + K inputs of the row is read once and feeds every output that reads it.
// `input(s, values)` reads input s of the row and says whether it lies inside the image
// (padding adds nothing).
template <int V, int K, int S, int kOutputs, typename Input>
__device__ __forceinline__ void accumulateRow(const Input& input, const float (&taps)[K][V],
                                              float (&acc)[kOutputs][V]) {
  constexpr int kSpan = (kOutputs - 1) * S + K;
#pragma unroll
  for (int s = 0; s < kSpan; ++s) {
    float values[V];
    if (!input(s, values)) continue;
#pragma unroll
    for (int j = 0; j < kOutputs; ++j) {
      const int kw = s - j * S;
      if (kw < 0 || kw >= K) continue;
#pragma unroll
      for (int e = 0; e < V; ++e) acc[j][e] = fmaf(values[e], taps[kw][e], acc[j][e]);
    }
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
    for (int e = 0; e < V; ++e) values[e] = activate(acc[j][e] + shift[e] + added[e], g.activation);
    storeVector<T, V>(out + offset, values);
  }
}

// kOutputs consecutive output columns a thread, kernel width and horizontal stride fixed, no
// horizontal dilation: each of the (kOutputs - 1) * kStrideW + kKernelW input vectors of a
// kernel row is loaded once and feeds every output that reads it.
template <typename T, int V, int M, int kKernelW, int kStrideW, int kOutputs>
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

  const int64_t inChannel = inputChannel<V, M>(g, work.channel);
  const int64_t iw0 = work.ow0 * kStrideW - g.padW;
  float acc[kOutputs][V] = {};
  for (int kh = 0; kh < g.kernelH; ++kh) {
    const int64_t ih = work.oh * g.strideH - g.padH + static_cast<int64_t>(kh) * g.dilationH;
    if (ih < 0 || ih >= g.inH) continue;
    float taps[kKernelW][V];
    readTapRow<V, kKernelW>(staged + kh * kKernelW * blockChannels + work.channelInBlock,
                            blockChannels, taps);
    const T* row = x + (work.n * g.inH + ih) * g.inW * g.inChannels + inChannel;
    const auto input = [&](int s, float(&values)[V]) {
      const int64_t iw = iw0 + s;
      if (iw < 0 || iw >= g.inW) return false;
      loadInputs<T, V, M>(row + iw * g.inChannels, values);
      activateInputs<V>(values, g.inputActivation);
      return true;
    };
    accumulateRow<V, kKernelW, kStrideW, kOutputs>(input, taps, acc);
  }
  writeOutputs<T, V, kOutputs>(g, work, acc, bias, residual, out);
}

// Any kernel size, stride and dilation; one output column a thread.
template <typename T, int V, int M>
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

  const int64_t inChannel = inputChannel<V, M>(g, work.channel);
  float acc[1][V] = {};
  for (int kh = 0; kh < g.kernelH; ++kh) {
    const int64_t ih = work.oh * g.strideH - g.padH + static_cast<int64_t>(kh) * g.dilationH;
    if (ih < 0 || ih >= g.inH) continue;
    const T* row = x + (work.n * g.inH + ih) * g.inW * g.inChannels + inChannel;
    for (int kw = 0; kw < g.kernelW; ++kw) {
      const int64_t iw = work.ow0 * g.strideW - g.padW + static_cast<int64_t>(kw) * g.dilationW;
      if (iw < 0 || iw >= g.inW) continue;
      float values[V];
      loadInputs<T, V, M>(row + iw * g.inChannels, values);
      activateInputs<V>(values, g.inputActivation);
      float taps[V];
      readStaged<V>(staged + (kh * g.kernelW + kw) * blockChannels + work.channelInBlock, taps);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[0][e] = fmaf(values[e], taps[e], acc[0][e]);
    }
  }
  writeOutputs<T, V, 1>(g, work, acc, bias, residual, out);
}

// The shared-memory tile of the tiled kernel at stride S: kRows x kCols outputs of one image and
// kTileVectors channel vectors a block, kColumns consecutive columns of one row a thread (128
// threads). The block's input window, zero-padded, is staged once; every read after that is a
// shared-memory load at a constant offset, with no bounds checks.
constexpr int kTileVectors = 4;
constexpr int kTileThreads = 128;
template <int S>
struct DepthwiseTile;
template <>
struct DepthwiseTile<1> {
  static constexpr int kRows = 8, kCols = 32, kColumns = 8;
};
template <>
struct DepthwiseTile<2> {
  static constexpr int kRows = 8, kCols = 8, kColumns = 2;
};

template <typename T, int V, int M, int K, int S>
__global__ void __launch_bounds__(kTileThreads)
    depthwiseTileKernel(DepthwiseGeometry g, const T* __restrict__ x, const T* __restrict__ weight,
                        const T* __restrict__ bias, const T* __restrict__ residual,
                        T* __restrict__ out) {
  // The window holds the V / M input channels of each of the block's vectors.
  using Word = WordFor<T, V / M>;
  using Tile = DepthwiseTile<S>;
  constexpr int kChannels = kTileVectors * V;
  constexpr int kTaps = K * K;
  constexpr int kInRows = (Tile::kRows - 1) * S + K;
  constexpr int kInCols = (Tile::kCols - 1) * S + K;
  constexpr int kGroups = Tile::kCols / Tile::kColumns;
  static_assert(kTileVectors * Tile::kRows * kGroups == kTileThreads, "one thread a work item");
  static_assert(kTileThreads % kTileVectors == 0, "each thread stages one vector's inputs");
  __shared__ Word window[kInRows * kInCols * kTileVectors];
  __shared__ __align__(16) float staged[kTaps * kChannels];

  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kChannels;
  const int64_t n = blockIdx.z;
  const int64_t tilesW = (g.outW + Tile::kCols - 1) / Tile::kCols;
  const int64_t oh0 = static_cast<int64_t>(blockIdx.x / tilesW) * Tile::kRows;
  const int64_t ow0 = static_cast<int64_t>(blockIdx.x % tilesW) * Tile::kCols;
  stageWeights(staged, weight, c0, g.channels, kChannels, kTaps);
  const int64_t ih0 = oh0 * S - g.padH;
  const int64_t iw0 = ow0 * S - g.padW;
  // Window element i is vector i % kTileVectors of pixel i / kTileVectors: a thread stages
  // the same vector at every step.
  const int64_t stagedChannel = c0 + static_cast<int>(threadIdx.x % kTileVectors) * V;
  const bool channelInside = stagedChannel < g.channels;
  const T* input = x + n * g.inH * g.inW * g.inChannels + inputChannel<V, M>(g, stagedChannel);
  for (int i = threadIdx.x; i < kInRows * kInCols * kTileVectors; i += kTileThreads) {
    const int pixel = i / kTileVectors;
    const int64_t ih = ih0 + pixel / kInCols;
    const int64_t iw = iw0 + pixel % kInCols;
    Word value{};
    if (ih >= 0 && ih < g.inH && iw >= 0 && iw < g.inW && channelInside) {
      value = __ldg(reinterpret_cast<const Word*>(input + (ih * g.inW + iw) * g.inChannels));
      if (g.inputActivation != ConvolutionActivation::kNone) {
        // Rounded to T as the activation layer it replaces would store it.
        float values[V / M];
        unpack<T, V / M>(value, values);
        activateInputs<V / M>(values, g.inputActivation);
        value = pack<T, V / M>(values);
      }
    }
    window[i] = value;
  }
  __syncthreads();

  const int vector = threadIdx.x % kTileVectors;
  const int group = (threadIdx.x / kTileVectors) % kGroups;
  const int row = threadIdx.x / (kTileVectors * kGroups);
  float acc[Tile::kColumns][V] = {};
  for (int kh = 0; kh < K; ++kh) {
    float taps[K][V];
    readTapRow<V, K>(staged + kh * K * kChannels + vector * V, kChannels, taps);
    const Word* inputs =
        window + ((row * S + kh) * kInCols + group * Tile::kColumns * S) * kTileVectors + vector;
    const auto input = [&](int s, float(&values)[V]) {
      float unpacked[V / M];
      unpack<T, V / M>(inputs[s * kTileVectors], unpacked);
      widen<V, M>(unpacked, values);
      return true;
    };
    accumulateRow<V, K, S, Tile::kColumns>(input, taps, acc);
  }
  ThreadWork work;
  work.channel = c0 + vector * V;
  work.channelInBlock = vector * V;
  work.n = n;
  work.oh = oh0 + row;
  work.ow0 = ow0 + group * Tile::kColumns;
  if (work.channel >= g.channels || work.oh >= g.outH || work.ow0 >= g.outW) return;
  writeOutputs<T, V, Tile::kColumns>(g, work, acc, bias, residual, out);
}

bool isFloatType(ScalarType type) {
  return type == ScalarType::kFloat32 || type == ScalarType::kFloat16 ||
         type == ScalarType::kBFloat16;
}

int64_t taps(const ConvolutionParams& params) { return shapeVolume(params.kernel); }

// The vectors the row and tiled kernels run on, widest first: 16, 8 or 4 bytes of channels.
constexpr int kVectorBytes[] = {16, 8, 4};

// Output channels per input channel.
int64_t multiplierOf(const ConvolutionParams& params) {
  return params.outChannels / params.inChannels;
}

int64_t vectorElementsOf(const ConvolutionParams& params, int bytes) {
  return bytes / static_cast<int64_t>(scalarSize(params.type));
}

// The multiplier the kernels on vectors of `bytes` are instantiated for at params' multiplier:
// one-element vectors take any (they divide at run time), 16-byte vectors 1 or 2 (at 2 a vector
// reads half as many input channels, each twice), narrower ones 1; 0 where they have none.
int64_t kernelMultiplier(const ConvolutionParams& params, int bytes) {
  const int64_t multiplier = multiplierOf(params);
  if (vectorElementsOf(params, bytes) == 1 || multiplier == 1) return 1;
  return multiplier == 2 && bytes == 16 ? 2 : 0;
}

// Whether vectors of `bytes` fit params: the output channel count is a multiple of the vector,
// a kernel on it takes the multiplier, and a block's staged weights hold one vector's taps.
bool vectorFits(const ConvolutionParams& params, int bytes) {
  const int64_t elements = vectorElementsOf(params, bytes);
  return params.outChannels % elements == 0 && kernelMultiplier(params, bytes) != 0 &&
         taps(params) * elements <= kStagedWeights;
}

// Whether any vector fits params' channels (the buffers' alignment aside).
bool anyVectorFits(const ConvolutionParams& params) {
  return std::any_of(std::begin(kVectorBytes), std::end(kVectorBytes),
                     [&](int bytes) { return vectorFits(params, bytes); });
}

// Kernel widths and horizontal strides the row kernel is instantiated for.
bool rowKernelApplies(const ConvolutionParams& params) {
  const int64_t width = params.kernel.back();
  const int64_t stride = params.stride.back();
  return (width == 3 || width == 5 || width == 7) && (stride == 1 || stride == 2) &&
         params.dilation.back() == 1;
}

// Square 2-D kernels the row kernel takes, at equal strides and without dilation, on a batch
// that fits the grid's z dim: what the tiled kernel is instantiated for.
bool tiledKernelApplies(const ConvolutionParams& params) {
  return params.kernel.size() == 2 && rowKernelApplies(params) &&
         params.kernel[0] == params.kernel[1] && params.stride[0] == params.stride[1] &&
         params.dilation[0] == 1 && params.batch <= 65535;
}

bool isAligned(const void* pointer, int bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % static_cast<uintptr_t>(bytes) == 0;
}

// The widest vector (16, 8 or 4 bytes) that fits params and to which the buffers read and
// written as vectors are aligned: out and the residual to the vector, x to the input channels of
// one (the vector over the kernel's multiplier). 0 when none is (the looping kernel). The weights
// and the bias are read one element at a time.
int vectorBytesFor(const ConvolutionParams& params, const ConvolutionTensors& tensors) {
  for (int bytes : kVectorBytes) {
    if (!vectorFits(params, bytes)) continue;
    const int inputBytes = static_cast<int>(bytes / kernelMultiplier(params, bytes));
    if (isAligned(tensors.x, inputBytes) && isAligned(tensors.out, bytes) &&
        (tensors.residual == nullptr || isAligned(tensors.residual, bytes))) {
      return bytes;
    }
  }
  return 0;
}

[[noreturn]] void invalid(const ConvolutionParams& params, const std::string& what) {
  throw std::invalid_argument("depthwise convolution: " + what + " in " + describe(params));
}

DepthwiseGeometry geometryOf(const ConvolutionParams& params, int outputs, int vectorElements) {
  const bool twoDims = params.kernel.size() == 2;
  DepthwiseGeometry g{};
  g.channels = params.outChannels;
  g.inChannels = params.inChannels;
  g.multiplier = static_cast<int>(multiplierOf(params));
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
  g.activation = params.activation;
  g.inputActivation = params.inputActivation;
  const int64_t vectors = (g.channels + vectorElements - 1) / vectorElements;
  g.vectorsPerBlock = static_cast<int>(std::min<int64_t>(
      {vectors, kMaxVectorsPerBlock, kStagedWeights / (taps(params) * vectorElements)}));
  return g;
}

template <typename T>
struct Operands {
  const T* x;
  const T* weight;
  const T* bias;
  const T* residual;
  T* out;
};

template <typename T>
Operands<T> operandsOf(const ConvolutionTensors& t) {
  return {static_cast<const T*>(t.x), static_cast<const T*>(t.weight),
          static_cast<const T*>(t.bias), static_cast<const T*>(t.residual), static_cast<T*>(t.out)};
}

template <typename T, int V, int M, int kKernelW, int kStrideW>
void launchRowKernel(int outputs, dim3 grid, size_t sharedBytes, const DepthwiseGeometry& g,
                     const Operands<T>& o, cudaStream_t stream) {
  switch (outputs) {
    case 1:
      depthwiseRowKernel<T, V, M, kKernelW, kStrideW, 1>
          <<<grid, kThreads, sharedBytes, stream>>>(g, o.x, o.weight, o.bias, o.residual, o.out);
      break;
    case 2:
      depthwiseRowKernel<T, V, M, kKernelW, kStrideW, 2>
          <<<grid, kThreads, sharedBytes, stream>>>(g, o.x, o.weight, o.bias, o.residual, o.out);
      break;
    default:
      depthwiseRowKernel<T, V, M, kKernelW, kStrideW, 4>
          <<<grid, kThreads, sharedBytes, stream>>>(g, o.x, o.weight, o.bias, o.residual, o.out);
      break;
  }
}

// The grid of the row and looping kernels and their shared memory (the staged weights).
struct RowLaunch {
  DepthwiseGeometry g;
  dim3 grid;
  size_t sharedBytes;
};

RowLaunch rowLaunchOf(const ConvolutionParams& params, int outputs, int vectorElements) {
  RowLaunch launch;
  launch.g = geometryOf(params, outputs, vectorElements);
  const DepthwiseGeometry& g = launch.g;
  const int tilesPerBlock = kThreads / g.vectorsPerBlock;
  const int64_t vectors = (g.channels + vectorElements - 1) / vectorElements;
  launch.grid = dim3(static_cast<unsigned>((g.tiles + tilesPerBlock - 1) / tilesPerBlock),
                     static_cast<unsigned>((vectors + g.vectorsPerBlock - 1) / g.vectorsPerBlock));
  launch.sharedBytes =
      static_cast<size_t>(taps(params) * g.vectorsPerBlock * vectorElements) * sizeof(float);
  return launch;
}

// The looping kernel on vectors of V channels at multiplier M, one output a thread.
template <typename T, int V, int M>
void launchLoop(const ConvolutionParams& params, const Operands<T>& o, cudaStream_t stream) {
  const RowLaunch l = rowLaunchOf(params, 1, V);
  depthwiseGenericKernel<T, V, M>
      <<<l.grid, kThreads, l.sharedBytes, stream>>>(l.g, o.x, o.weight, o.bias, o.residual, o.out);
}

// The row kernel with `outputs` columns a thread on vectors of V channels at multiplier M, or the
// looping kernel on them where the row kernel does not apply.
template <typename T, int V, int M>
void launchRows(const ConvolutionParams& params, int outputs, const Operands<T>& o,
                cudaStream_t stream) {
  if (!rowKernelApplies(params)) {
    launchLoop<T, V, M>(params, o, stream);
    return;
  }
  const RowLaunch l = rowLaunchOf(params, outputs, V);
  const auto launchWidth = [&](auto width) {
    constexpr int kWidth = decltype(width)::value;
    if (l.g.strideW == 1) {
      launchRowKernel<T, V, M, kWidth, 1>(outputs, l.grid, l.sharedBytes, l.g, o, stream);
    } else {
      launchRowKernel<T, V, M, kWidth, 2>(outputs, l.grid, l.sharedBytes, l.g, o, stream);
    }
  };
  if (l.g.kernelW == 3) {
    launchWidth(std::integral_constant<int, 3>{});
  } else if (l.g.kernelW == 5) {
    launchWidth(std::integral_constant<int, 5>{});
  } else {
    launchWidth(std::integral_constant<int, 7>{});
  }
}

template <typename T, int V, int M>
void launchTiles(const ConvolutionParams& params, const Operands<T>& o, cudaStream_t stream) {
  constexpr int kChannels = kTileVectors * V;
  const DepthwiseGeometry g = geometryOf(params, 1, 1);
  const auto launchShape = [&](auto width, auto stride) {
    constexpr int kWidth = decltype(width)::value;
    constexpr int kStride = decltype(stride)::value;
    using Tile = DepthwiseTile<kStride>;
    const int64_t tiles =
        ((g.outH + Tile::kRows - 1) / Tile::kRows) * ((g.outW + Tile::kCols - 1) / Tile::kCols);
    const dim3 grid(static_cast<unsigned>(tiles),
                    static_cast<unsigned>((g.channels + kChannels - 1) / kChannels),
                    static_cast<unsigned>(params.batch));
    depthwiseTileKernel<T, V, M, kWidth, kStride>
        <<<grid, kTileThreads, 0, stream>>>(g, o.x, o.weight, o.bias, o.residual, o.out);
  };
  const auto launchWidth = [&](auto stride) {
    if (g.kernelW == 3) {
      launchShape(std::integral_constant<int, 3>{}, stride);
    } else if (g.kernelW == 5) {
      launchShape(std::integral_constant<int, 5>{}, stride);
    } else {
      launchShape(std::integral_constant<int, 7>{}, stride);
    }
  };
  if (g.strideW == 1) {
    launchWidth(std::integral_constant<int, 1>{});
  } else {
    launchWidth(std::integral_constant<int, 2>{});
  }
}

// `variant` on vectors of V channels at multiplier M.
template <typename T, int V, int M>
void launchVariant(const ConvolutionParams& params, int variant, const Operands<T>& o,
                   cudaStream_t stream) {
  if (variant == kDepthwiseTiles) {
    launchTiles<T, V, M>(params, o, stream);
  } else {
    launchRows<T, V, M>(params, variant, o, stream);
  }
}

// `variant` on vectors of kBytes, at the multiplier kernelMultiplier gives for them.
template <typename T, int kBytes>
void launchVectors(const ConvolutionParams& params, int variant, const Operands<T>& o,
                   cudaStream_t stream) {
  constexpr int V = static_cast<int>(kBytes / sizeof(T));
  if constexpr (V > 1 && kBytes == 16) {
    if (kernelMultiplier(params, kBytes) == 2) {
      launchVariant<T, V, 2>(params, variant, o, stream);
      return;
    }
  }
  launchVariant<T, V, 1>(params, variant, o, stream);
}

// Runs `variant` on the widest vectors of channels the channel count and the buffers allow, else
// one channel a thread on the looping kernel.
template <typename T>
void launchOfType(const ConvolutionParams& params, int variant, const ConvolutionTensors& tensors,
                  cudaStream_t stream) {
  const Operands<T> o = operandsOf<T>(tensors);
  switch (vectorBytesFor(params, tensors)) {
    case 16:
      launchVectors<T, 16>(params, variant, o, stream);
      break;
    case 8:
      launchVectors<T, 8>(params, variant, o, stream);
      break;
    case 4:
      launchVectors<T, 4>(params, variant, o, stream);
      break;
    default:
      launchLoop<T, 1, 1>(params, o, stream);
      break;
  }
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool depthwiseConvolutionApplies(const ConvolutionParams& params) {
  const size_t rank = params.kernel.size();
  return !params.transposed && params.layout == TensorLayout::kNHWC && (rank == 1 || rank == 2) &&
         params.inChannels > 0 && params.groups == params.inChannels &&
         params.outChannels >= params.inChannels && params.outChannels % params.inChannels == 0 &&
         isFloatType(params.type) && taps(params) <= kStagedWeights &&
         params.inSpatial.size() == rank && params.outSpatial.size() == rank &&
         params.stride.size() == rank && params.prePadding.size() == rank &&
         params.dilation.size() == rank;
}

std::vector<int> depthwiseConvolutionVariants(const ConvolutionParams& params) {
  if (!depthwiseConvolutionApplies(params)) return {};
  if (!anyVectorFits(params) || !rowKernelApplies(params)) return {1};
  if (tiledKernelApplies(params)) return {1, 2, 4, kDepthwiseTiles};
  return {1, 2, 4};
}

std::string describeDepthwiseVariant(int variant) {
  if (variant == kDepthwiseTiles) return "Kiln depthwise, shared-memory tiles";
  return "Kiln depthwise, " + std::to_string(variant) + " column" + (variant == 1 ? "" : "s") +
         " a thread";
}

void depthwiseConvolution(const ConvolutionParams& params, int variant,
                          const ConvolutionTensors& tensors, cudaStream_t stream) {
  if (!depthwiseConvolutionApplies(params)) {
    invalid(params,
            "Kiln's depthwise kernels need a forward 1-D or 2-D NHWC convolution with "
            "groups == inChannels and outChannels a multiple of inChannels");
  }
  const std::vector<int> variants = depthwiseConvolutionVariants(params);
  if (std::find(variants.begin(), variants.end(), variant) == variants.end()) {
    invalid(params, describeDepthwiseVariant(variant) +
                        " does not apply; depthwiseConvolutionVariants lists those that do");
  }
  if (params.batch == 0 || shapeVolume(params.outSpatial) == 0) return;
  if (tensors.x == nullptr || tensors.weight == nullptr || tensors.out == nullptr) {
    invalid(params, "x, weight and out must be device pointers, got a null one");
  }
  switch (params.type) {
    case ScalarType::kFloat32:
      launchOfType<float>(params, variant, tensors, stream);
      break;
    case ScalarType::kFloat16:
      launchOfType<__half>(params, variant, tensors, stream);
      break;
    default:
      launchOfType<__nv_bfloat16>(params, variant, tensors, stream);
      break;
  }
}

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/reduce_softmax.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/reduce_device.cuh"

namespace kiln::cuda_kernels::reduce_detail {
namespace {

constexpr int kMaxReduceDims = 8;
// About eight resident blocks of 256 threads on each of an H100's 132 SMs: below this many
// blocks a reduction is split along the reduced axis.
constexpr int64_t kTargetBlocks = 1024;
// A split never gives a block fewer elements than this per row or column.
constexpr int64_t kMinRowElementsPerSplit = 8192;
constexpr int64_t kMinColumnRowsPerThread = 16;
constexpr int kBlockThreads = 256;
constexpr int kRowBlockThreads = 512;
constexpr int64_t kMaxGridBlocks = 65536;  // grid-stride loops cover the rest

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t nextPowerOfTwo(int64_t value) {
  int64_t power = 1;
  while (power < value) power *= 2;
  return power;
}

unsigned gridFor(int64_t items, int64_t itemsPerBlock) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceilDiv(items, itemsPerBlock), 1, kMaxGridBlocks));
}

// ---- reduction plan ---------------------------------------------------------------------------

enum class ReduceKind : uint8_t { kNothing, kFill, kCopy, kRows, kColumns, kGeneric };

// How a reduction runs. kRows and kColumns view the input as (outer, extent, inner) with extent
// the one reduced group (inner == 1 for rows); kGeneric keeps the merged dims.
struct ReducePlan {
  ReduceKind kind = ReduceKind::kNothing;
  int64_t inVolume = 0;
  int64_t outVolume = 0;
  int64_t reducedCount = 0;
  int64_t outer = 1;
  int64_t extent = 1;
  int64_t inner = 1;
  int rowGroup = 32;   // kRows: threads that reduce one row
  int64_t splits = 1;  // blocks along extent; > 1 accumulates partial results in the workspace
  int64_t chunk = 0;   // extent elements per split
  Shape dims;
  std::vector<bool> reduced;
};

bool isFloatType(ScalarType type) {
  return type == ScalarType::kFloat32 || type == ScalarType::kFloat16 ||
         type == ScalarType::kBFloat16;
}

size_t accumulatorSize(ScalarType type) { return isFloatType(type) ? sizeof(float) : sizeof(int64_t); }

ReducePlan planReduce(const ReduceParams& params, bool allowSplit) {
  if (params.reduced.size() != params.inShape.size()) {
    throw std::invalid_argument("reduce: one flag per input dim is needed (got " +
                                std::to_string(params.reduced.size()) + " flags for rank " +
                                std::to_string(params.inShape.size()) + ")");
  }
  ReducePlan plan;
  plan.outVolume = 1;
  plan.reducedCount = 1;
  for (size_t i = 0; i < params.inShape.size(); ++i) {
    if (params.inShape[i] < 0) {
      throw std::invalid_argument("reduce: input dims must be known and not negative");
    }
    (params.reduced[i] ? plan.reducedCount : plan.outVolume) *= params.inShape[i];
  }
  plan.inVolume = plan.outVolume * plan.reducedCount;
  if (plan.outVolume == 0) return plan;
  if (plan.reducedCount == 0) {
    // Over nothing, sum and prod give their identity and a float mean NaN, as in torch; max,
    // min and an integer mean have no value to give.
    const bool noIdentity = params.function == ReduceFunction::kMax ||
                            params.function == ReduceFunction::kMin ||
                            (params.function == ReduceFunction::kMean && !isFloatType(params.type));
    if (noIdentity) {
      throw std::invalid_argument("this reduction of an empty tensor has no defined value");
    }
    plan.kind = ReduceKind::kFill;
    return plan;
  }
  // Merge neighbours that are both reduced or both kept; size-1 dims do not matter.
  for (size_t i = 0; i < params.inShape.size(); ++i) {
    const int64_t dim = params.inShape[i];
    if (dim == 1) continue;
    if (!plan.dims.empty() && plan.reduced.back() == params.reduced[i]) {
      plan.dims.back() *= dim;
    } else {
      plan.dims.push_back(dim);
      plan.reduced.push_back(params.reduced[i]);
    }
  }
  const int64_t reducedGroups = std::count(plan.reduced.begin(), plan.reduced.end(), true);
  if (reducedGroups == 0) {
    plan.kind = ReduceKind::kCopy;  // every reduced dim has size 1
    return plan;
  }
  if (reducedGroups > 1) {
    if (plan.dims.size() > static_cast<size_t>(kMaxReduceDims)) {
      throw std::invalid_argument("reduce: the axes form " + std::to_string(plan.dims.size()) +
                                  " alternating groups of reduced and kept dims; at most " +
                                  std::to_string(kMaxReduceDims) + " are supported");
    }
    plan.kind = ReduceKind::kGeneric;
    return plan;
  }
  // One reduced group: (outer, extent, inner).
  const size_t at = std::find(plan.reduced.begin(), plan.reduced.end(), true) - plan.reduced.begin();
  plan.outer = at > 0 ? plan.dims[0] : 1;
  plan.extent = plan.dims[at];
  plan.inner = at + 1 < plan.dims.size() ? plan.dims[at + 1] : 1;
  const int64_t vectorWidth = static_cast<int64_t>(16 / scalarSize(params.type));
  if (plan.inner == 1) {
    plan.kind = ReduceKind::kRows;
    plan.rowGroup = plan.extent <= 64 ? 8 : plan.extent <= 2048 ? 32 : kRowBlockThreads;
    if (allowSplit && plan.rowGroup == kRowBlockThreads && plan.outer < kTargetBlocks) {
      plan.splits = std::min(ceilDiv(kTargetBlocks, plan.outer),
                             ceilDiv(plan.extent, kMinRowElementsPerSplit));
    }
    // Chunks of whole vectors keep every chunk's alignment that of the row.
    plan.chunk = plan.splits > 1
                     ? ceilDiv(ceilDiv(plan.extent, plan.splits), vectorWidth) * vectorWidth
                     : plan.extent;
  } else {
    plan.kind = ReduceKind::kColumns;
    const int64_t vector = plan.inner % vectorWidth == 0 ? vectorWidth : 1;
    const int64_t vectorColumns = ceilDiv(plan.inner, vector);
    const int64_t blockX = std::min<int64_t>(32, nextPowerOfTwo(vectorColumns));
    const int64_t blockY = kBlockThreads / blockX;
    const int64_t blocks = plan.outer * ceilDiv(vectorColumns, blockX);
    if (allowSplit && blocks < kTargetBlocks) {
      plan.splits = std::min(ceilDiv(kTargetBlocks, blocks),
                             ceilDiv(plan.extent, blockY * kMinColumnRowsPerThread));
    }
    plan.chunk = ceilDiv(plan.extent, plan.splits);
  }
  plan.splits = ceilDiv(plan.extent, plan.chunk);  // no empty split
  return plan;
}

size_t workspaceBytes(const ReducePlan& plan, ScalarType type) {
  if (plan.splits <= 1) return 0;
  return static_cast<size_t>(plan.splits * plan.outVolume) * accumulatorSize(type);
}

// ---- kernels ----------------------------------------------------------------------------------

template <typename T, typename Op>
__global__ void fillEmptyReductionKernel(T* out, int64_t count, bool mean) {
  using A = Accumulator<T>;
  const T value = finishReduction<T>(Op::template identity<A>(), mean, 0);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = value;
  }
}

// Rows of `extent` contiguous elements, kGroup threads a row (a block of kGroup when kGroup >
// 32). blockIdx.y picks the chunk of each row; with partials, a chunk's result goes to
// partials[blockIdx.y * rows + row] for finishSplitReductionKernel.
template <typename T, typename Op, int kGroup>
__global__ void __launch_bounds__(kGroup > 32 ? kGroup : kBlockThreads)
    reduceRowsKernel(const T* in, int64_t rows, int64_t extent, int64_t chunk, bool mean, T* out,
                     Accumulator<T>* partials) {
  using A = Accumulator<T>;
  constexpr int kRowsPerBlock = kGroup > 32 ? 1 : kBlockThreads / kGroup;
  __shared__ A shared[kGroup > 32 ? kGroup / 32 : 1];
  const int lane = threadIdx.x % kGroup;
  const int64_t begin = blockIdx.y * chunk;
  const int64_t count = extent - begin < chunk ? extent - begin : chunk;
  // The loop bound is the same for the whole block, so every thread takes part in the
  // group reduction.
  for (int64_t first = blockIdx.x * static_cast<int64_t>(kRowsPerBlock); first < rows;
       first += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t row = first + threadIdx.x / kGroup;
    A acc = Op::template identity<A>();
    if (row < rows) {
      visitRange<kGroup>(in + row * extent + begin, count, lane,
                         [&](int64_t, T value) { acc = Op::combine(acc, toAccumulator(value)); });
    }
    acc = groupReduce<kGroup>(acc, [](A a, A b) { return Op::combine(a, b); }, shared);
    if (row < rows && lane == 0) {
      if (partials != nullptr) {
        partials[blockIdx.y * rows + row] = acc;
      } else {
        out[row] = finishReduction<T>(acc, mean, extent);
      }
    }
  }
}

// (outer, extent, inner) reduced over extent: threadIdx.x walks kVec-wide column vectors
// (coalesced), threadIdx.y walks rows of the block's chunk, shared memory folds the y threads.
// blockIdx.x = outer index * tiles + column tile; blockIdx.y = the chunk (see reduceRowsKernel
// for partials).
template <typename T, typename Op, int kVec>
__global__ void __launch_bounds__(kBlockThreads)
    reduceColumnsKernel(const T* in, int64_t extent, int64_t inner, int64_t tiles, int64_t chunk,
                        bool mean, int64_t outVolume, T* out, Accumulator<T>* partials) {
  using A = Accumulator<T>;
  extern __shared__ __align__(16) unsigned char sharedBytes[];
  A* shared = reinterpret_cast<A*>(sharedBytes);
  const int64_t outerIndex = blockIdx.x / tiles;
  const int64_t tile = blockIdx.x - outerIndex * tiles;
  const int64_t column = (tile * blockDim.x + threadIdx.x) * kVec;
  const bool valid = column < inner;
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = extent < begin + chunk ? extent : begin + chunk;
  A acc[kVec];
#pragma unroll
  for (int j = 0; j < kVec; ++j) acc[j] = Op::template identity<A>();
  if (valid) {
    const T* base = in + outerIndex * extent * inner + column;
#pragma unroll 4
    for (int64_t r = begin + threadIdx.y; r < end; r += blockDim.y) {
      T values[kVec];
      loadVector(base + r * inner, values);
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc[j] = Op::combine(acc[j], toAccumulator(values[j]));
    }
  }
  A* mine = shared + (threadIdx.y * blockDim.x + threadIdx.x) * kVec;
#pragma unroll
  for (int j = 0; j < kVec; ++j) mine[j] = acc[j];
  __syncthreads();
  for (unsigned half = blockDim.y / 2; half > 0; half /= 2) {
    if (threadIdx.y < half) {
      const A* other = mine + half * blockDim.x * kVec;
#pragma unroll
      for (int j = 0; j < kVec; ++j) mine[j] = Op::combine(mine[j], other[j]);
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && valid) {
    const int64_t index = outerIndex * inner + column;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if (partials != nullptr) {
        partials[blockIdx.y * outVolume + index + j] = mine[j];
      } else {
        out[index + j] = finishReduction<T>(mine[j], mean, extent);
      }
    }
  }
}

// Combines the splits' partial results, partials[split * outVolume + o].
template <typename T, typename Op>
__global__ void finishSplitReductionKernel(const Accumulator<T>* partials, int64_t splits,
                                           int64_t outVolume, bool mean, int64_t count, T* out) {
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < outVolume;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Accumulator<T> acc = partials[o];
    for (int64_t s = 1; s < splits; ++s) acc = Op::combine(acc, partials[s * outVolume + o]);
    out[o] = finishReduction<T>(acc, mean, count);
  }
}

// Any pattern of reduced axes: kept dims give each output's base offset, an odometer walks the
// reduced dims (innermost last).
template <typename Index>
struct GenericReduceLayout {
  int keptRank = 0;
  int reducedRank = 0;
  Divisor<Index> keptSize[kMaxReduceDims];
  Index keptStride[kMaxReduceDims] = {};
  Index reducedSize[kMaxReduceDims] = {};
  Index reducedStride[kMaxReduceDims] = {};
  Index reducedCount = 0;
  // Reduced elements outside the innermost reduced dim (the warp kernel's odometer).
  Index outerReducedCount = 0;
};

template <typename Index>
__device__ __forceinline__ Index keptOffset(const GenericReduceLayout<Index>& layout, Index o) {
  Index offset = 0;
  for (int d = layout.keptRank - 1; d >= 0; --d) {
    Index quotient;
    Index remainder;
    layout.keptSize[d].divmod(o, quotient, remainder);
    offset += remainder * layout.keptStride[d];
    o = quotient;
  }
  return offset;
}

// Advances the odometer over reduced dims [0, rank) by one step.
template <typename Index>
__device__ __forceinline__ void advanceReduced(const GenericReduceLayout<Index>& layout, int rank,
                                               Index* counters, Index& offset) {
  for (int d = rank - 1; d >= 0; --d) {
    offset += layout.reducedStride[d];
    if (++counters[d] < layout.reducedSize[d]) return;
    offset -= layout.reducedStride[d] * layout.reducedSize[d];
    counters[d] = 0;
  }
}

// The innermost dim is kept: one thread an output, neighbours read neighbouring elements.
template <typename T, typename Op, typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    reduceGenericThreadKernel(const T* in, GenericReduceLayout<Index> layout, Index outVolume,
                              bool mean, T* out) {
  using A = Accumulator<T>;
  for (Index o = blockIdx.x * blockDim.x + threadIdx.x; o < outVolume;
       o += gridDim.x * blockDim.x) {
    const T* base = in + keptOffset(layout, o);
    Index counters[kMaxReduceDims] = {};
    Index offset = 0;
    A acc = Op::template identity<A>();
    for (Index i = 0; i < layout.reducedCount; ++i) {
      acc = Op::combine(acc, toAccumulator(base[offset]));
      advanceReduced(layout, layout.reducedRank, counters, offset);
    }
    out[o] = finishReduction<T>(acc, mean, static_cast<int64_t>(layout.reducedCount));
  }
}

// The innermost dim is reduced: one warp an output, lanes read the innermost reduced dim.
template <typename T, typename Op, typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    reduceGenericWarpKernel(const T* in, GenericReduceLayout<Index> layout, Index outVolume,
                            bool mean, T* out) {
  using A = Accumulator<T>;
  const int lane = threadIdx.x % 32;
  const int outerRank = layout.reducedRank - 1;
  const Index innerSize = layout.reducedSize[outerRank];
  const Index warps = gridDim.x * (blockDim.x / 32);
  for (Index o = (blockIdx.x * blockDim.x + threadIdx.x) / 32; o < outVolume; o += warps) {
    const T* base = in + keptOffset(layout, o);
    Index counters[kMaxReduceDims] = {};
    Index offset = 0;
    A acc = Op::template identity<A>();
    for (Index i = 0; i < layout.outerReducedCount; ++i) {
      for (Index j = lane; j < innerSize; j += 32) {
        acc = Op::combine(acc, toAccumulator(base[offset + j]));
      }
      advanceReduced(layout, outerRank, counters, offset);
    }
    acc = groupReduce<32>(acc, [](A a, A b) { return Op::combine(a, b); },
                          static_cast<A*>(nullptr));
    if (lane == 0) out[o] = finishReduction<T>(acc, mean, static_cast<int64_t>(layout.reducedCount));
  }
}

// ---- launches ---------------------------------------------------------------------------------

template <typename Fn>
void visitReduceOp(ReduceFunction function, Fn&& fn) {
  switch (function) {
    case ReduceFunction::kSum:
    case ReduceFunction::kMean:
      return fn(SumOp{});
    case ReduceFunction::kProd:
      return fn(ProdOp{});
    case ReduceFunction::kMax:
      return fn(MaxOp{});
    case ReduceFunction::kMin:
      return fn(MinOp{});
  }
  throw std::invalid_argument("unknown reduce function " +
                              std::to_string(static_cast<int>(function)));
}

template <typename T, typename Op>
void launchRows(const ReducePlan& plan, const T* in, T* out, Accumulator<T>* partials, bool mean,
                cudaStream_t stream) {
  const dim3 grid(gridFor(plan.outer, plan.rowGroup > 32 ? 1 : kBlockThreads / plan.rowGroup),
                  static_cast<unsigned>(plan.splits));
  switch (plan.rowGroup) {
    case 8:
      reduceRowsKernel<T, Op, 8><<<grid, kBlockThreads, 0, stream>>>(
          in, plan.outer, plan.extent, plan.chunk, mean, out, partials);
      break;
    case 32:
      reduceRowsKernel<T, Op, 32><<<grid, kBlockThreads, 0, stream>>>(
          in, plan.outer, plan.extent, plan.chunk, mean, out, partials);
      break;
    default:
      reduceRowsKernel<T, Op, kRowBlockThreads><<<grid, kRowBlockThreads, 0, stream>>>(
          in, plan.outer, plan.extent, plan.chunk, mean, out, partials);
      break;
  }
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T, typename Op, int kVec>
void launchColumnsWith(const ReducePlan& plan, const T* in, T* out, Accumulator<T>* partials,
                       bool mean, cudaStream_t stream) {
  const int64_t vectorColumns = ceilDiv(plan.inner, kVec);
  const int64_t blockX = std::min<int64_t>(32, nextPowerOfTwo(vectorColumns));
  const int64_t blockY = kBlockThreads / blockX;
  const int64_t tiles = ceilDiv(vectorColumns, blockX);
  const int64_t blocks = plan.outer * tiles;
  if (blocks > 0x7fffffff) {
    throw std::invalid_argument("reduce: " + std::to_string(blocks) +
                                " column tiles are more than one launch can take");
  }
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(plan.splits));
  const dim3 block(static_cast<unsigned>(blockX), static_cast<unsigned>(blockY));
  const size_t sharedBytes = kBlockThreads * kVec * sizeof(Accumulator<T>);
  reduceColumnsKernel<T, Op, kVec><<<grid, block, sharedBytes, stream>>>(
      in, plan.extent, plan.inner, tiles, plan.chunk, mean, plan.outVolume, out, partials);
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T, typename Op>
void launchColumns(const ReducePlan& plan, const T* in, T* out, Accumulator<T>* partials,
                   bool mean, cudaStream_t stream) {
  constexpr int kWidth = kVectorWidth<T>;
  if (plan.inner % kWidth == 0 && isAligned16(in)) {
    launchColumnsWith<T, Op, kWidth>(plan, in, out, partials, mean, stream);
  } else {
    launchColumnsWith<T, Op, 1>(plan, in, out, partials, mean, stream);
  }
}

template <typename Index>
GenericReduceLayout<Index> makeGenericLayout(const ReducePlan& plan) {
  GenericReduceLayout<Index> layout;
  int64_t stride = 1;
  // Walk from the innermost dim so that strides come out as we go; fill back to front.
  int kept = 0;
  int reduced = 0;
  for (size_t i = plan.dims.size(); i-- > 0;) (plan.reduced[i] ? reduced : kept) += 1;
  layout.keptRank = kept;
  layout.reducedRank = reduced;
  for (size_t i = plan.dims.size(); i-- > 0;) {
    if (plan.reduced[i]) {
      --reduced;
      layout.reducedSize[reduced] = static_cast<Index>(plan.dims[i]);
      layout.reducedStride[reduced] = static_cast<Index>(stride);
    } else {
      --kept;
      layout.keptSize[kept] = Divisor<Index>(plan.dims[i]);
      layout.keptStride[kept] = static_cast<Index>(stride);
    }
    stride *= plan.dims[i];
  }
  layout.reducedCount = static_cast<Index>(plan.reducedCount);
  layout.outerReducedCount =
      static_cast<Index>(plan.reducedCount / plan.dims.back());  // used when dims.back() is reduced
  return layout;
}

template <typename T, typename Op, typename Index>
void launchGenericWith(const ReducePlan& plan, const T* in, T* out, bool mean,
                       cudaStream_t stream) {
  const GenericReduceLayout<Index> layout = makeGenericLayout<Index>(plan);
  const Index outVolume = static_cast<Index>(plan.outVolume);
  if (plan.reduced.back()) {
    reduceGenericWarpKernel<T, Op, Index>
        <<<gridFor(plan.outVolume, kBlockThreads / 32), kBlockThreads, 0, stream>>>(
            in, layout, outVolume, mean, out);
  } else {
    reduceGenericThreadKernel<T, Op, Index>
        <<<gridFor(plan.outVolume, kBlockThreads), kBlockThreads, 0, stream>>>(
            in, layout, outVolume, mean, out);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T, typename Op>
void launchTyped(const ReducePlan& plan, bool mean, const T* in, T* out, void* workspace,
                 cudaStream_t stream) {
  using A = Accumulator<T>;
  switch (plan.kind) {
    case ReduceKind::kFill:
      fillEmptyReductionKernel<T, Op>
          <<<gridFor(plan.outVolume, kBlockThreads), kBlockThreads, 0, stream>>>(
              out, plan.outVolume, mean);
      KILN_CUDA_CHECK_LAUNCH();
      return;
    case ReduceKind::kGeneric:
      if (fitsIndex32(plan.inVolume)) {
        launchGenericWith<T, Op, uint32_t>(plan, in, out, mean, stream);
      } else {
        launchGenericWith<T, Op, uint64_t>(plan, in, out, mean, stream);
      }
      return;
    case ReduceKind::kRows:
    case ReduceKind::kColumns:
      break;
    default:
      throw std::logic_error("reduce: unexpected plan kind");
  }
  A* partials = nullptr;
  if (plan.splits > 1) {
    if (workspace == nullptr) {
      throw std::invalid_argument("reduce: this shape needs reduceWorkspaceSize() bytes of "
                                  "workspace; pass a device buffer of that size");
    }
    partials = static_cast<A*>(workspace);
  }
  if (plan.kind == ReduceKind::kRows) {
    launchRows<T, Op>(plan, in, out, partials, mean, stream);
  } else {
    launchColumns<T, Op>(plan, in, out, partials, mean, stream);
  }
  if (partials != nullptr) {
    finishSplitReductionKernel<T, Op>
        <<<gridFor(plan.outVolume, kBlockThreads), kBlockThreads, 0, stream>>>(
            partials, plan.splits, plan.outVolume, mean, plan.reducedCount, out);
    KILN_CUDA_CHECK_LAUNCH();
  }
}

void launchReduce(const ReducePlan& plan, const ReduceParams& params, const void* input,
                  void* output, void* workspace, cudaStream_t stream) {
  if (plan.kind == ReduceKind::kNothing) return;
  if (plan.kind == ReduceKind::kCopy) {
    if (input == output) return;  // in place: already the result
    KILN_CUDA_CHECK(cudaMemcpyAsync(output, input,
                                    static_cast<size_t>(plan.inVolume) * scalarSize(params.type),
                                    cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const bool mean = params.function == ReduceFunction::kMean;
  visitStorageType(params.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    visitReduceOp(params.function, [&](auto op) {
      launchTyped<T, decltype(op)>(plan, mean, static_cast<const T*>(input),
                                   static_cast<T*>(output), workspace, stream);
    });
  });
}

// ---- softmax ----------------------------------------------------------------------------------

constexpr int kSoftmaxWarpMaxItems = 32;  // floats a lane holds in the warp-per-row kernels

// Running maximum and sum of exp(x - max) of a part of a row. While max is -inf the sum is 0 or,
// after a NaN, NaN; so scaling it by 0 keeps the NaN and drops nothing else.
struct SoftmaxStats {
  float max;
  float sum;
};

__device__ __forceinline__ SoftmaxStats shuffleXor(SoftmaxStats stats, int offset) {
  return {__shfl_xor_sync(0xffffffffu, stats.max, offset),
          __shfl_xor_sync(0xffffffffu, stats.sum, offset)};
}

__device__ __forceinline__ float sumScaledTo(const SoftmaxStats& stats, float maximum) {
  return stats.max == -INFINITY ? stats.sum * 0.0f : stats.sum * expf(stats.max - maximum);
}

__device__ __forceinline__ SoftmaxStats combineStats(SoftmaxStats a, SoftmaxStats b) {
  const float maximum = fmaxf(a.max, b.max);
  return {maximum, sumScaledTo(a, maximum) + sumScaledTo(b, maximum)};
}

// Adds x the way the two-pass reference would see it: a NaN poisons the sum, a +inf maximum
// gives exp(inf - inf) = NaN, -inf adds nothing.
__device__ __forceinline__ void addToStats(SoftmaxStats& stats, float x) {
  if (x > stats.max) {
    stats.sum = sumScaledTo(stats, x) + (isinf(x) ? NAN : 1.0f);
    stats.max = x;
  } else if (x != -INFINITY) {
    stats.sum += expf(x - stats.max);
  }
}

// Rows of up to 32 * kVectors * kVec elements, one warp a row, held in registers: the exact two
// passes of the reference (max, then sum of exp) without reading memory twice.
template <typename T, int kVec, int kVectors>
__global__ void __launch_bounds__(kBlockThreads)
    softmaxRowsWarpKernel(const T* in, T* out, int64_t rows, int cols, bool log) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kBlockThreads / 32) + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x % 32;
  const T* x = in + row * cols;
  T* y = out + row * cols;
  float values[kVectors][kVec];
  float maximum = -INFINITY;
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    const int start = (lane + k * 32) * kVec;
    if (start < cols) {
      T raw[kVec];
      loadVector(x + start, raw);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        values[k][j] = toFloat(raw[j]);
        maximum = fmaxf(maximum, values[k][j]);
      }
    }
  }
  auto add = [](float a, float b) { return a + b; };
  maximum = groupReduce<32>(maximum, [](float a, float b) { return fmaxf(a, b); },
                            static_cast<float*>(nullptr));
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    if ((lane + k * 32) * kVec < cols) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        values[k][j] -= maximum;
        const float e = expf(values[k][j]);
        sum += e;
        if (!log) values[k][j] = e;
      }
    }
  }
  sum = groupReduce<32>(sum, add, static_cast<float*>(nullptr));
  const float logSum = logf(sum);
  const float inverseSum = 1.0f / sum;
#pragma unroll
  for (int k = 0; k < kVectors; ++k) {
    const int start = (lane + k * 32) * kVec;
    if (start < cols) {
      T raw[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        raw[j] = fromAccumulator<T>(log ? values[k][j] - logSum : values[k][j] * inverseSum);
      }
      storeVector(y + start, raw);
    }
  }
}

// Long rows, one block a row: an online (max, sum) pass, then a pass that writes.
template <typename T>
__global__ void __launch_bounds__(kRowBlockThreads)
    softmaxRowsBlockKernel(const T* in, T* out, int64_t cols, bool log) {
  __shared__ SoftmaxStats shared[kRowBlockThreads / 32];
  const T* x = in + blockIdx.x * cols;
  T* y = out + blockIdx.x * cols;
  SoftmaxStats stats{-INFINITY, 0.0f};
  visitRange<kRowBlockThreads>(x, cols, threadIdx.x,
                               [&](int64_t, T value) { addToStats(stats, toFloat(value)); });
  stats = groupReduce<kRowBlockThreads>(stats, combineStats, shared);
  const float maximum = stats.max;
  const float logSum = logf(stats.sum);
  const float inverseSum = 1.0f / stats.sum;
  transformRange<kRowBlockThreads>(x, y, cols, threadIdx.x, [&](int64_t, T value) {
    const float shifted = toFloat(value) - maximum;
    return fromAccumulator<T>(log ? shifted - logSum : expf(shifted) * inverseSum);
  });
}

// softmax over a non-innermost axis of (outer, axis, inner): one thread a column, neighbours
// read neighbouring elements.
template <typename T, typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    softmaxColumnsKernel(const T* in, T* out, Index columns, Divisor<Index> innerDivisor,
                         Index axisSize, Index inner, bool log) {
  for (Index c = blockIdx.x * blockDim.x + threadIdx.x; c < columns;
       c += gridDim.x * blockDim.x) {
    Index outerIndex;
    Index innerIndex;
    innerDivisor.divmod(c, outerIndex, innerIndex);
    const Index base = outerIndex * axisSize * inner + innerIndex;
    SoftmaxStats stats{-INFINITY, 0.0f};
    for (Index a = 0; a < axisSize; ++a) addToStats(stats, toFloat(in[base + a * inner]));
    const float logSum = logf(stats.sum);
    const float inverseSum = 1.0f / stats.sum;
    for (Index a = 0; a < axisSize; ++a) {
      const float shifted = toFloat(in[base + a * inner]) - stats.max;
      out[base + a * inner] =
          fromAccumulator<T>(log ? shifted - logSum : expf(shifted) * inverseSum);
    }
  }
}

template <typename T, int kVec, int kVectors>
bool tryLaunchSoftmaxWarp(int64_t vectorsPerLane, const T* in, T* out, int64_t rows, int64_t cols,
                          bool log, cudaStream_t stream) {
  if constexpr (kVectors * kVec > kSoftmaxWarpMaxItems) {
    return false;
  } else {
    if (vectorsPerLane > kVectors) {
      return tryLaunchSoftmaxWarp<T, kVec, kVectors * 2>(vectorsPerLane, in, out, rows, cols, log,
                                                         stream);
    }
    softmaxRowsWarpKernel<T, kVec, kVectors>
        <<<static_cast<unsigned>(ceilDiv(rows, kBlockThreads / 32)), kBlockThreads, 0, stream>>>(
            in, out, rows, static_cast<int>(cols), log);
    KILN_CUDA_CHECK_LAUNCH();
    return true;
  }
}

template <typename T>
void launchSoftmax(const SoftmaxParams& params, const T* in, T* out, cudaStream_t stream) {
  int64_t outer = 1;
  int64_t inner = 1;
  const int64_t rank = static_cast<int64_t>(params.shape.size());
  for (int64_t i = 0; i < params.axis; ++i) outer *= params.shape[i];
  for (int64_t i = params.axis + 1; i < rank; ++i) inner *= params.shape[i];
  const int64_t axisSize = params.shape[params.axis];
  if (outer * axisSize * inner == 0) return;
  if (inner == 1) {
    constexpr int kWidth = kVectorWidth<T>;
    const bool vectorized = axisSize % kWidth == 0 && isAligned16(in) && isAligned16(out);
    const int64_t perLane = ceilDiv(ceilDiv(axisSize, vectorized ? kWidth : 1), 32);
    const bool launched =
        vectorized ? tryLaunchSoftmaxWarp<T, kWidth, 1>(perLane, in, out, outer, axisSize,
                                                        params.log, stream)
                   : tryLaunchSoftmaxWarp<T, 1, 1>(perLane, in, out, outer, axisSize, params.log,
                                                   stream);
    if (launched) return;
    if (outer > 0x7fffffff) {
      throw std::invalid_argument("softmax: more rows than one launch can take");
    }
    softmaxRowsBlockKernel<T><<<static_cast<unsigned>(outer), kRowBlockThreads, 0, stream>>>(
        in, out, axisSize, params.log);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t columns = outer * inner;
  const unsigned grid = gridFor(columns, kBlockThreads);
  if (fitsIndex32(outer * axisSize * inner)) {
    softmaxColumnsKernel<T, uint32_t><<<grid, kBlockThreads, 0, stream>>>(
        in, out, static_cast<uint32_t>(columns), Divisor<uint32_t>(inner),
        static_cast<uint32_t>(axisSize), static_cast<uint32_t>(inner), params.log);
  } else {
    softmaxColumnsKernel<T, uint64_t><<<grid, kBlockThreads, 0, stream>>>(
        in, out, static_cast<uint64_t>(columns), Divisor<uint64_t>(inner),
        static_cast<uint64_t>(axisSize), static_cast<uint64_t>(inner), params.log);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

}  // namespace kiln::cuda_kernels::reduce_detail

namespace kiln::cuda_kernels {

size_t reduceWorkspaceSize(const ReduceParams& params) {
  return reduce_detail::workspaceBytes(reduce_detail::planReduce(params, /*allowSplit=*/true),
                                       params.type);
}

size_t reduceWorkspaceBound(const ReduceParams& params) {
  using namespace reduce_detail;
  const ReducePlan plan = planReduce(params, /*allowSplit=*/true);
  // A split plan keeps splits * outputs accumulators, splits <= kTargetBlocks / blocks + 1, and
  // a plan of o outputs launches at least o / 256 blocks (32 columns of at most 8 elements a
  // block): so at most 256 * kTargetBlocks + o accumulators, for any o up to these params'.
  const int64_t bound = 256 * kTargetBlocks + plan.outVolume;
  return static_cast<size_t>(bound) * accumulatorSize(params.type);
}

void reduce(const ReduceParams& params, const void* input, void* output, void* workspace,
            cudaStream_t stream) {
  reduce_detail::launchReduce(reduce_detail::planReduce(params, /*allowSplit=*/true), params,
                              input, output, workspace, stream);
}

void softmax(const SoftmaxParams& params, const void* input, void* output, cudaStream_t stream) {
  const int64_t rank = static_cast<int64_t>(params.shape.size());
  if (params.axis < 0 || params.axis >= rank) {
    throw std::invalid_argument("softmax: axis " + std::to_string(params.axis) +
                                " is out of range for rank " + std::to_string(rank));
  }
  reduce_detail::visitFloatType(params.type, "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_detail::launchSoftmax<T>(params, static_cast<const T*>(input), static_cast<T*>(output),
                                    stream);
  });
}

}  // namespace kiln::cuda_kernels

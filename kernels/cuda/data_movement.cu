#include "kernels/cuda/data_movement.h"

#include <type_traits>

#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace kiln::cuda_kernels {
namespace {

// Dims a strided copy keeps after merging; more are refused with a clear error.
constexpr int kMaxRank = 8;
constexpr int kThreads = 256;
// Grid-stride loops cover the rest; this is several waves on a 132-SM H100.
constexpr int64_t kMaxBlocks = 8192;
constexpr int kTile = 32;
constexpr int kTileRows = 8;  // threads per tile column: each thread moves kTile / kTileRows
// Tiling pays off when both swapped dims fill most of a 32-wide tile.
constexpr int64_t kMinTiledDim = 16;

// Division by a run-time constant through a multiply-high (Granlund & Montgomery, as CUTLASS's
// FastDivmod): exact for dividends below 2^31, which the 32-bit index path guarantees.
struct FastDivider {
  uint32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDivider() = default;
  explicit FastDivider(int64_t value) : divisor(static_cast<uint32_t>(value)) {
    if (divisor <= 1) return;
    uint32_t ceilLog2 = 31 - static_cast<uint32_t>(__builtin_clz(divisor));
    if ((divisor & (divisor - 1)) != 0) ++ceilLog2;
    const uint32_t power = 31 + ceilLog2;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << power) + divisor - 1) / divisor);
    shift = power - 32;
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return divisor == 1 ? n : (__umulhi(n, multiplier) >> shift);
  }
};

// Tensors of 2^31 units or more take plain 64-bit division; they are rare enough.
struct WideDivider {
  uint64_t divisor = 1;

  WideDivider() = default;
  explicit WideDivider(int64_t value) : divisor(static_cast<uint64_t>(value)) {}
  __device__ __forceinline__ uint64_t div(uint64_t n) const { return n / divisor; }
};

template <typename Index>
struct DividerFor;
template <>
struct DividerFor<uint32_t> {
  using type = FastDivider;
};
template <>
struct DividerFor<uint64_t> {
  using type = WideDivider;
};
template <typename Index>
using Divider = typename DividerFor<Index>::type;

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<U>{}) for the type U that moves `bytes` bytes in one access.
template <typename Fn>
void visitUnit(size_t bytes, Fn&& fn) {
  switch (bytes) {
    case 1:
      return fn(TypeTag<uint8_t>{});
    case 2:
      return fn(TypeTag<uint16_t>{});
    case 4:
      return fn(TypeTag<uint32_t>{});
    case 8:
      return fn(TypeTag<uint2>{});
    case 16:
      return fn(TypeTag<uint4>{});
    default:
      throw std::invalid_argument("data movement: no access of " + std::to_string(bytes) +
                                  " bytes");
  }
}

// Calls fn(TypeTag<Index>{}) with uint32_t where every offset fits in 31 bits, else uint64_t.
template <typename Fn>
void visitIndex(int64_t largestCount, Fn&& fn) {
  if (largestCount < (int64_t{1} << 31)) return fn(TypeTag<uint32_t>{});
  return fn(TypeTag<uint64_t>{});
}

// The widest access (16, 8, 4, 2 or 1 bytes) that divides every value (byte counts, byte
// offsets and addresses).
size_t widestUnit(std::initializer_list<uint64_t> values) {
  uint64_t bits = 16;
  for (uint64_t v : values) bits |= v;
  return static_cast<size_t>(bits & (~bits + 1));
}

uint64_t address(const void* pointer) { return reinterpret_cast<uint64_t>(pointer); }

int blocksFor(int64_t work, int64_t perBlock, int64_t maxBlocks = kMaxBlocks) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min(maxBlocks, (work + perBlock - 1) / perBlock)));
}

void checkElementSize(size_t elementSize, const char* kernel) {
  if (elementSize != 1 && elementSize != 2 && elementSize != 4 && elementSize != 8) {
    throw std::invalid_argument(std::string(kernel) + ": element size " +
                                std::to_string(elementSize) + " is not 1, 2, 4 or 8 bytes");
  }
}

// ---- strided copy: out (dense, dims) = in[offset + sum(index_i * inStrides_i)] -------------

template <typename Index>
struct StridedCopyArgs {
  int rank = 0;
  Divider<Index> dims[kMaxRank];
  Index inStrides[kMaxRank];
  Index inOffset = 0;
  Index count = 0;
};

template <typename Unit, typename Index>
__global__ void stridedCopyKernel(const Unit* __restrict__ in, Unit* __restrict__ out,
                                  StridedCopyArgs<Index> args) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < args.count;
       i += step) {
    Index rest = i;
    Index offset = args.inOffset;
#pragma unroll
    for (int d = kMaxRank - 1; d > 0; --d) {
      if (d < args.rank) {
        const Index quotient = args.dims[d].div(rest);
        offset += (rest - quotient * args.dims[d].divisor) * args.inStrides[d];
        rest = quotient;
      }
    }
    out[i] = in[offset + rest * args.inStrides[0]];
  }
}

// ---- tiled transpose: the input's innermost dim (out dim `rows`) is not the output's -------

template <typename Index>
struct TiledTransposeArgs {
  int batchRank = 0;
  Divider<Index> batchDims[kMaxRank];
  Index batchInStrides[kMaxRank];
  Index batchOutStrides[kMaxRank];
  Index rows = 0;          // the out dim that is contiguous in the input
  Index cols = 0;          // the out dim that is contiguous in the output
  Index rowOutStride = 0;  // output stride of a row step
  Index colInStride = 0;   // input stride of a column step
  Index inOffset = 0;
  Divider<Index> tileCols;  // tiles along cols
  Divider<Index> tileRows;  // tiles along rows
  Index tileCount = 0;
};

template <typename Unit, typename Index>
__global__ void __launch_bounds__(kTile* kTileRows)
    tiledTransposeKernel(const Unit* __restrict__ in, Unit* __restrict__ out,
                         TiledTransposeArgs<Index> args) {
  // One padding column keeps the transposed reads of the tile off a single bank.
  __shared__ Unit tile[kTile][kTile + 1];
  for (Index t = blockIdx.x; t < args.tileCount; t += gridDim.x) {
    const Index rowsAndBatch = args.tileCols.div(t);
    const Index tileCol = t - rowsAndBatch * args.tileCols.divisor;
    Index batch = args.tileRows.div(rowsAndBatch);
    const Index tileRow = rowsAndBatch - batch * args.tileRows.divisor;
    Index inBase = args.inOffset;
    Index outBase = 0;
#pragma unroll
    for (int d = kMaxRank - 1; d >= 0; --d) {
      if (d < args.batchRank) {
        const Index quotient = args.batchDims[d].div(batch);
        const Index index = batch - quotient * args.batchDims[d].divisor;
        inBase += index * args.batchInStrides[d];
        outBase += index * args.batchOutStrides[d];
        batch = quotient;
      }
    }
    const Index row0 = tileRow * kTile;
    const Index col0 = tileCol * kTile;
    // Reads run along rows (contiguous in the input), writes along cols (contiguous in out).
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const Index row = row0 + threadIdx.x;
      const Index col = col0 + k;
      if (row < args.rows && col < args.cols) {
        tile[k][threadIdx.x] = in[inBase + row + col * args.colInStride];
      }
    }
    __syncthreads();
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const Index row = row0 + k;
      const Index col = col0 + threadIdx.x;
      if (row < args.rows && col < args.cols) {
        out[outBase + row * args.rowOutStride + col] = tile[threadIdx.x][k];
      }
    }
    __syncthreads();
  }
}

// Fills the dense output (dims) from input + offset with per-dim input strides, all in
// elements. Size-1 dims are dropped, dims contiguous in both tensors are merged, and the
// innermost contiguous run is moved in the widest aligned accesses.
void stridedCopy(const void* input, int64_t offset, Shape inStrides, Shape dims, size_t elementSize,
                 void* output, cudaStream_t stream) {
  Shape mergedDims;
  Shape mergedStrides;
  // Bytes from here on: a trailing dim of elementSize bytes lets merging and vectorizing treat
  // element size like any other contiguous run.
  dims.push_back(static_cast<int64_t>(elementSize));
  inStrides.push_back(1);
  for (size_t i = 0; i + 1 < inStrides.size(); ++i)
    inStrides[i] *= static_cast<int64_t>(elementSize);
  offset *= static_cast<int64_t>(elementSize);
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 0) return;
    if (dims[i] == 1) continue;
    if (!mergedDims.empty() && mergedStrides.back() == inStrides[i] * dims[i]) {
      mergedDims.back() *= dims[i];
      mergedStrides.back() = inStrides[i];
    } else {
      mergedDims.push_back(dims[i]);
      mergedStrides.push_back(inStrides[i]);
    }
  }
  if (mergedDims.empty() || mergedStrides.back() != 1) {
    mergedDims.push_back(1);
    mergedStrides.push_back(1);
  }

  // The unit divides the contiguous run, every other stride, the offset and both addresses.
  uint64_t strideBits = 0;
  for (size_t i = 0; i + 1 < mergedStrides.size(); ++i)
    strideBits |= static_cast<uint64_t>(mergedStrides[i]);
  const size_t unit = widestUnit({static_cast<uint64_t>(mergedDims.back()), strideBits,
                                  static_cast<uint64_t>(offset), address(input), address(output)});
  const int64_t wide = static_cast<int64_t>(unit);
  mergedDims.back() /= wide;
  for (size_t i = 0; i + 1 < mergedStrides.size(); ++i) mergedStrides[i] /= wide;
  offset /= wide;
  if (mergedDims.back() == 1 && mergedDims.size() > 1) {
    mergedDims.pop_back();
    mergedStrides.pop_back();
  }

  const int rank = static_cast<int>(mergedDims.size());
  const int64_t count = shapeVolume(mergedDims);
  int64_t inExtent = offset + 1;
  for (int d = 0; d < rank; ++d) inExtent += (mergedDims[d] - 1) * mergedStrides[d];
  const auto* in = static_cast<const unsigned char*>(input);

  if (rank == 1 && mergedStrides[0] == 1) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(output, in + offset * wide, static_cast<size_t>(count) * unit,
                                    cudaMemcpyDeviceToDevice, stream));
    return;
  }
  if (rank > kMaxRank) {
    throw std::invalid_argument("data movement: the copy has " + std::to_string(rank) +
                                " dims that cannot be merged; at most " + std::to_string(kMaxRank) +
                                " are supported");
  }

  int rowDim = -1;
  for (int d = 0; d + 1 < rank; ++d) {
    if (mergedStrides[d] == 1) rowDim = d;
  }
  const bool tiled = rowDim >= 0 && mergedStrides[rank - 1] != 1 &&
                     mergedDims[rowDim] >= kMinTiledDim && mergedDims[rank - 1] >= kMinTiledDim;
  visitUnit(unit, [&](auto unitTag) {
    using Unit = typename decltype(unitTag)::type;
    const auto* inUnits = static_cast<const Unit*>(input);
    auto* outUnits = static_cast<Unit*>(output);
    visitIndex(std::max(count, inExtent), [&](auto indexTag) {
      using Index = typename decltype(indexTag)::type;
      if (tiled) {
        Shape outStrides(rank, 1);
        for (int d = rank - 2; d >= 0; --d) outStrides[d] = outStrides[d + 1] * mergedDims[d + 1];
        TiledTransposeArgs<Index> args;
        for (int d = 0; d + 1 < rank; ++d) {
          if (d == rowDim) continue;
          args.batchDims[args.batchRank] = Divider<Index>(mergedDims[d]);
          args.batchInStrides[args.batchRank] = static_cast<Index>(mergedStrides[d]);
          args.batchOutStrides[args.batchRank] = static_cast<Index>(outStrides[d]);
          ++args.batchRank;
        }
        args.rows = static_cast<Index>(mergedDims[rowDim]);
        args.cols = static_cast<Index>(mergedDims[rank - 1]);
        args.rowOutStride = static_cast<Index>(outStrides[rowDim]);
        args.colInStride = static_cast<Index>(mergedStrides[rank - 1]);
        args.inOffset = static_cast<Index>(offset);
        const int64_t tileCols = (mergedDims[rank - 1] + kTile - 1) / kTile;
        const int64_t tileRows = (mergedDims[rowDim] + kTile - 1) / kTile;
        args.tileCols = Divider<Index>(tileCols);
        args.tileRows = Divider<Index>(tileRows);
        const int64_t tiles =
            count / (mergedDims[rowDim] * mergedDims[rank - 1]) * tileRows * tileCols;
        args.tileCount = static_cast<Index>(tiles);
        tiledTransposeKernel<Unit, Index>
            <<<blocksFor(tiles, 1), dim3(kTile, kTileRows), 0, stream>>>(inUnits, outUnits, args);
      } else {
        StridedCopyArgs<Index> args;
        args.rank = rank;
        for (int d = 0; d < rank; ++d) {
          args.dims[d] = Divider<Index>(mergedDims[d]);
          args.inStrides[d] = static_cast<Index>(mergedStrides[d]);
        }
        args.inOffset = static_cast<Index>(offset);
        args.count = static_cast<Index>(count);
        stridedCopyKernel<Unit, Index>
            <<<blocksFor(count, kThreads), kThreads, 0, stream>>>(inUnits, outUnits, args);
      }
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

bool isIdentity(const std::vector<int64_t>& permutation) {
  for (size_t i = 0; i < permutation.size(); ++i) {
    if (permutation[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

void checkPermutation(const std::vector<int64_t>& permutation, size_t rank) {
  if (permutation.size() != rank) {
    throw std::invalid_argument("transpose: the permutation has " +
                                std::to_string(permutation.size()) + " entries for " +
                                std::to_string(rank) + " dims; it needs one per dim");
  }
  std::vector<bool> seen(rank, false);
  for (int64_t p : permutation) {
    if (p < 0 || p >= static_cast<int64_t>(rank) || seen[p]) {
      throw std::invalid_argument("transpose: the permutation is not a permutation of 0.." +
                                  std::to_string(rank - 1));
    }
    seen[p] = true;
  }
}

// ---- concat ---------------------------------------------------------------------------------

template <typename Index>
struct ConcatArgs {
  const void* inputs[kMaxConcatInputs];
  Divider<Index> widths[kMaxConcatInputs];  // units of input t per outer row
  Index columnOffsets[kMaxConcatInputs];    // where input t starts in an output row
  Index outer = 0;
  Index outWidth = 0;
};

// blockIdx.y picks the input; the blocks along x stride over its (outer x width) units.
template <typename Unit, typename Index>
__global__ void concatKernel(Unit* __restrict__ out, ConcatArgs<Index> args) {
  const int t = blockIdx.y;
  const auto* in = static_cast<const Unit*>(args.inputs[t]);
  const Divider<Index> width = args.widths[t];
  const Index columnOffset = args.columnOffsets[t];
  const Index count = args.outer * width.divisor;
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    const Index row = width.div(i);
    const Index col = i - row * width.divisor;
    out[row * args.outWidth + columnOffset + col] = in[i];
  }
}

// ---- gather ---------------------------------------------------------------------------------

template <typename Index>
struct GatherArgs {
  Divider<Index> inner;       // units per gathered row
  Divider<Index> indexCount;  // indices per outer slice
  int64_t axisSize = 0;
  Index count = 0;  // output units
};

// kPerElement: one index for each output unit (a unit is then one element), at the unit's own
// position; otherwise one index for each row of `inner` units.
template <typename Unit, typename IndexValue, typename Index, bool kPerElement>
__global__ void gatherKernel(const Unit* __restrict__ data, const IndexValue* __restrict__ indices,
                             Unit* __restrict__ out, GatherArgs<Index> args, GatherStatus* status) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < args.count;
       i += step) {
    const Index row = args.inner.div(i);
    const Index col = i - row * args.inner.divisor;
    const Index outerIndex = args.indexCount.div(row);
    const Index position = row - outerIndex * args.indexCount.divisor;
    const int64_t given = static_cast<int64_t>(indices[kPerElement ? i : position]);
    const int64_t index = given < 0 ? given + args.axisSize : given;
    if (index < 0 || index >= args.axisSize) {
      out[i] = Unit{};
      if (status != nullptr) {
        status->outOfRange = 1;
        status->badIndex = given;
      }
      continue;
    }
    const Index source =
        (outerIndex * static_cast<Index>(args.axisSize) + static_cast<Index>(index)) *
            args.inner.divisor +
        col;
    out[i] = data[source];
  }
}

}  // namespace

void transpose(const void* input, const Shape& inShape, const std::vector<int64_t>& permutation,
               size_t elementSize, void* output, cudaStream_t stream) {
  checkElementSize(elementSize, "transpose");
  checkPermutation(permutation, inShape.size());
  const size_t rank = inShape.size();
  Shape strides(rank, 1);
  for (size_t d = rank; d-- > 1;) strides[d - 1] = strides[d] * inShape[d];
  Shape outShape(rank);
  Shape inStrides(rank);
  for (size_t i = 0; i < rank; ++i) {
    outShape[i] = inShape[permutation[i]];
    inStrides[i] = strides[permutation[i]];
  }
  stridedCopy(input, 0, inStrides, outShape, elementSize, output, stream);
}

size_t shuffleWorkspaceSize(const ShuffleParams& params, size_t elementSize) {
  const bool first = !params.firstPermutation.empty() && !isIdentity(params.firstPermutation);
  const bool second = !params.secondPermutation.empty() && !isIdentity(params.secondPermutation);
  if (!first || !second) return 0;
  return static_cast<size_t>(shapeVolume(params.inShape)) * elementSize;
}

void shuffle(const ShuffleParams& params, size_t elementSize, const void* input, void* output,
             void* workspace, cudaStream_t stream) {
  checkElementSize(elementSize, "shuffle");
  const bool first = !params.firstPermutation.empty() && !isIdentity(params.firstPermutation);
  const bool second = !params.secondPermutation.empty() && !isIdentity(params.secondPermutation);
  const int64_t volume = shapeVolume(params.inShape);
  if (second && shapeVolume(params.reshapedShape) != volume) {
    throw std::invalid_argument("shuffle: the reshaped shape holds " +
                                std::to_string(shapeVolume(params.reshapedShape)) +
                                " elements, the input " + std::to_string(volume));
  }
  if (!first && !second) {
    // A reshape alone keeps the row-major bytes.
    if (volume > 0 && input != output) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(output, input, static_cast<size_t>(volume) * elementSize,
                                      cudaMemcpyDeviceToDevice, stream));
    }
    return;
  }
  if (!second) {
    transpose(input, params.inShape, params.firstPermutation, elementSize, output, stream);
    return;
  }
  if (!first) {
    transpose(input, params.reshapedShape, params.secondPermutation, elementSize, output, stream);
    return;
  }
  if (workspace == nullptr && volume > 0) {
    throw std::invalid_argument(
        "shuffle: two transposes need shuffleWorkspaceSize() bytes of "
        "workspace; none was given");
  }
  transpose(input, params.inShape, params.firstPermutation, elementSize, workspace, stream);
  transpose(workspace, params.reshapedShape, params.secondPermutation, elementSize, output, stream);
}

void slice(const SliceParams& params, size_t elementSize, const void* input, void* output,
           cudaStream_t stream) {
  checkElementSize(elementSize, "slice");
  const size_t rank = params.inShape.size();
  if (params.starts.size() != rank || params.steps.size() != rank ||
      params.outShape.size() != rank) {
    throw std::invalid_argument(
        "slice: starts, steps and the output shape need one entry per "
        "input dim");
  }
  Shape strides(rank, 1);
  for (size_t d = rank; d-- > 1;) strides[d - 1] = strides[d] * params.inShape[d];
  int64_t offset = 0;
  Shape inStrides(rank);
  for (size_t i = 0; i < rank; ++i) {
    if (params.outShape[i] > 0) {
      if (params.steps[i] < 0 || params.starts[i] < 0 ||
          params.starts[i] + (params.outShape[i] - 1) * params.steps[i] >= params.inShape[i]) {
        throw std::invalid_argument(
            "slice: dim " + std::to_string(i) + " (start " + std::to_string(params.starts[i]) +
            ", step " + std::to_string(params.steps[i]) + ", " +
            std::to_string(params.outShape[i]) + " elements) reaches outside the input dim of " +
            std::to_string(params.inShape[i]));
      }
      offset += params.starts[i] * strides[i];
    }
    inStrides[i] = strides[i] * params.steps[i];
  }
  stridedCopy(input, offset, inStrides, params.outShape, elementSize, output, stream);
}

void concat(const std::vector<const void*>& inputs, const std::vector<Shape>& inShapes,
            int64_t axis, size_t elementSize, void* output, cudaStream_t stream) {
  checkElementSize(elementSize, "concat");
  if (inputs.size() != inShapes.size() || inputs.empty()) {
    throw std::invalid_argument("concat: one shape per input, and at least one input");
  }
  const Shape& first = inShapes[0];
  const int64_t rank = static_cast<int64_t>(first.size());
  if (axis < 0 || axis >= rank) {
    throw std::invalid_argument("concat: axis " + std::to_string(axis) + " is outside the " +
                                std::to_string(rank) + " dims");
  }
  for (const Shape& shape : inShapes) {
    bool fits = static_cast<int64_t>(shape.size()) == rank;
    for (int64_t d = 0; fits && d < rank; ++d) fits = d == axis || shape[d] == first[d];
    if (!fits) {
      throw std::invalid_argument("concat: the inputs must agree on every dim but the axis");
    }
  }
  int64_t outer = 1;
  int64_t inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= first[d];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= first[d];
  const int64_t rowBytesPerAxis = inner * static_cast<int64_t>(elementSize);
  int64_t outRowBytes = 0;
  uint64_t alignmentBits = address(output);
  for (size_t t = 0; t < inputs.size(); ++t) {
    const int64_t bytes = inShapes[t][axis] * rowBytesPerAxis;
    outRowBytes += bytes;
    if (bytes > 0) alignmentBits |= address(inputs[t]) | static_cast<uint64_t>(bytes);
  }
  if (outer == 0 || outRowBytes == 0) return;
  const size_t unit = widestUnit({alignmentBits});
  const int64_t wide = static_cast<int64_t>(unit);
  const int64_t outWidth = outRowBytes / wide;

  visitUnit(unit, [&](auto unitTag) {
    using Unit = typename decltype(unitTag)::type;
    visitIndex(outer * outWidth, [&](auto indexTag) {
      using Index = typename decltype(indexTag)::type;
      int64_t columnOffset = 0;
      size_t t = 0;
      while (t < inputs.size()) {
        ConcatArgs<Index> args;
        args.outer = static_cast<Index>(outer);
        args.outWidth = static_cast<Index>(outWidth);
        int group = 0;
        int64_t largestWidth = 0;
        for (; t < inputs.size() && group < kMaxConcatInputs; ++t) {
          const int64_t width = inShapes[t][axis] * rowBytesPerAxis / wide;
          if (width == 0) continue;
          args.inputs[group] = inputs[t];
          args.widths[group] = Divider<Index>(width);
          args.columnOffsets[group] = static_cast<Index>(columnOffset);
          columnOffset += width;
          largestWidth = std::max(largestWidth, width);
          ++group;
        }
        if (group == 0) break;
        const int blocksPerInput =
            blocksFor(outer * largestWidth, kThreads, std::max<int64_t>(1, kMaxBlocks / group));
        concatKernel<Unit, Index><<<dim3(blocksPerInput, group), kThreads, 0, stream>>>(
            static_cast<Unit*>(output), args);
        KILN_CUDA_CHECK_LAUNCH();
      }
    });
  });
}

void gather(const GatherParams& params, size_t elementSize, const void* data, const void* indices,
            void* output, GatherStatus* status, cudaStream_t stream) {
  checkElementSize(elementSize, "gather");
  if (params.indexType != ScalarType::kInt32 && params.indexType != ScalarType::kInt64) {
    throw std::invalid_argument(std::string("gather: indices must be int32 or int64, not ") +
                                scalarName(params.indexType));
  }
  if (params.outer < 0 || params.axisSize < 0 || params.inner < 0 || params.indexCount < 0) {
    throw std::invalid_argument("gather: negative extents");
  }
  const int64_t rowBytes = params.inner * static_cast<int64_t>(elementSize);
  const int64_t outBytes = params.outer * params.indexCount * rowBytes;
  if (outBytes == 0) return;
  // Per-element indices address single elements: no wider units.
  const size_t unit =
      params.perElement
          ? elementSize
          : widestUnit({static_cast<uint64_t>(rowBytes), address(data), address(output)});
  const int64_t wide = static_cast<int64_t>(unit);
  const int64_t innerUnits = rowBytes / wide;
  const int64_t count = outBytes / wide;
  const int64_t dataUnits = params.outer * params.axisSize * innerUnits;

  visitUnit(unit, [&](auto unitTag) {
    using Unit = typename decltype(unitTag)::type;
    visitIndex(std::max(count, dataUnits), [&](auto indexTag) {
      using Index = typename decltype(indexTag)::type;
      GatherArgs<Index> args;
      args.inner = Divider<Index>(innerUnits);
      args.indexCount = Divider<Index>(params.indexCount);
      args.axisSize = params.axisSize;
      args.count = static_cast<Index>(count);
      const int blocks = blocksFor(count, kThreads);
      auto launch = [&](auto indexValueTag, auto perElementTag) {
        using IndexValue = typename decltype(indexValueTag)::type;
        gatherKernel<Unit, IndexValue, Index, decltype(perElementTag)::value>
            <<<blocks, kThreads, 0, stream>>>(static_cast<const Unit*>(data),
                                              static_cast<const IndexValue*>(indices),
                                              static_cast<Unit*>(output), args, status);
      };
      auto withIndexType = [&](auto perElementTag) {
        if (params.indexType == ScalarType::kInt32) {
          launch(TypeTag<int32_t>{}, perElementTag);
        } else {
          launch(TypeTag<int64_t>{}, perElementTag);
        }
      };
      if (params.perElement) {
        withIndexType(std::true_type{});
      } else {
        withIndexType(std::false_type{});
      }
    });
  });
  KILN_CUDA_CHECK_LAUNCH();
}

void throwIfGatherFailed(const GatherStatus& status, const GatherParams& params) {
  if (status.outOfRange == 0) return;
  throw std::out_of_range("gather: index " + std::to_string(status.badIndex) +
                          " is out of range for a dim of size " + std::to_string(params.axisSize));
}

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/elementwise.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/common/shapes.h"
#include "kernels/cuda/pointwise_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using kernels::BroadcastLayout;
using kernels::broadcastLayout;
using pointwise::BoolByte;
using pointwise::ComputeType;
using pointwise::FastDivmod;
using pointwise::fromCompute;
using pointwise::kThreadsPerBlock;
using pointwise::loadPack;
using pointwise::storePack;
using pointwise::toCompute;

// ---- scalar functions of the ops, on the compute type C -----------------------------------------

template <typename C>
inline constexpr bool kIsInteger = std::is_integral_v<C> && !std::is_same_v<C, bool>;

// Integer add/sub/mul wrap (in unsigned arithmetic, where signed overflow is not undefined).
template <typename C>
__device__ __forceinline__ C wrap(C a, C b, char op) {
  using U = std::make_unsigned_t<C>;
  const U x = static_cast<U>(a);
  const U y = static_cast<U>(b);
  return static_cast<C>(op == '+' ? x + y : (op == '-' ? x - y : x * y));
}

__device__ __forceinline__ void raise(int32_t* domainError) {
  if (domainError != nullptr) *domainError = 1;
}

template <typename C>
struct AddOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (kIsInteger<C>) {
      return wrap(a, b, '+');
    } else {
      return a + b;
    }
  }
};

template <typename C>
struct SubOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (kIsInteger<C>) {
      return wrap(a, b, '-');
    } else {
      return a - b;
    }
  }
};

template <typename C>
struct MulOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (kIsInteger<C>) {
      return wrap(a, b, '*');
    } else {
      return a * b;
    }
  }
};

template <typename C>
struct DivOp {
  int32_t* domainError;
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (kIsInteger<C>) {
      if (b == 0) {
        raise(domainError);
        return 0;
      }
      return static_cast<C>(a / b);
    } else {
      return a / b;
    }
  }
};

template <typename C>
struct FloorDivOp {
  int32_t* domainError;
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (kIsInteger<C>) {
      if (b == 0) {
        raise(domainError);
        return 0;
      }
      const C quotient = static_cast<C>(a / b);
      if constexpr (std::is_signed_v<C>) {
        if (a % b != 0 && ((a < 0) != (b < 0))) return static_cast<C>(quotient - 1);
      }
      return quotient;
    } else {
      return floorf(a / b);
    }
  }
};

template <typename C>
struct PowOp {
  int32_t* domainError;
  __device__ __forceinline__ C operator()(C base, C exponent) const {
    if constexpr (kIsInteger<C>) {
      if constexpr (std::is_signed_v<C>) {
        if (exponent < 0) {
          raise(domainError);
          if (base == 1) return 1;
          if (base == -1) return (exponent & 1) ? C{-1} : C{1};
          return 0;
        }
      }
      using U = std::make_unsigned_t<C>;
      U result = 1;
      U power = static_cast<U>(base);
      while (exponent > 0) {
        if (exponent & 1) result = static_cast<U>(result * power);
        power = static_cast<U>(power * power);
        exponent = static_cast<C>(exponent >> 1);
      }
      return static_cast<C>(result);
    } else {
      return powf(base, exponent);
    }
  }
};

template <typename C>
struct MaxOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (std::is_floating_point_v<C>) {
      return (a > b || isnan(a)) ? a : b;
    } else {
      return a > b ? a : b;
    }
  }
};

template <typename C>
struct MinOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (std::is_floating_point_v<C>) {
      return (a < b || isnan(a)) ? a : b;
    } else {
      return a < b ? a : b;
    }
  }
};

template <typename C>
struct EqualOp {
  __device__ __forceinline__ bool operator()(C a, C b) const { return a == b; }
};
template <typename C>
struct LessOp {
  __device__ __forceinline__ bool operator()(C a, C b) const { return a < b; }
};
template <typename C>
struct GreaterOp {
  __device__ __forceinline__ bool operator()(C a, C b) const { return a > b; }
};

// On bool: logical; on integers: bitwise.
template <typename C>
struct AndOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) {
      return a && b;
    } else {
      return static_cast<C>(a & b);
    }
  }
};
template <typename C>
struct OrOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) {
      return a || b;
    } else {
      return static_cast<C>(a | b);
    }
  }
};
template <typename C>
struct XorOp {
  __device__ __forceinline__ C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) {
      return a != b;
    } else {
      return static_cast<C>(a ^ b);
    }
  }
};

// ---- kernels ------------------------------------------------------------------------------------

// Each input is either as large as the output or a single value (aScalar / bScalar). The first
// vectorCount * N elements go in packs of N, the rest one by one.
template <typename In, typename Out, int N, typename Op>
__global__ void __launch_bounds__(kThreadsPerBlock)
    flatBinaryKernel(const In* __restrict__ a, const In* __restrict__ b, Out* __restrict__ out,
                     uint32_t count, uint32_t vectorCount, bool aScalar, bool bScalar, Op op) {
  using C = ComputeType<In>;
  const C aValue = aScalar ? toCompute(a[0]) : C{};
  const C bValue = bScalar ? toCompute(b[0]) : C{};
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x;
  for (uint32_t v = first; v < vectorCount; v += stride) {
    In aPack[N];
    In bPack[N];
    Out outPack[N];
    if (!aScalar) loadPack(a + v * N, aPack);
    if (!bScalar) loadPack(b + v * N, bPack);
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const C x = aScalar ? aValue : toCompute(aPack[i]);
      const C y = bScalar ? bValue : toCompute(bPack[i]);
      outPack[i] = fromCompute<Out>(op(x, y));
    }
    storePack(out + v * N, outPack);
  }
  for (uint32_t e = vectorCount * N + first; e < count; e += stride) {
    const C x = aScalar ? aValue : toCompute(a[e]);
    const C y = bScalar ? bValue : toCompute(b[e]);
    out[e] = fromCompute<Out>(op(x, y));
  }
}

// The broadcast as the kernels walk it: merged output dims, innermost first, with each input's
// stride per dim (0 where it is broadcast).
constexpr int kMaxDims = 8;

// Offsets for outputs below 2^31 elements: a fast divmod per dim, no 64-bit arithmetic.
struct Indexer32 {
  int rank = 0;
  FastDivmod dims[kMaxDims];
  uint32_t aStrides[kMaxDims] = {};
  uint32_t bStrides[kMaxDims] = {};

  __device__ __forceinline__ void offsets(uint32_t element, uint32_t& aOffset,
                                          uint32_t& bOffset) const {
    aOffset = 0;
    bOffset = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      if (d == rank - 1) {  // the outermost dim takes what is left
        aOffset += element * aStrides[d];
        bOffset += element * bStrides[d];
        break;
      }
      const uint32_t quotient = dims[d].divide(element);
      const uint32_t coordinate = element - quotient * dims[d].divisor;
      aOffset += coordinate * aStrides[d];
      bOffset += coordinate * bStrides[d];
      element = quotient;
    }
  }
};

// Offsets for outputs of 2^31 elements or more (rare), in 64-bit arithmetic.
struct Indexer64 {
  int rank = 0;
  int64_t dims[kMaxDims] = {};
  int64_t aStrides[kMaxDims] = {};
  int64_t bStrides[kMaxDims] = {};

  __device__ __forceinline__ void offsets(int64_t element, int64_t& aOffset,
                                          int64_t& bOffset) const {
    aOffset = 0;
    bOffset = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      if (d == rank - 1) {
        aOffset += element * aStrides[d];
        bOffset += element * bStrides[d];
        break;
      }
      const int64_t quotient = element / dims[d];
      const int64_t coordinate = element - quotient * dims[d];
      aOffset += coordinate * aStrides[d];
      bOffset += coordinate * bStrides[d];
      element = quotient;
    }
  }
};

// One output element per step, any broadcast.
template <typename In, typename Out, typename Indexer, typename Index, typename Op>
__global__ void __launch_bounds__(kThreadsPerBlock)
    broadcastBinaryKernel(const In* __restrict__ a, const In* __restrict__ b, Out* __restrict__ out,
                          Index count, Indexer indexer, Op op) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index e = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += stride) {
    Index aOffset;
    Index bOffset;
    indexer.offsets(e, aOffset, bOffset);
    out[e] = fromCompute<Out>(op(toCompute(a[aOffset]), toCompute(b[bOffset])));
  }
}

// N output elements per step: the innermost dim is a multiple of N, so a pack shares its outer
// coordinates, and each input is either contiguous along it (a pack load) or broadcast (one
// value).
template <typename In, typename Out, int N, typename Op>
__global__ void __launch_bounds__(kThreadsPerBlock)
    broadcastBinaryPackKernel(const In* __restrict__ a, const In* __restrict__ b,
                              Out* __restrict__ out, uint32_t vectorCount, Indexer32 indexer,
                              bool aContiguous, bool bContiguous, Op op) {
  using C = ComputeType<In>;
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t v = blockIdx.x * blockDim.x + threadIdx.x; v < vectorCount; v += stride) {
    uint32_t aOffset;
    uint32_t bOffset;
    indexer.offsets(v * N, aOffset, bOffset);
    In aPack[N];
    In bPack[N];
    Out outPack[N];
    if (aContiguous) {
      loadPack(a + aOffset, aPack);
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) aPack[i] = a[aOffset];
    }
    if (bContiguous) {
      loadPack(b + bOffset, bPack);
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) bPack[i] = b[bOffset];
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
      outPack[i] = fromCompute<Out>(op(toCompute(aPack[i]), toCompute(bPack[i])));
    }
    storePack(out + v * N, outPack);
  }
}

// ---- host side ----------------------------------------------------------------------------------

// The shared layout (kernels/common/shapes.h), within what the GPU's indexers hold.
BroadcastLayout makeLayout(const BinaryParams& params) {
  BroadcastLayout layout = broadcastLayout(params.aShape, params.bShape, params.outShape);
  if (layout.dims.size() > static_cast<size_t>(kMaxDims)) {
    throw std::invalid_argument("elementwise on the GPU broadcasts over at most " +
                                std::to_string(kMaxDims) + " dims after merging, got " +
                                std::to_string(layout.dims.size()) +
                                "; reshape the inputs to fewer dims");
  }
  return layout;
}

template <typename Indexer>
Indexer makeIndexer(const BroadcastLayout& layout) {
  Indexer indexer;
  const int rank = static_cast<int>(layout.dims.size());
  indexer.rank = rank;
  for (int d = 0; d < rank; ++d) {
    const size_t source = static_cast<size_t>(rank - 1 - d);  // innermost first
    if constexpr (std::is_same_v<Indexer, Indexer32>) {
      indexer.dims[d] = FastDivmod(static_cast<uint32_t>(layout.dims[source]));
      indexer.aStrides[d] = static_cast<uint32_t>(layout.aStrides[source]);
      indexer.bStrides[d] = static_cast<uint32_t>(layout.bStrides[source]);
    } else {
      indexer.dims[d] = layout.dims[source];
      indexer.aStrides[d] = layout.aStrides[source];
      indexer.bStrides[d] = layout.bStrides[source];
    }
  }
  return indexer;
}

template <typename In, typename Op>
void launchBinary(const BinaryParams& params, const void* aData, const void* bData, void* outData,
                  Op op, cudaStream_t stream) {
  using C = ComputeType<In>;
  using Result = decltype(op(C{}, C{}));
  using Out = std::conditional_t<std::is_same_v<Result, bool>, BoolByte, In>;
  constexpr int kN = pointwise::kPackSize<In, Out>;
  const In* a = static_cast<const In*>(aData);
  const In* b = static_cast<const In*>(bData);
  Out* out = static_cast<Out*>(outData);

  const int64_t outVolume = shapeVolume(params.outShape);
  const int64_t aVolume = shapeVolume(params.aShape);
  const int64_t bVolume = shapeVolume(params.bShape);
  const BroadcastLayout layout = makeLayout(params);  // validates the shapes

  const bool aScalar = aVolume == 1 && outVolume != 1;
  const bool bScalar = bVolume == 1 && outVolume != 1;
  if ((aScalar || aVolume == outVolume) && (bScalar || bVolume == outVolume)) {
    const bool vectorize = pointwise::isAligned16(out) && (aScalar || pointwise::isAligned16(a)) &&
                           (bScalar || pointwise::isAligned16(b));
    for (int64_t offset = 0; offset < outVolume; offset += pointwise::kFlatChunk) {
      const int64_t chunk = std::min(pointwise::kFlatChunk, outVolume - offset);
      const int64_t vectorCount = vectorize ? chunk / kN : 0;
      const int64_t units = std::max(vectorCount, chunk - vectorCount * kN);
      flatBinaryKernel<In, Out, kN, Op>
          <<<pointwise::blocksFor(units), kThreadsPerBlock, 0, stream>>>(
              aScalar ? a : a + offset, bScalar ? b : b + offset, out + offset,
              static_cast<uint32_t>(chunk), static_cast<uint32_t>(vectorCount), aScalar, bScalar,
              op);
      KILN_CUDA_CHECK_LAUNCH();
    }
    return;
  }

  if (outVolume >= (int64_t{1} << 31)) {
    broadcastBinaryKernel<In, Out, Indexer64, int64_t, Op>
        <<<pointwise::blocksFor(outVolume), kThreadsPerBlock, 0, stream>>>(
            a, b, out, outVolume, makeIndexer<Indexer64>(layout), op);
    KILN_CUDA_CHECK_LAUNCH();
    return;
  }
  const Indexer32 indexer = makeIndexer<Indexer32>(layout);
  // The innermost merged stride of an input is 1 (it spans that dim) or 0 (broadcast).
  const bool aContiguous = layout.aStrides.back() == 1;
  const bool bContiguous = layout.bStrides.back() == 1;
  const bool packs = layout.dims.back() % kN == 0 && pointwise::isAligned16(out) &&
                     (!aContiguous || pointwise::isAligned16(a)) &&
                     (!bContiguous || pointwise::isAligned16(b));
  if (packs) {
    const int64_t vectorCount = outVolume / kN;
    broadcastBinaryPackKernel<In, Out, kN, Op>
        <<<pointwise::blocksFor(vectorCount), kThreadsPerBlock, 0, stream>>>(
            a, b, out, static_cast<uint32_t>(vectorCount), indexer, aContiguous, bContiguous, op);
  } else {
    broadcastBinaryKernel<In, Out, Indexer32, uint32_t, Op>
        <<<pointwise::blocksFor(outVolume), kThreadsPerBlock, 0, stream>>>(
            a, b, out, static_cast<uint32_t>(outVolume), indexer, op);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

[[noreturn]] void unsupported(BinaryOp op, ScalarType type) {
  static const char* const names[] = {"add",       "sub",   "mul",  "div",     "pow", "max", "min",
                                      "floor_div", "equal", "less", "greater", "and", "or",  "xor"};
  throw std::invalid_argument(std::string("elementwise ") + names[static_cast<int>(op)] +
                              " is not defined on " + scalarName(type));
}

// Calls run(op) with op the functor of `op` on the compute type of storage type T.
template <typename T, typename Run>
void withOpFunctor(BinaryOp op, ScalarType type, int32_t* domainError, Run&& run) {
  using C = ComputeType<T>;
  switch (op) {
    case BinaryOp::kEqual:
      return run(EqualOp<C>{});
    case BinaryOp::kLess:
      return run(LessOp<C>{});
    case BinaryOp::kGreater:
      return run(GreaterOp<C>{});
    default:
      break;
  }
  if constexpr (std::is_same_v<C, bool>) {
    switch (op) {
      case BinaryOp::kAdd:
      case BinaryOp::kMax:
      case BinaryOp::kOr:
        return run(OrOp<bool>{});
      case BinaryOp::kMul:
      case BinaryOp::kMin:
      case BinaryOp::kAnd:
        return run(AndOp<bool>{});
      case BinaryOp::kXor:
        return run(XorOp<bool>{});
      default:
        unsupported(op, type);
    }
  } else {
    switch (op) {
      case BinaryOp::kAdd:
        return run(AddOp<C>{});
      case BinaryOp::kSub:
        return run(SubOp<C>{});
      case BinaryOp::kMul:
        return run(MulOp<C>{});
      case BinaryOp::kDiv:
        return run(DivOp<C>{domainError});
      case BinaryOp::kPow:
        return run(PowOp<C>{domainError});
      case BinaryOp::kMax:
        return run(MaxOp<C>{});
      case BinaryOp::kMin:
        return run(MinOp<C>{});
      case BinaryOp::kFloorDiv:
        return run(FloorDivOp<C>{domainError});
      case BinaryOp::kAnd:
      case BinaryOp::kOr:
      case BinaryOp::kXor:
        if constexpr (kIsInteger<C>) {
          if (op == BinaryOp::kAnd) return run(AndOp<C>{});
          if (op == BinaryOp::kOr) return run(OrOp<C>{});
          return run(XorOp<C>{});
        } else {
          unsupported(op, type);
        }
      default:
        unsupported(op, type);
    }
  }
}

}  // namespace

bool isComparison(BinaryOp op) {
  return op == BinaryOp::kEqual || op == BinaryOp::kLess || op == BinaryOp::kGreater;
}

void binaryElementwise(const BinaryParams& params, const void* a, const void* b, void* out,
                       cudaStream_t stream, int32_t* domainError) {
  pointwise::visitScalarType(params.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    withOpFunctor<T>(params.op, params.type, domainError, [&](auto op) {
      if (shapeVolume(params.outShape) == 0) {
        makeLayout(params);  // still refuses shapes that do not broadcast
        return;
      }
      launchBinary<T>(params, a, b, out, op, stream);
    });
  });
}

}  // namespace kiln::cuda_kernels

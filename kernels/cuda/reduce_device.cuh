// Device helpers shared by the reduction, normalization and pooling kernels (private to their .cu
// files): storage types, float32/int64 accumulation, 16-byte vector access, fast 32-bit division,
// warp and block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.h"
#include "kernels/cuda/reduce_softmax.h"

namespace kiln::cuda_kernels::reduce_detail {

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) with the device storage type of `type`.
template <typename Fn>
void visitStorageType(ScalarType type, Fn&& fn) {
  switch (type) {
    case ScalarType::kFloat32:
      return fn(TypeTag<float>{});
    case ScalarType::kFloat16:
      return fn(TypeTag<__half>{});
    case ScalarType::kBFloat16:
      return fn(TypeTag<__nv_bfloat16>{});
    case ScalarType::kInt8:
      return fn(TypeTag<int8_t>{});
    case ScalarType::kInt32:
      return fn(TypeTag<int32_t>{});
    case ScalarType::kInt64:
      return fn(TypeTag<int64_t>{});
    case ScalarType::kBool:
      return fn(TypeTag<bool>{});
    case ScalarType::kUInt8:
      return fn(TypeTag<uint8_t>{});
  }
  throw std::invalid_argument("unknown scalar type " + std::to_string(static_cast<int>(type)));
}

// Like visitStorageType for the float formats only; other types throw naming the kernel.
template <typename Fn>
void visitFloatType(ScalarType type, const char* kernel, Fn&& fn) {
  switch (type) {
    case ScalarType::kFloat32:
      return fn(TypeTag<float>{});
    case ScalarType::kFloat16:
      return fn(TypeTag<__half>{});
    case ScalarType::kBFloat16:
      return fn(TypeTag<__nv_bfloat16>{});
    default:
      break;
  }
  throw std::invalid_argument(std::string(kernel) + " on the GPU supports float32, float16 and " +
                              "bfloat16, not " + scalarName(type) + "; cast the input first");
}

template <typename T>
constexpr bool kIsFloat = std::is_same_v<T, float> || std::is_same_v<T, __half> ||
                          std::is_same_v<T, __nv_bfloat16>;

// Floats accumulate in float32, integers and bool in int64.
template <typename T>
using Accumulator = std::conditional_t<kIsFloat<T>, float, int64_t>;

template <typename T>
__device__ __forceinline__ Accumulator<T> toAccumulator(T value) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(value);
  } else {
    return static_cast<Accumulator<T>>(value);
  }
}

// Rounds once to the storage type; bool stores "not zero".
template <typename T, typename A>
__device__ __forceinline__ T fromAccumulator(A value) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(value);
  } else {
    return static_cast<T>(value);
  }
}

template <typename T>
__device__ __forceinline__ float toFloat(T value) {
  return toAccumulator<T>(value);
}

// Elements in one 16-byte access.
template <typename T>
constexpr int kVectorWidth = static_cast<int>(16 / sizeof(T));

inline bool isAligned16(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

// N == 1 is a plain access; otherwise N * sizeof(T) == 16 and the pointer is 16-byte aligned.
template <typename T, int N>
__device__ __forceinline__ void loadVector(const T* pointer, T (&values)[N]) {
  if constexpr (N == 1) {
    values[0] = *pointer;
  } else {
    static_assert(N * sizeof(T) == 16, "a vector access is 16 bytes");
    const uint4 raw = *reinterpret_cast<const uint4*>(pointer);
    memcpy(values, &raw, sizeof(raw));
  }
}

template <typename T, int N>
__device__ __forceinline__ void storeVector(T* pointer, const T (&values)[N]) {
  if constexpr (N == 1) {
    *pointer = values[0];
  } else {
    static_assert(N * sizeof(T) == 16, "a vector access is 16 bytes");
    uint4 raw;
    memcpy(&raw, values, sizeof(raw));
    *reinterpret_cast<uint4*>(pointer) = raw;
  }
}

// Elements before the first 16-byte boundary at or after `pointer` (at most `count`).
template <typename T>
__device__ __forceinline__ int64_t elementsBeforeAlignment(const T* pointer, int64_t count) {
  const int64_t head =
      static_cast<int64_t>((16 - (reinterpret_cast<uintptr_t>(pointer) & 15)) & 15) /
      static_cast<int64_t>(sizeof(T));
  return head < count ? head : count;
}

// Division by a run-time constant without a hardware divide: q = (mulhi(n, m) + n) >> shift
// (Granlund and Montgomery's round-up method), exact for every 32-bit n and 1 <= d <= 2^31.
struct FastDivmod32 {
  uint32_t divisor = 1;
  uint32_t multiplier = 1;
  uint32_t shift = 0;

  FastDivmod32() = default;
  explicit FastDivmod32(uint32_t d) : divisor(d) {
    if (d == 0 || d > (uint32_t{1} << 31)) {
      throw std::invalid_argument("FastDivmod32: divisor out of range");
    }
    while ((uint64_t{1} << shift) < d) ++shift;
    multiplier =
        static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  __host__ __device__ __forceinline__ uint32_t divide(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t high = __umulhi(n, multiplier);
#else
    const uint32_t high = static_cast<uint32_t>((uint64_t{n} * multiplier) >> 32);
#endif
    return static_cast<uint32_t>((uint64_t{high} + n) >> shift);
  }
  __host__ __device__ __forceinline__ void divmod(uint32_t n, uint32_t& quotient,
                                                  uint32_t& remainder) const {
    quotient = divide(n);
    remainder = n - quotient * divisor;
  }
};

// Division in the kernel's index type: multiply-high for 32-bit indices, a plain divide only
// for tensors of 2^31 elements or more.
template <typename Index>
struct Divisor;

template <>
struct Divisor<uint32_t> {
  FastDivmod32 fast;
  Divisor() = default;
  explicit Divisor(int64_t d) : fast(static_cast<uint32_t>(d)) {}
  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& quotient,
                                         uint32_t& remainder) const {
    fast.divmod(n, quotient, remainder);
  }
};

template <>
struct Divisor<uint64_t> {
  uint64_t divisor = 1;
  Divisor() = default;
  explicit Divisor(int64_t d) : divisor(static_cast<uint64_t>(d)) {}
  __device__ __forceinline__ void divmod(uint64_t n, uint64_t& quotient,
                                         uint64_t& remainder) const {
    quotient = n / divisor;
    remainder = n - quotient * divisor;
  }
};

// Whether every index of a tensor of `volume` elements fits the 32-bit kernels.
inline bool fitsIndex32(int64_t volume) { return volume < (int64_t{1} << 31); }

__device__ __forceinline__ float shuffleXor(float value, int offset) {
  return __shfl_xor_sync(0xffffffffu, value, offset);
}
__device__ __forceinline__ int64_t shuffleXor(int64_t value, int offset) {
  return static_cast<int64_t>(
      __shfl_xor_sync(0xffffffffu, static_cast<long long>(value), offset));
}

// Reduces `value` over groups of kGroup consecutive threads; every thread of a group gets the
// result. kGroup <= 32 stays within a warp (all 32 lanes must call); kGroup > 32 must equal the
// block size and uses `shared` (kGroup / 32 entries, synchronized here). The order of the
// combination is fixed, so results do not depend on timing.
template <int kGroup, typename T, typename Combine>
__device__ __forceinline__ T groupReduce(T value, Combine combine, T* shared) {
  constexpr int kWarpLanes = kGroup < 32 ? kGroup : 32;
#pragma unroll
  for (int offset = kWarpLanes / 2; offset > 0; offset /= 2) {
    value = combine(value, shuffleXor(value, offset));
  }
  if constexpr (kGroup > 32) {
    constexpr int kWarps = kGroup / 32;
    if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = value;
    __syncthreads();
    value = shared[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) value = combine(value, shared[w]);
    __syncthreads();  // the next reduction may reuse `shared`
  } else {
    (void)shared;
  }
  return value;
}

// Calls fn(index, value) for the elements [0, count) of `data` that are this thread's, one of
// kGroup threads (lane = its rank): 16-byte loads between the unaligned head and tail.
template <int kGroup, typename T, typename Fn>
__device__ __forceinline__ void visitRange(const T* data, int64_t count, int lane, Fn&& fn) {
  constexpr int kWidth = kVectorWidth<T>;
  const int64_t head = elementsBeforeAlignment(data, count);
  for (int64_t i = lane; i < head; i += kGroup) fn(i, data[i]);
  const int64_t vectors = (count - head) / kWidth;
  const T* body = data + head;
#pragma unroll 4
  for (int64_t v = lane; v < vectors; v += kGroup) {
    T values[kWidth];
    loadVector(body + v * kWidth, values);
#pragma unroll
    for (int j = 0; j < kWidth; ++j) fn(head + v * kWidth + j, values[j]);
  }
  for (int64_t i = head + vectors * kWidth + lane; i < count; i += kGroup) fn(i, data[i]);
}

// out[i] = fn(i, in[i]) over [0, count) for this thread's share, with 16-byte loads and stores
// when in and out are aligned alike.
template <int kGroup, typename T, typename Fn>
__device__ __forceinline__ void transformRange(const T* in, T* out, int64_t count, int lane,
                                               Fn&& fn) {
  constexpr int kWidth = kVectorWidth<T>;
  if (((reinterpret_cast<uintptr_t>(in) ^ reinterpret_cast<uintptr_t>(out)) & 15) != 0) {
    for (int64_t i = lane; i < count; i += kGroup) out[i] = fn(i, in[i]);
    return;
  }
  const int64_t head = elementsBeforeAlignment(in, count);
  for (int64_t i = lane; i < head; i += kGroup) out[i] = fn(i, in[i]);
  const int64_t vectors = (count - head) / kWidth;
#pragma unroll 2
  for (int64_t v = lane; v < vectors; v += kGroup) {
    const int64_t first = head + v * kWidth;
    T values[kWidth];
    loadVector(in + first, values);
#pragma unroll
    for (int j = 0; j < kWidth; ++j) values[j] = fn(first + j, values[j]);
    storeVector(out + first, values);
  }
  for (int64_t i = head + vectors * kWidth + lane; i < count; i += kGroup) out[i] = fn(i, in[i]);
}

// The reduction functions, on an accumulator type A (float or int64_t).
struct SumOp {
  template <typename A>
  __device__ static A identity() {
    return A(0);
  }
  template <typename A>
  __device__ static A combine(A acc, A value) {
    return acc + value;
  }
};
struct ProdOp {
  template <typename A>
  __device__ static A identity() {
    return A(1);
  }
  template <typename A>
  __device__ static A combine(A acc, A value) {
    return acc * value;
  }
};
// value != value is NaN: it wins from either side, as in the CPU reference.
struct MaxOp {
  template <typename A>
  __device__ static A identity() {
    if constexpr (std::is_same_v<A, float>) {
      return -INFINITY;
    } else {
      return INT64_MIN;
    }
  }
  template <typename A>
  __device__ static A combine(A acc, A value) {
    return (value > acc || value != value) ? value : acc;
  }
};
struct MinOp {
  template <typename A>
  __device__ static A identity() {
    if constexpr (std::is_same_v<A, float>) {
      return INFINITY;
    } else {
      return INT64_MAX;
    }
  }
  template <typename A>
  __device__ static A combine(A acc, A value) {
    return (value < acc || value != value) ? value : acc;
  }
};

// The reduction's result in the storage type: mean divides by the reduced count (integers
// truncate, as the CPU reference does).
template <typename T, typename A>
__device__ __forceinline__ T finishReduction(A acc, bool mean, int64_t count) {
  if (mean) acc = acc / static_cast<A>(count);
  return fromAccumulator<T>(acc);
}

}  // namespace kiln::cuda_kernels::reduce_detail

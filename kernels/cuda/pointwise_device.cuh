// Internal to the pointwise kernels (elementwise.cu, unary_activation.cu, cast.cu): storage types
// of the scalar types, 16-byte packed loads and stores, a fast 32-bit divider, and a launcher for
// vectorized elementwise maps.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels::pointwise {

// bool is stored as one byte; any nonzero byte reads as true.
struct BoolByte {
  uint8_t value;
};

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) with T the storage type of `type`.
template <typename Fn>
decltype(auto) visitScalarType(ScalarType type, Fn&& fn) {
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
      return fn(TypeTag<BoolByte>{});
    case ScalarType::kUInt8:
      return fn(TypeTag<uint8_t>{});
  }
  throw std::invalid_argument("unknown scalar type " + std::to_string(static_cast<int>(type)));
}

// The type arithmetic happens in: float for the float formats, bool for bool, else the type.
template <typename T>
struct ComputeTypeOf {
  using type = T;
};
template <>
struct ComputeTypeOf<__half> {
  using type = float;
};
template <>
struct ComputeTypeOf<__nv_bfloat16> {
  using type = float;
};
template <>
struct ComputeTypeOf<BoolByte> {
  using type = bool;
};
template <typename T>
using ComputeType = typename ComputeTypeOf<T>::type;

template <typename T>
inline constexpr bool kIsFloatStorage = std::is_same_v<T, float> || std::is_same_v<T, __half> ||
                                        std::is_same_v<T, __nv_bfloat16>;

template <typename T>
__device__ __forceinline__ ComputeType<T> toCompute(T value) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(value);
  } else if constexpr (std::is_same_v<T, BoolByte>) {
    return value.value != 0;
  } else {
    return value;
  }
}

// Rounds to nearest even for fp16 and bf16, as the CPU's floatToHalf / floatToBFloat16 do.
template <typename T>
__device__ __forceinline__ T fromCompute(ComputeType<T> value) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(value);
  } else if constexpr (std::is_same_v<T, BoolByte>) {
    return BoolByte{static_cast<uint8_t>(value ? 1 : 0)};
  } else {
    return value;
  }
}

// Packs of N elements moved as 16-byte accesses; N * sizeof(T) is a multiple of 16 and the
// address is 16-byte aligned.
template <typename T, int N>
__device__ __forceinline__ void loadPack(const T* __restrict__ source, T (&pack)[N]) {
  static_assert((N * sizeof(T)) % 16 == 0, "a pack is whole 16-byte words");
  constexpr int kWords = static_cast<int>(N * sizeof(T) / 16);
  uint4 words[kWords];
  const uint4* from = reinterpret_cast<const uint4*>(source);
#pragma unroll
  for (int i = 0; i < kWords; ++i) words[i] = from[i];
  memcpy(pack, words, sizeof(words));
}

template <typename T, int N>
__device__ __forceinline__ void storePack(T* __restrict__ destination, const T (&pack)[N]) {
  static_assert((N * sizeof(T)) % 16 == 0, "a pack is whole 16-byte words");
  constexpr int kWords = static_cast<int>(N * sizeof(T) / 16);
  uint4 words[kWords];
  memcpy(words, pack, sizeof(words));
  uint4* to = reinterpret_cast<uint4*>(destination);
#pragma unroll
  for (int i = 0; i < kWords; ++i) to[i] = words[i];
}

// Elements per thread on the vector path: 16 bytes of the narrower of the two types, so that
// every array moves in whole 16-byte words.
template <typename A, typename B>
inline constexpr int kPackSize = static_cast<int>(16 / std::min(sizeof(A), sizeof(B)));

inline bool isAligned16(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

constexpr int kThreadsPerBlock = 256;
// Grid-stride loops cover the rest; 65536 blocks of 256 threads oversubscribe 132 SMs many times.
constexpr int64_t kMaxBlocks = 65536;
// Flat kernels index in 32 bits; longer arrays are launched in chunks of this many elements (a
// multiple of every pack size, so that chunks keep the base's alignment).
constexpr int64_t kFlatChunk = int64_t{1} << 30;

inline unsigned blocksFor(int64_t units) {
  const int64_t blocks = (units + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks));
}

// n / divisor and n % divisor by a multiply-high and a shift, for n < 2^31 (Granlund-Montgomery,
// as PyTorch's IntDivider): magic = floor(2^32 * (2^shift - d) / d) + 1 with 2^shift >= d.
struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t multiplier = 1;
  uint32_t shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    const uint64_t magic = ((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1;
    multiplier = static_cast<uint32_t>(magic);
  }

  __device__ __forceinline__ uint32_t divide(uint32_t n) const {
    return (__umulhi(n, multiplier) + n) >> shift;
  }
};

// out[i] = fn(in[i]) over `count` elements (count < 2^31): the first vectorCount * N elements in
// packs of N, the rest one by one (all of them when the pointers are not 16-byte aligned).
template <typename In, typename Out, int N, typename Fn>
__global__ void __launch_bounds__(kThreadsPerBlock)
    flatMapKernel(const In* __restrict__ in, Out* __restrict__ out, uint32_t count,
                  uint32_t vectorCount, Fn fn) {
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t first = blockIdx.x * blockDim.x + threadIdx.x;
  for (uint32_t v = first; v < vectorCount; v += stride) {
    In inPack[N];
    Out outPack[N];
    loadPack(in + v * N, inPack);
#pragma unroll
    for (int i = 0; i < N; ++i) outPack[i] = fn(inPack[i]);
    storePack(out + v * N, outPack);
  }
  for (uint32_t e = vectorCount * N + first; e < count; e += stride) out[e] = fn(in[e]);
}

// Launches flatMapKernel over `count` elements (fn maps storage In to storage Out).
template <typename In, typename Out, typename Fn>
void launchMap(const In* in, Out* out, int64_t count, Fn fn, cudaStream_t stream) {
  constexpr int kN = kPackSize<In, Out>;
  const bool vectorize = isAligned16(in) && isAligned16(out);
  for (int64_t offset = 0; offset < count; offset += kFlatChunk) {
    const int64_t chunk = std::min(kFlatChunk, count - offset);
    const int64_t vectorCount = vectorize ? chunk / kN : 0;
    const int64_t units = std::max(vectorCount, chunk - vectorCount * kN);
    flatMapKernel<In, Out, kN, Fn><<<blocksFor(units), kThreadsPerBlock, 0, stream>>>(
        in + offset, out + offset, static_cast<uint32_t>(chunk),
        static_cast<uint32_t>(vectorCount), fn);
    KILN_CUDA_CHECK_LAUNCH();
  }
}

// Wraps a function of the compute type into one of the storage type T (load, compute, round).
template <typename T, typename Fn>
struct ComputeIn {
  Fn fn;
  __device__ __forceinline__ T operator()(T value) const {
    return fromCompute<T>(fn(toCompute(value)));
  }
};

template <typename T, typename Fn>
void launchComputeMap(const void* in, void* out, int64_t count, Fn fn, cudaStream_t stream) {
  launchMap(static_cast<const T*>(in), static_cast<T*>(out), count, ComputeIn<T, Fn>{fn}, stream);
}

}  // namespace kiln::cuda_kernels::pointwise

#include "kernels/cuda/cumulative.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cub/block/block_scan.cuh>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace kiln::cuda_kernels {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kItemsPerThread = 4;
constexpr int kTile = kBlockThreads * kItemsPerThread;
constexpr int64_t kMaxGridBlocks = 65536;
// Below this many columns a strided axis runs as block scans rather than a thread a column.
constexpr int64_t kMinColumnsForThreadScan = 8192;

// The type a scan accumulates in: float32 for the float formats, the unsigned type of the same
// width for integers (overflow wraps around without undefined behaviour).
template <typename T>
struct AccumulatorOf {
  using type = float;
};
template <>
struct AccumulatorOf<int32_t> {
  using type = uint32_t;
};
template <>
struct AccumulatorOf<int64_t> {
  using type = uint64_t;
};
template <typename T>
using Accumulator = typename AccumulatorOf<T>::type;

template <typename T>
__device__ __forceinline__ Accumulator<T> load(const T* pointer) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(*pointer);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(*pointer);
  } else {
    return static_cast<Accumulator<T>>(*pointer);
  }
}

template <typename T>
__device__ __forceinline__ void store(T* pointer, Accumulator<T> value) {
  if constexpr (std::is_same_v<T, __half>) {
    *pointer = __float2half_rn(value);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    *pointer = __float2bfloat16_rn(value);
  } else {
    *pointer = static_cast<T>(value);
  }
}

template <bool kProd>
struct Combine {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return kProd ? static_cast<A>(a * b) : static_cast<A>(a + b);
  }
};

// Carries the running total of the tiles already scanned into the next tile's block scan.
template <typename A, bool kProd>
struct RunningPrefix {
  A total;
  __device__ A operator()(A tileTotal) {
    const A before = total;
    total = Combine<kProd>()(total, tileTotal);
    return before;
  }
};

// One block a row (outer o, column i): the row's elements sit `inner` apart. Tiles of kTile
// elements are loaded coalesced (for inner == 1) into shared memory, each thread scans its
// kItemsPerThread consecutive elements, a block-wide exclusive scan of the thread totals (seeded
// with the previous tiles' total) gives each thread its prefix.
template <typename T, bool kProd>
__global__ void __launch_bounds__(kBlockThreads)
    rowScanKernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t axisSize,
                  int64_t inner) {
  using A = Accumulator<T>;
  using BlockScan = cub::BlockScan<A, kBlockThreads>;
  __shared__ typename BlockScan::TempStorage scanStorage;
  __shared__ A tile[kTile];
  const A identity = kProd ? A(1) : A(0);
  const Combine<kProd> combine;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = (row / inner) * axisSize * inner + row % inner;
    RunningPrefix<A, kProd> prefix{identity};
    for (int64_t start = 0; start < axisSize; start += kTile) {
      const int64_t count = axisSize - start < kTile ? axisSize - start : kTile;
      for (int k = threadIdx.x; k < kTile; k += kBlockThreads) {
        tile[k] = k < count ? load(x + base + (start + k) * inner) : identity;
      }
      __syncthreads();
      A items[kItemsPerThread];
      A running = identity;
#pragma unroll
      for (int j = 0; j < kItemsPerThread; ++j) {
        running = combine(running, tile[threadIdx.x * kItemsPerThread + j]);
        items[j] = running;
      }
      A before;
      BlockScan(scanStorage).ExclusiveScan(running, before, combine, prefix);
#pragma unroll
      for (int j = 0; j < kItemsPerThread; ++j) {
        tile[threadIdx.x * kItemsPerThread + j] = combine(before, items[j]);
      }
      __syncthreads();
      for (int k = threadIdx.x; k < count; k += kBlockThreads) {
        store(y + base + (start + k) * inner, tile[k]);
      }
      __syncthreads();  // the tile and the scan storage are reused by the next tile
    }
  }
}

// One thread a column (outer o, column i), scanning along the axis; neighbouring threads hold
// neighbouring columns, so every step's reads and writes are coalesced.
template <typename T, bool kProd>
__global__ void __launch_bounds__(kBlockThreads)
    columnScanKernel(const T* __restrict__ x, T* __restrict__ y, int64_t columns, int64_t axisSize,
                     int64_t inner) {
  using A = Accumulator<T>;
  const Combine<kProd> combine;
  for (int64_t column = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; column < columns;
       column += int64_t{gridDim.x} * blockDim.x) {
    const int64_t base = (column / inner) * axisSize * inner + column % inner;
    A running = kProd ? A(1) : A(0);
    for (int64_t a = 0; a < axisSize; ++a) {
      const int64_t at = base + a * inner;
      running = combine(running, load(x + at));
      store(y + at, running);
    }
  }
}

template <typename T, bool kProd>
void launchScan(const CumulativeParams& p, const T* x, T* y, cudaStream_t stream) {
  const int64_t columns = p.outer * p.inner;
  if (p.inner > 1 && (columns >= kMinColumnsForThreadScan || p.axisSize <= kItemsPerThread)) {
    const auto grid = static_cast<unsigned>(
        std::clamp<int64_t>((columns + kBlockThreads - 1) / kBlockThreads, 1, kMaxGridBlocks));
    columnScanKernel<T, kProd>
        <<<grid, kBlockThreads, 0, stream>>>(x, y, columns, p.axisSize, p.inner);
  } else {
    const auto grid = static_cast<unsigned>(std::clamp<int64_t>(columns, 1, kMaxGridBlocks));
    rowScanKernel<T, kProd><<<grid, kBlockThreads, 0, stream>>>(x, y, columns, p.axisSize, p.inner);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void scan(const CumulativeParams& p, const void* x, void* y, cudaStream_t stream) {
  const auto* input = static_cast<const T*>(x);
  auto* output = static_cast<T*>(y);
  if (p.function == CumulativeFunction::kProd) {
    launchScan<T, true>(p, input, output, stream);
  } else {
    launchScan<T, false>(p, input, output, stream);
  }
}

}  // namespace

void cumulative(const CumulativeParams& params, const void* x, void* out, cudaStream_t stream) {
  if (params.outer < 0 || params.axisSize < 0 || params.inner < 0) {
    throw std::invalid_argument("cumulative: sizes must not be negative");
  }
  if (params.outer * params.axisSize * params.inner == 0) return;
  switch (params.type) {
    case ScalarType::kFloat32:
      return scan<float>(params, x, out, stream);
    case ScalarType::kFloat16:
      return scan<__half>(params, x, out, stream);
    case ScalarType::kBFloat16:
      return scan<__nv_bfloat16>(params, x, out, stream);
    case ScalarType::kInt32:
      return scan<int32_t>(params, x, out, stream);
    case ScalarType::kInt64:
      return scan<int64_t>(params, x, out, stream);
    default:
      break;
  }
  throw std::invalid_argument(std::string("cumulative sums and products on the GPU take int32, ") +
                              "int64, float32, float16 and bfloat16, not " +
                              scalarName(params.type));
}

}  // namespace kiln::cuda_kernels

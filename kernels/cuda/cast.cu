#include "kernels/cuda/cast.h"

#include <limits>
#include <type_traits>

#include "kernels/cuda/pointwise_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using pointwise::BoolByte;
using pointwise::ComputeType;

// Integer bounds as namespace-scope constants, which device code may read (numeric_limits'
// functions are host functions).
template <typename Int>
inline constexpr Int kLowest = std::numeric_limits<Int>::lowest();
template <typename Int>
inline constexpr Int kHighest = std::numeric_limits<Int>::max();

// NaN -> 0, out of range -> the nearest bound, else truncation toward zero. Comparing with the
// bounds in float is exact: the lowest bounds are 0 or -2^k, and the float nearest max is max
// itself (8-bit types) or 2^31 / 2^63, above which no float lies below max.
template <typename Int>
__device__ __forceinline__ Int floatToInt(float value) {
  if (isnan(value)) return 0;
  if (value <= static_cast<float>(kLowest<Int>)) return kLowest<Int>;
  if (value >= static_cast<float>(kHighest<Int>)) return kHighest<Int>;
  return static_cast<Int>(value);
}

// Loads In as float (float formats), bool, or itself (integers), and stores that as Out.
template <typename In, typename Out>
struct CastElement {
  __device__ __forceinline__ Out operator()(In in) const {
    const ComputeType<In> value = pointwise::toCompute(in);
    if constexpr (std::is_same_v<Out, BoolByte>) {
      return BoolByte{static_cast<uint8_t>(value != 0 ? 1 : 0)};
    } else if constexpr (pointwise::kIsFloatStorage<Out>) {
      return pointwise::fromCompute<Out>(static_cast<float>(value));
    } else if constexpr (std::is_same_v<ComputeType<In>, float>) {
      return floatToInt<Out>(value);
    } else {
      return static_cast<Out>(value);  // integers wrap, bool is 0 or 1
    }
  }
};

}  // namespace

void cast(const void* input, ScalarType inputType, void* output, ScalarType outputType,
          int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  if (inputType == outputType) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(output, input, static_cast<size_t>(count) *
                                                       scalarSize(inputType),
                                    cudaMemcpyDeviceToDevice, stream));
    return;
  }
  pointwise::visitScalarType(inputType, [&](auto inTag) {
    using In = typename decltype(inTag)::type;
    pointwise::visitScalarType(outputType, [&](auto outTag) {
      using Out = typename decltype(outTag)::type;
      if constexpr (!std::is_same_v<In, Out>) {  // equal types were copied above
        pointwise::launchMap(static_cast<const In*>(input), static_cast<Out*>(output), count,
                             CastElement<In, Out>{}, stream);
      }
    });
  });
}

}  // namespace kiln::cuda_kernels

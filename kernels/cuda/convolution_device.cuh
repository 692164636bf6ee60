// Device code shared by Kiln's convolution kernels (the epilogue after cuDNN's convolution and the
// depthwise kernels): element conversions to and from the fp32 they compute in, and the
// activations of ConvolutionActivation, each keeping NaN as torch does (and cuDNN's
// CUDNN_PROPAGATE_NAN for ReLU).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/cuda/convolution.h"

namespace kiln::cuda_kernels::convolution_detail {

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

__device__ __forceinline__ float activate(float value, ConvolutionActivation activation) {
  switch (activation) {
    case ConvolutionActivation::kRelu:
      return value < 0.0f ? 0.0f : value;
    case ConvolutionActivation::kRelu6:
      return value < 0.0f ? 0.0f : (value > 6.0f ? 6.0f : value);
    case ConvolutionActivation::kSilu:
      return value / (1.0f + __expf(-value));
    case ConvolutionActivation::kHardSwish: {
      const float gate = value + 3.0f;
      return value * (gate < 0.0f ? 0.0f : (gate > 6.0f ? 6.0f : gate)) * (1.0f / 6.0f);
    }
    default:
      return value;
  }
}

}  // namespace kiln::cuda_kernels::convolution_detail

// The activations a convolution's epilogue applies (ConvolutionActivation), on the device: shared
// by Kiln's epilogue kernel after cuDNN's convolution and by Kiln's depthwise kernels. Each keeps
// NaN, as torch does (and cuDNN's CUDNN_PROPAGATE_NAN for ReLU).
#pragma once

#include "kernels/cuda/convolution.h"

namespace kiln::cuda_kernels::convolution_detail {

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

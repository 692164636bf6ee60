// Internal to kernels/cuda/convolution.cpp: the CUDA kernels around cuDNN's convolution, an
// in-place bias + ReLU epilogue and the window copy that pads an input or crops a result.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"
#include "kernels/cuda/convolution.h"

namespace kiln::cuda_kernels::convolution_detail {

// out[n, c, p] = activation(out[n, c, p] + bias[c] + residual[n, c, p]) over (batch, channels,
// spatialVolume) elements laid out as `layout` says; bias and residual may be null.
void launchBiasActivation(ScalarType type, TensorLayout layout, int64_t batch, int64_t channels,
                          int64_t spatialVolume, void* out, const void* bias, const void* residual,
                          ConvolutionActivation activation, cudaStream_t stream);

// dst[n, c, p] = activation(src[n, c, p + shift] + bias[c]), with 0 for src where p + shift is
// outside src. dstDims and srcDims are (batch, channels, spatial...) in NCHW order (4 or 5 dims,
// equal but for the spatial ones), shift has the spatial rank; bias may be null.
struct WindowCopy {
  ScalarType type = ScalarType::kFloat32;
  TensorLayout layout = TensorLayout::kNCHW;
  Shape dstDims;
  Shape srcDims;
  Shape shift;
  ConvolutionActivation activation = ConvolutionActivation::kNone;
};
void launchWindowCopy(const WindowCopy& copy, const void* src, void* dst, const void* bias,
                      cudaStream_t stream);

}  // namespace kiln::cuda_kernels::convolution_detail

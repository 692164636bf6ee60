// Convolution and transposed convolution on float32, 1 to 3 spatial dims, as im2col / col2im
// around the blocked GEMM.
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

// Shapes of one convolution. The spatial vectors all have the spatial rank (1, 2 or 3).
// Padding after the input only shows in outSpatial, which the caller computes.
struct ConvolutionParams {
  int64_t batch = 1;
  int64_t inChannels = 0;
  int64_t outChannels = 0;
  int64_t groups = 1;
  Shape inSpatial;
  Shape outSpatial;
  Shape kernel;
  Shape stride;
  Shape prePadding;
  Shape dilation;
};

// x (batch, inChannels, inSpatial...), weight (outChannels, inChannels / groups, kernel...),
// bias (outChannels) or null -> out (batch, outChannels, outSpatial...).
void convolution(const ConvolutionParams& params, const float* x, const float* weight,
                 const float* bias, float* out);

// The transpose (gradient) of convolution with the same fields: x (batch, inChannels,
// inSpatial...), weight (inChannels, outChannels / groups, kernel...), bias (outChannels) or
// null -> out (batch, outChannels, outSpatial...); output padding only shows in outSpatial.
void deconvolution(const ConvolutionParams& params, const float* x, const float* weight,
                   const float* bias, float* out);

}  // namespace kiln::cpu_kernels

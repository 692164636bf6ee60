// Batch normalization (inference, running statistics) and layer normalization on the GPU. Mirrors
// kernels/cpu/normalization.h and adds fp16 and bf16 (computed in float32) and channels-last
// batch norm.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

// x (batch, channels, spatial), or (batch, spatial, channels) when channelsLast, with spatial the
// volume of the spatial dims: y = (x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + bias[c].
// x and y have `type` (float32, fp16 or bf16); scale, bias, mean and var (channels each) have
// `parameterType`, which is float32 or `type`. scale and bias may be null (1 and 0).
struct BatchNormParams {
  int64_t batch = 1;
  int64_t channels = 0;
  int64_t spatial = 1;
  double epsilon = 1e-5;
  ScalarType type = ScalarType::kFloat32;
  ScalarType parameterType = ScalarType::kFloat32;
  bool channelsLast = false;
};
void batchNorm(const BatchNormParams& params, const void* x, const void* scale, const void* bias,
               const void* mean, const void* var, void* out, cudaStream_t stream);

// x (rows, cols): each row is normalized by its own mean and (biased) variance, then multiplied
// by scale (cols) and shifted by bias (cols), either of which may be null. x and out have `type`
// (float32, fp16 or bf16); scale and bias have `parameterType` (float32 or `type`). Statistics
// are float32: two passes over registers for rows up to a few thousand elements, Welford above.
struct LayerNormParams {
  int64_t rows = 0;
  int64_t cols = 0;
  double epsilon = 1e-5;
  ScalarType type = ScalarType::kFloat32;
  ScalarType parameterType = ScalarType::kFloat32;
};
// residual may be null; else the norm is of x + residual (the sum rounded to `type` first).
void layerNorm(const LayerNormParams& params, const void* x, const void* scale, const void* bias,
               const void* residual, void* out, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

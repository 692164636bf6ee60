// Batch normalization (inference, running statistics) and layer normalization on float32.
#pragma once

#include <cstdint>

namespace kiln::cpu_kernels {

// x (batch, channels, spatial) with spatial the volume of the dims after the channel:
// y = (x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + bias[c]. scale and bias may be null
// (1 and 0).
struct BatchNormParams {
  int64_t batch = 1;
  int64_t channels = 0;
  int64_t spatial = 1;
  double epsilon = 1e-5;
};
void batchNorm(const BatchNormParams& params, const float* x, const float* scale,
               const float* bias, const float* mean, const float* var, float* out);

// x (rows, cols): each row is normalized by its own mean and (biased) variance, then
// multiplied by scale (cols) and shifted by bias (cols), either of which may be null.
struct LayerNormParams {
  int64_t rows = 0;
  int64_t cols = 0;
  double epsilon = 1e-5;
};
void layerNorm(const LayerNormParams& params, const float* x, const float* scale,
               const float* bias, float* out);

}  // namespace kiln::cpu_kernels

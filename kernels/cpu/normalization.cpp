#include "kernels/cpu/normalization.h"

#include <cmath>

namespace kiln::cpu_kernels {

void batchNorm(const BatchNormParams& params, const float* x, const float* scale,
               const float* bias, const float* mean, const float* var, float* out) {
  for (int64_t c = 0; c < params.channels; ++c) {
    // Folded into one multiply-add per element: y = x * factor + shift.
    const double inverseStd = 1.0 / std::sqrt(static_cast<double>(var[c]) + params.epsilon);
    const double factor = inverseStd * (scale ? scale[c] : 1.0);
    const float multiplier = static_cast<float>(factor);
    const float shift = static_cast<float>((bias ? bias[c] : 0.0) - mean[c] * factor);
    for (int64_t n = 0; n < params.batch; ++n) {
      const int64_t offset = (n * params.channels + c) * params.spatial;
      const float* in = x + offset;
      float* result = out + offset;
      for (int64_t i = 0; i < params.spatial; ++i) result[i] = in[i] * multiplier + shift;
    }
  }
}

void layerNorm(const LayerNormParams& params, const float* x, const float* scale,
               const float* bias, float* out) {
  const int64_t cols = params.cols;
  for (int64_t r = 0; r < params.rows; ++r) {
    const float* in = x + r * cols;
    float* result = out + r * cols;
    double sum = 0.0;
    for (int64_t i = 0; i < cols; ++i) sum += in[i];
    const double mean = cols > 0 ? sum / static_cast<double>(cols) : 0.0;
    // Two passes: the variance of the centred values does not cancel catastrophically.
    double squares = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      const double centred = in[i] - mean;
      squares += centred * centred;
    }
    const double variance = cols > 0 ? squares / static_cast<double>(cols) : 0.0;
    const float inverseStd = static_cast<float>(1.0 / std::sqrt(variance + params.epsilon));
    const float meanValue = static_cast<float>(mean);
    for (int64_t i = 0; i < cols; ++i) {
      float value = (in[i] - meanValue) * inverseStd;
      if (scale) value *= scale[i];
      if (bias) value += bias[i];
      result[i] = value;
    }
  }
}

}  // namespace kiln::cpu_kernels

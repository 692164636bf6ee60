#include "kernels/cpu/resize.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <vector>

namespace kiln::cpu_kernels {
namespace {

// Every output index of one axis: its taps into the input, as torch's CPU kernels precompute.
struct AxisTaps {
  int count = 0;  // taps per output index
  std::vector<int64_t> index;
  std::vector<float> weight;
};

AxisTaps tapsOf(const ResizeParams& params, const kernels::ResizeAxis& axis) {
  AxisTaps taps;
  taps.count = 1;
  taps.index.assign(static_cast<size_t>(axis.out) * kernels::kMaxResizeTaps, 0);
  taps.weight.assign(taps.index.size(), 0.0f);
  for (int64_t o = 0; o < axis.out; ++o) {
    const size_t at = static_cast<size_t>(o) * kernels::kMaxResizeTaps;
    const int count = kernels::resizeTaps(params.mode, params.alignCorners, axis, o,
                                          &taps.index[at], &taps.weight[at]);
    // Every output of an axis takes the same number of taps (the mode's, or 1 for a copy).
    taps.count = std::max(taps.count, count);
  }
  return taps;
}

}  // namespace

void resize(const ResizeParams& params, const float* x, float* out) {
  const std::array<kernels::ResizeAxis, 3> axes = kernels::resizeAxes(params);
  const std::array<AxisTaps, 3> taps = {tapsOf(params, axes[0]), tapsOf(params, axes[1]),
                                        tapsOf(params, axes[2])};
  const int64_t channels = params.channels;
  const int64_t inPlane = axes[0].in * axes[1].in * axes[2].in * channels;
  const int64_t outPlane = axes[0].out * axes[1].out * axes[2].out * channels;
  constexpr int64_t kTaps = kernels::kMaxResizeTaps;
  for (int64_t plane = 0; plane < params.planes; ++plane) {
    const float* source = x + plane * inPlane;
    float* target = out + plane * outPlane;
    for (int64_t od = 0; od < axes[0].out; ++od) {
      for (int64_t oh = 0; oh < axes[1].out; ++oh) {
        for (int64_t ow = 0; ow < axes[2].out; ++ow) {
          for (int64_t channel = 0; channel < channels; ++channel) {
            // Innermost dim first, as torch nests its separable interpolation.
            float depthSum = 0.0f;
            for (int a = 0; a < taps[0].count; ++a) {
              const int64_t d = taps[0].index[od * kTaps + a];
              float rowSum = 0.0f;
              for (int b = 0; b < taps[1].count; ++b) {
                const int64_t h = taps[1].index[oh * kTaps + b];
                const float* row = source + (d * axes[1].in + h) * axes[2].in * channels + channel;
                float sum = 0.0f;
                for (int c = 0; c < taps[2].count; ++c) {
                  sum += row[taps[2].index[ow * kTaps + c] * channels] *
                         taps[2].weight[ow * kTaps + c];
                }
                rowSum += sum * taps[1].weight[oh * kTaps + b];
              }
              depthSum += rowSum * taps[0].weight[od * kTaps + a];
            }
            *target++ = depthSum;
          }
        }
      }
    }
  }
}

}  // namespace kiln::cpu_kernels

#include "kernels/cpu/pooling.h"

#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::cpu_kernels {
namespace {

// Pooling runs as 3-D; missing leading spatial dims have size 1.
using Dims3 = std::array<int64_t, 3>;

Dims3 toDims3(const Shape& shape, size_t rank, int64_t fill) {
  if (rank == 0 || rank > 3 || shape.size() != rank) {
    throw std::invalid_argument("pooling: spatial parameters need the same rank, 1 to 3 (got " +
                                std::to_string(shape.size()) + " and " + std::to_string(rank) +
                                ")");
  }
  Dims3 dims = {fill, fill, fill};
  for (size_t i = 0; i < rank; ++i) dims[3 - rank + i] = shape[i];
  return dims;
}

// One window along each dim: the first tap's input coordinate, the tap count and spacing, and
// where the padded input ends (taps beyond it do not count, even with countIncludePad).
struct Window {
  Dims3 start;
  Dims3 taps;
  Dims3 step;
  Dims3 paddedEnd;
};

// Reduces the window of one plane with torch's max (NaN wins) or average rule.
float poolWindow(PoolingMode mode, bool countIncludePad, const Window& w, const Dims3& in,
                 const float* plane) {
  float maximum = -std::numeric_limits<float>::infinity();
  double sum = 0.0;
  int64_t inside = 0;
  int64_t padded = 0;
  for (int64_t a = 0; a < w.taps[0]; ++a) {
    const int64_t d = w.start[0] + a * w.step[0];
    if (d >= w.paddedEnd[0]) break;
    const bool dInside = d >= 0 && d < in[0];
    for (int64_t b = 0; b < w.taps[1]; ++b) {
      const int64_t h = w.start[1] + b * w.step[1];
      if (h >= w.paddedEnd[1]) break;
      const bool hInside = dInside && h >= 0 && h < in[1];
      for (int64_t c = 0; c < w.taps[2]; ++c) {
        const int64_t x = w.start[2] + c * w.step[2];
        if (x >= w.paddedEnd[2]) break;
        ++padded;
        if (!hInside || x < 0 || x >= in[2]) continue;
        const float value = plane[(d * in[1] + h) * in[2] + x];
        ++inside;
        sum += value;
        if (value > maximum || std::isnan(value)) maximum = value;
      }
    }
  }
  if (mode == PoolingMode::kMax) return maximum;
  const int64_t divisor = countIncludePad ? padded : inside;
  return divisor > 0 ? static_cast<float>(sum / static_cast<double>(divisor)) : 0.0f;
}

}  // namespace

void pooling(const PoolingParams& params, const float* x, float* out) {
  const size_t rank = params.kernel.size();
  const Dims3 in = toDims3(params.inSpatial, rank, 1);
  const Dims3 outDims = toDims3(params.outSpatial, rank, 1);
  const Dims3 kernel = toDims3(params.kernel, rank, 1);
  const Dims3 stride = toDims3(params.stride, rank, 1);
  const Dims3 prePadding = toDims3(params.prePadding, rank, 0);
  const Dims3 postPadding = toDims3(params.postPadding, rank, 0);
  const Dims3 dilation = toDims3(params.dilation, rank, 1);
  const int64_t inPlane = in[0] * in[1] * in[2];
  const int64_t outPlane = outDims[0] * outDims[1] * outDims[2];
  Window w;
  w.taps = kernel;
  w.step = dilation;
  for (int i = 0; i < 3; ++i) w.paddedEnd[i] = in[i] + postPadding[i];
  for (int64_t p = 0; p < params.batch * params.channels; ++p) {
    const float* plane = x + p * inPlane;
    float* result = out + p * outPlane;
    for (int64_t od = 0; od < outDims[0]; ++od) {
      w.start[0] = od * stride[0] - prePadding[0];
      for (int64_t oh = 0; oh < outDims[1]; ++oh) {
        w.start[1] = oh * stride[1] - prePadding[1];
        for (int64_t ow = 0; ow < outDims[2]; ++ow) {
          w.start[2] = ow * stride[2] - prePadding[2];
          *result++ = poolWindow(params.mode, params.countIncludePad, w, in, plane);
        }
      }
    }
  }
}

void adaptivePooling(const AdaptivePoolingParams& params, const float* x, float* out) {
  const size_t rank = params.inSpatial.size();
  const Dims3 in = toDims3(params.inSpatial, rank, 1);
  const Dims3 outDims = toDims3(params.outSpatial, rank, 1);
  const int64_t inPlane = in[0] * in[1] * in[2];
  Window w;
  w.step = {1, 1, 1};
  w.paddedEnd = in;
  // Windows along each dim, computed once.
  std::array<std::vector<int64_t>, 3> starts;
  std::array<std::vector<int64_t>, 3> sizes;
  for (int i = 0; i < 3; ++i) {
    for (int64_t o = 0; o < outDims[i]; ++o) {
      const int64_t start = o * in[i] / outDims[i];
      const int64_t end = ((o + 1) * in[i] + outDims[i] - 1) / outDims[i];
      starts[i].push_back(start);
      sizes[i].push_back(end - start);
    }
  }
  for (int64_t p = 0; p < params.batch * params.channels; ++p) {
    const float* plane = x + p * inPlane;
    for (int64_t od = 0; od < outDims[0]; ++od) {
      for (int64_t oh = 0; oh < outDims[1]; ++oh) {
        for (int64_t ow = 0; ow < outDims[2]; ++ow) {
          w.start = {starts[0][od], starts[1][oh], starts[2][ow]};
          w.taps = {sizes[0][od], sizes[1][oh], sizes[2][ow]};
          *out++ = poolWindow(params.mode, false, w, in, plane);
        }
      }
    }
  }
}

}  // namespace kiln::cpu_kernels

// torch.nn.functional.interpolate's source-index rules (antialias=False), shared by the CPU and
// CUDA resize kernels so that both backends pick the same taps and weights. The rules are those
// of torch's CPU kernels (aten/src/ATen/native/UpSample.h): float32 coordinates, the exact copy
// along a dim whose size does not change, the "output = 2 * input" shortcut of nearest, and
// bicubic's clamped border taps.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/common/kernel_types.h"

#if defined(__CUDACC__)
#define KILN_HOST_DEVICE __host__ __device__
#else
#define KILN_HOST_DEVICE
#endif

namespace kiln::kernels {

enum class ResizeMode : uint8_t {
  kNearest,       // floor(o * ratio)
  kNearestExact,  // floor((o + 0.5) * ratio)
  kLinear,        // linear, bilinear or trilinear by the spatial rank
  kCubic,         // bicubic, A = -0.75
};

// Input (planes, inSpatial..., channels) -> output (planes, outSpatial..., channels), row-major:
// planes = N * C and channels = 1 channels-first, planes = N and channels = C channels-last.
// scales is empty or has one entry per spatial dim: torch's scale factor for that dim (0 = none).
struct ResizeParams {
  ResizeMode mode = ResizeMode::kNearest;
  int64_t planes = 0;
  int64_t channels = 1;
  Shape inSpatial;
  Shape outSpatial;
  std::vector<double> scales;
  bool alignCorners = false;
  ScalarType type = ScalarType::kFloat32;  // the CUDA kernel's element type
};

// One spatial dim: its sizes and the ratio that maps output to input coordinates.
struct ResizeAxis {
  int64_t in = 1;
  int64_t out = 1;
  float ratio = 1.0f;
};

// The (depth, height, width) axes of a resize, missing leading dims of size 1. Throws
// std::invalid_argument for a rank outside 1..3, mismatched vectors, sizes below 1, negative
// scales or cubic with other than 2 spatial dims.
std::array<ResizeAxis, 3> resizeAxes(const ResizeParams& params);

constexpr int kMaxResizeTaps = 4;

// a * b rounded before any addition: nvcc would otherwise contract the source coordinate's
// multiply-add into an FMA, and a coordinate an ulp away can floor to another pixel.
KILN_HOST_DEVICE inline float roundedProduct(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Keys' cubic convolution with A = -0.75, for |x| <= 1 and for 1 < |x| < 2 (torch's
// cubic_convolution1 and cubic_convolution2).
KILN_HOST_DEVICE inline float cubicNear(float x) {
  constexpr float A = -0.75f;
  return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
}
KILN_HOST_DEVICE inline float cubicFar(float x) {
  constexpr float A = -0.75f;
  return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

// The input indices and weights output index `o` of `axis` reads; returns how many (1 to 4).
KILN_HOST_DEVICE inline int resizeTaps(ResizeMode mode, bool alignCorners, const ResizeAxis& axis,
                                       int64_t o, int64_t* index, float* weight) {
  const int64_t last = axis.in - 1;
  if (mode == ResizeMode::kNearest || mode == ResizeMode::kNearestExact) {
    weight[0] = 1.0f;
    if (mode == ResizeMode::kNearestExact) {
      // torch: floorf((dst_index + 0.5) * scale), the product taken in double.
      const auto source = static_cast<float>((static_cast<double>(o) + 0.5) * axis.ratio);
      index[0] = static_cast<int64_t>(floorf(source));
    } else if (axis.out == axis.in) {
      index[0] = o;
    } else if (axis.out == 2 * axis.in) {
      index[0] = o >> 1;
    } else {
      index[0] = static_cast<int64_t>(floorf(static_cast<float>(o) * axis.ratio));
    }
    if (index[0] > last) index[0] = last;
    return 1;
  }
  const bool cubic = mode == ResizeMode::kCubic;
  if (!cubic && axis.out == axis.in) {
    index[0] = o;
    weight[0] = 1.0f;
    return 1;
  }
  float source = alignCorners ? axis.ratio * static_cast<float>(o)
                              : roundedProduct(axis.ratio, static_cast<float>(o) + 0.5f) - 0.5f;
  if (!cubic && source < 0.0f) source = 0.0f;
  auto base = static_cast<int64_t>(floorf(source));
  if (base > last) base = last;
  float t = source - static_cast<float>(base);
  t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
  if (!cubic) {
    index[0] = base;
    index[1] = base < last ? base + 1 : base;
    weight[0] = 1.0f - t;
    weight[1] = t;
    return 2;
  }
  const float u = 1.0f - t;
  weight[0] = cubicFar(t + 1.0f);
  weight[1] = cubicNear(t);
  weight[2] = cubicNear(u);
  weight[3] = cubicFar(u + 1.0f);
  for (int j = 0; j < 4; ++j) {
    int64_t i = base - 1 + j;
    i = i < 0 ? 0 : (i > last ? last : i);
    index[j] = i;
  }
  return 4;
}

}  // namespace kiln::kernels

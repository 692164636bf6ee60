#include "kernels/common/resize.h"

#include <stdexcept>
#include <string>

namespace kiln::kernels {

std::array<ResizeAxis, 3> resizeAxes(const ResizeParams& params) {
  const size_t rank = params.inSpatial.size();
  if (rank < 1 || rank > 3 || params.outSpatial.size() != rank) {
    throw std::invalid_argument(
        "resize: takes 1 to 3 spatial dims with one output size each, got " + std::to_string(rank) +
        " input and " + std::to_string(params.outSpatial.size()) + " output dims");
  }
  if (!params.scales.empty() && params.scales.size() != rank) {
    throw std::invalid_argument("resize: takes no scales or one per spatial dim, got " +
                                std::to_string(params.scales.size()));
  }
  if (params.mode == ResizeMode::kCubic && rank != 2) {
    throw std::invalid_argument("resize: cubic takes 2 spatial dims, got " + std::to_string(rank));
  }
  if (params.planes < 0) throw std::invalid_argument("resize: planes must not be negative");
  if (params.channels < 1) throw std::invalid_argument("resize: channels must be at least 1");
  std::array<ResizeAxis, 3> axes{};
  for (size_t d = 0; d < rank; ++d) {
    ResizeAxis& axis = axes[3 - rank + d];
    axis.in = params.inSpatial[d];
    axis.out = params.outSpatial[d];
    if (axis.in < 1 || axis.out < 1) {
      throw std::invalid_argument("resize: sizes must be at least 1, got input " +
                                  std::to_string(axis.in) + " and output " +
                                  std::to_string(axis.out));
    }
    const double scale = params.scales.empty() ? 0.0 : params.scales[d];
    if (scale < 0.0) throw std::invalid_argument("resize: scales must not be negative");
    // torch's area_pixel_compute_scale (align_corners) and compute_scales_value, in float.
    const bool aligned = params.alignCorners &&
                         (params.mode == ResizeMode::kLinear || params.mode == ResizeMode::kCubic);
    if (aligned) {
      axis.ratio =
          axis.out > 1 ? static_cast<float>(axis.in - 1) / static_cast<float>(axis.out - 1) : 0.0f;
    } else if (scale > 0.0) {
      axis.ratio = static_cast<float>(1.0 / scale);
    } else {
      axis.ratio = static_cast<float>(axis.in) / static_cast<float>(axis.out);
    }
  }
  return axes;
}

}  // namespace kiln::kernels

// An inference batch norm as the per-channel affine map it computes,
//   bn(x) = x * scale + shift,  scale = gamma / sqrt(var + eps),  shift = beta - mean * scale,
// shared by the passes that fold it into a convolution or run it as pointwise arithmetic.
#pragma once

#include <optional>
#include <vector>

#include "core/builder/constant_values.h"
#include "core/ir/network.h"

namespace kiln {

struct BatchNormAffine {
  std::vector<double> scale;
  std::vector<double> shift;
};

// The affine map of `norm` (an inference batch norm), computed in double, when its gamma and
// beta (or their absence: 1 and 0) and its mean and var are float constants of `channels` values
// each; nullopt otherwise.
std::optional<BatchNormAffine> batchNormAffine(const Layer& norm, int64_t channels);

}  // namespace kiln

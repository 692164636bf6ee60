#include "core/builder/batch_norm_affine.h"

#include <cmath>

namespace kiln {

std::optional<BatchNormAffine> batchNormAffine(const Layer& norm, int64_t channels) {
  if (norm.kind() != LayerKind::kNormalization) return std::nullopt;
  const auto& p = norm.paramsAs<NormalizationParams>();
  if (p.type != NormalizationType::kBatch || norm.inputs().size() < 5) return std::nullopt;
  std::vector<double> operands[4];  // gamma, beta, mean, var
  const double fills[4] = {1.0, 0.0, 0.0, 1.0};
  for (size_t i = 0; i < 4; ++i) {
    const Tensor* tensor = norm.input(i + 1);
    if (tensor == nullptr) {
      if (i >= 2) return std::nullopt;  // mean and var are required
      operands[i].assign(static_cast<size_t>(channels), fills[i]);
      continue;
    }
    const Weights* weights = constantWeights(tensor);
    if (weights == nullptr || !isFloatingPoint(weights->dtype) || weights->count() != channels) {
      return std::nullopt;
    }
    operands[i] = toDoubles(*weights);
  }
  BatchNormAffine affine;
  affine.scale.resize(static_cast<size_t>(channels));
  affine.shift.resize(static_cast<size_t>(channels));
  for (size_t k = 0; k < static_cast<size_t>(channels); ++k) {
    affine.scale[k] = operands[0][k] / std::sqrt(operands[3][k] + p.epsilon);
    affine.shift[k] = operands[1][k] - operands[2][k] * affine.scale[k];
  }
  return affine;
}

}  // namespace kiln

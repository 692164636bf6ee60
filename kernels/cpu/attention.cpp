#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cast.h"

namespace kiln::cpu_kernels {
namespace {

// The additive mask value at `index`, as float.
float additiveMask(const void* mask, ScalarType type, int64_t index) {
  switch (type) {
    case ScalarType::kFloat16: {
      uint16_t bits;
      std::memcpy(&bits, static_cast<const uint16_t*>(mask) + index, sizeof bits);
      return halfToFloat(bits);
    }
    case ScalarType::kBFloat16: {
      uint16_t bits;
      std::memcpy(&bits, static_cast<const uint16_t*>(mask) + index, sizeof bits);
      return bfloat16ToFloat(bits);
    }
    default:
      return static_cast<const float*>(mask)[index];
  }
}

}  // namespace

void attention(const AttentionParams& params, const float* q, const float* k, const float* v,
               const void* mask, float* out) {
  constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();
  kernels::validateAttention(params, {kNoLimit, kNoLimit, /*halfTypes=*/false}, q, k, v, mask, out);
  const AttentionParams& p = params;
  if (p.batch == 0 || p.queries == 0) return;
  const int64_t group = p.heads / p.kvHeads;
  constexpr double kExcluded = -std::numeric_limits<double>::infinity();
  // A reference: dot products and sums in double, rounded once at the end.
  std::vector<double> scores(static_cast<size_t>(p.keys));
  std::vector<double> accumulator(static_cast<size_t>(p.valueDim));
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t kh = h / group;
      const float* kHead = k + b * p.k.batch + kh * p.k.head;
      const float* vHead = v + b * p.v.batch + kh * p.v.head;
      for (int64_t i = 0; i < p.queries; ++i) {
        const float* qRow = q + b * p.q.batch + h * p.q.head + i * p.q.row;
        const int64_t maskRow = b * p.maskBatchStride + h * p.maskHeadStride + i * p.maskRowStride;
        double maximum = kExcluded;
        for (int64_t j = 0; j < p.keys; ++j) {
          double& score = scores[static_cast<size_t>(j)];
          score = kExcluded;
          if (p.causal && j > i) continue;
          if (p.mask == AttentionMask::kBool &&
              static_cast<const uint8_t*>(mask)[maskRow + j] == 0) {
            continue;
          }
          const float* kRow = kHead + j * p.k.row;
          double dot = 0;
          for (int64_t e = 0; e < p.headDim; ++e) dot += static_cast<double>(qRow[e]) * kRow[e];
          score = static_cast<double>(p.scale) * dot;
          if (p.mask == AttentionMask::kAdditive) {
            score += additiveMask(mask, p.maskType, maskRow + j);
          }
          if (score > maximum) maximum = score;
        }
        float* outRow = out + b * p.out.batch + h * p.out.head + i * p.out.row;
        std::fill(accumulator.begin(), accumulator.end(), 0.0);
        double sum = 0;
        // maximum stays -inf when every key is excluded: the row is then zeros, not 0/0.
        if (maximum != kExcluded) {
          for (int64_t j = 0; j < p.keys; ++j) {
            const double weight = std::exp(scores[static_cast<size_t>(j)] - maximum);
            if (weight == 0) continue;
            sum += weight;
            const float* vRow = vHead + j * p.v.row;
            for (int64_t e = 0; e < p.valueDim; ++e) {
              accumulator[static_cast<size_t>(e)] += weight * vRow[e];
            }
          }
        }
        for (int64_t e = 0; e < p.valueDim; ++e) {
          outRow[e] =
              sum > 0 ? static_cast<float>(accumulator[static_cast<size_t>(e)] / sum) : 0.0f;
        }
      }
    }
  }
}

}  // namespace kiln::cpu_kernels

// Reductions over any set of axes, and softmax / log-softmax along one axis.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::ReduceFunction;

// Reduces the axes flagged in `reduced` (one flag per dim of inShape); the output holds the
// kept dims in order (keeping size-1 dims or not is only a matter of the caller's shape).
// float32 accumulates in double, integers in int64 (mean truncates); on bool, sum and max act
// as "any", prod and min as "all". Max and min propagate NaN.
struct ReduceParams {
  ReduceFunction function = ReduceFunction::kSum;
  ScalarType type = ScalarType::kFloat32;
  Shape inShape;
  std::vector<bool> reduced;
};
void reduce(const ReduceParams& params, const void* input, void* output);

// softmax (or log-softmax) of float32 `shape` along `axis` (0 <= axis < rank).
struct SoftmaxParams {
  Shape shape;
  int64_t axis = 0;
  bool log = false;
};
void softmax(const SoftmaxParams& params, const float* input, float* output);

}  // namespace kiln::cpu_kernels

// A fused pointwise program as the kernels see it (core's PointwiseParams, mapped by
// core/engine/kernel_mapping.h): steps over registers, one register per step, each step reading
// registers before it; float-format registers hold float32 values rounded to their type.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/common/kernel_types.h"

namespace kiln::kernels {

enum class PointwiseStepKind : uint8_t { kLoad, kBinary, kUnary, kActivation, kCast };

struct PointwiseStep {
  PointwiseStepKind kind = PointwiseStepKind::kLoad;
  ScalarType type = ScalarType::kFloat32;  // the register's type
  int32_t a = 0;                           // kLoad: the input; otherwise the first operand
  int32_t b = -1;                          // kBinary: the second operand
  BinaryOp binary = BinaryOp::kAdd;
  UnaryFunction unary = UnaryFunction::kExp;
  Activation activation = Activation::kRelu;
  double alpha = 0.0;
  double beta = 0.0;
};

struct PointwiseProgram {
  std::vector<PointwiseStep> steps;
  std::vector<int32_t> outputs;  // registers, in output order
};

}  // namespace kiln::kernels

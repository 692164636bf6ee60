// Binary elementwise operations with numpy broadcasting, on float32, the integer types and bool.
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::BinaryOp;

bool isComparison(BinaryOp op);

// a and b are broadcast to out: all three shapes have the same rank and each input dim is
// either the output dim or 1. Both inputs have `type`; the output has `type`, or bool for a
// comparison. On bool, add/mul/max/min act as or/and/or/and.
struct BinaryParams {
  BinaryOp op = BinaryOp::kAdd;
  ScalarType type = ScalarType::kFloat32;
  Shape aShape;
  Shape bShape;
  Shape outShape;
};

// Throws std::invalid_argument for an op the type does not support (e.g. and on float) and
// std::domain_error for an integer division by zero.
void binaryElementwise(const BinaryParams& params, const void* a, const void* b, void* out);

}  // namespace kiln::cpu_kernels

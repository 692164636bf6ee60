// Binary elementwise operations with numpy broadcasting on the GPU. Mirrors
// kernels/cpu/elementwise.h (same ops, same semantics, same shape conventions) and adds fp16 and
// bf16, which compute in float32 and round once on store.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::BinaryOp;

bool isComparison(BinaryOp op);

// a and b are broadcast to out: all three shapes have the same rank and each input dim is
// either the output dim or 1. Both inputs have `type`; the output has `type`, or bool for a
// comparison. On bool, add/mul/max/min act as or/and/or/and. fp16 and bf16 take the float ops.
struct BinaryParams {
  BinaryOp op = BinaryOp::kAdd;
  ScalarType type = ScalarType::kFloat32;
  Shape aShape;
  Shape bShape;
  Shape outShape;
};

// Launches out = op(a, b) on `stream`; a, b and out are device pointers to dense row-major
// tensors. Throws std::invalid_argument for an op the type does not support (e.g. and on float)
// or shapes that do not broadcast.
//
// The CPU kernel throws std::domain_error for an integer division (div, floor_div) by zero and an
// integer pow with a negative exponent; a kernel cannot throw without a synchronization. Here such
// an element gets 0 (pow: the truncated exact power, 1 for base 1 and +-1 for base -1, as torch
// does on CUDA), and when `domainError` is not null the kernel stores 1 to that device int32
// (the caller zeroes it, and checks it whenever it synchronizes).
void binaryElementwise(const BinaryParams& params, const void* a, const void* b, void* out,
                       cudaStream_t stream, int32_t* domainError = nullptr);

}  // namespace kiln::cuda_kernels

// Fused scaled-dot-product attention on float32: the reference for kernels/cuda/attention.h,
// which takes the same parameters (and adds fp16 and bf16).
#pragma once

#include <cstdint>

#include "kernels/common/attention_params.h"
#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::AttentionMask;
using kernels::AttentionParams;
using kernels::AttentionStrides;

// Throws std::invalid_argument naming the bad field for parameters outside the ranges that
// kernels/common/attention_params.h gives, or a null pointer that the work needs (mask only when
// params.mask is not kNone).
void attention(const AttentionParams& params, const float* q, const float* k, const float* v,
               const void* mask, float* out);

}  // namespace kiln::cpu_kernels

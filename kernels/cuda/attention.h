// Fused scaled-dot-product attention on the GPU (FlashAttention-2 style forward for fp16 and
// bf16 on tensor cores, a warp-per-query-row kernel for float32). Mirrors
// kernels/cpu/attention.h: same parameters, same semantics.
#pragma once

#include <cstdint>

#include "kernels/common/attention_params.h"
#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::AttentionMask;
using kernels::AttentionParams;
using kernels::AttentionStrides;

// Enqueues the attention on `stream`: no allocation, no synchronization, no workspace, so it can
// be captured in a CUDA graph. Any strides work; fp16/bf16 loads and stores are 16-byte vectors
// when every pointer is 16-byte aligned and headDim, valueDim and every row, head and batch
// stride are multiples of 8 elements, and element by element otherwise (slower, still correct).
// Throws std::invalid_argument naming the bad field for parameters outside the ranges that
// kernels/common/attention_params.h gives, or a null pointer that the work needs (mask only when
// params.mask is not kNone); CudaError when the launch fails.
void attention(const AttentionParams& params, const void* q, const void* k, const void* v,
               const void* mask, void* out, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

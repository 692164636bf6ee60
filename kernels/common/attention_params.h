// The parameters of fused scaled-dot-product attention, shared by kernels/cpu/attention.h (the
// float32 reference) and kernels/cuda/attention.h (float32, float16, bfloat16).
#pragma once

#include <cstdint>

#include "kernels/common/kernel_types.h"

namespace kiln::kernels {

// out[b, h, i, :] = sum_j softmax_j(scale * q[b,h,i,:]·k[b,kh,j,:] + mask(b,h,i,j)) * v[b,kh,j,:]
// with kh = h / (heads / kvHeads) (grouped-query attention; kvHeads divides heads).
enum class AttentionMask : uint8_t {
  kNone,
  kBool,      // nonzero byte = attend
  kAdditive,  // added to the scaled scores; -inf excludes the key
};

// Element strides of one (batch, head, row, dim) tensor; the last dim has stride 1.
struct AttentionStrides {
  int64_t batch = 0, head = 0, row = 0;
};

// Scores and softmax are computed in float32 after scaling and masking; causal (top-left
// aligned, as torch's is_causal) excludes keys j > i. A query row whose keys are all excluded
// gives zeros. batch == 0 or queries == 0 is no work; keys == 0 gives a zero output.
struct AttentionParams {
  int64_t batch = 1, heads = 1, kvHeads = 1;
  int64_t queries = 0;                     // L
  int64_t keys = 0;                        // S
  int64_t headDim = 0;                     // E of q and k, 1..256
  int64_t valueDim = 0;                    // Ev of v and out, 1..256
  ScalarType type = ScalarType::kFloat32;  // q, k, v and out (the CPU kernel: float32 only)
  float scale = 1.0f;
  bool causal = false;
  AttentionStrides q, k, v, out;  // k and v strides index kv heads
  AttentionMask mask = AttentionMask::kNone;
  // kBool: kBool (one byte); kAdditive: float32, float16 or bfloat16.
  ScalarType maskType = ScalarType::kFloat32;
  // The mask is indexed by the query head; 0 broadcasts a dim. The key dim has stride 1.
  int64_t maskBatchStride = 0, maskHeadStride = 0, maskRowStride = 0;
};

// The largest headDim and valueDim either kernel takes.
constexpr int64_t kMaxAttentionDim = 256;

// What a kernel family accepts beyond the common ranges: the largest head count and sequence
// length, and whether float16 and bfloat16 tensors are (float32 always is).
struct AttentionLimits {
  int64_t maxHeads;
  int64_t maxLength;
  bool halfTypes;
};

// Throws std::invalid_argument("attention: <field> is ...; allowed: ...") for parameters outside
// the ranges above and `limits`, then for a null pointer that the work needs (mask only when
// params.mask is not kNone; none when batch or queries is 0; k, v and mask none when keys is 0).
void validateAttention(const AttentionParams& params, const AttentionLimits& limits, const void* q,
                       const void* k, const void* v, const void* mask, const void* out);

}  // namespace kiln::kernels

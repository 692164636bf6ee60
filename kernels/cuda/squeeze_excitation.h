// The squeeze of a squeeze-and-excitation block on the GPU: the mean of x over its spatial dims,
// then a two-layer MLP (fully connected, hidden activation, fully connected), in two kernels where
// the unfused block runs five or six (the pooling, its split reduction, two GEMMs that fill a
// few of the GPU's tiles, the hidden activation). Mirrors the CPU backend's composition of the
// same steps (core/engine/cpu_backend.cpp); accumulates and keeps every intermediate in float32.
//
// The first kernel sums x (N, plane, C) channels-last over chunks of the plane, enough chunks that
// a small batch still fills the GPU, into float32 partial sums in the workspace; the second, one
// block a sample, adds a sample's partials, divides by the plane and runs the MLP from shared
// memory, reading the weights once a sample.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.h"
#include "kernels/cuda/unary_activation.h"

namespace kiln::cuda_kernels {

// x (batch, plane, channels) -> out (batch, outFeatures): out = w2 @ act(w1 @ mean(x) + b1) + b2,
// with w1 (hidden, channels), b1 (hidden), w2 (outFeatures, hidden), b2 (outFeatures); the biases
// may be null. float32, fp16 or bf16, every operand of `type`.
struct SqueezeExcitationParams {
  int64_t batch = 1;
  int64_t plane = 1;  // the product of the spatial dims
  int64_t channels = 0;
  int64_t hidden = 0;
  int64_t outFeatures = 0;
  bool hasHiddenActivation = false;
  ActivationParams hiddenActivation;
  ScalarType type = ScalarType::kFloat32;
};

struct SqueezeExcitationTensors {
  const void* x = nullptr;
  const void* w1 = nullptr;
  const void* b1 = nullptr;
  const void* w2 = nullptr;
  const void* b2 = nullptr;
  void* out = nullptr;
};

// Whether the MLP's float32 mean and hidden vectors fit one block's shared memory (48 KiB).
bool squeezeExcitationFits(int64_t channels, int64_t hidden);

// Bytes of workspace squeezeExcitation needs for params, and at least that for
// any params with no larger batch, plane and channels.
size_t squeezeExcitationWorkspaceSize(const SqueezeExcitationParams& params);
size_t squeezeExcitationWorkspaceBound(const SqueezeExcitationParams& params);

// Enqueues the two kernels on `stream`. Throws std::invalid_argument for a type other than the
// float types, for sizes squeezeExcitationFits refuses, or for a null operand.
void squeezeExcitation(const SqueezeExcitationParams& params,
                       const SqueezeExcitationTensors& tensors, void* workspace,
                       cudaStream_t stream);

}  // namespace kiln::cuda_kernels

// Unary math functions and activations, elementwise, on the GPU. Mirrors
// kernels/cpu/unary_activation.h (same functions, parameters and semantics) and adds fp16 and
// bf16 wherever the CPU takes float32: those compute in float32 and round once on store.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::UnaryFunction;

// Float math on float32, fp16 and bf16; the functions marked "also integers"
// (kernels/common/kernel_types.h) also on integers (and not on bool). `count` elements of `type`
// from input to output (distinct device pointers).
// Throws std::invalid_argument for a type the function is not defined on.
void unary(UnaryFunction function, ScalarType type, const void* input, void* output, int64_t count,
           cudaStream_t stream);

using kernels::Activation;

struct ActivationParams {
  Activation type = Activation::kRelu;
  double alpha = 0.0;
  double beta = 0.0;
};

// Every activation on float32, fp16 and bf16; relu and clip also on the integer types (int8,
// uint8, int32, int64), as torch.relu and torch.clamp do on integer tensors. Integer clip bounds
// must be whole numbers (or beyond the type's range, which leaves that side open). Throws
// std::invalid_argument for other activations or types.
void activation(const ActivationParams& params, ScalarType type, const void* input, void* output,
                int64_t count, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

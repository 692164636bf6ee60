// Unary math functions and activations, elementwise.
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::UnaryFunction;

// Float math on float32; the functions marked "also integers" (kernels/common/kernel_types.h)
// also on integers. Throws std::invalid_argument for a type the function is not defined on.
void unary(UnaryFunction function, ScalarType type, const void* input, void* output, int64_t count);

using kernels::Activation;

struct ActivationParams {
  Activation type = Activation::kRelu;
  double alpha = 0.0;
  double beta = 0.0;
};

// float32 only.
void activation(const ActivationParams& params, const float* input, float* output, int64_t count);

// relu and clip on integer types (int8, uint8, int32, int64), as torch.relu and torch.clamp do
// on integer tensors. Clip bounds must be whole numbers (or beyond the type's range, which
// leaves that side open). Throws std::invalid_argument for other activations or types.
void integerActivation(const ActivationParams& params, ScalarType type, const void* input,
                       void* output, int64_t count);

}  // namespace kiln::cpu_kernels

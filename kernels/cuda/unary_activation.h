// Unary math functions and activations, elementwise, on the GPU. Mirrors
// kernels/cpu/unary_activation.h (same functions, parameters and semantics) and adds fp16 and
// bf16 wherever the CPU takes float32: those compute in float32 and round once on store.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

enum class UnaryFunction : uint8_t {
  kExp,
  kLog,
  kSqrt,
  kRsqrt,
  kRecip,
  kAbs,  // also integers
  kNeg,  // also integers
  kSin,
  kCos,
  kTan,
  kErf,
  kFloor,
  kCeil,
  kRound,  // half to even, as torch.round
  kSign,   // also integers
  kNot,    // bool and integers: x == 0; float is refused
};

// Float math on float32, fp16 and bf16; the functions marked above also on integers (and not on
// bool). `count` elements of `type` from input to output (distinct device pointers).
// Throws std::invalid_argument for a type the function is not defined on.
void unary(UnaryFunction function, ScalarType type, const void* input, void* output,
           int64_t count, cudaStream_t stream);

enum class Activation : uint8_t {
  kRelu,
  kSigmoid,
  kTanh,
  kLeakyRelu,    // alpha = negative slope
  kElu,          // alpha
  kSelu,
  kSoftplus,     // alpha = beta, beta = threshold (torch's names)
  kClip,         // alpha = min, beta = max
  kHardSigmoid,  // relu6(x + 3) / 6
  kHardSwish,    // x * relu6(x + 3) / 6
  kGeluErf,
  kGeluTanh,
  kSilu,
  kMish,
};

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

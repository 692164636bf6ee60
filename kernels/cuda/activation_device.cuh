// The activations of kernels::Activation as device functions on float32, with the formulas of
// the CPU kernels (kernels/cpu/unary_activation.cpp): shared by the elementwise activation kernel
// and the kernels that apply one inside (the squeeze-and-excitation MLP).
#pragma once

#include <stdexcept>
#include <string>

#include "kernels/common/kernel_types.h"

namespace kiln::cuda_kernels::activation_detail {

using kernels::Activation;

// Clamps keeping NaN (fminf/fmaxf would drop it; torch keeps it).
__device__ __forceinline__ float clampKeepingNan(float x, float low, float high) {
  return x < low ? low : (x > high ? high : x);
}

template <Activation kActivation>
struct FloatActivation {
  float alpha;
  float beta;
  __device__ __forceinline__ float operator()(float x) const {
    if constexpr (kActivation == Activation::kRelu) {
      return x < 0.0f ? 0.0f : x;  // keeps NaN, as torch does
    } else if constexpr (kActivation == Activation::kSigmoid) {
      return 1.0f / (1.0f + expf(-x));
    } else if constexpr (kActivation == Activation::kTanh) {
      return tanhf(x);
    } else if constexpr (kActivation == Activation::kLeakyRelu) {
      return x < 0.0f ? alpha * x : x;
    } else if constexpr (kActivation == Activation::kElu) {
      return x > 0.0f ? x : alpha * expm1f(x);
    } else if constexpr (kActivation == Activation::kSelu) {
      constexpr float kAlpha = 1.6732632423543772848170429916717f;
      constexpr float kScale = 1.0507009873554804934193349852946f;
      return kScale * (x > 0.0f ? x : kAlpha * expm1f(x));
    } else if constexpr (kActivation == Activation::kSoftplus) {
      const float scaled = alpha * x;
      return scaled > beta ? x : log1pf(expf(scaled)) / alpha;
    } else if constexpr (kActivation == Activation::kClip) {
      return clampKeepingNan(x, alpha, beta);
    } else if constexpr (kActivation == Activation::kHardSigmoid) {
      return clampKeepingNan(x + 3.0f, 0.0f, 6.0f) / 6.0f;
    } else if constexpr (kActivation == Activation::kHardSwish) {
      return x * clampKeepingNan(x + 3.0f, 0.0f, 6.0f) / 6.0f;
    } else if constexpr (kActivation == Activation::kGeluErf) {
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
    } else if constexpr (kActivation == Activation::kGeluTanh) {
      constexpr float kSqrt2OverPi = 0.79788456080286535588f;
      return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    } else if constexpr (kActivation == Activation::kSilu) {
      return x / (1.0f + expf(-x));
    } else {
      static_assert(kActivation == Activation::kMish, "unknown activation");
      // softplus with torch's threshold of 20, where log1p(exp(x)) == x in float.
      const float softplus = x > 20.0f ? x : log1pf(expf(x));
      return x * tanhf(softplus);
    }
  }
};

// Calls fn(FloatActivation<type>{alpha, beta}): one instantiation of fn's kernel an activation.
template <typename Fn>
void withFloatActivation(Activation type, float alpha, float beta, Fn&& fn) {
  switch (type) {
    case Activation::kRelu:
      return fn(FloatActivation<Activation::kRelu>{alpha, beta});
    case Activation::kSigmoid:
      return fn(FloatActivation<Activation::kSigmoid>{alpha, beta});
    case Activation::kTanh:
      return fn(FloatActivation<Activation::kTanh>{alpha, beta});
    case Activation::kLeakyRelu:
      return fn(FloatActivation<Activation::kLeakyRelu>{alpha, beta});
    case Activation::kElu:
      return fn(FloatActivation<Activation::kElu>{alpha, beta});
    case Activation::kSelu:
      return fn(FloatActivation<Activation::kSelu>{alpha, beta});
    case Activation::kSoftplus:
      return fn(FloatActivation<Activation::kSoftplus>{alpha, beta});
    case Activation::kClip:
      return fn(FloatActivation<Activation::kClip>{alpha, beta});
    case Activation::kHardSigmoid:
      return fn(FloatActivation<Activation::kHardSigmoid>{alpha, beta});
    case Activation::kHardSwish:
      return fn(FloatActivation<Activation::kHardSwish>{alpha, beta});
    case Activation::kGeluErf:
      return fn(FloatActivation<Activation::kGeluErf>{alpha, beta});
    case Activation::kGeluTanh:
      return fn(FloatActivation<Activation::kGeluTanh>{alpha, beta});
    case Activation::kSilu:
      return fn(FloatActivation<Activation::kSilu>{alpha, beta});
    case Activation::kMish:
      return fn(FloatActivation<Activation::kMish>{alpha, beta});
  }
  throw std::invalid_argument("unknown activation " + std::to_string(static_cast<int>(type)));
}

}  // namespace kiln::cuda_kernels::activation_detail

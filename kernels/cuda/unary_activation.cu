#include "kernels/cuda/unary_activation.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/pointwise_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using pointwise::BoolByte;
using pointwise::launchComputeMap;

// Clamps keeping NaN (fminf/fmaxf would drop it; torch keeps it).
__device__ __forceinline__ float clampKeepingNan(float x, float low, float high) {
  return x < low ? low : (x > high ? high : x);
}

// The float functions, computed in float32 with the same formulas as the CPU kernel.
template <UnaryFunction kFunction>
struct FloatUnary {
  __device__ __forceinline__ float operator()(float x) const {
    if constexpr (kFunction == UnaryFunction::kExp) {
      return expf(x);
    } else if constexpr (kFunction == UnaryFunction::kLog) {
      return logf(x);
    } else if constexpr (kFunction == UnaryFunction::kSqrt) {
      return sqrtf(x);
    } else if constexpr (kFunction == UnaryFunction::kRsqrt) {
      return 1.0f / sqrtf(x);  // rsqrtf is an approximation; this rounds as the CPU does
    } else if constexpr (kFunction == UnaryFunction::kRecip) {
      return 1.0f / x;
    } else if constexpr (kFunction == UnaryFunction::kAbs) {
      return fabsf(x);
    } else if constexpr (kFunction == UnaryFunction::kNeg) {
      return -x;
    } else if constexpr (kFunction == UnaryFunction::kSin) {
      return sinf(x);
    } else if constexpr (kFunction == UnaryFunction::kCos) {
      return cosf(x);
    } else if constexpr (kFunction == UnaryFunction::kTan) {
      return tanf(x);
    } else if constexpr (kFunction == UnaryFunction::kErf) {
      return erff(x);
    } else if constexpr (kFunction == UnaryFunction::kFloor) {
      return floorf(x);
    } else if constexpr (kFunction == UnaryFunction::kCeil) {
      return ceilf(x);
    } else if constexpr (kFunction == UnaryFunction::kRound) {
      return rintf(x);  // half to even in the default rounding mode
    } else {
      static_assert(kFunction == UnaryFunction::kSign, "not a float function");
      return isnan(x) ? x : static_cast<float>((x > 0.0f) - (x < 0.0f));
    }
  }
};

// abs, neg, sign and not on an integer type T; negation wraps (in unsigned arithmetic, as
// torch's most negative value maps to itself) and unsigned abs is the identity.
template <typename T, UnaryFunction kFunction>
struct IntegerUnary {
  __device__ __forceinline__ T operator()(T x) const {
    using U = std::make_unsigned_t<T>;
    if constexpr (kFunction == UnaryFunction::kNot) {
      return static_cast<T>(x == 0);
    } else if constexpr (kFunction == UnaryFunction::kAbs) {
      if constexpr (std::is_signed_v<T>) {
        return x < 0 ? static_cast<T>(U{0} - static_cast<U>(x)) : x;
      } else {
        return x;
      }
    } else if constexpr (kFunction == UnaryFunction::kNeg) {
      return static_cast<T>(U{0} - static_cast<U>(x));
    } else {
      static_assert(kFunction == UnaryFunction::kSign, "not an integer function");
      if constexpr (std::is_signed_v<T>) {
        return static_cast<T>((x > 0) - (x < 0));
      } else {
        return static_cast<T>(x != 0);
      }
    }
  }
};

struct BoolNot {
  __device__ __forceinline__ bool operator()(bool x) const { return !x; }
};

[[noreturn]] void unaryUnsupported(UnaryFunction function, ScalarType type) {
  throw std::invalid_argument("unary function " + std::to_string(static_cast<int>(function)) +
                              " is not defined on " + scalarName(type) +
                              (function == UnaryFunction::kNot ? "; not takes bool and integers"
                                                               : "; cast to float32 first"));
}

template <typename T>
void floatUnary(UnaryFunction function, ScalarType type, const void* in, void* out,
                int64_t count, cudaStream_t stream) {
  auto run = [&](auto fn) { launchComputeMap<T>(in, out, count, fn, stream); };
  switch (function) {
    case UnaryFunction::kExp:
      return run(FloatUnary<UnaryFunction::kExp>{});
    case UnaryFunction::kLog:
      return run(FloatUnary<UnaryFunction::kLog>{});
    case UnaryFunction::kSqrt:
      return run(FloatUnary<UnaryFunction::kSqrt>{});
    case UnaryFunction::kRsqrt:
      return run(FloatUnary<UnaryFunction::kRsqrt>{});
    case UnaryFunction::kRecip:
      return run(FloatUnary<UnaryFunction::kRecip>{});
    case UnaryFunction::kAbs:
      return run(FloatUnary<UnaryFunction::kAbs>{});
    case UnaryFunction::kNeg:
      return run(FloatUnary<UnaryFunction::kNeg>{});
    case UnaryFunction::kSin:
      return run(FloatUnary<UnaryFunction::kSin>{});
    case UnaryFunction::kCos:
      return run(FloatUnary<UnaryFunction::kCos>{});
    case UnaryFunction::kTan:
      return run(FloatUnary<UnaryFunction::kTan>{});
    case UnaryFunction::kErf:
      return run(FloatUnary<UnaryFunction::kErf>{});
    case UnaryFunction::kFloor:
      return run(FloatUnary<UnaryFunction::kFloor>{});
    case UnaryFunction::kCeil:
      return run(FloatUnary<UnaryFunction::kCeil>{});
    case UnaryFunction::kRound:
      return run(FloatUnary<UnaryFunction::kRound>{});
    case UnaryFunction::kSign:
      return run(FloatUnary<UnaryFunction::kSign>{});
    case UnaryFunction::kNot:
      break;
  }
  unaryUnsupported(function, type);
}

template <typename T>
void integerUnary(UnaryFunction function, ScalarType type, const void* in, void* out,
                  int64_t count, cudaStream_t stream) {
  auto run = [&](auto fn) { launchComputeMap<T>(in, out, count, fn, stream); };
  switch (function) {
    case UnaryFunction::kAbs:
      return run(IntegerUnary<T, UnaryFunction::kAbs>{});
    case UnaryFunction::kNeg:
      return run(IntegerUnary<T, UnaryFunction::kNeg>{});
    case UnaryFunction::kSign:
      return run(IntegerUnary<T, UnaryFunction::kSign>{});
    case UnaryFunction::kNot:
      return run(IntegerUnary<T, UnaryFunction::kNot>{});
    default:
      unaryUnsupported(function, type);
  }
}

// ---- activations --------------------------------------------------------------------------------

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

template <typename T>
void floatActivation(const ActivationParams& params, const void* in, void* out, int64_t count,
                     cudaStream_t stream) {
  const float alpha = static_cast<float>(params.alpha);
  const float beta = static_cast<float>(params.beta);
  auto run = [&](auto fn) { launchComputeMap<T>(in, out, count, fn, stream); };
  switch (params.type) {
    case Activation::kRelu:
      return run(FloatActivation<Activation::kRelu>{alpha, beta});
    case Activation::kSigmoid:
      return run(FloatActivation<Activation::kSigmoid>{alpha, beta});
    case Activation::kTanh:
      return run(FloatActivation<Activation::kTanh>{alpha, beta});
    case Activation::kLeakyRelu:
      return run(FloatActivation<Activation::kLeakyRelu>{alpha, beta});
    case Activation::kElu:
      return run(FloatActivation<Activation::kElu>{alpha, beta});
    case Activation::kSelu:
      return run(FloatActivation<Activation::kSelu>{alpha, beta});
    case Activation::kSoftplus:
      return run(FloatActivation<Activation::kSoftplus>{alpha, beta});
    case Activation::kClip:
      return run(FloatActivation<Activation::kClip>{alpha, beta});
    case Activation::kHardSigmoid:
      return run(FloatActivation<Activation::kHardSigmoid>{alpha, beta});
    case Activation::kHardSwish:
      return run(FloatActivation<Activation::kHardSwish>{alpha, beta});
    case Activation::kGeluErf:
      return run(FloatActivation<Activation::kGeluErf>{alpha, beta});
    case Activation::kGeluTanh:
      return run(FloatActivation<Activation::kGeluTanh>{alpha, beta});
    case Activation::kSilu:
      return run(FloatActivation<Activation::kSilu>{alpha, beta});
    case Activation::kMish:
      return run(FloatActivation<Activation::kMish>{alpha, beta});
  }
  throw std::invalid_argument("unknown activation " +
                              std::to_string(static_cast<int>(params.type)));
}

// max(x, low) then min(x, high) in T; relu is a clamp to [0, max].
template <typename T>
struct IntegerClamp {
  T low;
  T high;
  __device__ __forceinline__ T operator()(T x) const {
    return x < low ? low : (x > high ? high : x);
  }
};

// A clip bound as a value of T: bounds beyond T's range saturate (a clamp at -inf is no clamp).
template <typename T>
T integerBound(double bound, const char* which) {
  if (std::isnan(bound) || (std::isfinite(bound) && std::floor(bound) != bound)) {
    throw std::invalid_argument(std::string("clip on integers needs a whole-number ") + which +
                                " bound, got " + std::to_string(bound) +
                                "; cast the input to float32 first");
  }
  if (bound <= static_cast<double>(std::numeric_limits<T>::lowest())) {
    return std::numeric_limits<T>::lowest();
  }
  if (bound >= static_cast<double>(std::numeric_limits<T>::max())) {
    return std::numeric_limits<T>::max();
  }
  return static_cast<T>(bound);
}

[[noreturn]] void activationUnsupported(const ActivationParams& params, ScalarType type) {
  throw std::invalid_argument("activation " + std::to_string(static_cast<int>(params.type)) +
                              " is not defined on " + scalarName(type) +
                              " (integers take relu and clip); cast to float32 first");
}

}  // namespace

void unary(UnaryFunction function, ScalarType type, const void* input, void* output,
           int64_t count, cudaStream_t stream) {
  pointwise::visitScalarType(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (pointwise::kIsFloatStorage<T>) {
      floatUnary<T>(function, type, input, output, count, stream);
    } else if constexpr (std::is_same_v<T, BoolByte>) {
      if (function != UnaryFunction::kNot) unaryUnsupported(function, type);
      launchComputeMap<T>(input, output, count, BoolNot{}, stream);
    } else {
      integerUnary<T>(function, type, input, output, count, stream);
    }
  });
}

void activation(const ActivationParams& params, ScalarType type, const void* input, void* output,
                int64_t count, cudaStream_t stream) {
  pointwise::visitScalarType(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (pointwise::kIsFloatStorage<T>) {
      floatActivation<T>(params, input, output, count, stream);
    } else if constexpr (std::is_same_v<T, BoolByte>) {
      activationUnsupported(params, type);
    } else {
      if (params.type == Activation::kRelu) {
        return launchComputeMap<T>(input, output, count,
                                   IntegerClamp<T>{T{0}, std::numeric_limits<T>::max()}, stream);
      }
      if (params.type == Activation::kClip) {
        const IntegerClamp<T> clamp{integerBound<T>(params.alpha, "min"),
                                    integerBound<T>(params.beta, "max")};
        return launchComputeMap<T>(input, output, count, clamp, stream);
      }
      activationUnsupported(params, type);
    }
  });
}

}  // namespace kiln::cuda_kernels

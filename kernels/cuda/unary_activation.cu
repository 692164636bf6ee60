#include "kernels/cuda/unary_activation.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/activation_device.cuh"
#include "kernels/cuda/pointwise_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using activation_detail::withFloatActivation;
using pointwise::BoolByte;
using pointwise::launchComputeMap;

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
void floatUnary(UnaryFunction function, ScalarType type, const void* in, void* out, int64_t count,
                cudaStream_t stream) {
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
void integerUnary(UnaryFunction function, ScalarType type, const void* in, void* out, int64_t count,
                  cudaStream_t stream) {
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

template <typename T>
void floatActivation(const ActivationParams& params, const void* in, void* out, int64_t count,
                     cudaStream_t stream) {
  withFloatActivation(params.type, static_cast<float>(params.alpha),
                      static_cast<float>(params.beta),
                      [&](auto fn) { launchComputeMap<T>(in, out, count, fn, stream); });
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

void unary(UnaryFunction function, ScalarType type, const void* input, void* output, int64_t count,
           cudaStream_t stream) {
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

#include "kernels/cpu/unary_activation.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cpu/dispatch.h"

namespace kiln::cpu_kernels {
namespace {

template <typename T, typename Fn>
void map(const void* input, void* output, int64_t count, Fn fn) {
  const T* in = static_cast<const T*>(input);
  T* out = static_cast<T*>(output);
  for (int64_t i = 0; i < count; ++i) out[i] = fn(in[i]);
}

template <typename Fn>
void mapFloat(const float* in, float* out, int64_t count, Fn fn) {
  for (int64_t i = 0; i < count; ++i) out[i] = fn(in[i]);
}

// Clamps keeping NaN (std::fmin/fmax would drop it; torch keeps it).
float clamp(float x, float low, float high) { return x < low ? low : (x > high ? high : x); }

float sign(float x) {
  if (std::isnan(x)) return x;
  return static_cast<float>((x > 0) - (x < 0));
}

void floatUnary(UnaryFunction function, const void* input, void* output, int64_t count) {
  switch (function) {
    case UnaryFunction::kExp:
      return map<float>(input, output, count, [](float x) { return std::exp(x); });
    case UnaryFunction::kLog:
      return map<float>(input, output, count, [](float x) { return std::log(x); });
    case UnaryFunction::kSqrt:
      return map<float>(input, output, count, [](float x) { return std::sqrt(x); });
    case UnaryFunction::kRsqrt:
      return map<float>(input, output, count, [](float x) { return 1.0f / std::sqrt(x); });
    case UnaryFunction::kRecip:
      return map<float>(input, output, count, [](float x) { return 1.0f / x; });
    case UnaryFunction::kAbs:
      return map<float>(input, output, count, [](float x) { return std::fabs(x); });
    case UnaryFunction::kNeg:
      return map<float>(input, output, count, [](float x) { return -x; });
    case UnaryFunction::kSin:
      return map<float>(input, output, count, [](float x) { return std::sin(x); });
    case UnaryFunction::kCos:
      return map<float>(input, output, count, [](float x) { return std::cos(x); });
    case UnaryFunction::kTan:
      return map<float>(input, output, count, [](float x) { return std::tan(x); });
    case UnaryFunction::kErf:
      return map<float>(input, output, count, [](float x) { return std::erf(x); });
    case UnaryFunction::kFloor:
      return map<float>(input, output, count, [](float x) { return std::floor(x); });
    case UnaryFunction::kCeil:
      return map<float>(input, output, count, [](float x) { return std::ceil(x); });
    case UnaryFunction::kRound:
      // nearbyint rounds half to even in the default rounding mode.
      return map<float>(input, output, count, [](float x) { return std::nearbyint(x); });
    case UnaryFunction::kSign:
      return map<float>(input, output, count, sign);
    case UnaryFunction::kNot:
      break;
  }
  throw std::invalid_argument("unary not is defined on bool and integers, not float32");
}

template <typename T>
void integerUnary(UnaryFunction function, ScalarType type, const void* input, void* output,
                  int64_t count) {
  if (function == UnaryFunction::kNot) {
    return map<T>(input, output, count, [](T x) { return static_cast<T>(x == 0); });
  }
  if constexpr (std::is_signed_v<T>) {
    using U = std::make_unsigned_t<T>;
    // Negation in unsigned arithmetic wraps the most negative value to itself, as torch does,
    // instead of overflowing.
    switch (function) {
      case UnaryFunction::kAbs:
        return map<T>(input, output, count,
                      [](T x) { return x < 0 ? static_cast<T>(0 - static_cast<U>(x)) : x; });
      case UnaryFunction::kNeg:
        return map<T>(input, output, count, [](T x) { return static_cast<T>(0 - static_cast<U>(x)); });
      case UnaryFunction::kSign:
        return map<T>(input, output, count, [](T x) { return static_cast<T>((x > 0) - (x < 0)); });
      default:
        break;
    }
  } else if constexpr (!std::is_same_v<T, bool>) {
    // Unsigned: abs is the identity, neg wraps (torch's uint8 semantics), sign is 0 or 1.
    switch (function) {
      case UnaryFunction::kAbs:
        return map<T>(input, output, count, [](T x) { return x; });
      case UnaryFunction::kNeg:
        return map<T>(input, output, count, [](T x) { return static_cast<T>(0 - x); });
      case UnaryFunction::kSign:
        return map<T>(input, output, count, [](T x) { return static_cast<T>(x != 0); });
      default:
        break;
    }
  }
  throw std::invalid_argument(std::string("unary function ") +
                              std::to_string(static_cast<int>(function)) +
                              " is not defined on " + scalarName(type) +
                              "; cast to float32 first");
}

}  // namespace

void unary(UnaryFunction function, ScalarType type, const void* input, void* output,
           int64_t count) {
  visitComputeType(type, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float>) {
      floatUnary(function, input, output, count);
    } else {
      integerUnary<T>(function, type, input, output, count);
    }
  });
}

void activation(const ActivationParams& params, const float* in, float* out, int64_t count) {
  const float alpha = static_cast<float>(params.alpha);
  const float beta = static_cast<float>(params.beta);
  switch (params.type) {
    case Activation::kRelu:
      // x > 0 ? x : 0 would turn NaN into 0; torch keeps NaN.
      return mapFloat(in, out, count, [](float x) { return x < 0.0f ? 0.0f : x; });
    case Activation::kSigmoid:
      return mapFloat(in, out, count, [](float x) { return 1.0f / (1.0f + std::exp(-x)); });
    case Activation::kTanh:
      return mapFloat(in, out, count, [](float x) { return std::tanh(x); });
    case Activation::kLeakyRelu:
      return mapFloat(in, out, count, [alpha](float x) { return x < 0.0f ? alpha * x : x; });
    case Activation::kElu:
      return mapFloat(in, out, count,
                      [alpha](float x) { return x > 0.0f ? x : alpha * std::expm1(x); });
    case Activation::kSelu: {
      constexpr float kAlpha = 1.6732632423543772848170429916717f;
      constexpr float kScale = 1.0507009873554804934193349852946f;
      return mapFloat(in, out, count, [](float x) {
        return kScale * (x > 0.0f ? x : kAlpha * std::expm1(x));
      });
    }
    case Activation::kSoftplus:
      return mapFloat(in, out, count, [alpha, beta](float x) {
        const float scaled = alpha * x;
        return scaled > beta ? x : std::log1p(std::exp(scaled)) / alpha;
      });
    case Activation::kClip:
      return mapFloat(in, out, count, [alpha, beta](float x) { return clamp(x, alpha, beta); });
    case Activation::kHardSigmoid:
      return mapFloat(in, out, count,
                      [](float x) { return clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f; });
    case Activation::kHardSwish:
      return mapFloat(in, out, count, [](float x) {
        return x * clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f;
      });
    case Activation::kGeluErf:
      return mapFloat(in, out, count, [](float x) {
        return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f));
      });
    case Activation::kGeluTanh:
      return mapFloat(in, out, count, [](float x) {
        constexpr float kSqrt2OverPi = 0.79788456080286535588f;
        return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
      });
    case Activation::kSilu:
      return mapFloat(in, out, count, [](float x) { return x / (1.0f + std::exp(-x)); });
    case Activation::kMish:
      return mapFloat(in, out, count, [](float x) {
        // softplus with torch's threshold of 20, where log1p(exp(x)) == x in float.
        const float softplus = x > 20.0f ? x : std::log1p(std::exp(x));
        return x * std::tanh(softplus);
      });
  }
  throw std::invalid_argument("unknown activation " +
                              std::to_string(static_cast<int>(params.type)));
}

namespace {

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

}  // namespace

void integerActivation(const ActivationParams& params, ScalarType type, const void* input,
                       void* output, int64_t count) {
  visitComputeType(type, "activation", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (params.type == Activation::kRelu) {
        return map<T>(input, output, count, [](T x) { return x > 0 ? x : T{0}; });
      }
      if (params.type == Activation::kClip) {
        const T low = integerBound<T>(params.alpha, "min");
        const T high = integerBound<T>(params.beta, "max");
        return map<T>(input, output, count,
                      [low, high](T x) { return x < low ? low : (x > high ? high : x); });
      }
    }
    throw std::invalid_argument(std::string("activation ") +
                                std::to_string(static_cast<int>(params.type)) +
                                " is not defined on " + scalarName(type) +
                                " (integers take relu and clip); cast to float32 first");
  });
}

}  // namespace kiln::cpu_kernels

#include "kernels/cpu/cast.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/cpu/dispatch.h"

namespace kiln::cpu_kernels {
namespace {

uint32_t floatBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float bitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Loads an element as float (float formats), int64_t (integers) or bool.
inline float load(float v) { return v; }
inline float load(Float16Bits v) { return halfToFloat(v.bits); }
inline float load(BFloat16Bits v) { return bfloat16ToFloat(v.bits); }
inline bool load(bool v) { return v; }
template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
inline int64_t load(T v) {
  return static_cast<int64_t>(v);
}

template <typename Int>
Int floatToInt(float value) {
  if (std::isnan(value)) return 0;
  // Compare in double: every bound of the integer types up to 64 bits is a double.
  const double lowest = static_cast<double>(std::numeric_limits<Int>::lowest());
  const double highest = static_cast<double>(std::numeric_limits<Int>::max());
  if (value <= lowest) return std::numeric_limits<Int>::lowest();
  if (value >= highest) return std::numeric_limits<Int>::max();
  return static_cast<Int>(value);
}

template <typename To, typename Loaded>
To store(Loaded value) {
  if constexpr (std::is_same_v<To, Float16Bits>) {
    return Float16Bits{floatToHalf(static_cast<float>(value))};
  } else if constexpr (std::is_same_v<To, BFloat16Bits>) {
    return BFloat16Bits{floatToBFloat16(static_cast<float>(value))};
  } else if constexpr (std::is_same_v<To, bool>) {
    return value != 0;
  } else if constexpr (std::is_integral_v<To> && std::is_same_v<Loaded, float>) {
    return floatToInt<To>(value);
  } else {
    return static_cast<To>(value);
  }
}

}  // namespace

float halfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  if (exponent == 0x1f) return bitsToFloat(sign | 0x7f800000 | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {
    // Zero or subnormal: the value is mantissa * 2^-24, exact in float.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return bitsToFloat(sign | floatBits(magnitude));
  }
  return bitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t floatToHalf(float value) {
  uint32_t bits = floatBits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  bits &= 0x7fffffff;
  if (bits > 0x7f800000) return sign | 0x7e00;   // NaN stays a (quiet) NaN
  if (bits >= 0x47800000) return sign | 0x7c00;  // >= 65536, or inf: inf
  if (bits < 0x38800000) {
    // Result is subnormal or zero. Adding 0.5 aligns the 10 mantissa bits at the bottom of the
    // float and lets the FPU round to nearest even for us.
    const float aligned = bitsToFloat(bits) + 0.5f;
    return sign | static_cast<uint16_t>(floatBits(aligned) - floatBits(0.5f));
  }
  // Normal: rebias the exponent (127 -> 15) and round to nearest even on the 13 dropped bits;
  // a carry out of the mantissa correctly bumps the exponent (up to inf).
  const uint32_t mantissaOdd = (bits >> 13) & 1;
  bits += 0xc8000000u + 0xfff + mantissaOdd;
  return sign | static_cast<uint16_t>(bits >> 13);
}

float bfloat16ToFloat(uint16_t bits) { return bitsToFloat(static_cast<uint32_t>(bits) << 16); }

uint16_t floatToBFloat16(float value) {
  const uint32_t bits = floatBits(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

void cast(const void* input, ScalarType inputType, void* output, ScalarType outputType,
          int64_t count) {
  if (inputType == outputType) {
    std::memcpy(output, input, static_cast<size_t>(count) * scalarSize(inputType));
    return;
  }
  visitScalarType(inputType, [&](auto inTag) {
    using In = typename decltype(inTag)::type;
    visitScalarType(outputType, [&](auto outTag) {
      using Out = typename decltype(outTag)::type;
      const In* in = static_cast<const In*>(input);
      Out* out = static_cast<Out*>(output);
      for (int64_t i = 0; i < count; ++i) out[i] = store<Out>(load(in[i]));
    });
  });
}

}  // namespace kiln::cpu_kernels

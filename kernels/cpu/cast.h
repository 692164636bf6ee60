// Element type conversions: float <-> fp16 / bf16 (round to nearest even) and a cast kernel
// between any two scalar types with torch's semantics (float -> int truncates toward zero,
// anything -> bool is "!= 0", bool -> number is 0 or 1).
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

float halfToFloat(uint16_t bits);
uint16_t floatToHalf(float value);
float bfloat16ToFloat(uint16_t bits);
uint16_t floatToBFloat16(float value);

// Converts `count` elements. Float -> integer maps NaN to 0 and saturates out-of-range values
// (C++ leaves those undefined; torch's result there is platform-specific too).
void cast(const void* input, ScalarType inputType, void* output, ScalarType outputType,
          int64_t count);

}  // namespace kiln::cpu_kernels

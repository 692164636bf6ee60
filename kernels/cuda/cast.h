// Element type conversion between any two scalar types on the GPU, with the semantics of
// kernels/cpu/cast.h: float -> fp16 / bf16 round to nearest even; float -> integer truncates
// toward zero, maps NaN to 0 and saturates out-of-range values; integer -> integer wraps;
// anything -> bool is "!= 0"; bool -> number is 0 or 1.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

// Converts `count` elements from input to output (device pointers) on `stream`. The same type
// on both sides is a device-to-device copy.
void cast(const void* input, ScalarType inputType, void* output, ScalarType outputType,
          int64_t count, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

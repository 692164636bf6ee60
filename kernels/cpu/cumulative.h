// torch.cumsum / torch.cumprod along one axis on int32, int64 and float32 (fp16 and bf16 are
// widened to float32 by the caller).
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::CumulativeFunction;

// The tensor as (outer, axisSize, inner), row-major; the scan runs along the middle dim.
// float32 accumulates in double and integers wrap around, as torch's CPU kernels do.
struct CumulativeParams {
  CumulativeFunction function = CumulativeFunction::kSum;
  int64_t outer = 1;
  int64_t axisSize = 0;
  int64_t inner = 1;
  ScalarType type = ScalarType::kFloat32;
};
void cumulative(const CumulativeParams& params, const void* x, void* out);

}  // namespace kiln::cpu_kernels

// torch.cumsum / torch.cumprod along one axis on the GPU: int32, int64, float32, and fp16 / bf16
// accumulated in float32. Mirrors kernels/cpu/cumulative.h (integers wrap around as torch's).
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::CumulativeFunction;

// The tensor as (outer, axisSize, inner), row-major; the scan runs along the middle dim. Rows
// that are contiguous (inner == 1), and long rows when there are too few columns to give every
// thread one, run as block-wide parallel scans; many short strided columns run one a thread.
struct CumulativeParams {
  CumulativeFunction function = CumulativeFunction::kSum;
  int64_t outer = 1;
  int64_t axisSize = 0;
  int64_t inner = 1;
  ScalarType type = ScalarType::kFloat32;
};
void cumulative(const CumulativeParams& params, const void* x, void* out, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

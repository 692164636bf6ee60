// torch.nn.functional.interpolate on float32 (nearest, nearest-exact, linear up to trilinear,
// bicubic), with the index rules of kernels/common/resize.h.
#pragma once

#include "kernels/common/resize.h"
#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::ResizeMode;
using kernels::ResizeParams;

// x (planes, inSpatial...) -> out (planes, outSpatial...); params.type is ignored (float32).
void resize(const ResizeParams& params, const float* x, float* out);

}  // namespace kiln::cpu_kernels

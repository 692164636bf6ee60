// torch.nn.functional.interpolate on the GPU (nearest, nearest-exact, linear up to trilinear,
// bicubic) in float32, fp16 and bf16 (computed in float32), with the index rules of
// kernels/common/resize.h that the CPU reference shares.
#pragma once

#include "kernels/common/resize.h"
#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::ResizeMode;
using kernels::ResizeParams;

// x (planes, inSpatial...) -> out (planes, outSpatial...), both of params.type.
void resize(const ResizeParams& params, const void* x, void* out, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

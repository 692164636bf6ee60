// Element types and shapes of the CPU reference kernels (kernels/common's, shared with CUDA).
#pragma once

#include "kernels/common/kernel_types.h"
#include "kernels/common/shapes.h"

namespace kiln::cpu_kernels {

using kernels::contiguousStrides;
using kernels::scalarName;
using kernels::scalarSize;
using kernels::ScalarType;
using kernels::Shape;
using kernels::shapeVolume;

}  // namespace kiln::cpu_kernels

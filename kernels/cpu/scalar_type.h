// Element types and shapes of the CPU reference kernels (kernels/common's, shared with CUDA).
#pragma once

#include "kernels/common/kernel_types.h"

namespace kiln::cpu_kernels {

using kernels::scalarName;
using kernels::scalarSize;
using kernels::ScalarType;
using kernels::Shape;
using kernels::shapeVolume;

// Row-major strides in elements.
Shape contiguousStrides(const Shape& shape);

}  // namespace kiln::cpu_kernels

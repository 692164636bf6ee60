// Host-side shape arithmetic that the CPU and CUDA kernel families share.
#pragma once

#include "kernels/common/kernel_types.h"

namespace kiln::kernels {

// Row-major strides in elements.
Shape contiguousStrides(const Shape& shape);

// How a binary elementwise op walks its output: size-1 dims dropped and adjacent dims merged
// where both inputs allow it; at least one dim. Strides are in elements, 0 where an input is
// broadcast.
struct BroadcastLayout {
  Shape dims;  // outermost first
  Shape aStrides;
  Shape bStrides;
};
// a and b are given at the output's rank; each of their dims is the output's or 1. Throws
// std::invalid_argument otherwise.
BroadcastLayout broadcastLayout(const Shape& aShape, const Shape& bShape, const Shape& outShape);

// (..., M, K) x (..., K, N) -> (..., M, N) with the batch dims broadcast (right-aligned), after
// the optional transposes of the last two dims. Throws std::invalid_argument for ranks below 2,
// inner dims that differ or batch dims that do not broadcast.
Shape matmulOutputShape(const Shape& aShape, const Shape& bShape, bool transposeA, bool transposeB);

}  // namespace kiln::kernels

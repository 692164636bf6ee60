// The Network's enums as the kernels' (kernels/common), for both backends.
#pragma once

#include "core/ir/layers.h"
#include "core/ir/types.h"
#include "kernels/common/kernel_types.h"
#include "kernels/common/pointwise_program.h"
#include "kernels/common/resize.h"

namespace kiln {

// Each throws Error for a value outside its enum.
kernels::ScalarType toKernelType(DataType type);
kernels::BinaryOp toBinaryOp(ElementwiseOp op);
kernels::UnaryFunction toUnaryFunction(UnaryOp op);
kernels::Activation toActivation(ActivationType type);
// kNone is no activation, and kRelu6 a clip with bounds: they throw too.
kernels::Activation toActivation(FusedActivation activation);
kernels::ReduceFunction toReduceFunction(ReduceOp op);
kernels::ResizeMode toResizeMode(ResizeMode mode);
kernels::CumulativeFunction toCumulativeFunction(CumulativeOp op);
kernels::PointwiseProgram toPointwiseProgram(const PointwiseParams& params);

}  // namespace kiln

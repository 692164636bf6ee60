// Helpers shared by the converter families: dims and dtypes of OpGraph values, shuffles
// (reshape, permute, rank alignment), elementwise ops with torch's broadcasting and type
// promotion, and scalar arguments as tensors. Every helper that adds a layer names it after the
// node being converted (ConversionContext::nameLayer).
#pragma once

#include <c10/core/ScalarType.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "converters/conversion.h"
#include "converters/registry.h"
#include "core/ir/network.h"

namespace kiln {

// ---- dims ------------------------------------------------------------------------------------

// A value's shape as the Network declares it: -1 for a size with a symbol.
Dims toDims(const std::vector<SymInt>& shape);

// torch's dim wrapping: a dim in [-rank, rank) becomes an index in [0, rank). Throws Error
// otherwise. `rank` 0 is treated as 1, as torch does for scalars.
int64_t normalizeDim(int64_t dim, int64_t rank);

// Shuffle reshape dims (positive size, 0 = copy the input dim at this index, -1 = infer) that
// turn a tensor of shape `from` into `to`, or nullopt when a dynamic target size can be
// expressed neither as a copy of the input dim at the same index (same symbol) nor as the one
// inferred size.
std::optional<Dims> shuffleReshapeDims(const std::vector<SymInt>& from,
                                       const std::vector<SymInt>& to);

// ---- dtypes ----------------------------------------------------------------------------------

// A rank-0 float64 constant tensor: what tracing records for a Python float (`x * 0.5`). Kiln
// reads it as the float32 scalar torch's type promotion makes of a Python float.
bool isWrappedScalarConstant(const OpValue& value);

// Network dtype of output i of the node (torch's result type, which the front end recorded).
DataType outputDataType(const NodeArgs& args, size_t i = 0);

// torch's result_type over the named arguments (Tensors or Scalars; None is skipped): tensors of
// rank >= 1 take priority over rank-0 tensors, which take priority over Python scalars, unless a
// lower-priority operand is of a higher category (bool < integral < floating point). Scalars
// promote to the default dtypes (int64, float32).
c10::ScalarType resultScalarType(const NodeArgs& args, const std::vector<std::string>& names);
DataType resultDataType(const NodeArgs& args, const std::vector<std::string>& names);

// Whether the constant argument "device" names the device the engine runs on (the graph's): an
// engine's outputs always live there. "cuda" without an index means the current device, which
// is the one the engine is built for.
bool namesGraphDevice(const NodeArgs& args);

// x cast to dtype; x itself when it already has it.
Tensor* castTo(ConversionContext& ctx, Tensor* x, DataType dtype);

// ---- shuffles --------------------------------------------------------------------------------

// Reshape with ShuffleParams' reshape semantics (0 copies a dim, -1 is inferred).
Tensor* reshape(ConversionContext& ctx, Tensor* x, const Dims& dims);
// Output dim i is input dim permutation[i].
Tensor* permute(ConversionContext& ctx, Tensor* x, const Dims& permutation);
// Inserts a size-1 dim at `dim` (already normalized to [0, rank]).
Tensor* unsqueeze(ConversionContext& ctx, Tensor* x, int64_t dim);
// Removes the listed dims (normalized), each of which must have size 1.
Tensor* squeezeDims(ConversionContext& ctx, Tensor* x, const std::vector<int64_t>& dims);
// Prepends size-1 dims until x has `rank` dims (numpy broadcasting's right alignment); x itself
// when it already has them.
Tensor* padRankTo(ConversionContext& ctx, Tensor* x, int64_t rank);
// Both operands brought to the larger of their ranks.
std::pair<Tensor*, Tensor*> alignRanks(ConversionContext& ctx, Tensor* a, Tensor* b);
// x broadcast to `target` (torch.expand): ranks aligned, then each size-1 dim of x that the
// target stretches is repeated (a Slice of step 0), to a dynamic size by the dim of a tensor
// that has it (ConversionContext::dimSource): callers check requireDimSource first.
Tensor* broadcastTo(ConversionContext& ctx, Tensor* x, const std::vector<SymInt>& target);
// x[start:end:step] along `axis` where `end` is a dynamic size: the Slice ends at the dim of a
// tensor that has that size at run time.
Tensor* sliceToDynamicEnd(ConversionContext& ctx, Tensor* x, int64_t axis, int64_t start,
                          int64_t step, const SymInt& end);

// ---- layers ----------------------------------------------------------------------------------

// a op b with broadcasting: ranks aligned and both operands cast to `computeType` first. The
// result has `computeType`, or kBool for comparisons.
Tensor* addElementwise(ConversionContext& ctx, Tensor* a, Tensor* b, ElementwiseOp op,
                       DataType computeType);
Tensor* addUnary(ConversionContext& ctx, Tensor* x, UnaryOp op);
Tensor* addActivation(ConversionContext& ctx, Tensor* x, ActivationType type, double alpha = 0.0,
                      double beta = 0.0);

// The argument `name` as a tensor of `dtype`: a Tensor argument is cast when needed, a Scalar
// (or a static shape int) becomes a rank-0 constant.
Tensor* operandTensor(ConversionContext& ctx, const NodeArgs& args, const std::string& name,
                      DataType dtype);

// ---- capability checks -----------------------------------------------------------------------

// "" when every named argument is None or a tensor whose shape has no symbolic dim, else why not.
std::string requireStaticShapes(const NodeArgs& args, const std::vector<std::string>& names);
// "" when a dynamic size is the dim of a graph input, so that an engine can read it at run time
// (ConversionContext::dimSource), else why not. "" for a static size.
std::string requireDimSource(const NodeArgs& args, const SymInt& size);
// "" when every named argument is a build-time constant (not a symbolic shape int), else why not.
std::string requireConstants(const NodeArgs& args, const std::vector<std::string>& names);
// For an in-place op (relu_, add_): "" when computing its result into a new tensor is faithful,
// i.e. nothing reads the mutated argument `self` afterwards and it is neither a graph input,
// a graph output nor a constant; else why not.
std::string inPlaceReason(const NodeArgs& args);
// The check of an in-place variant: inPlaceReason, then `check` (which may be empty).
CheckFn inPlaceCheck(CheckFn check);
// Throws (the capability check's reason) unless every named argument is None or a tensor of a
// floating-point type Kiln's compute kernels take (float32, float16, bfloat16; both backends) and,
// with `sameType`, all of them of one type. `kernels` names the family for the message.
void requireFloatTensors(const NodeArgs& args, const std::vector<std::string>& names,
                         const std::string& kernels, bool sameType = true);
bool isComputedFloatType(c10::ScalarType type);
// "" when output i of the node is a floating-point tensor, else why the converter refuses it.
std::string requireFloatOutput(const NodeArgs& args, size_t i = 0);

}  // namespace kiln

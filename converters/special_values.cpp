// Floating-point classification: isinf, isposinf, isneginf, isnan, isfinite -> bool, each
// exact from comparisons: |x| == inf, x == inf, x == -inf, not (x == x), |x| < inf (NaN
// compares false with everything). Integer and bool tensors hold no inf or NaN: those stay in
// PyTorch, which answers them without reading the data.
#include <limits>
#include <string>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

Tensor* compareWith(ConversionContext& ctx, Tensor* x, ElementwiseOp op, double value) {
  return addElementwise(ctx, x, ctx.scalar(value, x->dtype()), op, x->dtype());
}

void convertIsInf(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* magnitude = addUnary(ctx, ctx.tensor(args, "self"), UnaryOp::kAbs);
  ctx.setOutput(args, 0, compareWith(ctx, magnitude, ElementwiseOp::kEqual, kInfinity));
}

void convertIsPosInf(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                compareWith(ctx, ctx.tensor(args, "self"), ElementwiseOp::kEqual, kInfinity));
}

void convertIsNegInf(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                compareWith(ctx, ctx.tensor(args, "self"), ElementwiseOp::kEqual, -kInfinity));
}

void convertIsNan(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "self");
  Tensor* equalsItself = addElementwise(ctx, x, x, ElementwiseOp::kEqual, x->dtype());
  ctx.setOutput(args, 0, addUnary(ctx, equalsItself, UnaryOp::kNot));
}

void convertIsFinite(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* magnitude = addUnary(ctx, ctx.tensor(args, "self"), UnaryOp::kAbs);
  ctx.setOutput(args, 0, compareWith(ctx, magnitude, ElementwiseOp::kLess, kInfinity));
}

std::string checkFloatInput(const NodeArgs& args) {
  if (!isComputedFloatType(args.dtype("self"))) {
    return concat("classifies a ", c10::toString(args.dtype("self")),
                  " tensor, which holds no inf or NaN");
  }
  return "";
}

}  // namespace

void registerSpecialValueConverters(ConverterRegistry& registry) {
  registry.add({"aten::isinf(Tensor self) -> Tensor", convertIsInf, checkFloatInput});
  registry.add({"aten::isposinf(Tensor self) -> Tensor", convertIsPosInf, checkFloatInput});
  registry.add({"aten::isneginf(Tensor self) -> Tensor", convertIsNegInf, checkFloatInput});
  registry.add({"aten::isnan(Tensor self) -> Tensor", convertIsNan, checkFloatInput});
  registry.add({"aten::isfinite(Tensor self) -> Tensor", convertIsFinite, checkFloatInput});
}

}  // namespace kiln

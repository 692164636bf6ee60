// Unary math: exp, log, sqrt, rsqrt, reciprocal, sin, cos, tan, erf (floating point), abs, neg,
// sign (any number), floor, ceil, round (identity on integers), square, logical_not,
// bitwise_not on bool, and in-place variants.
//
// Composed of those: trunc (sign(x) * floor(|x|)), frac (x - trunc(x), torch's definition), log2
// and log10 (log(x) / log(base)), exp2 (pow(2, x)) and logit (log(x / (1 - x)) after the eps
// clamp, torch's formula). log1p, expm1 and the inverse and hyperbolic trigonometric functions
// are left to PyTorch: no composition of these layers is accurate for every input (log(1 + x)
// loses a small x entirely).
#include <cmath>
#include <limits>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// The input cast to the result dtype (exp of an int tensor is float), then one Unary layer.
ConvertFn unary(UnaryOp op) {
  return [op](ConversionContext& ctx, const NodeArgs& args) {
    Tensor* x = castTo(ctx, ctx.tensor(args, "self"), outputDataType(args));
    ctx.setOutput(args, 0, addUnary(ctx, x, op));
  };
}

// floor, ceil and round return integer tensors unchanged.
ConvertFn rounding(UnaryOp op) {
  return [op](ConversionContext& ctx, const NodeArgs& args) {
    Tensor* x = ctx.tensor(args, "self");
    ctx.setOutput(args, 0, isFloatingPoint(x->dtype()) ? addUnary(ctx, x, op) : x);
  };
}

std::string checkNumeric(const NodeArgs& args) {
  if (args.dtype("self") == c10::ScalarType::Bool) {
    return concat(args.node().qualifiedName(), " of a bool tensor");
  }
  return "";
}

CheckFn floatOutput() {
  return [](const NodeArgs& args) { return requireFloatOutput(args); };
}

void convertSquare(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), type);
  ctx.setOutput(args, 0, addElementwise(ctx, x, x, ElementwiseOp::kProd, type));
}

// logical_not: x == 0, on the input as bool.
void convertLogicalNot(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), DataType::kBool);
  ctx.setOutput(args, 0, addUnary(ctx, x, UnaryOp::kNot));
}

// Integers are returned unchanged, as by floor/ceil/round.
void convertTrunc(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "self");
  ctx.setOutput(args, 0, isFloatingPoint(x->dtype()) ? truncate(ctx, x) : x);
}

void convertFrac(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "self");
  ctx.setOutput(args, 0, addElementwise(ctx, x, truncate(ctx, x), ElementwiseOp::kSub, x->dtype()));
}

ConvertFn logBase(double base) {
  return [base](ConversionContext& ctx, const NodeArgs& args) {
    const DataType type = outputDataType(args);
    Tensor* log = addUnary(ctx, castTo(ctx, ctx.tensor(args, "self"), type), UnaryOp::kLog);
    ctx.setOutput(
        args, 0,
        addElementwise(ctx, log, ctx.scalar(std::log(base), type), ElementwiseOp::kDiv, type));
  };
}

void convertExp2(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), type);
  ctx.setOutput(args, 0, addElementwise(ctx, ctx.scalar(2.0, type), x, ElementwiseOp::kPow, type));
}

std::string checkLogit(const NodeArgs& args) {
  args.getOptionalDouble("eps");
  return requireFloatOutput(args);
}

// log(z / (1 - z)) with z = x clamped to [eps, 1 - eps] when eps is given.
void convertLogit(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), type);
  if (const std::optional<double> eps = args.getOptionalDouble("eps")) {
    x = addActivation(ctx, x, ActivationType::kClip, *eps, 1.0 - *eps);
  }
  Tensor* complement = addElementwise(ctx, ctx.scalar(1.0, type), x, ElementwiseOp::kSub, type);
  Tensor* odds = addElementwise(ctx, x, complement, ElementwiseOp::kDiv, type);
  ctx.setOutput(args, 0, addUnary(ctx, odds, UnaryOp::kLog));
}

std::string checkBoolResult(const NodeArgs& args) {
  if (args.output().dtype != c10::ScalarType::Bool) return "a non-bool result";
  return "";
}

std::string checkBitwiseNot(const NodeArgs& args) {
  if (args.dtype("self") != c10::ScalarType::Bool) {
    return "bitwise_not of integers (only bool tensors are supported)";
  }
  return "";
}

}  // namespace

void registerUnaryConverters(ConverterRegistry& registry) {
  struct Entry {
    const char* name;
    UnaryOp op;
    bool hasInPlace;
  };
  // Floating-point functions: the result is floating point even for integer inputs.
  const Entry floating[] = {
      {"exp", UnaryOp::kExp, true},          {"log", UnaryOp::kLog, true},
      {"sqrt", UnaryOp::kSqrt, true},        {"rsqrt", UnaryOp::kRsqrt, true},
      {"reciprocal", UnaryOp::kRecip, true}, {"sin", UnaryOp::kSin, false},
      {"cos", UnaryOp::kCos, false},         {"tan", UnaryOp::kTan, false},
      {"erf", UnaryOp::kErf, false},
  };
  for (const Entry& e : floating) {
    registry.add({concat("aten::", e.name, "(Tensor self) -> Tensor"), unary(e.op), floatOutput()});
    if (e.hasInPlace) {
      registry.add({concat("aten::", e.name, "_(Tensor(a!) self) -> Tensor(a!)"), unary(e.op),
                    inPlaceCheck(floatOutput())});
    }
  }
  // Defined on every number type.
  const Entry numeric[] = {
      {"abs", UnaryOp::kAbs, true}, {"neg", UnaryOp::kNeg, true}, {"sign", UnaryOp::kSign, false}};
  for (const Entry& e : numeric) {
    registry.add({concat("aten::", e.name, "(Tensor self) -> Tensor"), unary(e.op), checkNumeric});
    if (e.hasInPlace) {
      registry.add({concat("aten::", e.name, "_(Tensor(a!) self) -> Tensor(a!)"), unary(e.op),
                    inPlaceCheck(checkNumeric)});
    }
  }
  const Entry roundings[] = {{"floor", UnaryOp::kFloor, false},
                             {"ceil", UnaryOp::kCeil, false},
                             {"round", UnaryOp::kRound, false}};
  for (const Entry& e : roundings) {
    registry.add(
        {concat("aten::", e.name, "(Tensor self) -> Tensor"), rounding(e.op), checkNumeric});
  }
  registry.add({"aten::trunc(Tensor self) -> Tensor", convertTrunc, checkNumeric});
  registry.add({"aten::frac(Tensor self) -> Tensor", convertFrac, floatOutput()});
  registry.add({"aten::log2(Tensor self) -> Tensor", logBase(2.0), floatOutput()});
  registry.add({"aten::log10(Tensor self) -> Tensor", logBase(10.0), floatOutput()});
  registry.add({"aten::exp2(Tensor self) -> Tensor", convertExp2, floatOutput()});
  registry.add({"aten::logit(Tensor self, float? eps=None) -> Tensor", convertLogit, checkLogit});
  registry.add({"aten::square(Tensor self) -> Tensor", convertSquare, nullptr});
  registry.add({"aten::logical_not(Tensor self) -> Tensor", convertLogicalNot, checkBoolResult});
  registry.add({"aten::bitwise_not(Tensor self) -> Tensor", convertLogicalNot, checkBitwiseNot});
}

}  // namespace kiln

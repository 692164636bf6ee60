// Unary math: exp, log, sqrt, rsqrt, reciprocal, sin, cos, tan, erf (floating point), abs, neg,
// sign (any number), floor, ceil, round (identity on integers), square, logical_not,
// bitwise_not on bool, and in-place variants.
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

CheckFn floatOutput() { return [](const NodeArgs& args) { return requireFloatOutput(args); }; }

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
      {"exp", UnaryOp::kExp, true},         {"log", UnaryOp::kLog, true},
      {"sqrt", UnaryOp::kSqrt, true},       {"rsqrt", UnaryOp::kRsqrt, true},
      {"reciprocal", UnaryOp::kRecip, true}, {"sin", UnaryOp::kSin, false},
      {"cos", UnaryOp::kCos, false},        {"tan", UnaryOp::kTan, false},
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
    registry.add({concat("aten::", e.name, "(Tensor self) -> Tensor"), rounding(e.op),
                  checkNumeric});
  }
  registry.add({"aten::square(Tensor self) -> Tensor", convertSquare, nullptr});
  registry.add({"aten::logical_not(Tensor self) -> Tensor", convertLogicalNot, checkBoolResult});
  registry.add({"aten::bitwise_not(Tensor self) -> Tensor", convertLogicalNot, checkBitwiseNot});
}

}  // namespace kiln

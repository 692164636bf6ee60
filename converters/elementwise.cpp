// Binary elementwise ops: add/sub/rsub (with alpha), mul, div (true, trunc, floor), floor_divide,
// pow, maximum, minimum, comparisons and logical ops, in their Tensor and Scalar overloads and
// in-place variants; addcmul and addcdiv. Operands follow torch's type promotion; the result has
// the dtype torch recorded for the node's output.
#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// The second operand's argument name: "other", or "exponent" for pow.
std::string otherName(const NodeArgs& args) { return args.has("other") ? "other" : "exponent"; }

// self op other, computed in the promoted type of both operands.
ConvertFn binary(ElementwiseOp op) {
  return [op](ConversionContext& ctx, const NodeArgs& args) {
    const std::string other = otherName(args);
    const DataType type = resultDataType(args, {"self", other});
    Tensor* a = operandTensor(ctx, args, "self", type);
    Tensor* b = operandTensor(ctx, args, other, type);
    ctx.setOutput(args, 0, addElementwise(ctx, a, b, op, type));
  };
}

// add/sub: self op alpha * other. rsub: other - alpha * self.
ConvertFn addSub(ElementwiseOp op, bool reversed) {
  return [op, reversed](ConversionContext& ctx, const NodeArgs& args) {
    const DataType type = outputDataType(args);
    Tensor* self = operandTensor(ctx, args, "self", type);
    Tensor* other = operandTensor(ctx, args, "other", type);
    Tensor*& scaled = reversed ? self : other;
    const double alpha = args.getDouble("alpha");
    if (alpha != 1.0) {
      scaled = addElementwise(ctx, scaled, ctx.scalar(alpha, type), ElementwiseOp::kProd, type);
    }
    Tensor* result = reversed ? addElementwise(ctx, other, self, op, type)
                              : addElementwise(ctx, self, other, op, type);
    ctx.setOutput(args, 0, result);
  };
}

std::string checkAlpha(const NodeArgs& args) {
  const c10::ScalarType type = args.output().dtype;
  if (type == c10::ScalarType::Bool) return "add/sub of bool tensors";
  const OpValue& alpha = args.value("alpha");
  if (!c10::isFloatingType(type) && alpha.constant && alpha.constant->isDouble()) {
    return "a floating-point alpha with integer operands";
  }
  return "";
}

// True division computes in the (floating-point) result type; trunc and floor keep torch's
// semantics for integers (the Div layer truncates) and floats (floor division, or the quotient
// truncated).
void convertDiv(ConversionContext& ctx, const NodeArgs& args) {
  std::string mode;
  if (args.has("rounding_mode") && !args.isNone("rounding_mode")) {
    mode = args.value("rounding_mode").constant->toStringRef();
  }
  const DataType type = outputDataType(args);
  Tensor* a = operandTensor(ctx, args, "self", type);
  Tensor* b = operandTensor(ctx, args, "other", type);
  const ElementwiseOp op = mode == "floor" ? ElementwiseOp::kFloorDiv : ElementwiseOp::kDiv;
  Tensor* quotient = addElementwise(ctx, a, b, op, type);
  // The Div layer truncates integers itself; floats are truncated after it, as torch does.
  if (mode == "trunc" && isFloatingPoint(type)) quotient = truncate(ctx, quotient);
  ctx.setOutput(args, 0, quotient);
}

std::string checkDiv(const NodeArgs& args) {
  if (!args.has("rounding_mode") || args.isNone("rounding_mode")) {
    return requireFloatOutput(args);
  }
  const OpValue& mode = args.value("rounding_mode");
  if (!mode.constant || !mode.constant->isString()) return "rounding_mode must be a constant";
  const std::string& name = mode.constant->toStringRef();
  if (name == "floor") return "";
  if (name == "trunc") return "";
  return concat("unknown rounding_mode '", name, "'");
}

// addcmul: self + (value * tensor1) * tensor2; addcdiv: self + (value * tensor1) / tensor2, in
// the order of torch's CPU kernels.
ConvertFn addWithScaledProduct(ElementwiseOp op) {
  return [op](ConversionContext& ctx, const NodeArgs& args) {
    const DataType type = outputDataType(args);
    Tensor* scaled = operandTensor(ctx, args, "tensor1", type);
    const double value = args.getDouble("value");
    if (value != 1.0) {
      scaled = addElementwise(ctx, ctx.scalar(value, type), scaled, ElementwiseOp::kProd, type);
    }
    Tensor* term = addElementwise(ctx, scaled, operandTensor(ctx, args, "tensor2", type), op, type);
    ctx.setOutput(args, 0,
                  addElementwise(ctx, operandTensor(ctx, args, "self", type), term,
                                 ElementwiseOp::kSum, type));
  };
}

std::string checkAddcmul(const NodeArgs& args) {
  const c10::ScalarType type = args.output().dtype;
  if (type == c10::ScalarType::Bool) return "addcmul of bool tensors";
  const OpValue& value = args.value("value");
  if (!c10::isFloatingType(type) && value.constant && value.constant->isDouble()) {
    return "a floating-point value with integer operands";
  }
  args.getDouble("value");
  return "";
}

std::string checkAddcdiv(const NodeArgs& args) {
  args.getDouble("value");
  // Integer division in addcdiv is an error in torch.
  return requireFloatOutput(args);
}

std::string checkNotBool(const NodeArgs& args) {
  if (args.output().dtype == c10::ScalarType::Bool) {
    return concat(args.node().qualifiedName(), " on bool tensors");
  }
  return "";
}

// Comparisons compute in the promoted operand type and write bool. ne, le and ge are composed
// so that NaN compares as in torch: ne = not eq; le = lt or eq; ge = gt or eq.
enum class Comparison { kEq, kNe, kLt, kLe, kGt, kGe };

ConvertFn compare(Comparison comparison) {
  return [comparison](ConversionContext& ctx, const NodeArgs& args) {
    const DataType type = resultDataType(args, {"self", "other"});
    Tensor* a = operandTensor(ctx, args, "self", type);
    Tensor* b = operandTensor(ctx, args, "other", type);
    Tensor* result = nullptr;
    switch (comparison) {
      case Comparison::kEq:
        result = addElementwise(ctx, a, b, ElementwiseOp::kEqual, type);
        break;
      case Comparison::kNe:
        result =
            addUnary(ctx, addElementwise(ctx, a, b, ElementwiseOp::kEqual, type), UnaryOp::kNot);
        break;
      case Comparison::kLt:
        result = addElementwise(ctx, a, b, ElementwiseOp::kLess, type);
        break;
      case Comparison::kGt:
        result = addElementwise(ctx, a, b, ElementwiseOp::kGreater, type);
        break;
      case Comparison::kLe:
      case Comparison::kGe: {
        Tensor* strict = addElementwise(
            ctx, a, b,
            comparison == Comparison::kLe ? ElementwiseOp::kLess : ElementwiseOp::kGreater, type);
        Tensor* equal = addElementwise(ctx, a, b, ElementwiseOp::kEqual, type);
        result = addElementwise(ctx, strict, equal, ElementwiseOp::kOr, DataType::kBool);
        break;
      }
    }
    ctx.setOutput(args, 0, result);
  };
}

// logical_and/or/xor: both operands as bool (nonzero is true).
ConvertFn logical(ElementwiseOp op) {
  return [op](ConversionContext& ctx, const NodeArgs& args) {
    Tensor* a = castTo(ctx, ctx.tensor(args, "self"), DataType::kBool);
    Tensor* b = castTo(ctx, ctx.tensor(args, "other"), DataType::kBool);
    ctx.setOutput(args, 0, addElementwise(ctx, a, b, op, DataType::kBool));
  };
}

std::string checkBoolOutput(const NodeArgs& args) {
  if (args.output().dtype != c10::ScalarType::Bool) return "a logical op with a non-bool result";
  return "";
}

// Bitwise and/or/xor: logical on bool, bitwise on integers (as the layers define them).
std::string checkIntegral(const NodeArgs& args) {
  const c10::ScalarType type = args.output().dtype;
  if (!c10::isIntegralType(type, /*includeBool=*/true)) {
    return concat(args.node().qualifiedName(), " on ", c10::toString(type), " values");
  }
  return "";
}

}  // namespace

void registerElementwiseConverters(ConverterRegistry& registry) {
  // add / sub / rsub, functional and in place.
  const char* addSubSchemas[][2] = {
      {"aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor", "add"},
      {"aten::add.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor", "add"},
      {"aten::add_.Tensor(Tensor(a!) self, Tensor other, *, Scalar alpha=1) -> Tensor(a!)", "add_"},
      {"aten::add_.Scalar(Tensor(a!) self, Scalar other, Scalar alpha=1) -> Tensor(a!)", "add_"},
      {"aten::sub.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor", "sub"},
      {"aten::sub.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor", "sub"},
      {"aten::sub_.Tensor(Tensor(a!) self, Tensor other, *, Scalar alpha=1) -> Tensor(a!)", "sub_"},
      {"aten::sub_.Scalar(Tensor(a!) self, Scalar other, Scalar alpha=1) -> Tensor(a!)", "sub_"},
      {"aten::rsub.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor", "rsub"},
      {"aten::rsub.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor", "rsub"},
  };
  for (const auto& [schema, kind] : addSubSchemas) {
    const std::string k = kind;
    const ElementwiseOp op = k.rfind("add", 0) == 0 ? ElementwiseOp::kSum : ElementwiseOp::kSub;
    const bool inPlace = k.back() == '_';
    registry.add(
        {schema, addSub(op, k == "rsub"), inPlace ? inPlaceCheck(checkAlpha) : checkAlpha});
  }

  struct Binary {
    const char* schema;
    ElementwiseOp op;
    bool inPlace;
  };
  const Binary binaries[] = {
      {"aten::mul.Tensor(Tensor self, Tensor other) -> Tensor", ElementwiseOp::kProd, false},
      {"aten::mul.Scalar(Tensor self, Scalar other) -> Tensor", ElementwiseOp::kProd, false},
      {"aten::mul_.Tensor(Tensor(a!) self, Tensor other) -> Tensor(a!)", ElementwiseOp::kProd,
       true},
      {"aten::mul_.Scalar(Tensor(a!) self, Scalar other) -> Tensor(a!)", ElementwiseOp::kProd,
       true},
      {"aten::floor_divide(Tensor self, Tensor other) -> Tensor", ElementwiseOp::kFloorDiv, false},
      {"aten::floor_divide.Scalar(Tensor self, Scalar other) -> Tensor", ElementwiseOp::kFloorDiv,
       false},
      {"aten::pow.Tensor_Tensor(Tensor self, Tensor exponent) -> Tensor", ElementwiseOp::kPow,
       false},
      {"aten::pow.Tensor_Scalar(Tensor self, Scalar exponent) -> Tensor", ElementwiseOp::kPow,
       false},
      {"aten::pow.Scalar(Scalar self, Tensor exponent) -> Tensor", ElementwiseOp::kPow, false},
      {"aten::maximum(Tensor self, Tensor other) -> Tensor", ElementwiseOp::kMax, false},
      {"aten::minimum(Tensor self, Tensor other) -> Tensor", ElementwiseOp::kMin, false},
  };
  for (const Binary& b : binaries) {
    // mul of bools is and, max/min of bools or/and: the layers define those; floor division
    // and pow of bools are not torch ops.
    CheckFn check;
    if (b.op == ElementwiseOp::kFloorDiv || b.op == ElementwiseOp::kPow) check = checkNotBool;
    registry.add({b.schema, binary(b.op), b.inPlace ? inPlaceCheck(check) : check});
  }

  const char* divSchemas[] = {
      "aten::div.Tensor(Tensor self, Tensor other) -> Tensor",
      "aten::div.Scalar(Tensor self, Scalar other) -> Tensor",
      "aten::div.Tensor_mode(Tensor self, Tensor other, *, str? rounding_mode) -> Tensor",
      "aten::div.Scalar_mode(Tensor self, Scalar other, *, str? rounding_mode) -> Tensor",
  };
  for (const char* schema : divSchemas) registry.add({schema, convertDiv, checkDiv});
  const char* divInPlaceSchemas[] = {
      "aten::div_.Tensor(Tensor(a!) self, Tensor other) -> Tensor(a!)",
      "aten::div_.Scalar(Tensor(a!) self, Scalar other) -> Tensor(a!)",
      "aten::div_.Tensor_mode(Tensor(a!) self, Tensor other, *, str? rounding_mode) -> Tensor(a!)",
      "aten::div_.Scalar_mode(Tensor(a!) self, Scalar other, *, str? rounding_mode) -> Tensor(a!)",
  };
  for (const char* schema : divInPlaceSchemas) {
    registry.add({schema, convertDiv, inPlaceCheck(checkDiv)});
  }

  struct Compare {
    const char* name;
    Comparison comparison;
  };
  const Compare comparisons[] = {{"eq", Comparison::kEq}, {"ne", Comparison::kNe},
                                 {"lt", Comparison::kLt}, {"le", Comparison::kLe},
                                 {"gt", Comparison::kGt}, {"ge", Comparison::kGe}};
  for (const Compare& c : comparisons) {
    registry.add({concat("aten::", c.name, ".Tensor(Tensor self, Tensor other) -> Tensor"),
                  compare(c.comparison), nullptr});
    registry.add({concat("aten::", c.name, ".Scalar(Tensor self, Scalar other) -> Tensor"),
                  compare(c.comparison), nullptr});
  }

  struct Bitwise {
    const char* name;
    ElementwiseOp op;
  };
  const Bitwise bitwise[] = {
      {"and", ElementwiseOp::kAnd}, {"or", ElementwiseOp::kOr}, {"xor", ElementwiseOp::kXor}};
  for (const Bitwise& b : bitwise) {
    for (const char* overload :
         {"Tensor(Tensor self, Tensor other)", "Scalar(Tensor self, Scalar other)"}) {
      registry.add(
          {concat("aten::__", b.name, "__.", overload, " -> Tensor"), binary(b.op), checkIntegral});
      registry.add({concat("aten::bitwise_", b.name, ".", overload, " -> Tensor"), binary(b.op),
                    checkIntegral});
    }
  }

  registry.add({"aten::logical_and(Tensor self, Tensor other) -> Tensor",
                logical(ElementwiseOp::kAnd), checkBoolOutput});
  registry.add({"aten::logical_or(Tensor self, Tensor other) -> Tensor",
                logical(ElementwiseOp::kOr), checkBoolOutput});
  registry.add({"aten::logical_xor(Tensor self, Tensor other) -> Tensor",
                logical(ElementwiseOp::kXor), checkBoolOutput});
  registry.add(
      {"aten::addcmul(Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1) "
       "-> Tensor",
       addWithScaledProduct(ElementwiseOp::kProd), checkAddcmul});
  registry.add(
      {"aten::addcdiv(Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1) "
       "-> Tensor",
       addWithScaledProduct(ElementwiseOp::kDiv), checkAddcdiv});
}

}  // namespace kiln

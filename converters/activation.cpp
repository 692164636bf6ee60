// Activations: relu, gelu, silu, sigmoid, tanh, hardtanh/relu6/clamp, leaky_relu, elu, selu,
// softplus, hardswish, hardsigmoid, mish, and their in-place variants.
#include <cmath>
#include <limits>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// One Activation layer on the input cast to the result dtype (sigmoid of an int is float).
Tensor* activate(ConversionContext& ctx, const NodeArgs& args, ActivationType type,
                 double alpha = 0.0, double beta = 0.0) {
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), outputDataType(args));
  return addActivation(ctx, x, type, alpha, beta);
}

ConvertFn fixedActivation(ActivationType type, double alpha = 0.0, double beta = 0.0) {
  return [=](ConversionContext& ctx, const NodeArgs& args) {
    ctx.setOutput(args, 0, activate(ctx, args, type, alpha, beta));
  };
}

CheckFn floatOutput() { return [](const NodeArgs& args) { return requireFloatOutput(args); }; }

// relu on integers is max(x, 0): the Activation layer is floating point only.
void convertRelu(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  if (isFloatingPoint(type)) {
    ctx.setOutput(args, 0, activate(ctx, args, ActivationType::kRelu));
    return;
  }
  Tensor* zero = ctx.scalar(0.0, type);
  ctx.setOutput(args, 0,
                addElementwise(ctx, ctx.tensor(args, "self"), zero, ElementwiseOp::kMax, type));
}

std::string checkRelu(const NodeArgs& args) {
  if (args.output().dtype == c10::ScalarType::Bool) return "relu of a bool tensor";
  return "";
}

void convertGelu(ConversionContext& ctx, const NodeArgs& args) {
  const std::string approximate = args.value("approximate").constant->toStringRef();
  ctx.setOutput(args, 0,
                activate(ctx, args,
                         approximate == "tanh" ? ActivationType::kGeluTanh
                                               : ActivationType::kGeluErf));
}

std::string checkGelu(const NodeArgs& args) {
  const OpValue& approximate = args.value("approximate");
  if (!approximate.constant || !approximate.constant->isString()) {
    return "approximate must be a constant string";
  }
  const std::string& mode = approximate.constant->toStringRef();
  if (mode != "none" && mode != "tanh") return concat("unknown gelu approximation '", mode, "'");
  return requireFloatOutput(args);
}

void convertHardtanh(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                activate(ctx, args, ActivationType::kClip, args.getDouble("min_val"),
                         args.getDouble("max_val")));
}

void convertLeakyRelu(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                activate(ctx, args, ActivationType::kLeakyRelu, args.getDouble("negative_slope")));
}

// elu(x) = scale * (x > 0 ? x : alpha * (exp(x * input_scale) - 1)). With selu's constants (what
// the export decomposition writes for selu) it is one Selu activation; otherwise an Elu times
// scale.
void convertElu(ConversionContext& ctx, const NodeArgs& args) {
  constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
  constexpr double kSeluScale = 1.0507009873554804934193349852946;
  const double alpha = args.getDouble("alpha");
  const double scale = args.getDouble("scale");
  if (std::abs(alpha - kSeluAlpha) < 1e-12 && std::abs(scale - kSeluScale) < 1e-12) {
    ctx.setOutput(args, 0, activate(ctx, args, ActivationType::kSelu));
    return;
  }
  Tensor* y = activate(ctx, args, ActivationType::kElu, alpha);
  if (scale != 1.0) {
    const DataType type = outputDataType(args);
    y = addElementwise(ctx, y, ctx.scalar(scale, type), ElementwiseOp::kProd, type);
  }
  ctx.setOutput(args, 0, y);
}

std::string checkElu(const NodeArgs& args) {
  if (args.getDouble("input_scale") != 1.0) return "elu with input_scale other than 1";
  return requireFloatOutput(args);
}

void convertSoftplus(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                activate(ctx, args, ActivationType::kSoftplus, args.getDouble("beta"),
                         args.getDouble("threshold")));
}

// clamp with optional Scalar bounds. Floating point: one Clip activation (absent bounds are
// infinite); integers: max/min elementwise, which keep integer semantics.
Tensor* clampScalar(ConversionContext& ctx, const NodeArgs& args, std::optional<double> low,
                    std::optional<double> high) {
  const DataType type = outputDataType(args);
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), type);
  if (isFloatingPoint(type)) {
    const double inf = std::numeric_limits<double>::infinity();
    return addActivation(ctx, x, ActivationType::kClip, low.value_or(-inf), high.value_or(inf));
  }
  if (low) x = addElementwise(ctx, x, ctx.scalar(*low, type), ElementwiseOp::kMax, type);
  if (high) x = addElementwise(ctx, x, ctx.scalar(*high, type), ElementwiseOp::kMin, type);
  return x;
}

void convertClamp(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                clampScalar(ctx, args, args.getOptionalDouble("min"),
                            args.getOptionalDouble("max")));
}

std::string checkClamp(const NodeArgs& args) {
  if (args.output().dtype == c10::ScalarType::Bool) return "clamp of a bool tensor";
  const bool noMin = !args.has("min") || args.isNone("min");
  const bool noMax = !args.has("max") || args.isNone("max");
  if (noMin && noMax) return "clamp without min and max";
  return "";
}

// clamp with optional Tensor bounds: max then min elementwise, broadcasting as torch does.
void convertClampTensor(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  Tensor* x = ctx.tensor(args, "self");
  for (const char* name : {"min", "max"}) {
    if (!args.has(name) || args.isNone(name)) continue;
    const ElementwiseOp op = std::string(name) == "min" ? ElementwiseOp::kMax : ElementwiseOp::kMin;
    x = addElementwise(ctx, x, ctx.tensor(args, name), op, type);
  }
  ctx.setOutput(args, 0, x);
}

std::string checkClampTensor(const NodeArgs& args) {
  if (args.output().dtype == c10::ScalarType::Bool) return "clamp of a bool tensor";
  return "";
}

}  // namespace

void registerActivationConverters(ConverterRegistry& registry) {
  registry.add({"aten::relu(Tensor self) -> Tensor", convertRelu, checkRelu});
  registry.add({"aten::relu_(Tensor(a!) self) -> Tensor(a!)", convertRelu, inPlaceCheck(checkRelu)});
  registry.add({"aten::relu6(Tensor self) -> Tensor", fixedActivation(ActivationType::kClip, 0, 6),
                floatOutput()});

  struct Fixed {
    const char* schema;
    const char* inPlaceSchema;  // null when torch has none
    ActivationType type;
  };
  const Fixed fixed[] = {
      {"aten::sigmoid(Tensor self) -> Tensor", "aten::sigmoid_(Tensor(a!) self) -> Tensor(a!)",
       ActivationType::kSigmoid},
      {"aten::tanh(Tensor self) -> Tensor", "aten::tanh_(Tensor(a!) self) -> Tensor(a!)",
       ActivationType::kTanh},
      {"aten::silu(Tensor self) -> Tensor", "aten::silu_(Tensor(a!) self) -> Tensor(a!)",
       ActivationType::kSilu},
      {"aten::selu(Tensor self) -> Tensor", "aten::selu_(Tensor(a!) self) -> Tensor(a!)",
       ActivationType::kSelu},
      {"aten::hardswish(Tensor self) -> Tensor", "aten::hardswish_(Tensor(a!) self) -> Tensor(a!)",
       ActivationType::kHardSwish},
      {"aten::hardsigmoid(Tensor self) -> Tensor",
       "aten::hardsigmoid_(Tensor(a!) self) -> Tensor(a!)", ActivationType::kHardSigmoid},
      {"aten::mish(Tensor self) -> Tensor", "aten::mish_(Tensor(a!) self) -> Tensor(a!)",
       ActivationType::kMish},
  };
  for (const Fixed& f : fixed) {
    registry.add({f.schema, fixedActivation(f.type), floatOutput()});
    registry.add({f.inPlaceSchema, fixedActivation(f.type), inPlaceCheck(floatOutput())});
  }

  registry.add({"aten::gelu(Tensor self, *, str approximate=\"none\") -> Tensor", convertGelu,
                checkGelu});
  registry.add({"aten::gelu_(Tensor(a!) self, *, str approximate=\"none\") -> Tensor(a!)",
                convertGelu, inPlaceCheck(checkGelu)});
  registry.add({"aten::hardtanh(Tensor self, Scalar min_val=-1, Scalar max_val=1) -> Tensor",
                convertHardtanh, floatOutput()});
  registry.add(
      {"aten::hardtanh_(Tensor(a!) self, Scalar min_val=-1, Scalar max_val=1) -> Tensor(a!)",
       convertHardtanh, inPlaceCheck(floatOutput())});
  registry.add({"aten::leaky_relu(Tensor self, Scalar negative_slope=0.01) -> Tensor",
                convertLeakyRelu, floatOutput()});
  registry.add(
      {"aten::leaky_relu_(Tensor(a!) self, Scalar negative_slope=0.01) -> Tensor(a!)",
       convertLeakyRelu, inPlaceCheck(floatOutput())});
  registry.add(
      {"aten::elu(Tensor self, Scalar alpha=1, Scalar scale=1, Scalar input_scale=1) -> Tensor",
       convertElu, checkElu});
  registry.add({"aten::elu_(Tensor(a!) self, Scalar alpha=1, Scalar scale=1, Scalar "
                "input_scale=1) -> Tensor(a!)",
                convertElu, inPlaceCheck(checkElu)});
  registry.add({"aten::softplus(Tensor self, Scalar beta=1, Scalar threshold=20) -> Tensor",
                convertSoftplus, floatOutput()});

  registry.add({"aten::clamp(Tensor self, Scalar? min=None, Scalar? max=None) -> Tensor",
                convertClamp, checkClamp});
  registry.add(
      {"aten::clamp_(Tensor(a!) self, Scalar? min=None, Scalar? max=None) -> Tensor(a!)",
       convertClamp, inPlaceCheck(checkClamp)});
  registry.add({"aten::clamp.Tensor(Tensor self, Tensor? min=None, Tensor? max=None) -> Tensor",
                convertClampTensor, checkClampTensor});
  registry.add({"aten::clamp_min(Tensor self, Scalar min) -> Tensor",
                [](ConversionContext& ctx, const NodeArgs& args) {
                  ctx.setOutput(args, 0, clampScalar(ctx, args, args.getDouble("min"), {}));
                },
                checkClamp});
  registry.add({"aten::clamp_max(Tensor self, Scalar max) -> Tensor",
                [](ConversionContext& ctx, const NodeArgs& args) {
                  ctx.setOutput(args, 0, clampScalar(ctx, args, {}, args.getDouble("max")));
                },
                checkClamp});
  registry.add({"aten::clamp_min.Tensor(Tensor self, Tensor min) -> Tensor", convertClampTensor,
                checkClampTensor});
  registry.add({"aten::clamp_max.Tensor(Tensor self, Tensor max) -> Tensor", convertClampTensor,
                checkClampTensor});
}

}  // namespace kiln

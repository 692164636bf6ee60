// Tensor factories whose every argument is known at build time: full, zeros, ones,
// scalar_tensor, arange, and full_like, zeros_like and ones_like -> a Constant holding what torch
// would make, in the dtype torch recorded for the output. A _like of a tensor of dynamic dims is a
// one-element constant broadcast to its dims at run time (T5's relative position buckets). A
// factory for another device than the engine's (no device argument means the CPU, or for the _like
// forms the device of the tensor given), of a non-strided layout, or of more than kMaxElements
// elements stays in PyTorch.
#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <vector>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// As large as constant folding makes constants (core/builder/constant_folding.cpp).
constexpr int64_t kMaxElements = int64_t{4} << 20;

c10::Scalar scalarArgument(const NodeArgs& args, const std::string& name) {
  return args.value(name).constant->toScalar();
}

at::TensorOptions outputOptions(const NodeArgs& args) {
  return at::TensorOptions().dtype(args.output(0).dtype);
}

// What a factory's device argument may be: None means the CPU, or for the _like forms the
// device of their input, whose values live where the engine runs.
enum class DefaultDevice { kCpu, kInput };

// Whether the factory makes a strided tensor where the engine runs, of a type Kiln has.
std::string checkPlacement(const NodeArgs& args, DefaultDevice defaultDevice) {
  const c10::Device engine = args.graph().device();
  if (args.isNone("device")) {
    if (defaultDevice == DefaultDevice::kCpu && !engine.is_cpu()) {
      return "creates a CPU tensor (no device argument) for a CUDA engine";
    }
  } else if (!namesGraphDevice(args)) {
    return "creates the tensor on another device than the engine's";
  }
  if (!args.isNone("layout") &&
      args.getInt("layout") != static_cast<int64_t>(c10::Layout::Strided)) {
    return "creates a non-strided tensor";
  }
  toDataType(args.output(0).dtype);  // throws, naming the dtype, when Kiln has no such type
  return "";
}

std::string checkFactoryOn(const NodeArgs& args, DefaultDevice defaultDevice) {
  for (const char* name : {"size", "fill_value", "s", "start", "end", "step"}) {
    if (args.has(name) && !args.isConstant(name)) {
      return concat("its argument '", name, "' is computed at run time");
    }
  }
  if (std::string reason = checkPlacement(args, defaultDevice); !reason.empty()) return reason;
  int64_t elements = 1;
  for (const SymInt& dim : args.output(0).shape) {
    if (!dim.isStatic()) {
      // A _like broadcasts one element to the dims of a tensor that has them at run time.
      if (defaultDevice != DefaultDevice::kInput) return "its size depends on the inputs";
      if (std::string reason = requireDimSource(args, dim); !reason.empty()) return reason;
      continue;
    }
    elements *= dim.opt;
  }
  if (elements > kMaxElements) {
    return concat("it makes ", elements, " elements, more than the ", kMaxElements,
                  " Kiln stores as a constant");
  }
  return "";
}

std::string checkFactory(const NodeArgs& args) { return checkFactoryOn(args, DefaultDevice::kCpu); }

std::string checkLikeFactory(const NodeArgs& args) {
  return checkFactoryOn(args, DefaultDevice::kInput);
}

// The output's dims, static (checkFactoryOn refuses others).
std::vector<int64_t> outputSize(const NodeArgs& args) {
  std::vector<int64_t> size;
  for (const SymInt& dim : args.output(0).shape) size.push_back(dim.opt);
  return size;
}

// A tensor of the output's dims holding `fill`: a constant of them when they are static, else
// one element broadcast to them at run time.
Tensor* filledLikeOutput(ConversionContext& ctx, const NodeArgs& args, const c10::Scalar& fill) {
  const std::vector<SymInt>& shape = args.output(0).shape;
  const bool isStatic =
      std::all_of(shape.begin(), shape.end(), [](const SymInt& dim) { return dim.isStatic(); });
  if (isStatic) return ctx.constant(at::full(outputSize(args), fill, outputOptions(args)));
  const std::vector<int64_t> ones(shape.size(), 1);
  return broadcastTo(ctx, ctx.constant(at::full(ones, fill, outputOptions(args))), shape);
}

void convertFull(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                ctx.constant(at::full(args.getIntList("size"), scalarArgument(args, "fill_value"),
                                      outputOptions(args))));
}

void convertZeros(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, ctx.constant(at::zeros(args.getIntList("size"), outputOptions(args))));
}

void convertOnes(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, ctx.constant(at::ones(args.getIntList("size"), outputOptions(args))));
}

void convertFullLike(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, filledLikeOutput(ctx, args, scalarArgument(args, "fill_value")));
}

void convertZerosLike(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, filledLikeOutput(ctx, args, 0));
}

void convertOnesLike(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, filledLikeOutput(ctx, args, 1));
}

void convertScalarTensor(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                ctx.constant(at::scalar_tensor(scalarArgument(args, "s"), outputOptions(args))));
}

// The end of an arange that is a size known only at run time (arange(x.size(1))), else null.
const SymInt* dynamicEnd(const NodeArgs& args) {
  const OpValue& end = args.value("end");
  return end.shapeInt && !end.shapeInt->isStatic() ? &*end.shapeInt : nullptr;
}

// An arange to a run-time end is a Slice of the constant 0, 1, ..., up to the end's largest
// value, from `start` by `step`, ending at the dim of a tensor that has that size.
void convertArange(ConversionContext& ctx, const NodeArgs& args) {
  const c10::Scalar start = args.has("start") ? scalarArgument(args, "start") : c10::Scalar(0);
  const c10::Scalar step = args.has("step") ? scalarArgument(args, "step") : c10::Scalar(1);
  if (const SymInt* end = dynamicEnd(args)) {
    Tensor* positions = ctx.constant(at::arange(end->max, outputOptions(args)));
    ctx.setOutput(args, 0,
                  sliceToDynamicEnd(ctx, positions, 0, start.toLong(), step.toLong(), *end));
    return;
  }
  ctx.setOutput(
      args, 0,
      ctx.constant(at::arange(start, scalarArgument(args, "end"), step, outputOptions(args))));
}

std::string checkArange(const NodeArgs& args) {
  const SymInt* end = dynamicEnd(args);
  if (end == nullptr) return checkFactory(args);
  for (const char* name : {"start", "step"}) {
    if (!args.has(name)) continue;
    if (!args.isConstant(name) || !args.value(name).constant->isInt()) {
      return concat("an arange to a run-time end needs an integer '", name,
                    "' known at build time");
    }
  }
  if (args.has("start") && args.getInt("start") < 0)
    return "an arange to a run-time end from a negative start";
  if (args.has("step") && args.getInt("step") < 1)
    return "an arange to a run-time end with a step below 1";
  if (end->max > kMaxElements) {
    return concat("its end may reach ", end->max, ", more than the ", kMaxElements,
                  " elements Kiln stores as a constant");
  }
  if (std::string reason = requireDimSource(args, *end); !reason.empty()) return reason;
  return checkPlacement(args, DefaultDevice::kCpu);
}

}  // namespace

void registerFactoryConverters(ConverterRegistry& registry) {
  const std::string options =
      "ScalarType? dtype=None, Layout? layout=None, Device? device=None, bool? pin_memory=None) "
      "-> Tensor";
  registry.add(
      {"aten::full(SymInt[] size, Scalar fill_value, *, " + options, convertFull, checkFactory});
  registry.add({"aten::zeros(SymInt[] size, *, " + options, convertZeros, checkFactory});
  registry.add({"aten::ones(SymInt[] size, *, " + options, convertOnes, checkFactory});
  registry.add({"aten::scalar_tensor(Scalar s, *, " + options, convertScalarTensor, checkFactory});
  registry.add({"aten::arange(Scalar end, *, " + options, convertArange, checkArange, {"end"}});
  registry.add({"aten::arange.start(Scalar start, Scalar end, *, " + options,
                convertArange,
                checkArange,
                {"end"}});
  registry.add({"aten::arange.start_step(Scalar start, Scalar end, Scalar step=1, *, " + options,
                convertArange,
                checkArange,
                {"end"}});
  const std::string likeOptions =
      "ScalarType? dtype=None, Layout? layout=None, Device? device=None, bool? pin_memory=None, "
      "MemoryFormat? memory_format=None) -> Tensor";
  registry.add({"aten::full_like(Tensor self, Scalar fill_value, *, " + likeOptions,
                convertFullLike, checkLikeFactory});
  registry.add(
      {"aten::zeros_like(Tensor self, *, " + likeOptions, convertZerosLike, checkLikeFactory});
  registry.add(
      {"aten::ones_like(Tensor self, *, " + likeOptions, convertOnesLike, checkLikeFactory});
}

}  // namespace kiln

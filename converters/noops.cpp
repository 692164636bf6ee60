// Ops that do not change values at inference: dropout in eval mode, contiguous, clone, detach,
// alias, lift_fresh_copy. The output is the input's tensor (convertSegment copies it when it is
// also an engine output).
#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

ConvertFn passThrough(const char* input) {
  return [input](ConversionContext& ctx, const NodeArgs& args) {
    ctx.setOutput(args, 0, ctx.tensor(args, input));
  };
}

// Dropout is the identity only when not training.
std::string checkEval(const NodeArgs& args) {
  if (args.getBool("train")) return "dropout in training mode";
  return "";
}

}  // namespace

void registerNoopConverters(ConverterRegistry& registry) {
  registry.add({"aten::dropout(Tensor input, float p, bool train) -> Tensor", passThrough("input"),
                checkEval});
  registry.add({"aten::dropout_(Tensor(a!) self, float p, bool train) -> Tensor(a!)",
                passThrough("self"), inPlaceCheck(checkEval)});
  registry.add({"aten::feature_dropout(Tensor input, float p, bool train) -> Tensor",
                passThrough("input"), checkEval});
  registry.add({"aten::contiguous(Tensor(a) self, *, MemoryFormat memory_format=0) -> Tensor(a)",
                passThrough("self"), nullptr});
  registry.add({"aten::clone(Tensor self, *, MemoryFormat? memory_format=None) -> Tensor",
                passThrough("self"), nullptr});
  registry.add({"aten::detach(Tensor(a) self) -> Tensor(a)", passThrough("self"), nullptr});
  registry.add({"aten::alias(Tensor(a) self) -> Tensor(a)", passThrough("self"), nullptr});
  registry.add({"aten::lift_fresh_copy(Tensor self) -> Tensor", passThrough("self"), nullptr});
}

}  // namespace kiln

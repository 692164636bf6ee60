// Softmax family: aten::softmax.int and aten::log_softmax.int (TorchScript, and torch.export
// when Kiln keeps them whole) and the decomposed aten::_softmax / aten::_log_softmax ->
// Softmax layers.
#include <string>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

std::string checkSoftmax(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  KILN_CHECK(args.rank("self") >= 1, op, ": softmax of a rank-0 tensor is not converted");
  normalizeDim(args.getInt("dim"), args.rank("self"));
  // The input is cast to the result's type first: torch's `dtype` argument, or half_to_float.
  const c10::ScalarType type = args.output().dtype;
  KILN_CHECK(isComputedFloatType(type), op, ": the result is ", c10::toString(type),
             "; Kiln's softmax kernels compute float32, float16 and bfloat16");
  return "";
}

void convertSoftmax(ConversionContext& ctx, const NodeArgs& args, bool log) {
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), outputDataType(args));
  SoftmaxParams p;
  p.axis = normalizeDim(args.getInt("dim"), x->rank());
  p.log = log;
  Layer* layer = ctx.network().addSoftmax(x, p);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

void convertSoftmaxOnly(ConversionContext& ctx, const NodeArgs& args) {
  convertSoftmax(ctx, args, false);
}

void convertLogSoftmax(ConversionContext& ctx, const NodeArgs& args) {
  convertSoftmax(ctx, args, true);
}

}  // namespace

void registerSoftmaxConverters(ConverterRegistry& registry) {
  registry.add({"aten::softmax.int(Tensor self, int dim, ScalarType? dtype=None) -> Tensor",
                convertSoftmaxOnly, checkSoftmax});
  registry.add({"aten::_softmax(Tensor self, int dim, bool half_to_float) -> Tensor",
                convertSoftmaxOnly, checkSoftmax});
  registry.add({"aten::log_softmax.int(Tensor self, int dim, ScalarType? dtype=None) -> Tensor",
                convertLogSoftmax, checkSoftmax});
  registry.add({"aten::_log_softmax(Tensor self, int dim, bool half_to_float) -> Tensor",
                convertLogSoftmax, checkSoftmax});
}

}  // namespace kiln

// Cumulative family: aten::cumsum and aten::cumprod (and their in-place forms) -> a Cast to the
// result type (torch's `dtype` argument; integers and bool promote to int64) and a Cumulative
// layer along `dim`.
#include <c10/core/ScalarType.h>

#include <string>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

std::string checkCumulative(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  normalizeDim(args.getInt("dim"), args.rank("self"));
  const c10::ScalarType type = args.output().dtype;
  KILN_CHECK(
      type == c10::ScalarType::Int || type == c10::ScalarType::Long || isComputedFloatType(type),
      op, ": the result is ", c10::toString(type),
      "; Kiln's cumulative kernels take int32, int64, float32, float16 and bfloat16");
  return "";
}

void convertCumulative(ConversionContext& ctx, const NodeArgs& args, CumulativeOp op) {
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), outputDataType(args));
  CumulativeParams p;
  p.op = op;
  p.axis = normalizeDim(args.getInt("dim"), x->rank());
  Layer* layer = ctx.network().addCumulative(x, p);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

void convertCumsum(ConversionContext& ctx, const NodeArgs& args) {
  convertCumulative(ctx, args, CumulativeOp::kSum);
}

void convertCumprod(ConversionContext& ctx, const NodeArgs& args) {
  convertCumulative(ctx, args, CumulativeOp::kProd);
}

}  // namespace

void registerCumulativeConverters(ConverterRegistry& registry) {
  registry.add({"aten::cumsum(Tensor self, int dim, *, ScalarType? dtype=None) -> Tensor",
                convertCumsum, checkCumulative});
  registry.add({"aten::cumprod(Tensor self, int dim, *, ScalarType? dtype=None) -> Tensor",
                convertCumprod, checkCumulative});
  registry.add(
      {"aten::cumsum_(Tensor(a!) self, int dim, *, ScalarType? dtype=None) -> "
       "Tensor(a!)",
       convertCumsum, inPlaceCheck(checkCumulative)});
  registry.add(
      {"aten::cumprod_(Tensor(a!) self, int dim, *, ScalarType? dtype=None) -> "
       "Tensor(a!)",
       convertCumprod, inPlaceCheck(checkCumulative)});
}

}  // namespace kiln

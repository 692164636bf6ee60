// Selection: where (tensor and scalar operands) and masked_fill. Network has no select layer
// yet, so where(c, a, b) is built from Gather's element mode, exactly (no arithmetic that would
// turn an infinity or NaN of the unselected operand into a NaN):
//   data  = cat([b, a] broadcast to the output, along a new leading dim)   (2, out...)
//   index = int64(c) broadcast to the output, with a leading unit dim     (1, out...)
//   out   = gather(data, axis 0, index, element)[0]
// It materializes the broadcast operands, so it costs two output-sized copies more than a fused
// select would. A dynamic output dim is broadcast to at run time from a tensor that has it.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

Tensor* select(ConversionContext& ctx, const NodeArgs& args, Tensor* condition, Tensor* ifTrue,
               Tensor* ifFalse) {
  const std::vector<SymInt>& out = args.output().shape;
  const DataType type = outputDataType(args);
  auto leadingUnit = [&](Tensor* x) { return unsqueeze(ctx, broadcastTo(ctx, x, out), 0); };
  ConcatParams stacked;
  stacked.axis = 0;
  Layer* data = ctx.network().addConcat(
      {leadingUnit(castTo(ctx, ifFalse, type)), leadingUnit(castTo(ctx, ifTrue, type))}, stacked);
  ctx.nameLayer(data);
  GatherParams pick;
  pick.axis = 0;
  pick.mode = GatherMode::kElement;
  Layer* gather = ctx.network().addGather(
      data->output(0), leadingUnit(castTo(ctx, condition, DataType::kInt64)), pick);
  ctx.nameLayer(gather);
  return squeezeDims(ctx, gather->output(0), {0});
}

void convertWhere(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  ctx.setOutput(
      args, 0,
      select(ctx, args, ctx.tensor(args, "condition"), operandTensor(ctx, args, "self", type),
             operandTensor(ctx, args, "other", type)));
}

// masked_fill(self, mask, value) is where(mask, value, self).
void convertMaskedFill(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  ctx.setOutput(args, 0,
                select(ctx, args, ctx.tensor(args, "mask"), operandTensor(ctx, args, "value", type),
                       ctx.tensor(args, "self")));
}

std::string checkSelect(const NodeArgs& args, const std::string& condition) {
  for (const SymInt& dim : args.output().shape) {
    if (std::string reason = requireDimSource(args, dim); !reason.empty()) return reason;
  }
  if (args.dtype(condition) != c10::ScalarType::Bool) {
    return concat("argument '", condition, "' has dtype ", c10::toString(args.dtype(condition)),
                  "; the condition must be bool");
  }
  return "";
}

std::string checkWhere(const NodeArgs& args) { return checkSelect(args, "condition"); }

std::string checkMaskedFill(const NodeArgs& args) {
  if (std::string reason = requireConstants(args, {"value"}); !reason.empty()) return reason;
  return checkSelect(args, "mask");
}

std::string checkMaskedFillInPlace(const NodeArgs& args) {
  if (std::string reason = inPlaceReason(args); !reason.empty()) return reason;
  return checkMaskedFill(args);
}

std::string checkMaskedFillTensor(const NodeArgs& args) {
  if (args.rank("value") != 0) return "masked_fill with a value tensor that is not 0-d";
  return checkSelect(args, "mask");
}

}  // namespace

void registerSelectionConverters(ConverterRegistry& registry) {
  registry.add({"aten::where.self(Tensor condition, Tensor self, Tensor other) -> Tensor",
                convertWhere, checkWhere});
  registry.add({"aten::where.ScalarSelf(Tensor condition, Scalar self, Tensor other) -> Tensor",
                convertWhere, checkWhere});
  registry.add({"aten::where.ScalarOther(Tensor condition, Tensor self, Scalar other) -> Tensor",
                convertWhere, checkWhere});
  registry.add({"aten::where.Scalar(Tensor condition, Scalar self, Scalar other) -> Tensor",
                convertWhere, checkWhere});
  registry.add({"aten::masked_fill.Scalar(Tensor self, Tensor mask, Scalar value) -> Tensor",
                convertMaskedFill, checkMaskedFill});
  registry.add({"aten::masked_fill.Tensor(Tensor self, Tensor mask, Tensor value) -> Tensor",
                convertMaskedFill, checkMaskedFillTensor});
  registry.add(
      {"aten::masked_fill_.Scalar(Tensor(a!) self, Tensor mask, Scalar value) -> "
       "Tensor(a!)",
       convertMaskedFill, checkMaskedFillInPlace});
}

}  // namespace kiln

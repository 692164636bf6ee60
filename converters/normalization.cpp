// Normalization family: batch norm in inference (aten::batch_norm with training=False,
// aten::native_batch_norm likewise, aten::_native_batch_norm_legit_no_training from torch.export)
// and layer norm (aten::layer_norm, aten::native_layer_norm) -> Normalization layers. The
// native forms return saved statistics as well; they convert when only the result is read.
#include <string>
#include <vector>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

// torch lets the parameters and statistics have another float type than the input (fp32
// statistics in an fp16 model); the converter casts them to the input's.
void requireFloatOperands(const NodeArgs& args, const std::vector<std::string>& names) {
  requireFloatTensors(args, names, "normalization", false);
}

// The named operand in the input's dtype, or null when it is None.
Tensor* operandLikeInput(ConversionContext& ctx, const NodeArgs& args, const std::string& name) {
  if (args.isNone(name)) return nullptr;
  return castTo(ctx, ctx.tensor(args, name), toDataType(args.dtype("input")));
}

void requireOnlyResultUsed(const NodeArgs& args) {
  for (size_t i = 1; i < args.node().outputs.size(); ++i) {
    KILN_CHECK(!args.outputUsed(i), args.node().qualifiedName(), ": output ", i,
               " (a saved statistic) is used; Kiln computes the normalized result only");
  }
}

// Throws unless the named argument is None or a rank-1 tensor of `size` elements.
void requirePerChannel(const NodeArgs& args, const std::string& name, int64_t size) {
  if (args.isNone(name)) return;
  const std::vector<SymInt>& shape = args.value(name).shape;
  KILN_CHECK(shape.size() == 1 && shape[0].isStatic() && shape[0].opt == size,
             args.node().qualifiedName(), ": '", name, "' must hold one value per channel (", size,
             ")");
}

// ---- batch norm ------------------------------------------------------------------------------

std::string checkBatchNorm(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  if (args.has("training")) {
    KILN_CHECK(!args.getBool("training"), op, ": training-mode batch norm (batch statistics) is ",
               "not supported; put the model in eval mode");
  }
  KILN_CHECK(!args.isNone("running_mean") && !args.isNone("running_var"), op,
             ": batch norm without running statistics normalizes with batch statistics, which "
             "Kiln does not support");
  requireFloatOperands(args, {"input", "weight", "bias", "running_mean", "running_var"});
  KILN_CHECK(args.rank("input") >= 2, op, ": batch norm needs an input (N, C, ...)");
  const SymInt& channels = args.value("input").shape[1];
  KILN_CHECK(channels.isStatic(), op, ": the channel dim is dynamic; Kiln needs it fixed");
  for (const char* name : {"weight", "bias", "running_mean", "running_var"}) {
    requirePerChannel(args, name, channels.opt);
  }
  args.getDouble("eps");
  requireOnlyResultUsed(args);
  return "";
}

void convertBatchNorm(ConversionContext& ctx, const NodeArgs& args) {
  NormalizationParams p;
  p.type = NormalizationType::kBatch;
  p.epsilon = args.getDouble("eps");
  p.axis = 1;
  Layer* layer = ctx.network().addNormalization(
      ctx.tensor(args, "input"), operandLikeInput(ctx, args, "weight"),
      operandLikeInput(ctx, args, "bias"), operandLikeInput(ctx, args, "running_mean"),
      operandLikeInput(ctx, args, "running_var"), p);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

// ---- layer norm ------------------------------------------------------------------------------

// The normalized dims' sizes; throws unless they are constants matching x's trailing dims.
Dims normalizedShape(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  const std::vector<int64_t> normalized = args.getIntList("normalized_shape");
  const std::vector<SymInt>& shape = args.value("input").shape;
  KILN_CHECK(!normalized.empty() && normalized.size() <= shape.size(), op, ": normalized_shape ",
             toString(Dims(normalized)), " does not fit an input of rank ", shape.size());
  const size_t axis = shape.size() - normalized.size();
  for (size_t i = 0; i < normalized.size(); ++i) {
    const SymInt& dim = shape[axis + i];
    KILN_CHECK(dim.isStatic() && dim.opt == normalized[i], op, ": normalized_shape ",
               toString(Dims(normalized)), " does not match the input's trailing dims");
  }
  return normalized;
}

std::string checkLayerNorm(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  requireFloatOperands(args, {"input", "weight", "bias"});
  const Dims normalized = normalizedShape(args);
  for (const char* name : {"weight", "bias"}) {
    if (args.isNone(name)) continue;
    KILN_CHECK(toDims(args.value(name).shape) == normalized, op, ": '", name,
               "' must have the normalized shape ", toString(normalized));
  }
  args.getDouble("eps");
  requireOnlyResultUsed(args);
  return "";
}

void convertLayerNorm(ConversionContext& ctx, const NodeArgs& args) {
  NormalizationParams p;
  p.type = NormalizationType::kLayer;
  p.epsilon = args.getDouble("eps");
  p.axis = args.rank("input") - static_cast<int64_t>(normalizedShape(args).size());
  Layer* layer = ctx.network().addNormalization(
      ctx.tensor(args, "input"), operandLikeInput(ctx, args, "weight"),
      operandLikeInput(ctx, args, "bias"), nullptr, nullptr, p);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

}  // namespace

void registerNormalizationConverters(ConverterRegistry& registry) {
  registry.add(
      {"aten::batch_norm(Tensor input, Tensor? weight, Tensor? bias, Tensor? "
       "running_mean, Tensor? running_var, bool training, float momentum, float eps, "
       "bool cudnn_enabled) -> Tensor",
       convertBatchNorm, checkBatchNorm});
  registry.add(
      {"aten::native_batch_norm(Tensor input, Tensor? weight, Tensor? bias, Tensor? "
       "running_mean, Tensor? running_var, bool training, float momentum, float eps) -> "
       "(Tensor, Tensor, Tensor)",
       convertBatchNorm, checkBatchNorm});
  registry.add(
      {"aten::_native_batch_norm_legit_no_training(Tensor input, Tensor? weight, "
       "Tensor? bias, Tensor running_mean, Tensor running_var, float momentum, float "
       "eps) -> (Tensor, Tensor, Tensor)",
       convertBatchNorm, checkBatchNorm});
  registry.add(
      {"aten::layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, "
       "Tensor? bias=None, float eps=1.0000000000000001e-05, bool cudnn_enable=True) -> "
       "Tensor",
       convertLayerNorm, checkLayerNorm});
  registry.add(
      {"aten::native_layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? "
       "weight, Tensor? bias, float eps) -> (Tensor, Tensor, Tensor)",
       convertLayerNorm, checkLayerNorm});
}

}  // namespace kiln

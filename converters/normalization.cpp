// Normalization family: batch norm in inference (aten::batch_norm with training=False,
// aten::native_batch_norm likewise, aten::_native_batch_norm_legit_no_training from torch.export)
// and layer norm (aten::layer_norm, aten::native_layer_norm) -> Normalization layers. The
// native forms return saved statistics as well; they convert when only the result is read.
//
// Group norm, instance norm and batch norm with batch statistics (what torch.export makes of
// instance norm) are the layer-norm kind of Normalization over a reshaped or transposed input,
// followed by the per-channel affine as Elementwise layers. RMS norm is composed of Reduce,
// Elementwise and Unary layers (it subtracts no mean, which the Normalization layer does).
#include <limits>
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

// Batch norm without running statistics normalizes with the batch's, in eval mode too (torch
// passes training=True then): the converter of _native_batch_norm_legit.no_stats does that.
bool usesBatchStatistics(const NodeArgs& args) {
  return args.has("training") && args.getBool("training") && args.isNone("running_mean") &&
         args.isNone("running_var");
}

std::string checkBatchStatsNorm(const NodeArgs& args);
void convertBatchStatsNorm(ConversionContext& ctx, const NodeArgs& args);

std::string checkBatchNorm(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  if (usesBatchStatistics(args)) return checkBatchStatsNorm(args);
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
  if (usesBatchStatistics(args)) {
    convertBatchStatsNorm(ctx, args);
    return;
  }
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

// ---- per-channel helpers ---------------------------------------------------------------------

// x (N, C, ...) -> x * weight + bias with weight and bias (C) broadcast over dim 1; either may be
// None. Computed in x's dtype (the parameters are cast to it), as torch's kernels return it.
Tensor* channelAffine(ConversionContext& ctx, const NodeArgs& args, Tensor* x) {
  const DataType type = x->dtype();
  Dims perChannel(static_cast<size_t>(x->rank() - 1), 1);
  perChannel[0] = -1;
  for (const char* name : {"weight", "bias"}) {
    if (args.isNone(name)) continue;
    Tensor* operand = reshape(ctx, castTo(ctx, ctx.tensor(args, name), type), perChannel);
    x = addElementwise(ctx, x, operand,
                       std::string(name) == "weight" ? ElementwiseOp::kProd : ElementwiseOp::kSum,
                       type);
  }
  return x;
}

// Normalization of x over the dims from `axis` on, without scale and bias.
Tensor* normalizeTrailing(ConversionContext& ctx, Tensor* x, int64_t axis, double eps) {
  NormalizationParams p;
  p.type = NormalizationType::kLayer;
  p.epsilon = eps;
  p.axis = axis;
  Layer* layer = ctx.network().addNormalization(x, nullptr, nullptr, nullptr, nullptr, p);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// Throws unless the input is (N, C, ...) of rank >= minRank with a static C, and the affine
// parameters hold one value per channel.
int64_t requireStaticChannels(const NodeArgs& args, int64_t minRank) {
  const std::string op = args.node().qualifiedName();
  KILN_CHECK(args.rank("input") >= minRank, op,
             ": needs an input (N, C, ...) of rank >= ", minRank);
  const SymInt& channels = args.value("input").shape[1];
  KILN_CHECK(channels.isStatic(), op, ": the channel dim is dynamic; Kiln needs it fixed");
  for (const char* name : {"weight", "bias"}) requirePerChannel(args, name, channels.opt);
  return channels.opt;
}

// ---- group norm ------------------------------------------------------------------------------

// aten::group_norm names the group count num_groups, aten::native_group_norm group.
int64_t groupCount(const NodeArgs& args) {
  return args.getInt(args.has("num_groups") ? "num_groups" : "group");
}

std::string checkGroupNorm(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  requireFloatOperands(args, {"input", "weight", "bias"});
  const int64_t channels = requireStaticChannels(args, 2);
  const int64_t groups = groupCount(args);
  KILN_CHECK(groups > 0 && channels % groups == 0, op, ": ", channels,
             " channels do not split into ", groups, " groups");
  const std::vector<SymInt>& shape = args.value("input").shape;
  int dynamicSpatial = 0;
  for (size_t i = 2; i < shape.size(); ++i) dynamicSpatial += shape[i].isStatic() ? 0 : 1;
  KILN_CHECK(dynamicSpatial <= 1, op, ": more than one dynamic spatial dim");
  args.getDouble("eps");
  requireOnlyResultUsed(args);
  return "";
}

// (N, C, *) -> (N, G, C/G * prod(*)), normalized over the last dim, reshaped back, then the
// per-channel affine. One group (PoolFormer's, timm's GroupNorm1) normalizes every dim but the
// batch: a layer norm over dims 1 on, without reshapes, which the builder's layout pass moves
// through the transposes of a channels-last trunk as it moves any layer norm whose dims stay
// among the normalized ones.
void convertGroupNorm(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "input");
  if (groupCount(args) == 1) {
    ctx.setOutput(args, 0,
                  channelAffine(ctx, args, normalizeTrailing(ctx, x, 1, args.getDouble("eps"))));
    return;
  }
  const Dims original = toDims(args.value("input").shape);
  Tensor* grouped = reshape(ctx, x, {0, groupCount(args), -1});
  Tensor* normalized = normalizeTrailing(ctx, grouped, 2, args.getDouble("eps"));
  Dims back = original;
  back[0] = 0;  // the batch, copied (it may be dynamic); at most one other dim is -1
  ctx.setOutput(args, 0, channelAffine(ctx, args, reshape(ctx, normalized, back)));
}

// ---- instance norm and batch norm with batch statistics --------------------------------------

std::string checkInstanceNorm(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  if (!args.getBool("use_input_stats")) return checkBatchNorm(args);
  requireFloatOperands(args, {"input", "weight", "bias"});
  requireStaticChannels(args, 3);
  args.getDouble("eps");
  return "";
}

// Each (n, c) slice normalized over its spatial dims; with use_input_stats false (eval with
// tracked running statistics), it is batch norm with those statistics.
void convertInstanceNorm(ConversionContext& ctx, const NodeArgs& args) {
  if (!args.getBool("use_input_stats")) {
    convertBatchNorm(ctx, args);
    return;
  }
  Tensor* normalized = normalizeTrailing(ctx, ctx.tensor(args, "input"), 2, args.getDouble("eps"));
  ctx.setOutput(args, 0, channelAffine(ctx, args, normalized));
}

// _native_batch_norm_legit.no_stats: there are no running statistics, so torch normalizes with
// the statistics of each channel over every other dim, in eval mode too (instance norm as
// torch.export writes it, BatchNorm with track_running_stats=False).
std::string checkBatchStatsNorm(const NodeArgs& args) {
  requireFloatOperands(args, {"input", "weight", "bias"});
  requireStaticChannels(args, 2);
  args.getDouble("eps");
  requireOnlyResultUsed(args);
  return "";
}

// (N, C, ...) -> (C, N, ...), normalized over the dims from 1 on, transposed back.
void convertBatchStatsNorm(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "input");
  Dims swap(static_cast<size_t>(x->rank()));
  for (size_t i = 0; i < swap.size(); ++i) swap[i] = static_cast<int64_t>(i);
  std::swap(swap[0], swap[1]);
  Tensor* normalized = normalizeTrailing(ctx, permute(ctx, x, swap), 1, args.getDouble("eps"));
  ctx.setOutput(args, 0, channelAffine(ctx, args, permute(ctx, normalized, swap)));
}

// ---- RMS norm --------------------------------------------------------------------------------

std::string checkRmsNorm(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  requireFloatOperands(args, {"input", "weight"});
  const Dims normalized = normalizedShape(args);
  if (!args.isNone("weight")) {
    KILN_CHECK(toDims(args.value("weight").shape) == normalized, op,
               ": 'weight' must have the normalized shape ", toString(normalized));
  }
  args.getOptionalDouble("eps");
  return "";
}

// y = x * rsqrt(mean(x^2 over the normalized dims) + eps), rounded to x's type, times weight.
void convertRmsNorm(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* input = ctx.tensor(args, "input");
  const DataType inputType = input->dtype();
  // torch computes in float32 for float16 and bfloat16 inputs too; eps None is float32's.
  const DataType type = DataType::kFloat32;
  const double epsilon = args.getOptionalDouble("eps").value_or(
      static_cast<double>(std::numeric_limits<float>::epsilon()));
  Tensor* x = castTo(ctx, input, type);
  const int64_t rank = x->rank();
  const int64_t count = static_cast<int64_t>(normalizedShape(args).size());
  ReduceParams mean;
  mean.op = ReduceOp::kAvg;
  mean.keepDims = true;
  for (int64_t axis = rank - count; axis < rank; ++axis) mean.axes.push_back(axis);
  Layer* meanSquare =
      ctx.network().addReduce(addElementwise(ctx, x, x, ElementwiseOp::kProd, type), mean);
  ctx.nameLayer(meanSquare);
  Tensor* shifted = addElementwise(ctx, meanSquare->output(0), ctx.scalar(epsilon, type),
                                   ElementwiseOp::kSum, type);
  Tensor* scaled =
      addElementwise(ctx, x, addUnary(ctx, shifted, UnaryOp::kRsqrt), ElementwiseOp::kProd, type);
  Tensor* y = castTo(ctx, scaled, inputType);
  if (!args.isNone("weight")) {
    const DataType outType = outputDataType(args);
    y = addElementwise(ctx, castTo(ctx, y, outType),
                       castTo(ctx, ctx.tensor(args, "weight"), outType), ElementwiseOp::kProd,
                       outType);
  }
  ctx.setOutput(args, 0, castTo(ctx, y, outputDataType(args)));
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
  registry.add(
      {"aten::group_norm(Tensor input, int num_groups, Tensor? weight=None, Tensor? bias=None, "
       "float eps=1.0000000000000001e-05, bool cudnn_enabled=True) -> Tensor",
       convertGroupNorm, checkGroupNorm});
  registry.add(
      {"aten::native_group_norm(Tensor input, Tensor? weight, Tensor? bias, SymInt N, SymInt C, "
       "SymInt HxW, int group, float eps) -> (Tensor, Tensor, Tensor)",
       convertGroupNorm, checkGroupNorm});
  registry.add(
      {"aten::instance_norm(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, "
       "Tensor? running_var, bool use_input_stats, float momentum, float eps, bool "
       "cudnn_enabled) -> Tensor",
       convertInstanceNorm, checkInstanceNorm});
  registry.add(
      {"aten::_native_batch_norm_legit.no_stats(Tensor input, Tensor? weight, Tensor? bias, "
       "bool training, float momentum, float eps) -> (Tensor, Tensor, Tensor)",
       convertBatchStatsNorm, checkBatchStatsNorm});
  registry.add(
      {"aten::rms_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight=None, float? "
       "eps=None) -> Tensor",
       convertRmsNorm, checkRmsNorm});
}

}  // namespace kiln

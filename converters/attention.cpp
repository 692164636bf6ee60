// Attention: aten::scaled_dot_product_attention (TorchScript, and torch.export when Kiln keeps
// it whole) and aten::_scaled_dot_product_flash_attention_for_cpu (what torch.compile traces on
// CPU) -> one fused Attention layer when the inputs have rank 3 or 4 and the mask spans the keys
// (the score matrix is never stored); otherwise MatMul, scale, mask, Softmax, MatMul layers:
//
//   scores = (Q @ K^T) * scale (+ causal mask) (+ attention mask)
//   out    = softmax(scores, -1) @ V
//
// Boolean masks (True = attend) and float masks (added to the scores) are both supported. Rows
// whose every key is masked out give zeros, as torch does: masked scores are set to the lowest
// finite float (so the softmax stays finite) and such rows are multiplied by zero at the end.
// enable_gqa (fewer key/value heads than query heads) groups the query heads onto a key/value
// head dim that the batched MatMul broadcasts, so K and V are never repeated.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

constexpr double kLowest = std::numeric_limits<float>::lowest();
constexpr double kInfinity = std::numeric_limits<double>::infinity();

// Reshapes for grouped-query attention: query heads Hq = Hkv * groups are split into
// (Hkv, groups) so that K and V of shape (N, Hkv, 1, S, E) broadcast over the groups.
struct GroupedHeads {
  Dims query;                // (N, Hq, L, E) -> (N, Hkv, G, L, E)
  std::optional<Dims> mask;  // (..., Hq or 1, L, S) -> (..., Hkv or 1, G or 1, L, S)
  Dims output;               // (N, Hkv, G, L, Ev) -> (N, Hq, L, Ev)
};

struct AttentionPlan {
  bool causal = false;
  double scale = 1.0;
  bool hasMask = false;
  bool boolMask = false;
  std::optional<GroupedHeads> grouped;
};

Dims reshapeOrThrow(const NodeArgs& args, const std::vector<SymInt>& from,
                    const std::vector<SymInt>& to, const char* what) {
  std::optional<Dims> dims = shuffleReshapeDims(from, to);
  KILN_CHECK(dims.has_value(), args.node().qualifiedName(), ": cannot regroup the ", what,
             " heads for enable_gqa with these dynamic dims");
  return *dims;
}

GroupedHeads groupHeads(const NodeArgs& args, int64_t kvHeads) {
  const std::string op = args.node().qualifiedName();
  const std::vector<SymInt>& q = args.value("query").shape;
  const int64_t groups = q[1].opt / kvHeads;
  GroupedHeads g;
  g.query =
      reshapeOrThrow(args, q, {q[0], SymInt::of(kvHeads), SymInt::of(groups), q[2], q[3]}, "query");
  if (!args.isNone("attn_mask")) {
    const std::vector<SymInt>& m = args.value("attn_mask").shape;
    KILN_CHECK(m.size() <= 4, op, ": an attention mask of rank ", m.size(),
               " does not broadcast to (N, H, L, S)");
    if (m.size() >= 3) {
      const size_t head = m.size() - 3;
      KILN_CHECK(m[head].isStatic() && (m[head].opt == 1 || m[head].opt == q[1].opt), op,
                 ": the attention mask's head dim must be 1 or the query's head count");
      std::vector<SymInt> to(m.begin(), m.begin() + static_cast<std::ptrdiff_t>(head));
      const bool perHead = m[head].opt != 1;
      to.push_back(SymInt::of(perHead ? kvHeads : 1));
      to.push_back(SymInt::of(perHead ? groups : 1));
      to.insert(to.end(), m.end() - 2, m.end());
      g.mask = reshapeOrThrow(args, m, to, "mask");
    }
  }
  const std::vector<SymInt>& v = args.value("value").shape;
  g.output = reshapeOrThrow(args, {q[0], SymInt::of(kvHeads), SymInt::of(groups), q[2], v[3]},
                            args.output(0).shape, "output");
  return g;
}

// Reads the node; throws (the capability check's reason) for what Kiln cannot run faithfully.
AttentionPlan plan(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  requireFloatTensors(args, {"query", "key", "value"}, "attention");
  const int64_t rank = args.rank("query");
  KILN_CHECK(rank >= 2 && args.rank("key") == rank && args.rank("value") == rank, op,
             ": query, key and value must have the same rank (>= 2)");
  KILN_CHECK(args.getDouble("dropout_p") == 0.0, op, ": dropout_p > 0 is training-time ",
             "randomness; Kiln converts attention without dropout");
  if (args.node().outputs.size() > 1) {
    KILN_CHECK(!args.outputUsed(1), op, ": the logsumexp output is used; Kiln computes the ",
               "attention output only");
  }
  AttentionPlan p;
  const std::vector<SymInt>& q = args.value("query").shape;
  const std::vector<SymInt>& k = args.value("key").shape;
  if (std::optional<double> scale = args.getOptionalDouble("scale")) {
    p.scale = *scale;
  } else {
    const SymInt& embed = q.back();
    KILN_CHECK(embed.isStatic() && embed.opt > 0, op,
               ": the query's last dim is dynamic, so the default scale is unknown");
    p.scale = 1.0 / std::sqrt(static_cast<double>(embed.opt));
  }
  p.causal = args.getBool("is_causal");
  p.hasMask = !args.isNone("attn_mask");
  if (p.causal) {
    KILN_CHECK(!p.hasMask, op, ": is_causal with an explicit attn_mask is an error in torch");
    KILN_CHECK(q[rank - 2].isStatic() && k[rank - 2].isStatic(), op,
               ": is_causal needs static query and key lengths");
  }
  if (p.hasMask) {
    const c10::ScalarType maskType = args.dtype("attn_mask");
    KILN_CHECK(maskType == c10::ScalarType::Bool || isComputedFloatType(maskType), op,
               ": the attention mask must be bool or floating-point, not ",
               c10::toString(maskType));
    KILN_CHECK(args.rank("attn_mask") <= rank, op, ": the attention mask has a higher rank than ",
               "the query");
    p.boolMask = maskType == c10::ScalarType::Bool;
  }
  if (args.has("enable_gqa") && args.getBool("enable_gqa")) {
    KILN_CHECK(rank == 4, op, ": enable_gqa needs (N, H, L, E) inputs");
    const SymInt& queryHeads = q[1];
    const SymInt& kvHeads = k[1];
    KILN_CHECK(queryHeads.isStatic() && kvHeads.isStatic() &&
                   args.value("value").shape[1].isStatic() &&
                   args.value("value").shape[1].opt == kvHeads.opt && kvHeads.opt > 0 &&
                   queryHeads.opt % kvHeads.opt == 0,
               op, ": enable_gqa needs static head counts, the query's a multiple of the key's");
    if (queryHeads.opt != kvHeads.opt) p.grouped = groupHeads(args, kvHeads.opt);
  }
  return p;
}

std::string checkAttention(const NodeArgs& args) {
  plan(args);
  return "";
}

Tensor* multiply(ConversionContext& ctx, Tensor* a, Tensor* b) {
  return addElementwise(ctx, a, b, ElementwiseOp::kProd, DataType::kFloat32);
}

Tensor* add(ConversionContext& ctx, Tensor* a, Tensor* b) {
  return addElementwise(ctx, a, b, ElementwiseOp::kSum, DataType::kFloat32);
}

// Any of the last axis, kept as a size-1 dim, as float32 1 or 0.
Tensor* anyAlongLastAxis(ConversionContext& ctx, Tensor* mask) {
  ReduceParams p;
  p.op = ReduceOp::kMax;
  p.axes = {-1};
  p.keepDims = true;
  Layer* layer = ctx.network().addReduce(castTo(ctx, mask, DataType::kBool), p);
  ctx.nameLayer(layer, "any");
  return castTo(ctx, layer->output(0), DataType::kFloat32);
}

// Whether the node maps onto one Attention layer: (N, H, L, E) or (N, L, E) inputs, and a mask
// (if any) of rank <= 4 whose last dim is the key count for every input shape: the same static
// size, or the same dynamic symbol (a dynamic sequence length).
bool fitsAttentionLayer(const NodeArgs& args) {
  const int64_t rank = args.rank("query");
  if (rank != 3 && rank != 4) return false;
  if (args.isNone("attn_mask")) return true;
  const std::vector<SymInt>& mask = args.value("attn_mask").shape;
  if (mask.empty() || static_cast<int64_t>(mask.size()) > 4) return false;
  const SymInt& maskKeys = mask.back();
  const SymInt& keys = args.value("key").shape[static_cast<size_t>(rank - 2)];
  if (maskKeys.isStatic() || keys.isStatic()) {
    return maskKeys.isStatic() && keys.isStatic() && maskKeys.opt == keys.opt;
  }
  return maskKeys.symbol == keys.symbol;
}

void convertToAttentionLayer(ConversionContext& ctx, const NodeArgs& args, const AttentionPlan& p) {
  Tensor* query = ctx.tensor(args, "query");
  Tensor* key = ctx.tensor(args, "key");
  Tensor* value = ctx.tensor(args, "value");
  Tensor* mask = p.hasMask ? ctx.tensor(args, "attn_mask") : nullptr;
  const bool headless = query->rank() == 3;
  if (headless) {
    query = unsqueeze(ctx, query, 1);
    key = unsqueeze(ctx, key, 1);
    value = unsqueeze(ctx, value, 1);
  }
  // Additive masks of another float type than float32 or the inputs' go to float32.
  if (mask && !p.boolMask && mask->dtype() != query->dtype() &&
      mask->dtype() != DataType::kFloat32) {
    mask = castTo(ctx, mask, DataType::kFloat32);
  }
  AttentionParams params;
  params.scale = p.scale;
  params.causal = p.causal;
  Layer* layer = ctx.network().addAttention(query, key, value, mask, params);
  ctx.nameLayer(layer, "attention");
  Tensor* out = layer->output(0);
  if (headless) out = squeezeDims(ctx, out, {1});
  ctx.setOutput(args, 0, out);
}

void convertAttention(ConversionContext& ctx, const NodeArgs& args) {
  const AttentionPlan p = plan(args);
  if (fitsAttentionLayer(args)) {
    convertToAttentionLayer(ctx, args, p);
    return;
  }
  Tensor* query = ctx.tensor(args, "query");
  Tensor* key = ctx.tensor(args, "key");
  Tensor* value = ctx.tensor(args, "value");
  Tensor* mask = p.hasMask ? ctx.tensor(args, "attn_mask") : nullptr;
  if (p.grouped) {
    query = reshape(ctx, query, p.grouped->query);
    key = unsqueeze(ctx, key, 2);
    value = unsqueeze(ctx, value, 2);
    if (mask && p.grouped->mask) mask = reshape(ctx, mask, *p.grouped->mask);
  }

  MatMulParams transposeKey;
  transposeKey.transposeB = true;
  Layer* scoresLayer = ctx.network().addMatMul(query, key, transposeKey);
  ctx.nameLayer(scoresLayer, "scores");
  // Scores, masks and softmax in float32 whatever the inputs' type (as torch's fused kernels
  // accumulate): a float16 mask of float32's lowest would overflow to -inf.
  Tensor* scores = castTo(ctx, scoresLayer->output(0), DataType::kFloat32);
  if (p.scale != 1.0) scores = multiply(ctx, scores, ctx.scalar(p.scale, DataType::kFloat32));

  if (p.causal) {
    // torch aligns the causal mask top-left: query i sees keys 0..i.
    const int64_t queries = query->dims()[query->dims().size() - 2];
    const int64_t keys = key->dims()[key->dims().size() - 2];
    at::Tensor causal = at::full({queries, keys}, -kInfinity, at::kFloat).triu(1);
    scores = add(ctx, scores, ctx.constant(causal));
  }

  Tensor* rowHasKeys = nullptr;
  if (mask) {
    Tensor* additive = nullptr;
    if (p.boolMask) {
      // True -> 0, False -> lowest: (float(mask) - 1) * -lowest.
      Tensor* ones = castTo(ctx, mask, DataType::kFloat32);
      additive = multiply(ctx,
                          addElementwise(ctx, ones, ctx.scalar(1.0, DataType::kFloat32),
                                         ElementwiseOp::kSub, DataType::kFloat32),
                          ctx.scalar(-kLowest, DataType::kFloat32));
      rowHasKeys = anyAlongLastAxis(ctx, mask);
    } else {
      additive = addElementwise(ctx, mask, ctx.scalar(kLowest, DataType::kFloat32),
                                ElementwiseOp::kMax, DataType::kFloat32);
      rowHasKeys = anyAlongLastAxis(
          ctx, addElementwise(ctx, mask, ctx.scalar(-kInfinity, DataType::kFloat32),
                              ElementwiseOp::kGreater, DataType::kFloat32));
    }
    scores = add(ctx, scores, additive);
  }

  SoftmaxParams softmax;
  softmax.axis = -1;
  Layer* probabilities = ctx.network().addSoftmax(scores, softmax);
  ctx.nameLayer(probabilities, "softmax");
  Layer* outLayer =
      ctx.network().addMatMul(castTo(ctx, probabilities->output(0), value->dtype()), value);
  ctx.nameLayer(outLayer, "output");
  Tensor* out = outLayer->output(0);
  if (rowHasKeys) out = multiply(ctx, out, rowHasKeys);
  if (p.grouped) out = reshape(ctx, out, p.grouped->output);
  ctx.setOutput(args, 0, castTo(ctx, out, value->dtype()));
}

}  // namespace

void registerAttentionConverters(ConverterRegistry& registry) {
  registry.add(
      {"aten::scaled_dot_product_attention(Tensor query, Tensor key, Tensor value, "
       "Tensor? attn_mask=None, float dropout_p=0., bool is_causal=False, *, float? "
       "scale=None, bool enable_gqa=False) -> Tensor",
       convertAttention, checkAttention});
  registry.add(
      {"aten::_scaled_dot_product_flash_attention_for_cpu(Tensor query, Tensor key, "
       "Tensor value, float dropout_p=0., bool is_causal=False, *, Tensor? "
       "attn_mask=None, float? scale=None) -> (Tensor output, Tensor logsumexp)",
       convertAttention, checkAttention});
}

}  // namespace kiln

// Recognizes attention written out in layers, as models that add a bias to the scores write it
// (Swin's and LeViT's relative position biases, EfficientFormer's attention biases, T5's position
// bias), and replaces it by one Attention layer whose additive mask is that bias:
//
//   scores = (q [* c]) @ k^T [* c | / c] [+ bias]      (rank 4: (N, H, L, E) and (N, H, S, E))
//   out    = softmax(scores, -1) @ v                    (v: (N, H, S, Ev))
//
// with c scalar constants (their product is the attention's scale) and k^T either the matrix
// multiply's transposed operand or a permutation of a tensor (LeViT's permute(0, 2, 3, 1) of its
// keys), which then becomes the permutation that gives k. The scores are then
// never stored: one kernel reads q, k, v and the bias once. Attention written with other batch
// dims takes the same form through reshapes: scores of rank r >= 3 (..., L, S), computed by a
// matrix multiply of that rank or of rank 3 over the batch dims merged ((B', L, E), as an einsum
// or torch.bmm writes it), with reshapes, biases and scalar factors between the product and the
// softmax (MaxViT's block and grid attention, (B, G, H, P, D); Swin's shifted windows, whose
// position bias and shift mask are added at two views). It runs as attention over (N, H, L, E)
// views of q, k and v: the biases, over the finest of the views, sum to one mask that has the
// trailing batch dims in full (H) and broadcasts over the leading ones (N); without a bias H is
// the last batch dim. The output is reshaped back. Every intermediate tensor must have
// the next layer as its only reader. The fused kernel computes the scores and softmax in fp32
// where the layers rounded them to the tensors' type; a row whose every score is -inf gives
// zeros where the layers give NaN.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/builder/constant_values.h"
#include "core/builder/passes.h"
#include "core/engine/layer_dims.h"
#include "core/engine/memory_plan.h"
#include "kernels/common/attention_params.h"

namespace kiln {
namespace {

Layer* soleProducer(const Network& network, const Tensor* tensor, const Layer* reader) {
  Layer* producer = tensor->producer();
  if (producer == nullptr || network.soleReader(tensor) != reader) return nullptr;
  return producer;
}

// x * c, c * x or x / c for a scalar constant c: x and the factor it is multiplied by.
std::optional<std::pair<Tensor*, double>> scaledBy(const Layer& layer) {
  if (layer.kind() != LayerKind::kElementwise) return std::nullopt;
  const ElementwiseOp op = layer.paramsAs<ElementwiseParams>().op;
  if (op == ElementwiseOp::kProd) {
    for (size_t i = 0; i < 2; ++i) {
      if (const std::optional<double> c = scalarConstant(layer.input(1 - i))) {
        return std::make_pair(layer.input(i), *c);
      }
    }
  } else if (op == ElementwiseOp::kDiv) {
    if (const std::optional<double> c = scalarConstant(layer.input(1)); c && *c != 0.0) {
      return std::make_pair(layer.input(0), 1.0 / *c);
    }
  }
  return std::nullopt;
}

// The permutation of a rank-4 shuffle that only permutes, if `layer` is one.
std::optional<Dims> permutationOf(const Layer& layer) {
  if (layer.kind() != LayerKind::kShuffle) return std::nullopt;
  const auto& p = layer.paramsAs<ShuffleParams>();
  if (p.firstPermutation.size() != 4 || p.hasReshape || !p.secondPermutation.empty()) {
    return std::nullopt;
  }
  return p.firstPermutation;
}

bool fitsHeadDim(int64_t dim) { return dim >= 1 && dim <= kernels::kMaxAttentionDim; }

bool isReshape(const Layer& layer) {
  return layer.kind() == LayerKind::kShuffle && isReshapeOnly(layer.paramsAs<ShuffleParams>());
}

// The volume of the batch dims (all but the last two).
int64_t batchVolume(const Dims& dims) { return volume(Dims(dims.begin(), dims.end() - 2)); }

// probabilities @ v: the matrix multiply that alone reads `probabilities` as its first operand,
// neither operand transposed; else null.
Layer* productWithValues(const Network& network, const Tensor* probabilities) {
  Layer* product = network.soleReader(probabilities);
  if (product == nullptr || product->kind() != LayerKind::kMatMul ||
      product->input(0) != probabilities) {
    return nullptr;
  }
  const auto& params = product->paramsAs<MatMulParams>();
  return params.transposeA || params.transposeB ? nullptr : product;
}

struct ExplicitAttention {
  Tensor* q = nullptr;
  Tensor* k = nullptr;
  // When k^T is a permutation of a tensor: that tensor and the permutation that gives k from it
  // (k^T's with the last two dims swapped), which a shuffle then computes instead of k^T.
  Tensor* kSource = nullptr;
  Dims kPermutation;
  Tensor* v = nullptr;
  Tensor* bias = nullptr;
  double scale = 1.0;
  // For attention over other batch dims (matchReshaped's, when `finest` is not empty): the
  // batch dims of the finest view, the H the operands are reshaped to (N, H, ...) with, and the
  // biases, each with the dims of the scores it is added to (the view it broadcasts against), to
  // be reshaped to the finest view and summed.
  Dims finest;
  int64_t heads = 0;
  std::vector<std::pair<Tensor*, Dims>> biases;
};

// The attention that ends in `softmax`, if the layers around it compute one.
std::optional<ExplicitAttention> match(const Network& network, Layer* softmax, Layer** output) {
  const Tensor* probabilities = softmax->output(0);
  const Dims& scoreDims = softmax->input(0)->dims();
  const auto axis = softmax->paramsAs<SoftmaxParams>().axis;
  if (scoreDims.size() != 4 || (axis != 3 && axis != -1)) return std::nullopt;
  Layer* weighted = productWithValues(network, probabilities);
  if (weighted == nullptr) return std::nullopt;

  ExplicitAttention a;
  a.v = weighted->input(1);
  // Back from the softmax: a bias added last, then scalar factors, then q @ k^T.
  Layer* reader = softmax;
  Layer* layer = soleProducer(network, softmax->input(0), reader);
  if (layer != nullptr && layer->kind() == LayerKind::kElementwise &&
      layer->paramsAs<ElementwiseParams>().op == ElementwiseOp::kSum) {
    for (size_t i = 0; i < 2 && a.bias == nullptr; ++i) {
      const Layer* producer = layer->input(i)->producer();
      const bool scores = producer != nullptr && (producer->kind() == LayerKind::kMatMul ||
                                                  scaledBy(*producer).has_value());
      if (scores) a.bias = layer->input(1 - i);
    }
    if (a.bias == nullptr) return std::nullopt;
    Tensor* scores = layer->input(0) == a.bias ? layer->input(1) : layer->input(0);
    // A bias that broadcasts the scores to more elements is not a mask of them.
    if (scores->dims() != scoreDims) return std::nullopt;
    reader = layer;
    layer = soleProducer(network, scores, reader);
  }
  while (layer != nullptr && layer->kind() == LayerKind::kElementwise) {
    const std::optional<std::pair<Tensor*, double>> scaled = scaledBy(*layer);
    if (!scaled) return std::nullopt;
    a.scale *= scaled->second;
    reader = layer;
    layer = soleProducer(network, scaled->first, reader);
  }
  if (layer == nullptr || layer->kind() != LayerKind::kMatMul) return std::nullopt;
  const auto& scoreParams = layer->paramsAs<MatMulParams>();
  if (scoreParams.transposeA) return std::nullopt;
  a.q = layer->input(0);
  a.k = layer->input(1);
  if (!scoreParams.transposeB) {
    Layer* permute = soleProducer(network, a.k, layer);
    const std::optional<Dims> permutation =
        permute == nullptr ? std::nullopt : permutationOf(*permute);
    if (!permutation) return std::nullopt;
    a.kPermutation = {(*permutation)[0], (*permutation)[1], (*permutation)[3], (*permutation)[2]};
    a.kSource = permute->input(0);
    a.k = nullptr;
  }
  if (Layer* scaling = soleProducer(network, a.q, layer)) {
    if (const std::optional<std::pair<Tensor*, double>> scaled = scaledBy(*scaling)) {
      a.q = scaled->first;
      a.scale *= scaled->second;
    }
  }

  // (N, H, L, E), (N, H, S, E) and (N, H, S, Ev) of one float type, static head dims.
  const Dims& q = a.q->dims();
  const Dims k = a.k != nullptr ? a.k->dims() : permuteDims(a.kSource->dims(), a.kPermutation);
  const Dims& v = a.v->dims();
  if (q.size() != 4 || k.size() != 4 || v.size() != 4 || q[0] != k[0] || q[0] != v[0] ||
      q[1] != k[1] || q[1] != v[1] || k[2] != v[2] || q[3] != k[3] || !fitsHeadDim(q[3]) ||
      !fitsHeadDim(v[3])) {
    return std::nullopt;
  }
  const DataType type = a.q->dtype();
  const DataType kType = a.k != nullptr ? a.k->dtype() : a.kSource->dtype();
  if (!isFloatingPoint(type) || kType != type || a.v->dtype() != type) return std::nullopt;
  if (a.bias != nullptr) {
    const Dims& bias = a.bias->dims();
    const bool typed = a.bias->dtype() == type || a.bias->dtype() == DataType::kFloat32;
    if (!typed || bias.empty() || bias.size() > 4 || bias.back() != k[2] || k[2] < 0) {
      return std::nullopt;
    }
  }
  *output = weighted;
  return a;
}

// `operand` of `reader` without the scalar factor applied to it, behind a reshape or not (MaxViT
// scales its keys before the einsum reshapes them); the factor multiplies `scale`. The reshape
// goes too: the operands are reshaped to (N, H, ...) anyway.
Tensor* withoutScaling(const Network& network, Tensor* operand, const Layer* reader,
                       double& scale) {
  Layer* producer = soleProducer(network, operand, reader);
  if (producer != nullptr && isReshape(*producer)) {
    reader = producer;
    producer = soleProducer(network, producer->input(0), reader);
  }
  if (producer == nullptr) return operand;
  const std::optional<std::pair<Tensor*, double>> scaled = scaledBy(*producer);
  if (!scaled) return operand;
  scale *= scaled->second;
  return scaled->first;
}

// Where each of `view`'s dims falls among `finest`'s: the range [first, last) of finest dims
// whose product it is, or nullopt when `view` is no merge of adjacent finest dims. Finest dims of
// 1 that no view dim needs fall in no range.
std::optional<std::vector<std::pair<size_t, size_t>>> groupsOf(const Dims& view,
                                                               const Dims& finest) {
  std::vector<std::pair<size_t, size_t>> groups;
  size_t f = 0;
  for (int64_t d : view) {
    const size_t first = f;
    int64_t merged = 1;
    while (f < finest.size() && merged < d) merged *= finest[f++];
    if (merged != d) return std::nullopt;
    groups.emplace_back(first, f);
  }
  for (; f < finest.size(); ++f) {
    if (finest[f] != 1) return std::nullopt;
  }
  return groups;
}

// A bias's dims (broadcasting against `view`, of the scores' (..., L, S)) over the finest view's
// batch dims: each view dim the bias has in full becomes its finest dims, each it broadcasts over
// their 1s. nullopt when a dim is neither.
std::optional<Dims> biasOverFinest(const Dims& bias, const Dims& view, const Dims& finest) {
  const Dims aligned = alignToRank(bias, view.size());
  const Dims viewBatch(view.begin(), view.end() - 2);
  const std::optional<std::vector<std::pair<size_t, size_t>>> groups = groupsOf(viewBatch, finest);
  if (!groups) return std::nullopt;
  Dims out(finest.size(), 1);
  for (size_t d = 0; d < viewBatch.size(); ++d) {
    if (aligned[d] == 1) continue;
    if (aligned[d] != viewBatch[d]) return std::nullopt;
    for (size_t f = (*groups)[d].first; f < (*groups)[d].second; ++f) out[f] = finest[f];
  }
  out.push_back(aligned[aligned.size() - 2]);
  out.push_back(aligned.back());
  return out;
}

// The side of a sum that carries the scores (of the sum's dims, from the product, a reshape, a
// scaling or another sum), the other being a bias: its index, or nullopt.
std::optional<size_t> scoresSide(const Network& network, const Layer& sum) {
  for (size_t i = 0; i < 2; ++i) {
    const Tensor* input = sum.input(i);
    const Layer* producer = input->producer();
    if (producer == nullptr || input->dims() != sum.output(0)->dims() ||
        network.soleReader(input) != &sum) {
      continue;
    }
    const bool scores = producer->kind() == LayerKind::kMatMul || isReshape(*producer) ||
                        scaledBy(*producer).has_value() ||
                        (producer->kind() == LayerKind::kElementwise &&
                         producer->paramsAs<ElementwiseParams>().op == ElementwiseOp::kSum);
    if (scores) return i;
  }
  return std::nullopt;
}

// The attention that ends in `softmax` over batch dims other than (N, H): scores of rank r >= 3
// computed at that rank or by a product over merged batch dims, with reshapes, biases and
// scalar factors between the product and the softmax in any order (Swin's shifted windows add
// the position bias at (B*W, H, L, S) and the shift mask at (B, W, H, L, S)). Static dims only:
// the reshapes to (N, H, ...) need the batch's volume.
std::optional<ExplicitAttention> matchReshaped(const Network& network, Layer* softmax,
                                               Layer** output) {
  const Dims& scores = softmax->input(0)->dims();
  const size_t rank = scores.size();
  const auto axis = softmax->paramsAs<SoftmaxParams>().axis;
  if (rank < 3 || (axis != -1 && axis != static_cast<int64_t>(rank) - 1) || !isStatic(scores)) {
    return std::nullopt;
  }
  bool reshapes = false;
  const Tensor* probabilities = softmax->output(0);
  if (const Layer* reshape = network.soleReader(probabilities);
      reshape != nullptr && isReshape(*reshape)) {
    probabilities = reshape->output(0);
    reshapes = true;
  }
  Layer* weighted = productWithValues(network, probabilities);
  if (weighted == nullptr) return std::nullopt;

  ExplicitAttention a;
  a.v = weighted->input(1);
  std::vector<Dims> views = {scores};
  // A bias added before a scaling would be scaled too: the kernel adds its mask unscaled.
  bool scaledAfter = false;
  Layer* reader = softmax;
  Layer* layer = soleProducer(network, softmax->input(0), reader);
  while (layer != nullptr && layer->kind() != LayerKind::kMatMul) {
    Tensor* next = nullptr;
    if (isReshape(*layer)) {
      next = layer->input(0);
      views.push_back(next->dims());
      reshapes = true;
    } else if (layer->kind() == LayerKind::kElementwise &&
               layer->paramsAs<ElementwiseParams>().op == ElementwiseOp::kSum) {
      const std::optional<size_t> side = scoresSide(network, *layer);
      if (!side || scaledAfter) return std::nullopt;
      next = layer->input(*side);
      a.biases.emplace_back(layer->input(1 - *side), next->dims());
    } else if (const std::optional<std::pair<Tensor*, double>> scaled = scaledBy(*layer)) {
      a.scale *= scaled->second;
      scaledAfter = true;
      next = scaled->first;
    } else {
      return std::nullopt;
    }
    reader = layer;
    layer = soleProducer(network, next, reader);
  }
  // The plain rank-4 form is match()'s.
  if (!reshapes && rank == 4) return std::nullopt;
  if (layer == nullptr) return std::nullopt;
  const auto& scoreParams = layer->paramsAs<MatMulParams>();
  if (scoreParams.transposeA) return std::nullopt;
  a.q = withoutScaling(network, layer->input(0), layer, a.scale);
  if (scoreParams.transposeB) {
    a.k = withoutScaling(network, layer->input(1), layer, a.scale);
  } else {
    // k^T as a permutation of a tensor (Swin's k.transpose(-2, -1)): the permutation to k.
    Layer* permute = soleProducer(network, layer->input(1), layer);
    const ShuffleParams* transpose = permute != nullptr && permute->kind() == LayerKind::kShuffle
                                         ? &permute->paramsAs<ShuffleParams>()
                                         : nullptr;
    if (transpose == nullptr || !isPureTranspose(*transpose) ||
        transpose->firstPermutation.size() < 3) {
      return std::nullopt;
    }
    a.kPermutation = transpose->firstPermutation;
    std::swap(a.kPermutation[a.kPermutation.size() - 2], a.kPermutation.back());
    a.kSource = permute->input(0);
  }

  // (batch..., L, E) operands of the scores' batch volume, no broadcasting, static dims.
  const int64_t queries = scores[rank - 2];
  const int64_t keys = scores[rank - 1];
  const int64_t batch = batchVolume(scores);
  const Dims& q = a.q->dims();
  const Dims k = a.k != nullptr ? a.k->dims() : permuteDims(a.kSource->dims(), a.kPermutation);
  const Dims& v = a.v->dims();
  if (q.size() < 3 || k.size() < 3 || v.size() < 3 || !isStatic(q) || !isStatic(k) ||
      !isStatic(v) || batchVolume(q) != batch || batchVolume(k) != batch ||
      batchVolume(v) != batch || q[q.size() - 2] != queries || k[k.size() - 2] != keys ||
      v[v.size() - 2] != keys || q.back() != k.back() || !fitsHeadDim(q.back()) ||
      !fitsHeadDim(v.back())) {
    return std::nullopt;
  }
  const DataType type = a.q->dtype();
  const DataType kType = a.k != nullptr ? a.k->dtype() : a.kSource->dtype();
  if (!isFloatingPoint(type) || kType != type || a.v->dtype() != type) return std::nullopt;

  // The finest view: the views' batch dims of the highest rank, of which every other is a merge.
  Dims finest;
  for (const Dims& view : views) {
    if (view.size() - 2 > finest.size()) finest = Dims(view.begin(), view.end() - 2);
  }
  for (const Dims& view : views) {
    if (!isStatic(view) || view[view.size() - 2] != queries || view.back() != keys ||
        !groupsOf(Dims(view.begin(), view.end() - 2), finest)) {
      return std::nullopt;
    }
  }
  // H: the finest dims that some bias has in full, from the first such on (every later one in
  // full too); N: those before, over which every bias broadcasts. Without a bias, H is the last.
  size_t split = finest.size() - 1;
  if (!a.biases.empty()) {
    Dims combined(finest.size(), 1);
    const DataType biasType = a.biases.front().first->dtype();
    for (const auto& [bias, view] : a.biases) {
      const Dims& dims = bias->dims();
      const bool typed =
          bias->dtype() == biasType && (biasType == type || biasType == DataType::kFloat32);
      if (!typed || dims.empty() || dims.size() > view.size() || !isStatic(dims) ||
          dims.back() != keys) {
        return std::nullopt;
      }
      const std::optional<Dims> over = biasOverFinest(dims, view, finest);
      if (!over) return std::nullopt;
      for (size_t f = 0; f < finest.size(); ++f) combined[f] = std::max(combined[f], (*over)[f]);
    }
    split = finest.size();
    while (split > 0 && combined[split - 1] == finest[split - 1]) --split;
    for (size_t f = 0; f < split; ++f) {
      if (combined[f] != 1) return std::nullopt;
    }
  }
  a.heads = volume(Dims(finest.begin() + static_cast<std::ptrdiff_t>(split), finest.end()));
  a.finest = finest;
  *output = weighted;
  return a;
}

// k: the matched keys, or the permutation of their source that gives them.
Tensor* keysOf(Network& network, const ExplicitAttention& a, const std::string& name) {
  if (a.k != nullptr) return a.k;
  if (isIdentityPermutation(a.kPermutation)) return a.kSource;
  ShuffleParams permute;
  permute.firstPermutation = a.kPermutation;
  Layer* keys = network.addShuffle(a.kSource, permute);
  keys->setName(concat(name, " (keys)"));
  return keys->output(0);
}

Tensor* reshapeTo(Network& network, Tensor* x, const Dims& dims, const std::string& name) {
  ShuffleParams p;
  p.hasReshape = true;
  p.reshapeDims = dims;
  Layer* reshape = network.addShuffle(x, p);
  reshape->setName(name);
  return reshape->output(0);
}

// The (N, H, ..., last) view of an operand (batch..., rows, last) of N * H batch elements.
Tensor* toHeads(Network& network, Tensor* x, int64_t heads, const std::string& name) {
  const Dims& dims = x->dims();
  return reshapeTo(network, x,
                   {batchVolume(dims) / heads, heads, dims[dims.size() - 2], dims.back()}, name);
}

// Attention over (N, H, ...) views of q, k, v and the bias, its output reshaped to `weighted`'s.
void replaceReshaped(Network& network, const ExplicitAttention& a, const Layer* softmax,
                     Layer* weighted) {
  const std::string& name = softmax->name();
  Tensor* q = toHeads(network, a.q, a.heads, concat(name, " (query heads)"));
  Tensor* k = toHeads(network, keysOf(network, a, name), a.heads, concat(name, " (key heads)"));
  Tensor* v = toHeads(network, a.v, a.heads, concat(name, " (value heads)"));
  // The biases over the finest view, summed (constants: the builder folds the sum), then
  // (1, H, L or 1, S): every bias broadcasts over N.
  Tensor* bias = nullptr;
  const Dims& scores = softmax->input(0)->dims();
  for (size_t i = 0; i < a.biases.size(); ++i) {
    const auto& [term, view] = a.biases[i];
    const Dims over = *biasOverFinest(term->dims(), view, a.finest);
    Tensor* reshapedTerm = reshapeTo(network, term, over, concat(name, " (bias ", i, ")"));
    bias = bias == nullptr
               ? reshapedTerm
               : network.addElementwise(bias, reshapedTerm, ElementwiseOp::kSum)->output(0);
  }
  if (bias != nullptr) {
    const Dims& dims = bias->dims();
    bias = reshapeTo(network, bias, {1, a.heads, dims[dims.size() - 2], scores.back()},
                     concat(name, " (mask)"));
  }
  AttentionParams params;
  params.scale = a.scale;
  Layer* attention = network.addAttention(q, k, v, bias, params);
  attention->setName(concat(name, " (attention)"));
  const std::string outputName = weighted->output(0)->name();
  Tensor* out = reshapeTo(network, attention->output(0), weighted->output(0)->dims(),
                          concat(name, " (attention output)"));
  network.replaceAllUsesWith(weighted->output(0), out);
  network.removeLayer(weighted);
  out->setName(outputName);
}

}  // namespace

void recognizeExplicitAttention(Network& network) {
  std::vector<Layer*> softmaxes;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kSoftmax && !layer->paramsAs<SoftmaxParams>().log) {
      softmaxes.push_back(layer);
    }
  }
  for (Layer* softmax : softmaxes) {
    Layer* weighted = nullptr;
    std::optional<ExplicitAttention> a = match(network, softmax, &weighted);
    if (!a) a = matchReshaped(network, softmax, &weighted);
    if (!a) continue;
    if (!a->finest.empty()) {
      replaceReshaped(network, *a, softmax, weighted);
      continue;
    }
    Tensor* k = keysOf(network, *a, softmax->name());
    AttentionParams params;
    params.scale = a->scale;
    Layer* attention = network.addAttention(a->q, k, a->v, a->bias, params);
    const std::string outputName = weighted->output(0)->name();
    attention->setName(concat(softmax->name(), " (attention)"));
    network.replaceAllUsesWith(weighted->output(0), attention->output(0));
    network.removeLayer(weighted);
    attention->output(0)->setName(outputName);
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

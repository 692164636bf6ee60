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
// never stored: one kernel reads q, k, v and the bias once. Every intermediate tensor must have
// the next layer as its only reader. The fused kernel computes the scores and softmax in fp32
// where the layers rounded them to the tensors' type; a row whose every score is -inf gives
// zeros where the layers give NaN.
#include <optional>
#include <string>
#include <vector>

#include "core/builder/constant_values.h"
#include "core/builder/passes.h"
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
};

// The attention that ends in `softmax`, if the layers around it compute one.
std::optional<ExplicitAttention> match(const Network& network, Layer* softmax, Layer** output) {
  const Tensor* probabilities = softmax->output(0);
  const Dims& scoreDims = softmax->input(0)->dims();
  const auto axis = softmax->paramsAs<SoftmaxParams>().axis;
  if (scoreDims.size() != 4 || (axis != 3 && axis != -1)) return std::nullopt;
  Layer* weighted = network.soleReader(probabilities);
  if (weighted == nullptr || weighted->kind() != LayerKind::kMatMul ||
      weighted->input(0) != probabilities) {
    return std::nullopt;
  }
  const auto& weightedParams = weighted->paramsAs<MatMulParams>();
  if (weightedParams.transposeA || weightedParams.transposeB) return std::nullopt;

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
    const std::optional<ExplicitAttention> a = match(network, softmax, &weighted);
    if (!a) continue;
    Tensor* k = a->k;
    if (k == nullptr && a->kPermutation == Dims{0, 1, 2, 3}) k = a->kSource;
    if (k == nullptr) {
      ShuffleParams permute;
      permute.firstPermutation = a->kPermutation;
      Layer* keys = network.addShuffle(a->kSource, permute);
      keys->setName(concat(softmax->name(), " (keys)"));
      k = keys->output(0);
    }
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

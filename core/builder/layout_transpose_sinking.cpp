// Removes the layout transposes that convertConvolutionsToChannelsLast leaves between layers.
// Transposes move forward (towards the outputs) across layers that work in either layout, and a
// transpose of a transpose becomes one transpose, or none when the two undo each other:
//   - T2(T1(x)) -> T(x) with the composed permutation, x itself for the identity;
//   - pooling(T_nchw(x)) -> T_nchw(pooling_nhwc(x));
//   - f(T(x)) -> T(f(x)) for elementwise f of one input (activation, unary, cast), and
//     f(T(a), T(b)) -> T(f(a, b)) for two inputs of the same dims transposed alike,
//     when the transposes have no other reader (moving them would otherwise add one).
// A conv -> pool -> conv trunk thus keeps NHWC from its first convolution to its last.
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// The layer's params when it is a shuffle that only transposes, else null.
const ShuffleParams* pureTranspose(const Layer* layer) {
  if (layer == nullptr || layer->kind() != LayerKind::kShuffle) return nullptr;
  const auto& params = layer->paramsAs<ShuffleParams>();
  return isPureTranspose(params) ? &params : nullptr;
}

bool isIdentity(const Dims& permutation) {
  for (size_t i = 0; i < permutation.size(); ++i) {
    if (permutation[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

// Replaces `layer`'s output by `replacement` (keeping the output's name) and removes the layer.
void replaceLayer(Network& network, Layer* layer, Tensor* replacement) {
  const std::string outputName = layer->output(0)->name();
  network.replaceAllUsesWith(layer->output(0), replacement);
  network.removeLayer(layer);
  if (replacement->producer() != nullptr) replacement->setName(outputName);
}

Tensor* addTranspose(Network& network, Tensor* x, const Dims& permutation,
                     const std::string& name) {
  ShuffleParams params;
  params.firstPermutation = permutation;
  Layer* shuffle = network.addShuffle(x, params);
  shuffle->setName(name);
  return shuffle->output(0);
}

// T2(T1(x)) -> T(x).
bool composeTransposes(Network& network, Layer* outer) {
  const ShuffleParams* second = pureTranspose(outer);
  if (second == nullptr) return false;
  Layer* inner = outer->input(0)->producer();
  const ShuffleParams* first = pureTranspose(inner);
  if (first == nullptr) return false;
  Dims composed(second->firstPermutation.size());
  for (size_t i = 0; i < composed.size(); ++i) {
    composed[i] = first->firstPermutation.at(static_cast<size_t>(second->firstPermutation[i]));
  }
  Tensor* x = inner->input(0);
  if (!isIdentity(composed)) {
    replaceLayer(network, outer, addTranspose(network, x, composed, outer->name()));
    return true;
  }
  // An output that would become a network input, or a second name of another output, stays.
  const bool isOutput = network.isOutput(outer->output(0));
  if (isOutput && (x->isNetworkInput() || network.isOutput(x))) return false;
  const std::string outputName = outer->output(0)->name();
  network.replaceAllUsesWith(outer->output(0), x);
  network.removeLayer(outer);
  if (isOutput) x->setName(outputName);
  return true;
}

// pooling(T_nchw(x)) -> T_nchw(pooling_nhwc(x)).
bool poolChannelsLast(Network& network, Layer* pooling) {
  if (pooling->kind() != LayerKind::kPooling) return false;
  auto params = pooling->paramsAs<PoolingParams>();
  Layer* shuffle = pooling->input(0)->producer();
  const ShuffleParams* transpose = pureTranspose(shuffle);
  const size_t rank = pooling->input(0)->dims().size();
  if (params.channelsLast || transpose == nullptr || rank < 3 ||
      transpose->firstPermutation != toChannelsFirstPermutation(rank)) {
    return false;
  }
  params.channelsLast = true;
  Layer* pooled = network.addLayer(params, {shuffle->input(0)});
  pooled->setName(pooling->name());
  replaceLayer(network, pooling,
               addTranspose(network, pooled->output(0), toChannelsFirstPermutation(rank),
                            concat(pooling->name(), ".nchw")));
  return true;
}

bool isElementwiseOfOne(LayerKind kind) {
  return kind == LayerKind::kActivation || kind == LayerKind::kUnary || kind == LayerKind::kCast;
}

// f(T(a), ...) -> T(f(a, ...)) when every input is a transpose alike read by f alone.
bool sinkBelowElementwise(Network& network, Layer* layer) {
  const LayerKind kind = layer->kind();
  if (!isElementwiseOfOne(kind) && kind != LayerKind::kElementwise) return false;
  std::vector<Tensor*> untransposed;
  const Dims* permutation = nullptr;
  for (Tensor* input : layer->inputs()) {
    Layer* shuffle = input == nullptr ? nullptr : input->producer();
    const ShuffleParams* transpose = pureTranspose(shuffle);
    if (transpose == nullptr || network.soleReader(input) != layer || network.isOutput(input) ||
        input->dims() != layer->input(0)->dims()) {
      return false;
    }
    if (permutation != nullptr && *permutation != transpose->firstPermutation) return false;
    permutation = &transpose->firstPermutation;
    untransposed.push_back(shuffle->input(0));
  }
  if (permutation == nullptr) return false;
  const Dims moved = *permutation;
  Layer* applied = network.addLayer(layer->params(), untransposed);
  applied->setName(layer->name());
  replaceLayer(network, layer,
               addTranspose(network, applied->output(0), moved, concat(layer->name(), ".moved")));
  return true;
}

}  // namespace

void sinkLayoutTransposes(Network& network) {
  bool changed = true;
  while (changed) {
    changed = false;
    std::vector<Layer*> layers;
    for (size_t i = 0; i < network.numLayers(); ++i) layers.push_back(network.layer(i));
    for (Layer* layer : layers) {
      // Each rewrite removes `layer` (and may leave producers dead): rescan after one.
      if (composeTransposes(network, layer) || poolChannelsLast(network, layer) ||
          sinkBelowElementwise(network, layer)) {
        changed = true;
        break;
      }
    }
    if (changed) eliminateDeadLayers(network);
  }
}

}  // namespace kiln

// Moves shuffles that only move rows (the last dim stays last and whole) across a fully
// connected layer, towards the attention they feed or follow. A fully connected layer acts on
// each row alone, so FC(S(x)) = S'(FC(x)) and S(FC(x)) = FC(S'(x)), with S' the same shuffle of
// rows of the other length. MultiheadAttention transposes (N, L, E) to (L, N, E) before its input
// projection and back after its output projection; moved next to the attention, those
// transposes become part of the views it reads and writes through
// (readAttentionOperandsThroughViews), and no copy remains. Dynamic dims too, where the
// shuffle's own reshape dims say how it moves rows of any length.
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

bool keepsLastAxis(const Dims& permutation) {
  return permutation.empty() || permutation.back() == static_cast<int64_t>(permutation.size()) - 1;
}

// The shuffle's params for rows of `rowLength`, when it moves whole rows of its input; else none.
std::optional<ShuffleParams> forRowsOf(const Layer& shuffle, int64_t rowLength) {
  const auto& p = shuffle.paramsAs<ShuffleParams>();
  const Dims& in = shuffle.input(0)->dims();
  const Dims& out = shuffle.output(0)->dims();
  if (in.empty() || out.empty() || in.back() < 0) return std::nullopt;
  if (!keepsLastAxis(p.firstPermutation) || !keepsLastAxis(p.secondPermutation)) {
    return std::nullopt;
  }
  ShuffleParams rows = p;
  if (!p.hasReshape) return rows;
  if (isStatic(in) && isStatic(out)) {
    Dims reshaped = shuffleReshapedDims(p, out);
    if (reshaped.back() != permuteDims(in, p.firstPermutation).back()) return std::nullopt;
    reshaped.back() = rowLength;
    rows.reshapeDims = reshaped;
    rows.reshapeReferences.clear();  // the static dims say it all; the moved shuffle has one input
    return rows;
  }
  // Dynamic dims: the shuffle's own reshape dims (0 copies an input dim, -1 is inferred), whose
  // last must be the row length, given; no 0 may copy the input's last dim elsewhere. A -1 is
  // inferred alike for any row length, which scales every size by the same factor.
  const Dims& spec = p.reshapeDims;
  if (shuffle.inputs().size() != 1 || spec.empty() || spec.back() != in.back()) {
    return std::nullopt;
  }
  for (size_t i = in.size() - 1; i + 1 < spec.size(); ++i) {
    if (spec[i] == 0) return std::nullopt;
  }
  rows.reshapeDims.back() = rowLength;
  return rows;
}

// A fused residual is in the output's row order, which a moved shuffle would change; a fused
// activation acts on each element alone and moves with the layer.
bool isFullyConnected(const Layer* layer) {
  return layer != nullptr && layer->kind() == LayerKind::kFullyConnected &&
         (layer->inputs().size() < 4 || layer->input(3) == nullptr);
}

Layer* fullyConnected(Network& network, const Layer& like, Tensor* x) {
  return network.addLayer(like.params(),
                          {x, like.input(1), like.inputs().size() > 2 ? like.input(2) : nullptr});
}

// FC(S(x)) -> S'(FC(x)), when S is read by the FC alone. Returns the new FC, or null.
Layer* moveAfter(Network& network, Layer* fc) {
  Layer* shuffle = fc->input(0)->producer();
  if (shuffle == nullptr || shuffle->kind() != LayerKind::kShuffle ||
      network.soleReader(shuffle->output(0)) != fc) {
    return nullptr;
  }
  const int64_t outFeatures = fc->output(0)->dims().back();
  const std::optional<ShuffleParams> rows = forRowsOf(*shuffle, outFeatures);
  if (!rows) return nullptr;
  Layer* projected = fullyConnected(network, *fc, shuffle->input(0));
  Layer* moved = network.addShuffle(projected->output(0), *rows);
  const std::string name = fc->name();
  const std::string shuffleName = shuffle->name();
  const std::string outputName = fc->output(0)->name();
  network.replaceAllUsesWith(fc->output(0), moved->output(0));
  network.removeLayer(fc);
  network.removeLayer(shuffle);
  projected->setName(name);
  // The shuffle keeps its own name: several may move across one layer.
  moved->setName(shuffleName);
  moved->output(0)->setName(outputName);
  return projected;
}

// S(FC(x)) -> FC(S'(x)), when the FC is read by S alone. Returns the new FC, or null.
Layer* moveBefore(Network& network, Layer* fc) {
  Layer* shuffle = network.soleReader(fc->output(0));
  if (shuffle == nullptr || shuffle->kind() != LayerKind::kShuffle) return nullptr;
  const int64_t inFeatures = fc->input(0)->dims().back();
  const std::optional<ShuffleParams> rows = forRowsOf(*shuffle, inFeatures);
  if (!rows) return nullptr;
  Layer* moved = network.addShuffle(fc->input(0), *rows);
  Layer* projected = fullyConnected(network, *fc, moved->output(0));
  const std::string name = fc->name();
  const std::string shuffleName = shuffle->name();
  const std::string outputName = shuffle->output(0)->name();
  network.replaceAllUsesWith(shuffle->output(0), projected->output(0));
  network.removeLayer(shuffle);
  network.removeLayer(fc);
  projected->setName(name);
  moved->setName(shuffleName);
  projected->output(0)->setName(outputName);
  return projected;
}

// Whether `tensor` reaches an attention operand through shuffles and gathers only.
bool feedsAttention(const Network& network, const Tensor* tensor, int depth = 0) {
  if (depth > 16) return false;
  for (const Layer* reader : network.consumers(tensor)) {
    if (reader->kind() == LayerKind::kAttention) return true;
    if ((reader->kind() == LayerKind::kShuffle || reader->kind() == LayerKind::kGather) &&
        reader->input(0) == tensor && feedsAttention(network, reader->output(0), depth + 1)) {
      return true;
    }
  }
  return false;
}

// Whether `tensor` comes from an attention through shuffles only.
bool followsAttention(const Tensor* tensor) {
  for (int depth = 0; depth < 16 && tensor->producer() != nullptr; ++depth) {
    const Layer* producer = tensor->producer();
    if (producer->kind() == LayerKind::kAttention) return true;
    if (producer->kind() != LayerKind::kShuffle) return false;
    tensor = producer->input(0);
  }
  return false;
}

}  // namespace

void moveRowShufflesTowardAttention(Network& network) {
  std::vector<Layer*> layers;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (isFullyConnected(network.layer(i))) layers.push_back(network.layer(i));
  }
  for (Layer* fc : layers) {
    if (feedsAttention(network, fc->output(0))) {
      while (Layer* moved = moveAfter(network, fc)) fc = moved;
    } else if (followsAttention(fc->input(0))) {
      while (Layer* moved = moveBefore(network, fc)) fc = moved;
    }
  }
}

}  // namespace kiln

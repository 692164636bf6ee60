// Reads attention operands through views instead of copies. Heads are split and merged by
// transposes, reshapes and selects (MultiheadAttention's q, k, v = proj[0], proj[1], proj[2];
// BERT's view + permute), which on Kiln's contiguous tensors are copies of whole activations.
// The attention kernel takes any strides, so this pass walks each operand back through such
// layers to the furthest tensor it is a strided view of, and the output forward through
// transposes and reshapes to the tensor they produce, and has the attention read and write those
// directly. Layers left without readers are removed. Static dims only: a view's strides are
// fixed at build time.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// A strided view kept as groups of atoms: each dim of the view is a group, and a group is one or
// more (size, stride) atoms, outermost first. Reshapes split atoms and regroup them, so a dim may
// stand for atoms that no single stride describes (MultiheadAttention's (L, N * H, E) between a
// select and the transposes that split heads): only the final operand needs plain strides.
struct Atom {
  int64_t size;
  int64_t stride;
};
struct View {
  std::vector<std::vector<Atom>> dims;
  int64_t offset = 0;
};

int64_t groupSize(const std::vector<Atom>& group) {
  int64_t size = 1;
  for (const Atom& atom : group) size *= atom.size;
  return size;
}

View contiguousView(const Dims& dims) {
  View view;
  int64_t stride = 1;
  view.dims.resize(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    view.dims[d] = {{dims[d], stride}};
    stride *= dims[d];
  }
  return view;
}

Dims viewDims(const View& view) {
  Dims dims;
  for (const auto& group : view.dims) dims.push_back(groupSize(group));
  return dims;
}

View permuted(const View& view, const Dims& permutation) {
  if (permutation.empty()) return view;
  View out{{}, view.offset};
  for (int64_t axis : permutation) out.dims.push_back(view.dims.at(static_cast<size_t>(axis)));
  return out;
}

// `view` regrouped into `dims`: its atoms in order, split where a new dim boundary falls inside
// one (possible when the sizes divide), size-1 atoms dropped.
std::optional<View> reshaped(const View& view, const Dims& dims) {
  std::vector<Atom> atoms;
  for (const auto& group : view.dims) {
    for (const Atom& atom : group) {
      if (atom.size != 1) atoms.push_back(atom);
    }
  }
  View out{{}, view.offset};
  size_t next = 0;
  for (int64_t size : dims) {
    std::vector<Atom> group;
    int64_t needed = size;
    while (needed > 1) {
      if (next == atoms.size()) return std::nullopt;
      Atom& atom = atoms[next];
      if (atom.size <= needed) {
        if (needed % atom.size != 0) return std::nullopt;
        group.push_back(atom);
        needed /= atom.size;
        ++next;
      } else {
        if (atom.size % needed != 0) return std::nullopt;
        // The outer part of the atom goes to this dim, the inner part stays for the next.
        const int64_t inner = atom.size / needed;
        group.push_back({needed, atom.stride * inner});
        atom = {inner, atom.stride};
        needed = 1;
      }
    }
    if (size == 0) return std::nullopt;
    out.dims.push_back(group.empty() ? std::vector<Atom>{{1, 0}} : group);
  }
  if (next != atoms.size()) return std::nullopt;
  return out;
}

// One stride for a group, when its atoms are laid out as one dim; else nothing.
std::optional<int64_t> plainStride(const std::vector<Atom>& group) {
  std::optional<int64_t> stride;
  int64_t innerExtent = 0;
  for (size_t i = group.size(); i-- > 0;) {
    const Atom& atom = group[i];
    if (atom.size == 1) continue;
    if (stride && atom.stride != innerExtent) return std::nullopt;
    if (!stride) stride = atom.stride;
    innerExtent = atom.stride * atom.size;
  }
  return stride.value_or(0);
}

// The shuffle's output as a view, given its input as one.
std::optional<View> throughShuffle(const View& input, const Layer& shuffle) {
  const auto& p = shuffle.paramsAs<ShuffleParams>();
  View view = permuted(input, p.firstPermutation);
  if (p.hasReshape) {
    std::optional<View> reshapedView =
        reshaped(view, shuffleReshapedDims(p, shuffle.output(0)->dims()));
    if (!reshapedView) return std::nullopt;
    view = *reshapedView;
  }
  return permuted(view, p.secondPermutation);
}

// The shuffle's input as a view, given its output as one (the inverse of throughShuffle).
std::optional<View> backThroughShuffle(const View& output, const Layer& shuffle) {
  const auto& p = shuffle.paramsAs<ShuffleParams>();
  View view = p.secondPermutation.empty()
                  ? output
                  : permuted(output, invertPermutation(p.secondPermutation));
  if (p.hasReshape) {
    std::optional<View> reshapedView =
        reshaped(view, permuteDims(shuffle.input(0)->dims(), p.firstPermutation));
    if (!reshapedView) return std::nullopt;
    view = *reshapedView;
  }
  return p.firstPermutation.empty() ? view : permuted(view, invertPermutation(p.firstPermutation));
}

// A gather of one constant rank-0 index (torch's select): the index, else nothing.
std::optional<int64_t> selectIndex(const Layer& gather) {
  const Tensor* indices = gather.input(1);
  if (indices->rank() != 0 || indices->producer() == nullptr ||
      indices->producer()->kind() != LayerKind::kConstant) {
    return std::nullopt;
  }
  const Weights& weights = indices->producer()->paramsAs<ConstantParams>().weights;
  if (weights.dtype == DataType::kInt64) return *static_cast<const int64_t*>(weights.data());
  if (weights.dtype == DataType::kInt32) return *static_cast<const int32_t*>(weights.data());
  return std::nullopt;
}

std::optional<View> throughSelect(const View& input, const Layer& gather) {
  const std::optional<int64_t> index = selectIndex(gather);
  if (!index) return std::nullopt;
  const int64_t rank = static_cast<int64_t>(input.dims.size());
  int64_t axis = gather.paramsAs<GatherParams>().axis;
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return std::nullopt;
  const std::vector<Atom>& group = input.dims[static_cast<size_t>(axis)];
  int64_t position = *index < 0 ? *index + groupSize(group) : *index;
  if (position < 0 || position >= groupSize(group)) return std::nullopt;
  View out = input;
  // The position in the group's atoms, innermost last.
  for (size_t i = group.size(); i-- > 0;) {
    out.offset += (position % group[i].size) * group[i].stride;
    position /= group[i].size;
  }
  out.dims.erase(out.dims.begin() + axis);
  return out;
}

bool isViewLayer(const Layer* layer) {
  return layer != nullptr && (layer->kind() == LayerKind::kShuffle ||
                              (layer->kind() == LayerKind::kGather && selectIndex(*layer)));
}

// An (N, H, L, E) operand view with a contiguous last dim, as the attention params store it.
Dims attentionView(const View& view) {
  if (view.dims.size() != 4) return {};
  Dims strides;
  for (const auto& group : view.dims) {
    const std::optional<int64_t> stride = plainStride(group);
    if (!stride) return {};
    strides.push_back(*stride);
  }
  const Dims dims = viewDims(view);
  if (strides[3] != 1 && dims[3] != 1) return {};
  return {dims[0], dims[1], dims[2], dims[3], view.offset, strides[0], strides[1], strides[2]};
}

// The furthest tensor that `operand` is a view of through shuffles and selects, and the view.
std::pair<Tensor*, Dims> operandSource(Tensor* operand) {
  std::vector<const Layer*> chain;  // from the operand back
  Tensor* tensor = operand;
  while (isStatic(tensor->dims()) && isViewLayer(tensor->producer())) {
    chain.push_back(tensor->producer());
    tensor = tensor->producer()->input(0);
  }
  // Try the furthest source first, then closer ones.
  for (size_t start = chain.size(); start > 0; --start) {
    Tensor* source = chain[start - 1]->input(0);
    if (!isStatic(source->dims())) continue;
    std::optional<View> view = contiguousView(source->dims());
    for (size_t i = start; i-- > 0 && view;) {
      view = chain[i]->kind() == LayerKind::kShuffle ? throughShuffle(*view, *chain[i])
                                                     : throughSelect(*view, *chain[i]);
    }
    if (!view) continue;
    Dims stored = attentionView(*view);
    if (!stored.empty()) return {source, stored};
  }
  return {operand, {}};
}

// The tensor that the attention output becomes through shuffles read by nothing else, and the
// output's view in it.
std::pair<Tensor*, Dims> outputDestination(const Network& network, Tensor* output) {
  std::vector<const Layer*> chain;  // from the output forward
  Tensor* tensor = output;
  while (Layer* reader = network.soleReader(tensor)) {
    if (reader->kind() != LayerKind::kShuffle || !isStatic(reader->output(0)->dims())) break;
    chain.push_back(reader);
    tensor = reader->output(0);
  }
  for (size_t end = chain.size(); end > 0; --end) {
    Tensor* destination = chain[end - 1]->output(0);
    std::optional<View> view = contiguousView(destination->dims());
    for (size_t i = end; i-- > 0 && view;) view = backThroughShuffle(*view, *chain[i]);
    if (!view) continue;
    Dims stored = attentionView(*view);
    if (!stored.empty()) return {destination, stored};
  }
  return {output, {}};
}

}  // namespace

void readAttentionOperandsThroughViews(Network& network) {
  std::vector<Layer*> attentions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    const bool fresh = layer->kind() == LayerKind::kAttention &&
                       layer->paramsAs<AttentionParams>().outputView.empty() &&
                       layer->paramsAs<AttentionParams>().queryView.empty();
    if (fresh && isStatic(layer->output(0)->dims())) attentions.push_back(layer);
  }
  for (Layer* attention : attentions) {
    AttentionParams p = attention->paramsAs<AttentionParams>();
    std::vector<Tensor*> inputs = attention->inputs();
    Dims* views[] = {&p.queryView, &p.keyView, &p.valueView};
    for (size_t i = 0; i < 3; ++i) {
      auto [source, view] = operandSource(inputs[i]);
      inputs[i] = source;
      *views[i] = std::move(view);
    }
    auto [destination, outputView] = outputDestination(network, attention->output(0));
    const bool reads = !p.queryView.empty() || !p.keyView.empty() || !p.valueView.empty();
    if (!reads && outputView.empty()) continue;
    if (!outputView.empty()) {
      p.outputView = std::move(outputView);
      p.outputDims = destination->dims();
    }
    Layer* replacement = network.addLayer(p, inputs);
    const std::string name = attention->name();
    Tensor* replaced = p.outputView.empty() ? attention->output(0) : destination;
    const std::string outputName = replaced->name();
    network.replaceAllUsesWith(replaced, replacement->output(0));
    // The old attention and the copies between it and the destination are dead now.
    eliminateDeadLayers(network);
    replacement->setName(name);
    replacement->output(0)->setName(outputName);
  }
}

}  // namespace kiln

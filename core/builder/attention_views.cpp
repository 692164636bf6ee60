// Reads attention operands through views instead of copies. Heads are split and merged by
// transposes, reshapes, selects and slices (MultiheadAttention's q, k, v = proj[0], proj[1],
// proj[2]; BERT's view + permute; GPT-2's split of its QKV projection), which on Kiln's
// contiguous tensors are copies of whole activations.
// The attention kernel takes any strides, so this pass walks each operand back through such
// layers to the furthest tensor it is a strided view of, and the output forward through
// transposes and reshapes to the tensor they produce, and has the attention read and write those
// directly. Layers left without readers are removed.
//
// With static dims a view's strides are numbers fixed at build time. With dynamic ones they
// depend on the run's dims, so a view is kept only when it is a row view (see AttentionParams):
// heads side by side in each row of an (N, L, W) tensor, BERT's layout under a dynamic batch and
// sequence length, whose strides follow from the tensor's dims at run time. The chain is worked
// out on stand-in values for the dynamic dims (distinct primes, so that sizes that match for
// them match for every value), twice with different stand-ins to rule out a coincidence.
#include <array>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/builder/passes.h"
#include "core/ir/shape_inference.h"

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

// The shuffle's output (of `outputDims`) as a view, given its input as one.
std::optional<View> throughShuffle(const View& input, const Layer& shuffle,
                                   const Dims& outputDims) {
  const auto& p = shuffle.paramsAs<ShuffleParams>();
  View view = permuted(input, p.firstPermutation);
  if (p.hasReshape) {
    std::optional<View> reshapedView = reshaped(view, shuffleReshapedDims(p, outputDims));
    if (!reshapedView) return std::nullopt;
    view = *reshapedView;
  }
  return permuted(view, p.secondPermutation);
}

// The shuffle's input (of `inputDims`) as a view, given its output as one (the inverse of
// throughShuffle).
std::optional<View> backThroughShuffle(const View& output, const Layer& shuffle,
                                       const Dims& inputDims) {
  const auto& p = shuffle.paramsAs<ShuffleParams>();
  View view = p.secondPermutation.empty()
                  ? output
                  : permuted(output, invertPermutation(p.secondPermutation));
  if (p.hasReshape) {
    std::optional<View> reshapedView = reshaped(view, permuteDims(inputDims, p.firstPermutation));
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
  const auto rank = static_cast<int64_t>(input.dims.size());
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

// A slice of one input (ends known at build time) with steps of 1: a window of its input.
bool isWindowSlice(const Layer& layer) {
  if (layer.kind() != LayerKind::kSlice || layer.inputs().size() != 1) return false;
  const auto& p = layer.paramsAs<SliceParams>();
  for (int64_t step : p.steps) {
    if (step != 1) return false;
  }
  return true;
}

// The slice's output (of `outputDims`) as a view, given its input as one: along each sliced
// axis (one atom of its input, or untouched) the offset moves to the start and the size shrinks.
std::optional<View> throughSlice(const View& input, const Layer& slice, const Dims& outputDims) {
  const auto& p = slice.paramsAs<SliceParams>();
  const auto rank = static_cast<int64_t>(input.dims.size());
  View out = input;
  for (size_t i = 0; i < p.axes.size(); ++i) {
    const int64_t axis = p.axes[i] < 0 ? p.axes[i] + rank : p.axes[i];
    if (axis < 0 || axis >= rank) return std::nullopt;
    std::vector<Atom>& group = out.dims[static_cast<size_t>(axis)];
    const int64_t size = groupSize(group);
    const int64_t length = outputDims.at(static_cast<size_t>(axis));
    if (length == size) continue;
    std::vector<Atom> kept;
    for (const Atom& atom : group) {
      if (atom.size != 1) kept.push_back(atom);
    }
    if (kept.size() != 1 || length < 1) return std::nullopt;
    const int64_t start = sliceStart(p.starts.at(i), 1, size);
    out.offset += start * kept[0].stride;
    group = {{length, kept[0].stride}};
  }
  return out;
}

// A shuffle whose reshape dims come from a tensor has them only as its static output dims.
bool isShuffleOfKnownDims(const Layer& layer) {
  return layer.kind() == LayerKind::kShuffle &&
         (layer.inputs().size() == 1 || isStatic(layer.output(0)->dims()));
}

bool isViewLayer(const Layer* layer) {
  return layer != nullptr && (isShuffleOfKnownDims(*layer) || isWindowSlice(*layer) ||
                              (layer->kind() == LayerKind::kGather && selectIndex(*layer)));
}

// Two sets of stand-ins for dynamic dims, by position: primes that no static dim of a model is
// likely to share a factor with, small enough that products of a few stay inside int64_t.
constexpr std::array<std::array<int64_t, 4>, 2> kStandIns = {
    {{1009, 1013, 1019, 1021}, {1031, 1033, 1039, 1049}}};

// `dims` with dynamic dim d replaced by stand-ins[d]; none past the stand-ins.
std::optional<Dims> withStandIns(const Dims& dims, const std::array<int64_t, 4>& standIns) {
  Dims concrete = dims;
  for (size_t d = 0; d < concrete.size(); ++d) {
    if (concrete[d] >= 0) continue;
    if (d >= standIns.size()) return std::nullopt;
    concrete[d] = standIns[d];
  }
  return concrete;
}

// The dims of each layer's output along `forward` (view layers, each reading the one before),
// from concrete source dims: the layers' own when the chain starts static, else inferred.
std::optional<std::vector<Dims>> chainOutputDims(const Dims& sourceDims,
                                                 const std::vector<const Layer*>& forward) {
  std::vector<Dims> dims;
  if (!forward.empty() && sourceDims == forward[0]->input(0)->dims()) {
    for (const Layer* layer : forward) dims.push_back(layer->output(0)->dims());
    return dims;
  }
  Dims current = sourceDims;
  for (const Layer* layer : forward) {
    if (layer->inputs().size() > 1 && layer->kind() == LayerKind::kShuffle) return std::nullopt;
    const TensorType data{layer->input(0)->dtype(), current};
    std::vector<const TensorType*> inputs = {&data};
    TensorType indices;
    if (layer->kind() == LayerKind::kGather) {
      indices = {layer->input(1)->dtype(), layer->input(1)->dims()};
      inputs.push_back(&indices);
    }
    try {
      current = inferOutputTypes(layer->params(), inputs).at(0).dims;
    } catch (const Error&) {
      return std::nullopt;  // the stand-ins do not fit this chain (a reshape that needs a size)
    }
    dims.push_back(current);
  }
  return dims;
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

// A view and the (concrete) dims of the tensor it views.
struct ViewOf {
  View view;
  Dims dims;
};

// `v` as a row view: heads side by side in the (N, L, W) rows of the tensor it views, N and L the
// tensor's own; written as an attention's output, also covering whole rows. Empty when it is not.
Dims rowView(const ViewOf& v, bool written) {
  const Dims stored = attentionView(v.view);
  if (stored.empty() || v.dims.size() != 3) return {};
  const int64_t n = stored[0], heads = stored[1], l = stored[2], e = stored[3];
  const int64_t offset = stored[4], batchStride = stored[5], headStride = stored[6],
                rowStride = stored[7];
  const int64_t width = v.dims[2];
  const bool rows = n == v.dims[0] && l == v.dims[1] && batchStride == l * width &&
                    (heads == 1 || headStride == e) && rowStride == width &&
                    offset + heads * e <= width &&
                    (!written || (offset == 0 && heads * e == width));
  return rows ? Dims{heads, e, offset} : Dims{};
}

// The attention view that `viewAt` works out along `forward` (view layers from a tensor of
// `startDims`, each reading the one before): a strided view when every dim is static, else a row
// view, the same for both sets of stand-ins. `viewAt` takes the concrete start dims and each
// layer's output dims.
template <typename ViewAt>
Dims chainView(const Dims& startDims, const std::vector<const Layer*>& forward, bool written,
               ViewAt&& viewAt) {
  const bool dynamic = !isStatic(startDims);
  Dims agreed;
  for (size_t set = 0; set < (dynamic ? kStandIns.size() : 1); ++set) {
    const std::optional<Dims> concrete = withStandIns(startDims, kStandIns[set]);
    if (!concrete) return {};
    const std::optional<std::vector<Dims>> dims = chainOutputDims(*concrete, forward);
    if (!dims) return {};
    const std::optional<ViewOf> view = viewAt(*concrete, *dims);
    if (!view) return {};
    Dims stored = dynamic ? rowView(*view, written) : attentionView(view->view);
    if (stored.empty() || (set > 0 && stored != agreed)) return {};
    agreed = std::move(stored);
  }
  return agreed;
}

// The furthest tensor that `operand` is a view of through shuffles and selects, and the view.
std::pair<Tensor*, Dims> operandSource(Tensor* operand) {
  std::vector<const Layer*> chain;  // from the operand back
  Tensor* tensor = operand;
  while (isViewLayer(tensor->producer())) {
    chain.push_back(tensor->producer());
    tensor = tensor->producer()->input(0);
  }
  // Try the furthest source first, then closer ones.
  for (size_t start = chain.size(); start > 0; --start) {
    Tensor* source = chain[start - 1]->input(0);
    const std::vector<const Layer*> forward(chain.rend() - static_cast<std::ptrdiff_t>(start),
                                            chain.rend());
    Dims stored = chainView(
        source->dims(), forward, /*written=*/false,
        [&](const Dims& sourceDims, const std::vector<Dims>& outputDims) -> std::optional<ViewOf> {
          std::optional<View> view = contiguousView(sourceDims);
          for (size_t i = 0; i < forward.size() && view; ++i) {
            switch (forward[i]->kind()) {
              case LayerKind::kShuffle:
                view = throughShuffle(*view, *forward[i], outputDims[i]);
                break;
              case LayerKind::kSlice:
                view = throughSlice(*view, *forward[i], outputDims[i]);
                break;
              default:
                view = throughSelect(*view, *forward[i]);
            }
          }
          if (!view) return std::nullopt;
          return ViewOf{*view, sourceDims};
        });
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
    if (!isShuffleOfKnownDims(*reader)) break;
    chain.push_back(reader);
    tensor = reader->output(0);
  }
  for (size_t end = chain.size(); end > 0; --end) {
    Tensor* destination = chain[end - 1]->output(0);
    const std::vector<const Layer*> forward(chain.begin(),
                                            chain.begin() + static_cast<std::ptrdiff_t>(end));
    // Dims worked out from the attention's output forward, the view back from the destination.
    Dims stored = chainView(
        output->dims(), forward, /*written=*/true,
        [&](const Dims& outputDims, const std::vector<Dims>& dims) -> std::optional<ViewOf> {
          std::optional<View> view = contiguousView(dims.back());
          for (size_t i = end; i-- > 0 && view;) {
            view = backThroughShuffle(*view, *forward[i], i == 0 ? outputDims : dims[i - 1]);
          }
          if (!view) return std::nullopt;
          return ViewOf{*view, dims.back()};
        });
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
    if (fresh) attentions.push_back(layer);
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
      // A row view's output dims follow from the attention's.
      if (!isAttentionRowView(p.outputView)) p.outputDims = destination->dims();
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

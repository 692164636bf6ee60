// Removes the layout transposes that convertConvolutionsToChannelsLast leaves between layers, and
// the permutes a model writes itself to run a norm or a linear layer over channels.
//
// Transposes move forward (towards the outputs) across layers that can run on the untransposed
// tensor, and a transpose of a transpose becomes one transpose, or none when the two undo each
// other. The rewrites (T = transpose by permutation p, out dim i = in dim p[i]):
//   compose      T2(T1(x))          -> T(x), the composed permutation; x itself for identity
//   pointwise    f(T(a))            -> T(f(a)), f an activation, unary, cast or elementwise
//                f(T(a), T(b))      -> T(f(a, b)), a and b of one rank (broadcasting allowed)
//                f(T(a), c)         -> T(f(a, c')), c a constant, permuted at build time
//                f(T(a), b)         -> T(f(a, T'(b))) when T'(b), T's inverse, is read already
//   layer norm   norm(T(x))         -> T(norm(x)) when p maps the normalized trailing dims onto
//                                      themselves (scale and bias permuted when it reorders them)
//   batch norm   bn(T(x))           -> T(bn(x)), over channel dim p[axis] of x
//   linear       fc(T(x))           -> T(fc(x)) when p keeps the last dim last
//   reduce       reduce(T(x), axes) -> T'(reduce(x, p[axes])), T' what is left of p (often none)
//   pool         pool(T_nchw(x))    -> T_nchw(pool_nhwc(x))
//   resize       resize(T_nchw(x))  -> T_nchw(resize_nhwc(x))
//   concat       concat(T(a), T(b), c, axis) -> T(concat(a, b, c', p[axis])), each input a
//                                      transpose by p, a constant or a tensor read transposed back
//   slice        slice(T(x), axes)  -> T(slice(x, p[axes])) (splits and chunks are slices)
// A move pays when two transposes merge into one (a concat of several), or the one left is
// smaller (a reduction, a pooling or a slice that shrinks) or gone. Any other move leaves as many
// transposes, so a transpose makes it only when, moved on, it meets its inverse (or a move that
// pays): a transpose that would stop short stays where it is, next to what it was written with (a
// reshape that another pass folds it into). A transpose that other layers read too stays for them;
// a layer reads past it only where that leads to a transpose back, which then goes. Looking
// ahead, a tensor that several layers read leads on where one of them does (each half of a
// channel split), and a concat's input counts as transposed where it will be once the transposes
// above it sink (the branches of a CSP stage meet at a concat, each bringing its own).
//
// The class of models this serves: convolutional trunks run channels-last, and the ConvNeXt /
// MetaFormer family whose blocks switch to channels-last for a norm and an MLP (torchvision and
// timm ConvNeXt, ConvNeXt-V2 with its channels-last GRN, EdgeNeXt's conv encoders; timm's
// LayerNorm2d: permute -> layer norm over the last dim -> permute back). There the model's own
// permutes meet the layout pass's transposes, and the block (depthwise conv -> norm over C ->
// linear -> GELU -> linear -> layer scale -> + residual) runs NHWC from end to end, with a
// transpose only at the network's edges. And CNNs that split and concatenate channels: CSP
// stages (split in halves, concat after the blocks), DenseNet (each layer concatenates the
// block's features, then a batch norm and ReLU before its convolution), GhostNet (concat of
// primary and cheap features, sliced to the output channels): the concat, slice and norm run on
// NHWC tensors along the permuted axis. And the multi-resolution nets (HRNet, DeepLab's ASPP,
// feature pyramids) whose upsampled branches join others channels-last.
#include <algorithm>
#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "kernels/cpu/data_movement.h"

namespace kiln {
namespace {

// The layer's params when it is a shuffle that only transposes, else null.
const ShuffleParams* pureTranspose(const Layer* layer) {
  if (layer == nullptr || layer->kind() != LayerKind::kShuffle) return nullptr;
  const auto& params = layer->paramsAs<ShuffleParams>();
  return isPureTranspose(params) ? &params : nullptr;
}

// The permutation of a transpose whose one reader is `reader` (so that moving it below the
// reader leaves no other reader without it), else null.
const Dims* movableTranspose(const Network& network, const Tensor* input, const Layer* reader) {
  if (input == nullptr) return nullptr;
  const ShuffleParams* transpose = pureTranspose(input->producer());
  if (transpose == nullptr || network.soleReader(input) != reader) return nullptr;
  return &transpose->firstPermutation;
}

// Replaces `layer`'s output by `replacement` (keeping the output's name) and removes the layer.
void replaceLayer(Network& network, Layer* layer, Tensor* replacement) {
  const std::string outputName = layer->output(0)->name();
  network.replaceAllUsesWith(layer->output(0), replacement);
  network.removeLayer(layer);
  if (replacement->producer() != nullptr) replacement->setName(outputName);
}

// `name`, or `name` with a number appended where a layer has it already (a layer a transpose
// moved across twice): layer names are unique.
std::string unusedName(const Network& network, const std::string& name) {
  auto taken = [&](const std::string& candidate) {
    for (size_t i = 0; i < network.numLayers(); ++i) {
      if (network.layer(i)->name() == candidate) return true;
    }
    return false;
  };
  std::string candidate = name;
  for (int suffix = 2; taken(candidate); ++suffix) candidate = concat(name, "_", suffix);
  return candidate;
}

Tensor* addTranspose(Network& network, Tensor* x, const Dims& permutation,
                     const std::string& name) {
  ShuffleParams params;
  params.firstPermutation = permutation;
  const std::string unused = unusedName(network, name);
  Layer* shuffle = network.addShuffle(x, params);
  shuffle->setName(unused);
  return shuffle->output(0);
}

// Runs `params` on `inputs` under `layer`'s name, and has `layer`'s readers read its result
// transposed by `permutation` (or the result itself for the identity).
void replaceByTransposed(Network& network, Layer* layer, const LayerParams& params,
                         const std::vector<Tensor*>& inputs, const Dims& permutation) {
  const std::string name = layer->name();
  Layer* applied = network.addLayer(params, inputs);
  Tensor* result = applied->output(0);
  if (!isIdentityPermutation(permutation)) {
    result = addTranspose(network, result, permutation, concat(name, ".moved"));
  }
  replaceLayer(network, layer, result);
  applied->setName(name);
}

// A constant c' such that T_p(c') broadcasts as `constant` (of rank <= p.size()) does against a
// tensor of rank p.size(): c's dims right-aligned to that rank, then transposed by p's inverse.
Tensor* permutedConstant(Network& network, const Tensor* constant, const Dims& permutation,
                         const std::string& name) {
  const Weights& weights = *constantWeights(constant);
  const size_t rank = permutation.size();
  Dims aligned(rank - weights.dims.size(), 1);
  aligned.insert(aligned.end(), weights.dims.begin(), weights.dims.end());
  const Dims inverse = invertPermutation(permutation);
  std::vector<uint8_t> bytes(static_cast<size_t>(weights.count()) * elementSize(weights.dtype));
  if (!bytes.empty()) {
    cpu_kernels::transpose(weights.data(), aligned, inverse, elementSize(weights.dtype),
                           bytes.data());
  }
  const std::string unused = unusedName(network, name);
  Layer* permuted = network.addConstant(
      Weights::fromBytes(weights.dtype, permuteDims(aligned, inverse), std::move(bytes)));
  permuted->setName(unused);
  return permuted->output(0);
}

int64_t positiveAxis(int64_t axis, size_t rank) {
  return axis < 0 ? axis + static_cast<int64_t>(rank) : axis;
}

// ---- the rewrites: each returns whether it rewrote (and so removed) `layer` ------------------

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
  if (!isIdentityPermutation(composed)) {
    const std::string name = outer->name();
    Tensor* transposed = addTranspose(network, x, composed, concat(name, ".composed"));
    replaceLayer(network, outer, transposed);
    transposed->producer()->setName(name);
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

// ---- moving a transpose below the layer that reads it ----------------------------------------
//
// Each kind says whether a transpose by p that `input` of `layer` is (or, looking ahead, would
// be) can move below the layer, and how the layer then reads each of its inputs.

enum class Operand : uint8_t {
  kKeep,              // as it is (a weight, an absent input)
  kUntransposed,      // the input of its transpose (the one moving, or another alike)
  kPermutedConstant,  // a constant, permuted at build time by `constantPermutation`
  kInverse,           // the transpose back to the untransposed layout that a layer reads already
};

struct Move {
  bool possible = false;
  // Whether the move pays by itself: two transposes merge into one, or the one left is smaller
  // (or none). Otherwise it pays only where the transpose, moved on, meets one that it cancels.
  bool pays = false;
  LayerParams params;
  std::vector<Operand> operands;
  Dims constantPermutation;
  Dims after;  // the permutation of the transpose left on the layer's output; identity: none
};

bool isPointwise(LayerKind kind) {
  return kind == LayerKind::kActivation || kind == LayerKind::kUnary || kind == LayerKind::kCast ||
         kind == LayerKind::kElementwise;
}

// The one layer that reads `tensor`, when the tensor is not a network output: soleReader's, or a
// pointwise layer that reads it as several of its operands (x * x, the square of a norm); else
// null. Moved below that layer, the transpose leaves none of its reads behind.
const Layer* onlyReader(const Network& network, const Tensor* tensor) {
  if (const Layer* sole = network.soleReader(tensor)) return sole;
  if (network.isOutput(tensor)) return nullptr;
  const std::vector<Layer*> readers = network.consumers(tensor);
  if (readers.empty() || !isPointwise(readers[0]->kind())) return nullptr;
  for (const Layer* reader : readers) {
    if (reader != readers[0]) return nullptr;
  }
  return readers[0];
}

// Whether `layer` reads `tensor` as one of its operands, or as several where it is pointwise
// (x * x): a transpose of it then moves below the layer as one.
bool readsAsOneOperand(const Layer* layer, const Tensor* tensor) {
  const std::vector<Tensor*>& inputs = layer->inputs();
  const auto reads = std::count(inputs.begin(), inputs.end(), tensor);
  return reads == 1 || (reads > 1 && isPointwise(layer->kind()));
}

// A transpose of `tensor` by `permutation` that some layer already reads, else null.
Tensor* existingTranspose(const Network& network, const Tensor* tensor, const Dims& permutation) {
  for (Layer* reader : network.consumers(tensor)) {
    const ShuffleParams* transpose = pureTranspose(reader);
    if (transpose != nullptr && transpose->firstPermutation == permutation) {
      return reader->output(0);
    }
  }
  return nullptr;
}

// Whether `input` is another input of `layer` that is a transpose by `p` read by it alone.
bool transposedAlike(const Network& network, const Layer* layer, const Tensor* input,
                     const Dims& p) {
  const Dims* other = movableTranspose(network, input, layer);
  return other != nullptr && *other == p;
}

// How many layers a look-ahead (forward to a transpose back, or back up a concat's other
// inputs) visits at most.
constexpr int kLookAheadLayers = 64;

bool transposedOnceSunk(const Network& network, const Tensor* tensor, const Dims& p, int& budget);

// f(T(a), ...) -> T(f(a, ...)) for an activation, unary, cast or elementwise f whose every other
// input is a transpose alike read by f alone (the two merge), a constant (a layer scale, a
// bias), or a tensor that another layer already reads transposed back (a residual block's
// input, which its first convolution reads as NHWC); looking ahead, also one that would be a
// transpose alike once the transposes above it sink (the other side of a residual add, or of
// PoolFormer's pool(x) - x). Transposed alike, operands broadcast as before; an operand that f
// broadcasts up would leave a larger transpose, so only an input of f's output dims moves past a
// constant or an inverse.
Move pointwiseMove(const Network& network, const Layer* layer, const Tensor* input, const Dims& p,
                   bool lookingAhead) {
  Move move;
  const Tensor* output = layer->output(0);
  if (output->rank() != static_cast<int64_t>(p.size())) return move;
  bool fullSize = input->dims() == output->dims();
  for (const Tensor* other : layer->inputs()) {
    if (other != input && transposedAlike(network, layer, other, p)) {
      move.pays = true;
      fullSize = fullSize || other->dims() == output->dims();
    }
  }
  const Dims back = invertPermutation(p);
  int budget = kLookAheadLayers;
  for (const Tensor* other : layer->inputs()) {
    if (other == input || transposedAlike(network, layer, other, p) ||
        (lookingAhead && constantWeights(other) == nullptr &&
         transposedOnceSunk(network, other, p, budget))) {
      move.operands.push_back(Operand::kUntransposed);
    } else if (fullSize && constantWeights(other) != nullptr) {
      move.operands.push_back(Operand::kPermutedConstant);
    } else if (fullSize && existingTranspose(network, other, back) != nullptr) {
      move.operands.push_back(Operand::kInverse);
    } else {
      return move;  // it would need a transpose of its own at run time
    }
  }
  move.possible = true;
  move.params = layer->params();
  move.constantPermutation = p;
  move.after = p;
  return move;
}

// norm(T(x)) -> T(norm(x)) for a layer norm whose normalized dims (from `axis` on) T takes from
// the same trailing dims of x: the statistics are over the same elements. Scale and bias follow
// a reordering within those dims when they are constants; a fused residual must be transposed
// alike.
Move layerNormMove(const Network& network, const Layer* norm, const Tensor* input, const Dims& p) {
  Move move;
  const auto& params = norm->paramsAs<NormalizationParams>();
  if (params.type != NormalizationType::kLayer || input != norm->input(0)) return move;
  const size_t rank = p.size();
  const int64_t axis = positiveAxis(params.axis, rank);
  // The normalized dims' own permutation; it must take them from themselves.
  Dims within;
  for (auto i = static_cast<size_t>(axis); i < rank; ++i) {
    if (p[i] < axis) return move;
    within.push_back(p[i] - axis);
  }
  const bool reordered = !isIdentityPermutation(within);
  const std::vector<Tensor*>& inputs = norm->inputs();
  move.operands = {Operand::kUntransposed};
  for (size_t i = 1; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) {
      move.operands.push_back(Operand::kKeep);
    } else if (i < 3) {
      if (reordered && constantWeights(inputs[i]) == nullptr) return move;
      move.operands.push_back(reordered ? Operand::kPermutedConstant : Operand::kKeep);
    } else {
      if (!transposedAlike(network, norm, inputs[i], p)) return move;
      move.operands.push_back(Operand::kUntransposed);
      move.pays = true;
    }
  }
  move.possible = true;
  move.params = params;
  move.constantPermutation = within;
  move.after = p;
  return move;
}

// fc(T(x)) -> T(fc(x)) when T keeps the last dim (the one the layer reduces) last; a fused
// residual must be transposed alike.
Move fullyConnectedMove(const Network& network, const Layer* fc, const Tensor* input,
                        const Dims& p) {
  Move move;
  if (input != fc->input(0) || p.back() != static_cast<int64_t>(p.size()) - 1) return move;
  const std::vector<Tensor*>& inputs = fc->inputs();
  move.operands = {Operand::kUntransposed};
  for (size_t i = 1; i < inputs.size(); ++i) {
    if (i < 3 || inputs[i] == nullptr) {
      move.operands.push_back(Operand::kKeep);
    } else {
      if (!transposedAlike(network, fc, inputs[i], p)) return move;
      move.operands.push_back(Operand::kUntransposed);
      move.pays = true;
    }
  }
  move.possible = true;
  move.params = fc->params();
  move.after = p;
  return move;
}

// bn(T(x)) -> T(bn(x)) for a batch norm over channel dim a of T(x): the same norm over x's dim
// p[a] (channels-last after the layout pass), its per-channel operands as they are. The pre-
// activation norm that a convolution cannot fold: DenseNet's after each concatenation.
Move batchNormMove(const Layer* norm, const Tensor* input, const Dims& p) {
  Move move;
  if (input != norm->input(0)) return move;
  auto params = norm->paramsAs<NormalizationParams>();
  params.axis = p.at(static_cast<size_t>(positiveAxis(params.axis, p.size())));
  move.possible = true;
  move.params = params;
  move.operands.assign(norm->inputs().size(), Operand::kKeep);
  move.operands[0] = Operand::kUntransposed;
  move.after = p;
  return move;
}

Move normalizationMove(const Network& network, const Layer* norm, const Tensor* input,
                       const Dims& p) {
  return norm->paramsAs<NormalizationParams>().type == NormalizationType::kBatch
             ? batchNormMove(norm, input, p)
             : layerNormMove(network, norm, input, p);
}

template <typename Params>
Move spatialMove(const Layer* layer, const Tensor* input, const Dims& p);

// Whether `tensor` is a transpose by p, or would be one once the transposes above it sink: the
// output of a layer that a transpose by p crosses as it is (an activation, unary, cast or slice,
// a batch norm, an elementwise layer of tensors that would be, or of one and a constant, a concat
// of such tensors) whose inputs would be. Looking ahead, the concat that joins the branches of a
// CSP stage or a ghost module then moves once each branch has brought its transpose down.
bool transposedOnceSunk(const Network& network, const Tensor* tensor, const Dims& p, int& budget) {
  if (tensor == nullptr || --budget < 0) return false;
  const Layer* producer = tensor->producer();
  if (producer == nullptr || tensor->rank() != static_cast<int64_t>(p.size())) return false;
  if (const ShuffleParams* transpose = pureTranspose(producer)) {
    return transpose->firstPermutation == p;
  }
  switch (producer->kind()) {
    case LayerKind::kActivation:
    case LayerKind::kUnary:
    case LayerKind::kCast:
    case LayerKind::kSlice:
      return transposedOnceSunk(network, producer->input(0), p, budget);
    case LayerKind::kNormalization:
      return normalizationMove(network, producer, producer->input(0), p).possible &&
             transposedOnceSunk(network, producer->input(0), p, budget);
    case LayerKind::kPooling:
      return spatialMove<PoolingParams>(producer, producer->input(0), p).possible &&
             transposedOnceSunk(network, producer->input(0), p, budget);
    case LayerKind::kResize:
      return spatialMove<ResizeParams>(producer, producer->input(0), p).possible &&
             transposedOnceSunk(network, producer->input(0), p, budget);
    case LayerKind::kReduce:
      // Keeping its dims, a reduction leaves the transpose as it was (ConvNeXt-V2's global
      // response norm: a sum of squares over H and W, then a mean over the channels).
      return producer->paramsAs<ReduceParams>().keepDims &&
             transposedOnceSunk(network, producer->input(0), p, budget);
    case LayerKind::kElementwise:
    case LayerKind::kConcat: {
      bool any = false;
      for (const Tensor* operand : producer->inputs()) {
        if (constantWeights(operand) != nullptr) continue;
        if (!transposedOnceSunk(network, operand, p, budget)) return false;
        any = true;
      }
      return any;
    }
    default:
      return false;
  }
}

// concat(T(a), T(b), ..., axis) -> T(concat(a, b, ..., p[axis])) when every other input is a
// transpose by p too, a constant (permuted at build time) or a tensor that another layer already
// reads transposed back; looking ahead, also one that would be a transpose by p once the
// transposes above it sink. The transposes that the concat alone reads merge into the one after
// it (the move pays for two or more); one that other layers read too stays for them (DenseNet's
// features, which every later layer of the block concatenates).
Move concatMove(const Network& network, const Layer* layer, const Tensor* input, const Dims& p,
                bool lookingAhead) {
  Move move;
  const Dims back = invertPermutation(p);
  size_t merged = 0;
  int budget = kLookAheadLayers;
  for (const Tensor* other : layer->inputs()) {
    const ShuffleParams* transpose = other == nullptr ? nullptr : pureTranspose(other->producer());
    if (other == input) {
      move.operands.push_back(Operand::kUntransposed);
      ++merged;
    } else if (transpose != nullptr && transpose->firstPermutation == p) {
      move.operands.push_back(Operand::kUntransposed);
      merged += network.soleReader(other) == layer;
    } else if (other != nullptr && constantWeights(other) != nullptr) {
      move.operands.push_back(Operand::kPermutedConstant);
    } else if (other != nullptr && existingTranspose(network, other, back) != nullptr) {
      move.operands.push_back(Operand::kInverse);
    } else if (lookingAhead && transposedOnceSunk(network, other, p, budget)) {
      move.operands.push_back(Operand::kUntransposed);
      merged += network.soleReader(other) == layer;
    } else {
      return move;  // it would need a transpose of its own at run time
    }
  }
  auto params = layer->paramsAs<ConcatParams>();
  params.axis = p.at(static_cast<size_t>(positiveAxis(params.axis, p.size())));
  move.possible = true;
  move.pays = merged >= 2;
  move.params = params;
  move.constantPermutation = p;
  move.after = p;
  return move;
}

// slice(T(x), axes) -> T(slice(x, p[axes])): each axis's start, end, step and end reference as
// they were (a reference's dims are its own). Channel splits and chunks (CSP stages, GhostNet's
// cut to the output channels) are slices. Pays where the slice shrinks the tensor; a slice that
// repeats elements (a step of 0) would leave a larger transpose and keeps it before.
Move sliceMove(const Layer* slice, const Tensor* input, const Dims& p) {
  Move move;
  if (input != slice->input(0)) return move;
  auto params = slice->paramsAs<SliceParams>();
  for (int64_t& axis : params.axes) axis = p.at(static_cast<size_t>(positiveAxis(axis, p.size())));
  const Dims& in = input->dims();
  const Dims& out = slice->output(0)->dims();
  for (size_t d = 0; d < in.size(); ++d) {
    if (in[d] < 0 || out[d] < 0) continue;
    if (out[d] > in[d]) return move;
    move.pays = move.pays || out[d] < in[d];
  }
  move.possible = true;
  move.params = params;
  move.operands.assign(slice->inputs().size(), Operand::kKeep);
  move.operands[0] = Operand::kUntransposed;
  move.after = p;
  return move;
}

// reduce(T(x), axes) -> T'(reduce(x, p[axes])): the same elements reduced; T' orders the dims
// that stay as T did, and is often the identity (a global mean over H and W of NCHW).
Move reduceMove(const Layer* reduce, const Tensor* input, const Dims& p) {
  Move move;
  const size_t rank = p.size();
  auto params = reduce->paramsAs<ReduceParams>();
  std::vector<bool> reduced(rank, params.axes.empty());
  for (int64_t axis : params.axes) reduced.at(static_cast<size_t>(positiveAxis(axis, rank))) = true;
  Dims axes;
  Dims kept;  // x's dims that stay, in T's order
  for (size_t i = 0; i < rank; ++i) {
    if (reduced[i]) {
      axes.push_back(p[i]);
      // T' transposes fewer elements than T.
      move.pays = move.pays || input->dims()[i] != 1;
    } else {
      kept.push_back(p[i]);
    }
  }
  std::sort(axes.begin(), axes.end());
  if (params.keepDims) {
    move.after = p;
  } else {
    // Each kept dim (in T's order) at its place among x's kept dims.
    Dims sorted = kept;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t dim : kept) {
      move.after.push_back(std::lower_bound(sorted.begin(), sorted.end(), dim) - sorted.begin());
    }
  }
  if (!params.axes.empty()) params.axes = axes;
  move.possible = true;
  move.params = params;
  move.operands = {Operand::kUntransposed};
  return move;
}

// f(T_nchw(x)) -> T_nchw(f_nhwc(x)) for a pooling or a resize (HRNet's and DeepLab's upsampled
// branches join channels-last ones), whose Params say channelsLast; pays where f shrinks a
// spatial dim.
template <typename Params>
Move spatialMove(const Layer* layer, const Tensor* input, const Dims& p) {
  Move move;
  auto params = layer->paramsAs<Params>();
  const size_t rank = p.size();
  if (params.channelsLast || rank < 3 || p != toChannelsFirstPermutation(rank)) return move;
  params.channelsLast = true;
  const Dims& in = input->dims();
  const Dims& out = layer->output(0)->dims();
  for (size_t d = 2; d < rank; ++d) {
    move.pays = move.pays || (in[d] >= 0 && out[d] >= 0 && out[d] < in[d]);
  }
  move.possible = true;
  move.params = params;
  move.operands = {Operand::kUntransposed};
  move.after = p;
  return move;
}

// How `layer` would read a transpose by p that `input` is; `lookingAhead` where `input` is not
// one yet (a transpose that would sink to it), nor maybe the layer's other inputs.
Move planMove(const Network& network, const Layer* layer, const Tensor* input, const Dims& p,
              bool lookingAhead) {
  const LayerKind kind = layer->kind();
  if (isPointwise(kind)) return pointwiseMove(network, layer, input, p, lookingAhead);
  if (kind == LayerKind::kNormalization) return normalizationMove(network, layer, input, p);
  if (kind == LayerKind::kFullyConnected) return fullyConnectedMove(network, layer, input, p);
  if (kind == LayerKind::kReduce) return reduceMove(layer, input, p);
  if (kind == LayerKind::kPooling) return spatialMove<PoolingParams>(layer, input, p);
  if (kind == LayerKind::kResize) return spatialMove<ResizeParams>(layer, input, p);
  if (kind == LayerKind::kConcat) return concatMove(network, layer, input, p, lookingAhead);
  if (kind == LayerKind::kSlice) return sliceMove(layer, input, p);
  return {};
}

bool someReaderLeadsToACancel(const Network& network, const Tensor* tensor, const Dims& p,
                              int& budget);

// Whether a transpose by `p` on `tensor`, moved on forward across the layers that read it one
// after another, meets one that it cancels (a transpose back), or, unless `cancelOnly`, one it
// merges with or a move that pays. A move that leads to none would leave as many transposes,
// often where another pass (a chain of shuffles folded into a reshape) could no longer take it.
// Where the tensor has several readers (or is an output), the transpose would stay for them, and
// it is a gain where one of them leads it on to a transpose back (each half of a channel split
// on to its next convolution).
bool leadsToAGain(const Network& network, const Tensor* tensor, Dims p, bool cancelOnly,
                  int& budget) {
  while (--budget >= 0) {
    // A reader that transposes back then reads the untransposed tensor.
    if (existingTranspose(network, tensor, invertPermutation(p)) != nullptr) return true;
    const Layer* reader = onlyReader(network, tensor);
    if (reader == nullptr) return someReaderLeadsToACancel(network, tensor, p, budget);
    if (pureTranspose(reader) != nullptr) return !cancelOnly;  // the two become one
    const Move move = planMove(network, reader, tensor, p, true);
    if (!move.possible) return false;
    if (move.pays && !cancelOnly) return true;
    tensor = reader->output(0);
    p = move.after;
  }
  return false;
}

bool leadsToAGain(const Network& network, const Tensor* tensor, const Dims& p, bool cancelOnly) {
  int budget = kLookAheadLayers;
  return leadsToAGain(network, tensor, p, cancelOnly, budget);
}

// Whether a reader of `tensor` (reading it as one operand) that would move a transpose by p below
// it, the transpose staying for the others, leads it on to a transpose back.
bool someReaderLeadsToACancel(const Network& network, const Tensor* tensor, const Dims& p,
                              int& budget) {
  for (const Layer* reader : network.consumers(tensor)) {
    if (pureTranspose(reader) != nullptr || !readsAsOneOperand(reader, tensor)) {
      continue;
    }
    const Move move = planMove(network, reader, tensor, p, true);
    if (move.possible && leadsToAGain(network, reader->output(0), move.after, true, budget)) {
      return true;
    }
    if (budget < 0) return false;
  }
  return false;
}

// f(T(x), ...) -> T'(f'(x, ...)) for the first input of `layer` that is a transpose the move
// pays for. A transpose that f alone reads moves where the move pays, or leads to one that does.
// One that other layers read too stays for them, and f reads x where that leads to a transpose
// back, which then goes (a pooling between two channels-last convolutions whose output is also
// read elsewhere): one transpose fewer on that path, as many elsewhere.
bool sinkBelow(Network& network, Layer* layer) {
  for (Tensor* input : layer->inputs()) {
    if (input == nullptr) continue;
    const ShuffleParams* transpose = pureTranspose(input->producer());
    const std::vector<Tensor*>& inputs = layer->inputs();
    if (transpose == nullptr || !readsAsOneOperand(layer, input)) continue;
    const Dims p = transpose->firstPermutation;
    const Move move = planMove(network, layer, input, p, false);
    if (!move.possible) continue;
    const bool alone = onlyReader(network, input) == layer;
    if (alone ? !move.pays && !leadsToAGain(network, layer->output(0), move.after, false)
              : !leadsToAGain(network, layer->output(0), move.after, true)) {
      continue;
    }
    const Dims back = invertPermutation(p);
    std::vector<Tensor*> moved;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Tensor* operand = inputs[i];
      switch (move.operands.at(i)) {
        case Operand::kKeep:
          moved.push_back(operand);
          break;
        case Operand::kUntransposed:
          moved.push_back(operand->producer()->input(0));
          break;
        case Operand::kPermutedConstant:
          moved.push_back(permutedConstant(network, operand, move.constantPermutation,
                                           concat(layer->name(), ".operand_", i)));
          break;
        case Operand::kInverse:
          moved.push_back(existingTranspose(network, operand, back));
          break;
      }
    }
    replaceByTransposed(network, layer, move.params, moved, move.after);
    return true;
  }
  return false;
}

// Each rewrites `layer` (and so removes it) or says it did not.
using Rewrite = bool (*)(Network&, Layer*);
constexpr Rewrite kRewrites[] = {composeTransposes, sinkBelow};

}  // namespace

void sinkLayoutTransposes(Network& network) {
  bool changed = true;
  while (changed) {
    changed = false;
    std::vector<Layer*> layers;
    for (size_t i = 0; i < network.numLayers(); ++i) layers.push_back(network.layer(i));
    for (Layer* layer : layers) {
      // Each rewrite removes `layer` (and may leave producers dead): rescan after one.
      for (const Rewrite rewrite : kRewrites) {
        if (rewrite(network, layer)) {
          changed = true;
          break;
        }
      }
      if (changed) break;
    }
    if (changed) eliminateDeadLayers(network);
  }
}

}  // namespace kiln

// Replaces a chain of shuffles that, taken together, moves no element by one reshape, which the
// memory plan aliases to its input instead of copying. ViT's patch embedding is the case in
// point: the GEMM's (N, h, w, C) output goes back to (N, C, h, w), is flattened to (N, C, h*w)
// and transposed to (N, h*w, C), two copies of what is a reshape of the GEMM's output.
//
// A chain of static dims that copies more than once, but whose moves one copy can make, becomes
// that one copy: a reshape of its input into the blocks the chain moves (aliased), and one
// shuffle that permutes the blocks and reshapes them to the chain's output. Window and grid
// partitions (MaxViT, Swin, CoAtNet) are the case in point: a convolution's NHWC output goes back
// to NCHW, is split into windows, permuted and flattened into tokens, two or three copies where
// one moves every element to its place.
//
// Whether a chain moves elements is decided as PyTorch decides whether a view can be taken: the
// chain's input starts contiguous, each transpose permutes (size, stride) pairs, each reshape
// needs every group of dims it merges or splits to be contiguous in memory, and the chain is a
// reshape when its output ends contiguous. A dynamic dim takes a distinct prime that divides no
// static dim of the chain, so sizes that match for these values match for every value.
#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "kernels/common/shapes.h"

namespace kiln {
namespace {

// Stand-ins for dynamic dims: primes no real static dim is likely to share a factor with (a
// chain where one does is left alone). Three keep products of dims inside int64_t.
constexpr std::array<int64_t, 3> kDynamicStandIns = {1009, 1013, 1019};
// The most dims the backends' copy kernels permute.
constexpr size_t kMaxCopyRank = 8;

struct StridedDims {
  Dims sizes;
  Dims strides;
};

const ShuffleParams* shuffleOf(const Layer* layer) {
  if (layer == nullptr || layer->kind() != LayerKind::kShuffle || layer->inputs().size() != 1) {
    return nullptr;
  }
  return &layer->paramsAs<ShuffleParams>();
}

StridedDims permuted(const StridedDims& x, const Dims& permutation) {
  return {permuteDims(x.sizes, permutation), permuteDims(x.strides, permutation)};
}

// Reshape dims (positive, 0 = copy, -1 = infer) resolved against concrete input sizes.
Dims resolveReshape(const Dims& in, const Dims& spec) {
  Dims out(spec.size());
  int64_t known = 1;
  int64_t inferred = -1;
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == -1) {
      inferred = static_cast<int64_t>(i);
      continue;
    }
    out[i] = spec[i] == 0 ? in.at(i) : spec[i];
    known *= out[i];
  }
  if (inferred >= 0) out[static_cast<size_t>(inferred)] = known == 0 ? 0 : volume(in) / known;
  return out;
}

// The strides of `x` reshaped to `sizes` without moving elements, as at::detail::computeStride;
// none when the reshape would have to copy.
std::optional<Dims> reshapedStrides(const StridedDims& x, const Dims& sizes) {
  if (x.sizes.empty() || volume(x.sizes) == 0) return std::nullopt;
  Dims strides(sizes.size(), 0);
  int64_t viewDim = static_cast<int64_t>(sizes.size()) - 1;
  int64_t chunkBaseStride = x.strides.back();
  int64_t tensorElements = 1;
  int64_t viewElements = 1;
  for (int64_t d = static_cast<int64_t>(x.sizes.size()) - 1; d >= 0; --d) {
    tensorElements *= x.sizes[static_cast<size_t>(d)];
    const bool chunkEnds =
        d == 0 || (x.sizes[static_cast<size_t>(d - 1)] != 1 &&
                   x.strides[static_cast<size_t>(d - 1)] != tensorElements * chunkBaseStride);
    if (!chunkEnds) continue;
    while (viewDim >= 0 &&
           (viewElements < tensorElements || sizes[static_cast<size_t>(viewDim)] == 1)) {
      strides[static_cast<size_t>(viewDim)] = viewElements * chunkBaseStride;
      viewElements *= sizes[static_cast<size_t>(viewDim)];
      --viewDim;
    }
    if (viewElements != tensorElements) return std::nullopt;
    if (d > 0) {
      chunkBaseStride = x.strides[static_cast<size_t>(d - 1)];
      tensorElements = 1;
      viewElements = 1;
    }
  }
  if (viewDim != -1) return std::nullopt;
  return strides;
}

bool isContiguous(const StridedDims& x) {
  int64_t expected = 1;
  for (size_t d = x.sizes.size(); d-- > 0;) {
    if (x.sizes[d] == 1) continue;
    if (x.strides[d] != expected) return false;
    expected *= x.sizes[d];
  }
  return true;
}

// The chain's effect on a contiguous input of `sizes`; none when some step copies.
std::optional<StridedDims> applyChain(const std::vector<const ShuffleParams*>& chain,
                                      const Dims& sizes) {
  StridedDims x{sizes, kernels::contiguousStrides(sizes)};
  for (const ShuffleParams* shuffle : chain) {
    x = permuted(x, shuffle->firstPermutation);
    if (shuffle->hasReshape) {
      const Dims reshaped = resolveReshape(x.sizes, shuffle->reshapeDims);
      std::optional<Dims> strides = reshapedStrides(x, reshaped);
      if (!strides) return std::nullopt;
      x = {reshaped, *strides};
    }
    x = permuted(x, shuffle->secondPermutation);
  }
  return x;
}

// The chain's input dims with each dynamic dim replaced by a stand-in; none when there are more
// dynamic dims than stand-ins or a static dim shares a factor with one.
std::optional<Dims> concreteDims(const Dims& dims, const std::vector<const ShuffleParams*>& chain) {
  Dims concrete = dims;
  size_t next = 0;
  for (int64_t& d : concrete) {
    if (d != kDynamic) continue;
    if (next == kDynamicStandIns.size()) return std::nullopt;
    d = kDynamicStandIns[next++];
  }
  auto sharesAFactor = [](int64_t value) {
    for (int64_t prime : kDynamicStandIns) {
      if (value != prime && value % prime == 0) return true;
    }
    return false;
  };
  for (int64_t d : dims) {
    if (d != kDynamic && sharesAFactor(d)) return std::nullopt;
  }
  for (const ShuffleParams* shuffle : chain) {
    for (int64_t d : shuffle->reshapeDims) {
      if (d > 0 && sharesAFactor(d)) return std::nullopt;
    }
  }
  return concrete;
}

// Reshape dims that give `output` from `input` (concrete sizes, stand-ins for dynamic dims): a
// static size, 0 where a dynamic dim keeps its position, and one -1 for any other dynamic dim.
std::optional<Dims> reshapeSpec(const Dims& inputDims, const Dims& input, const Dims& output,
                                const Dims& outputDims) {
  Dims spec;
  bool inferred = false;
  for (size_t i = 0; i < output.size(); ++i) {
    if (outputDims[i] != kDynamic) {
      spec.push_back(outputDims[i]);
    } else if (i < input.size() && inputDims[i] == kDynamic && input[i] == output[i]) {
      spec.push_back(0);
    } else if (!inferred) {
      spec.push_back(-1);
      inferred = true;
    } else {
      return std::nullopt;
    }
  }
  return spec;
}

bool isPlainReshape(const ShuffleParams& p) {
  return p.firstPermutation.empty() && p.secondPermutation.empty();
}

// A chain that copies, as one copy: its input viewed as `blocks` (its dims split where the chain
// splits them), permuted by `permutation` into the order the chain leaves them in.
struct OneCopy {
  Dims blocks;
  Dims permutation;
};

// A run of elements of the chain's input that the chain moves as a whole: `size` steps of
// `stride` elements. Each dim of a tensor the chain computes is a list of them, outermost first.
struct Block {
  int64_t size;
  int64_t stride;
};
using BlockDim = std::vector<Block>;

// `dims` reshaped to `sizes`: the blocks of all dims in order, carved into the new dims from the
// innermost, a block split where a new dim takes part of it; none when a split does not divide.
std::optional<std::vector<BlockDim>> reshapeBlocks(const std::vector<BlockDim>& dims,
                                                   const Dims& sizes) {
  std::vector<Block> blocks;
  for (const BlockDim& dim : dims) blocks.insert(blocks.end(), dim.begin(), dim.end());
  std::vector<BlockDim> reshaped(sizes.size());
  for (size_t d = sizes.size(); d-- > 0;) {
    int64_t needed = sizes[d];
    while (needed > 1) {
      if (blocks.empty()) return std::nullopt;
      Block& inner = blocks.back();
      if (needed % inner.size == 0) {
        reshaped[d].insert(reshaped[d].begin(), inner);
        needed /= inner.size;
        blocks.pop_back();
      } else if (inner.size % needed == 0) {
        reshaped[d].insert(reshaped[d].begin(), Block{needed, inner.stride});
        inner = Block{inner.size / needed, inner.stride * needed};
        needed = 1;
      } else {
        return std::nullopt;
      }
    }
  }
  if (!blocks.empty()) return std::nullopt;
  return reshaped;
}

std::vector<BlockDim> permutedBlocks(const std::vector<BlockDim>& dims, const Dims& permutation) {
  if (permutation.empty()) return dims;
  std::vector<BlockDim> permuted;
  for (int64_t d : permutation) permuted.push_back(dims.at(static_cast<size_t>(d)));
  return permuted;
}

// The one copy that computes a chain of static dims from its contiguous input of `sizes`: the
// chain's output is a permutation of blocks of the input, merged into its dims, when every
// reshape splits whole blocks or divides one; none otherwise.
std::optional<OneCopy> oneCopyForm(const std::vector<const ShuffleParams*>& chain,
                                   const Dims& sizes) {
  std::vector<BlockDim> dims(sizes.size());
  const Dims strides = kernels::contiguousStrides(sizes);
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] != 1) dims[d].push_back(Block{sizes[d], strides[d]});
  }
  Dims current = sizes;
  for (const ShuffleParams* shuffle : chain) {
    dims = permutedBlocks(dims, shuffle->firstPermutation);
    current = permuteDims(current, shuffle->firstPermutation);
    if (shuffle->hasReshape) {
      current = resolveReshape(current, shuffle->reshapeDims);
      std::optional<std::vector<BlockDim>> reshaped = reshapeBlocks(dims, current);
      if (!reshaped) return std::nullopt;
      dims = std::move(*reshaped);
    }
    dims = permutedBlocks(dims, shuffle->secondPermutation);
    current = permuteDims(current, shuffle->secondPermutation);
  }
  // The blocks in the output's order; by decreasing stride, they must tile the input.
  std::vector<Block> moved;
  for (const BlockDim& dim : dims) moved.insert(moved.end(), dim.begin(), dim.end());
  std::vector<size_t> byStride(moved.size());
  for (size_t b = 0; b < moved.size(); ++b) byStride[b] = b;
  std::stable_sort(byStride.begin(), byStride.end(),
                   [&](size_t a, size_t b) { return moved[a].stride > moved[b].stride; });
  int64_t expected = 1;
  for (size_t i = byStride.size(); i-- > 0;) {
    if (moved[byStride[i]].stride != expected) return std::nullopt;
    expected *= moved[byStride[i]].size;
  }
  if (expected != volume(sizes)) return std::nullopt;
  OneCopy copy;
  for (size_t b : byStride) copy.blocks.push_back(moved[b].size);
  for (size_t b = 0; b < moved.size(); ++b) {
    const auto position = std::find(byStride.begin(), byStride.end(), b) - byStride.begin();
    copy.permutation.push_back(static_cast<int64_t>(position));
  }
  return copy;
}

// Replaces the chain from `first` to `last` (static dims, two copies or more) by its one copy;
// true if it did.
bool foldChainIntoOneCopy(Network& network, const std::vector<const ShuffleParams*>& chain,
                          Layer* first, Layer* last) {
  Tensor* source = first->input(0);
  const Dims& outputDims = last->output(0)->dims();
  if (!isStatic(source->dims()) || !isStatic(outputDims) || volume(outputDims) == 0) return false;
  size_t copies = 0;
  for (const ShuffleParams* shuffle : chain) copies += isPlainReshape(*shuffle) ? 0 : 1;
  if (copies < 2) return false;
  const std::optional<OneCopy> copy = oneCopyForm(chain, source->dims());
  if (!copy || copy->blocks.size() > kMaxCopyRank) return false;
  ShuffleParams view;
  view.hasReshape = true;
  view.reshapeDims = copy->blocks;
  Layer* blocks = network.addShuffle(source, view);
  blocks->setName(concat(last->name(), ".blocks"));
  ShuffleParams move;
  move.firstPermutation = copy->permutation;
  move.hasReshape = true;
  move.reshapeDims = outputDims;
  Layer* moved = network.addShuffle(blocks->output(0), move);
  const std::string outputName = last->output(0)->name();
  moved->setName(last->name());
  network.replaceAllUsesWith(last->output(0), moved->output(0));
  network.removeLayer(last);
  moved->output(0)->setName(outputName);
  return true;
}

// The chain of shuffles ending at `last`, last shuffle first: each earlier one has the next as
// its only reader.
std::vector<Layer*> chainEndingAt(const Network& network, Layer* last) {
  std::vector<Layer*> layers = {last};
  while (true) {
    const Tensor* input = layers.back()->input(0);
    Layer* producer = input->producer();
    if (shuffleOf(producer) == nullptr || network.soleReader(input) != layers.back()) break;
    layers.push_back(producer);
  }
  return layers;
}

// The params of the chain's last `length` shuffles, first to last.
std::vector<const ShuffleParams*> paramsOf(const std::vector<Layer*>& layers, size_t length) {
  std::vector<const ShuffleParams*> chain;
  for (size_t i = length; i-- > 0;) chain.push_back(shuffleOf(layers[i]));
  return chain;
}

// Folds the longest chain of shuffles ending at `last` that moves no element; true if it did.
bool foldChainIntoReshape(Network& network, const std::vector<Layer*>& layers) {
  Layer* last = layers.front();
  for (size_t length = layers.size(); length >= 1; --length) {
    const std::vector<const ShuffleParams*> chain = paramsOf(layers, length);
    if (length == 1 && isPlainReshape(*chain.front())) return false;
    Tensor* source = layers[length - 1]->input(0);
    const std::optional<Dims> sizes = concreteDims(source->dims(), chain);
    if (!sizes) continue;
    const std::optional<StridedDims> result = applyChain(chain, *sizes);
    if (!result || !isContiguous(*result)) continue;
    const std::optional<Dims> spec =
        reshapeSpec(source->dims(), *sizes, result->sizes, last->output(0)->dims());
    if (!spec) continue;
    ShuffleParams reshape;
    reshape.hasReshape = true;
    reshape.reshapeDims = *spec;
    Layer* folded = network.addShuffle(source, reshape);
    const std::string outputName = last->output(0)->name();
    folded->setName(last->name());
    network.replaceAllUsesWith(last->output(0), folded->output(0));
    network.removeLayer(last);
    folded->output(0)->setName(outputName);
    return true;
  }
  return false;
}

// Folds the longest chain ending at `last` that moves no element into a reshape, or else the
// longest that copies more than once into one copy; true if it did.
bool foldChainEndingAt(Network& network, Layer* last) {
  const std::vector<Layer*> layers = chainEndingAt(network, last);
  if (foldChainIntoReshape(network, layers)) return true;
  for (size_t length = layers.size(); length >= 2; --length) {
    if (foldChainIntoOneCopy(network, paramsOf(layers, length), layers[length - 1], last)) {
      return true;
    }
  }
  return false;
}

}  // namespace

void foldShuffleChainsIntoReshapes(Network& network) {
  std::vector<Layer*> shuffles;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (shuffleOf(network.layer(i)) != nullptr) shuffles.push_back(network.layer(i));
  }
  // Last shuffles of chains first, so that a chain is folded whole rather than in pieces.
  for (auto it = shuffles.rbegin(); it != shuffles.rend(); ++it) {
    Layer* shuffle = *it;
    // A shuffle inside a chain folded before is dead now: eliminateDeadLayers removes it.
    const Tensor* output = shuffle->output(0);
    if (network.consumers(output).empty() && !network.isOutput(output)) continue;
    foldChainEndingAt(network, shuffle);
  }
}

}  // namespace kiln

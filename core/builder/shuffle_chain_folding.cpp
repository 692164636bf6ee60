// Replaces a chain of shuffles that, taken together, moves no element by one reshape, which the
// memory plan aliases to its input instead of copying. ViT's patch embedding is the case in
// point: the GEMM's (N, h, w, C) output goes back to (N, C, h, w), is flattened to (N, C, h*w)
// and transposed to (N, h*w, C), two copies of what is a reshape of the GEMM's output.
//
// Whether a chain moves elements is decided as PyTorch decides whether a view can be taken: the
// chain's input starts contiguous, each transpose permutes (size, stride) pairs, each reshape
// needs every group of dims it merges or splits to be contiguous in memory, and the chain is a
// reshape when its output ends contiguous. A dynamic dim takes a distinct prime that divides no
// static dim of the chain, so sizes that match for these values match for every value.
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

// Folds the longest chain of shuffles ending at `last` that moves no element; true if it did.
bool foldChainEndingAt(Network& network, Layer* last) {
  // The chain, last shuffle first: each earlier one has the next as its only reader.
  std::vector<Layer*> layers = {last};
  while (true) {
    const Tensor* input = layers.back()->input(0);
    Layer* producer = input->producer();
    if (shuffleOf(producer) == nullptr || network.soleReader(input) != layers.back()) break;
    layers.push_back(producer);
  }
  for (size_t length = layers.size(); length >= 1; --length) {
    std::vector<const ShuffleParams*> chain;
    for (size_t i = length; i-- > 0;) chain.push_back(shuffleOf(layers[i]));
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

// Replaces the squeeze of each squeeze-and-excitation block by one SqueezeExcitation layer: a
// global average pool over a channels-last tensor (adaptive pooling to 1x1, or a mean over every
// dim but the first and last), a fully connected layer, its activation (fused into it or the
// Activation layer after it), and a second fully connected layer. EfficientNet (V1 and V2),
// MobileNetV3, ReXNet, GhostNet, RegNetY, SE-ResNeXt and the MBConv blocks of MaxViT and CoAtNet
// all squeeze this way, after their convolutions went channels-last and their 1x1 convolutions
// became fully connected layers. Unfused, the squeeze is five or six launches (pooling and its
// split reduction, two GEMMs that fill a few of the GPU's tiles, the activation), each a few
// microseconds of a block whose work is a few kilobytes; fused, it is two. The gate and the
// scaling of the block's tensor stay with the pointwise fusion, which already joins them.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "kernels/common/kernel_types.h"

namespace kiln {
namespace {

struct Squeeze {
  Layer* pool = nullptr;
  Layer* first = nullptr;
  Layer* activation = nullptr;  // the Activation layer between the two, if any
  Layer* second = nullptr;
  SqueezeExcitationParams params;
};

// Whether `pool` averages a channels-last tensor (N, spatial..., C) over all its spatial dims;
// sets keepDims to whether the result keeps them (as 1s).
bool isGlobalAveragePool(const Layer& pool, bool& keepDims) {
  const Tensor* x = pool.input(0);
  const int64_t rank = x->rank();
  if (rank < 3 || !isFloatingPoint(x->dtype())) return false;
  if (pool.kind() == LayerKind::kPooling) {
    const auto& p = pool.paramsAs<PoolingParams>();
    keepDims = true;
    return p.type == PoolingType::kAverage && p.adaptive && p.channelsLast &&
           static_cast<int64_t>(p.outputSize.size()) == rank - 2 &&
           std::all_of(p.outputSize.begin(), p.outputSize.end(), [](int64_t d) { return d == 1; });
  }
  if (pool.kind() == LayerKind::kReduce) {
    const auto& p = pool.paramsAs<ReduceParams>();
    if (p.op != ReduceOp::kAvg || static_cast<int64_t>(p.axes.size()) != rank - 2) return false;
    std::vector<bool> reduced(static_cast<size_t>(rank), false);
    for (int64_t axis : p.axes) {
      const int64_t a = axis < 0 ? axis + rank : axis;
      if (a <= 0 || a >= rank - 1 || reduced[static_cast<size_t>(a)]) return false;
      reduced[static_cast<size_t>(a)] = true;
    }
    keepDims = p.keepDims;
    return true;
  }
  return false;
}

// A fully connected layer reading `x` alone as its input (no residual), with static weights'
// dims.
bool isPlainFullyConnected(const Layer* layer, const Tensor* x) {
  if (layer == nullptr || layer->kind() != LayerKind::kFullyConnected || layer->input(0) != x) {
    return false;
  }
  const std::vector<Tensor*>& inputs = layer->inputs();
  if (inputs.size() > 3 && inputs[3] != nullptr) return false;
  const Dims& weight = layer->input(1)->dims();
  return weight.size() == 2 && weight[0] > 0 && weight[1] > 0 &&
         layer->input(1)->dtype() == x->dtype();
}

void setHiddenActivation(SqueezeExcitationParams& params, const ActivationParams& activation) {
  params.hasHiddenActivation = true;
  params.hiddenActivation = activation.type;
  params.hiddenAlpha = activation.alpha;
  params.hiddenBeta = activation.beta;
}

std::optional<Squeeze> matchSqueeze(const Network& network, Layer* pool) {
  Squeeze s;
  s.pool = pool;
  if (!isGlobalAveragePool(*pool, s.params.keepDims)) return std::nullopt;
  Tensor* pooled = pool->output(0);
  s.first = network.soleReader(pooled);
  if (!isPlainFullyConnected(s.first, pooled)) return std::nullopt;
  Tensor* hidden = s.first->output(0);
  const FusedActivation fused = s.first->paramsAs<FullyConnectedParams>().activation;
  Layer* next = network.soleReader(hidden);
  if (fused != FusedActivation::kNone) {
    setHiddenActivation(s.params, activationParamsOf(fused));
  } else if (next != nullptr && next->kind() == LayerKind::kActivation) {
    s.activation = next;
    setHiddenActivation(s.params, next->paramsAs<ActivationParams>());
    hidden = next->output(0);
    next = network.soleReader(hidden);
  }
  s.second = next;
  if (!isPlainFullyConnected(s.second, hidden) ||
      s.second->paramsAs<FullyConnectedParams>().activation != FusedActivation::kNone) {
    return std::nullopt;
  }
  const Dims& w1 = s.first->input(1)->dims();
  const Dims& w2 = s.second->input(1)->dims();
  const int64_t channels = pool->input(0)->dims().back();
  if (channels != w1[1] || w2[1] != w1[0] ||
      channels + w1[0] > kernels::kMaxSqueezeExcitationFeatures) {
    return std::nullopt;
  }
  return s;
}

Tensor* optionalInputOf(const Layer* layer, size_t index) {
  return index < layer->inputs().size() ? layer->input(index) : nullptr;
}

void fuse(Network& network, const Squeeze& s) {
  Layer* fused =
      network.addLayer(s.params, {s.pool->input(0), s.first->input(1), optionalInputOf(s.first, 2),
                                  s.second->input(1), optionalInputOf(s.second, 2)});
  std::string name = concat(s.pool->name(), " + ", s.first->name());
  if (s.activation != nullptr) name = concat(name, " + ", s.activation->name());
  name = concat(name, " + ", s.second->name());
  const std::string outputName = s.second->output(0)->name();
  network.replaceAllUsesWith(s.second->output(0), fused->output(0));
  network.removeLayer(s.second);
  if (s.activation != nullptr) network.removeLayer(s.activation);
  network.removeLayer(s.first);
  network.removeLayer(s.pool);
  fused->setName(name);
  fused->output(0)->setName(outputName);
}

}  // namespace

void fuseSqueezeExcitations(Network& network) {
  std::vector<Squeeze> squeezes;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kPooling && layer->kind() != LayerKind::kReduce) continue;
    if (std::optional<Squeeze> squeeze = matchSqueeze(network, layer)) {
      squeezes.push_back(*squeeze);
    }
  }
  for (const Squeeze& squeeze : squeezes) fuse(network, squeeze);
}

}  // namespace kiln

// Fuses the activation that produces a depthwise convolution's input into the convolution, which
// applies it to each element as it reads it. An inverted residual block (MobileNetV2/V3,
// EfficientNet, MnasNet, RexNet, GhostNet's and EfficientFormer's variants) expands its channels
// with a 1x1 convolution, now a GEMM, activates the wide tensor and convolves it depthwise. The
// GEMM's epilogue takes ReLU and GELU but not SiLU or hard swish, which then cost a pass that
// reads and writes the block's widest tensor; in the depthwise convolution they cost neither.
// Only channels-last depthwise convolutions take it: Kiln's depthwise kernels, which the CUDA
// backend then runs, read NHWC.
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// The largest depthwise kernels in use (RepLKNet's 31x31) and well inside what Kiln's depthwise
// kernels stage in shared memory.
constexpr int64_t kMaxTaps = 1024;

bool isChannelsLastDepthwise(const Layer& conv) {
  if (conv.kind() != LayerKind::kConvolution) return false;
  const auto& p = conv.paramsAs<ConvolutionParams>();
  const Dims& x = conv.input(0)->dims();
  const Dims& weight = conv.input(1)->dims();
  return p.channelsLast && p.inputActivation == FusedActivation::kNone &&
         (p.kernel.size() == 1 || p.kernel.size() == 2) &&
         isFloatingPoint(conv.input(0)->dtype()) && volume(p.kernel) <= kMaxTaps && !x.empty() &&
         x.back() == p.groups && p.outChannels % p.groups == 0 && !weight.empty() &&
         weight.back() == 1;
}

}  // namespace

void fuseActivationsIntoDepthwiseInputs(Network& network) {
  std::vector<Layer*> convolutions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (isChannelsLastDepthwise(*network.layer(i))) convolutions.push_back(network.layer(i));
  }
  for (Layer* conv : convolutions) {
    Layer* producer = conv->input(0)->producer();
    if (producer == nullptr || producer->kind() != LayerKind::kActivation ||
        network.soleReader(conv->input(0)) != conv) {
      continue;
    }
    const std::optional<FusedActivation> activation =
        convolutionActivationOf(producer->paramsAs<ActivationParams>());
    if (!activation) continue;
    auto params = conv->paramsAs<ConvolutionParams>();
    params.inputActivation = *activation;
    std::vector<Tensor*> inputs = conv->inputs();
    inputs[0] = producer->input(0);
    Layer* fused = network.addLayer(params, inputs);
    const std::string name = concat(producer->name(), " + ", conv->name());
    const std::string outputName = conv->output(0)->name();
    network.replaceAllUsesWith(conv->output(0), fused->output(0));
    network.removeLayer(conv);
    network.removeLayer(producer);
    fused->setName(name);
    fused->output(0)->setName(outputName);
  }
}

}  // namespace kiln

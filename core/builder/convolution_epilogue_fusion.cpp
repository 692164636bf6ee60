// Fuses what follows a convolution into its epilogue: a residual add of a tensor of the output's
// dims, then an activation (the ResNet block's conv + add + relu), each when the convolution's
// output has no other reader. The backends run the epilogue in the convolution's kernel call
// (cuDNN's fused conv + bias + z + activation, Kiln's depthwise kernels) or in one pass after it,
// instead of one pass per layer. ReLU is fused into every convolution. ReLU6, SiLU and hard
// swish, which cuDNN's fused call does not take, are fused into depthwise convolutions
// (MobileNet, EfficientNet, GhostNet, RexNet and the other inverted-residual blocks), whose Kiln
// kernels apply them as they write, and into every convolution that cannot become a GEMM (the
// 3x3 convolutions of EfficientNetV2's fused blocks, SiLU stems): there the bias runs in Kiln's
// epilogue pass wherever cuDNN's fused call does not, and that pass applies them too, where a
// separate activation layer would cost a pass of its own. One that feeds a depthwise convolution
// is left to it, which applies it as it reads. A 1x1 convolution or a patch embedding
// (stride = kernel, no padding, one group) keeps them for the pointwise fusion and stays free to
// become a GEMM, whose epilogue does not take them.
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// The other operand of a same-shape add that reads `out`, or null.
Tensor* residualOperand(const Layer& add, const Tensor* out) {
  if (add.kind() != LayerKind::kElementwise ||
      add.paramsAs<ElementwiseParams>().op != ElementwiseOp::kSum) {
    return nullptr;
  }
  Tensor* other = add.input(0) == out ? add.input(1) : add.input(0);
  if (other->dtype() != out->dtype() || other->dims() != out->dims()) return nullptr;
  return other;
}

// A depthwise convolution: one input channel a group, and one output channel a group or a few
// (a channel multiplier, as FastViT's and MobileOne's downsampling convolutions).
bool isDepthwise(const Layer& conv) {
  const auto& p = conv.paramsAs<ConvolutionParams>();
  return p.groups > 1 && p.outChannels % p.groups == 0 && conv.input(1)->dims().size() > 1 &&
         conv.input(1)->dims()[1] == 1;
}

// A convolution that may run as a GEMM: one group, no padding and stride = kernel, so that its
// windows tile the input (a 1x1 convolution, a patch embedding).
bool mayBecomeGemm(const ConvolutionParams& p) {
  if (p.groups != 1) return false;
  for (size_t d = 0; d < p.kernel.size(); ++d) {
    const int64_t stride = d < p.stride.size() ? p.stride[d] : 1;
    const int64_t pre = d < p.prePadding.size() ? p.prePadding[d] : 0;
    const int64_t post = d < p.postPadding.size() ? p.postPadding[d] : 0;
    if (stride != p.kernel[d] || pre != 0 || post != 0) return false;
  }
  return true;
}

// Whether the only reader of `activation`'s output is a depthwise convolution, which takes the
// activation as it reads its input (fuseActivationsIntoDepthwiseInputs) at no cost at all, where
// the epilogue of a convolution whose bias cuDNN fuses would cost a pass (a SiLU stem before
// EfficientNet's and MobileNetV3's first depthwise convolution).
bool feedsDepthwise(const Network& network, const Layer& activation) {
  const Layer* reader = network.soleReader(activation.output(0));
  return reader != nullptr && reader->kind() == LayerKind::kConvolution &&
         reader->input(0) == activation.output(0) && isDepthwise(*reader);
}

// Replaces `conv` and `absorbed` (which reads conv's output) by one convolution with the given
// params and residual, computing what `absorbed` computed.
Layer* replaceWithFused(Network& network, Layer* conv, Layer* absorbed,
                        const ConvolutionParams& params, Tensor* residual) {
  std::vector<Tensor*> inputs = {conv->input(0), conv->input(1),
                                 conv->inputs().size() > 2 ? conv->input(2) : nullptr, residual};
  Layer* fused = network.addLayer(params, inputs);
  const std::string name = concat(conv->name(), " + ", absorbed->name());
  const std::string outputName = absorbed->output(0)->name();
  network.replaceAllUsesWith(absorbed->output(0), fused->output(0));
  network.removeLayer(absorbed);
  network.removeLayer(conv);
  fused->setName(name);
  fused->output(0)->setName(outputName);
  return fused;
}

}  // namespace

void fuseConvolutionEpilogues(Network& network) {
  std::vector<Layer*> convolutions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() == LayerKind::kConvolution) {
      convolutions.push_back(network.layer(i));
    }
  }
  for (Layer* conv : convolutions) {
    bool changed = true;
    while (changed) {
      changed = false;
      auto params = conv->paramsAs<ConvolutionParams>();
      if (params.activation != FusedActivation::kNone) break;
      Tensor* out = conv->output(0);
      Layer* reader = network.soleReader(out);
      if (reader == nullptr) break;
      Tensor* residual = conv->inputs().size() > 3 ? conv->input(3) : nullptr;
      if (residual == nullptr) {
        if (Tensor* other = residualOperand(*reader, out)) {
          conv = replaceWithFused(network, conv, reader, params, other);
          changed = true;
          continue;
        }
      }
      const std::optional<FusedActivation> activation =
          reader->kind() == LayerKind::kActivation
              ? convolutionActivationOf(reader->paramsAs<ActivationParams>())
              : std::nullopt;
      if (activation && (*activation == FusedActivation::kRelu || isDepthwise(*conv) ||
                         (!mayBecomeGemm(params) && !feedsDepthwise(network, *reader)))) {
        params.activation = *activation;
        conv = replaceWithFused(network, conv, reader, params, residual);
        changed = true;
      }
    }
  }
}

}  // namespace kiln

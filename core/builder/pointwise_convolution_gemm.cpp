// Runs channels-last 1x1 convolutions (stride 1, no padding, one group) as fully connected
// layers: on an NHWC tensor such a convolution is a GEMM over its last dim, and cuBLASLt runs it
// with bias, residual and ReLU in the GEMM's epilogue. cuDNN's fused bias + activation call has
// no tensor-core kernel for most of these shapes, so there the epilogue is a separate pass over
// the output: on ResNet-50 at batch 256 those passes took over a quarter of the time.
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

bool isPointwise(const Layer& layer) {
  if (layer.kind() != LayerKind::kConvolution) return false;
  const auto& p = layer.paramsAs<ConvolutionParams>();
  auto allEqual = [](const Dims& dims, int64_t value) {
    for (int64_t d : dims) {
      if (d != value) return false;
    }
    return true;
  };
  // The weight's dims are static for the 2-D reshape below.
  for (int64_t d : layer.input(1)->dims()) {
    if (d < 0) return false;
  }
  // A GEMM's epilogue applies ReLU, not the activations only Kiln's convolution kernels take.
  const bool gemmActivation =
      p.activation == FusedActivation::kNone || p.activation == FusedActivation::kRelu;
  return p.channelsLast && p.groups == 1 && gemmActivation && allEqual(p.kernel, 1) &&
         allEqual(p.stride, 1) && allEqual(p.prePadding, 0) && allEqual(p.postPadding, 0);
}

}  // namespace

void convertPointwiseConvolutionsToFullyConnected(Network& network) {
  std::vector<Layer*> convolutions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (isPointwise(*network.layer(i))) convolutions.push_back(network.layer(i));
  }
  for (Layer* conv : convolutions) {
    const std::string name = conv->name();
    // Channels-last weights are (out, 1, 1, in): the same values as the GEMM's (out, in).
    Tensor* weight = conv->input(1);
    ShuffleParams reshape;
    reshape.hasReshape = true;
    reshape.reshapeDims = {weight->dims().front(), weight->dims().back()};
    Layer* flatWeight = network.addShuffle(weight, reshape);
    flatWeight->setName(concat(name, ".weight_2d"));
    const std::vector<Tensor*>& convInputs = conv->inputs();
    FullyConnectedParams params;
    params.activation = conv->paramsAs<ConvolutionParams>().activation;
    Layer* gemm = network.addLayer(params, {conv->input(0), flatWeight->output(0),
                                            convInputs.size() > 2 ? convInputs[2] : nullptr,
                                            convInputs.size() > 3 ? convInputs[3] : nullptr});
    const std::string outputName = conv->output(0)->name();
    network.replaceAllUsesWith(conv->output(0), gemm->output(0));
    network.removeLayer(conv);
    gemm->setName(name);
    gemm->output(0)->setName(outputName);
  }
}

}  // namespace kiln

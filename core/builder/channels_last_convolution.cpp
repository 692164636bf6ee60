// Runs half-precision 1-D and 2-D convolutions channels-last (NLC, NHWC), the layout tensor-core
// convolutions read (a 1-D convolution runs as 2-D of unit height: speech front ends such as
// wav2vec2's, and its grouped positional convolution). Given NCHW tensors, cuDNN transposes each
// input to NHWC and each output back: on the H100, two thirds of ResNet-50's time at batch 256 went
// to those transposes. Here each convolution gets explicit transposes around it instead;
// sinkLayoutTransposes then cancels the pairs that meet between neighbouring layers, so a
// convolutional trunk stays NHWC with a transpose at each edge.
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

bool isHalfPrecision(DataType type) {
  return type == DataType::kFloat16 || type == DataType::kBFloat16;
}

bool runsBetterChannelsLast(const Layer& layer) {
  if (layer.kind() != LayerKind::kConvolution) return false;
  const auto& params = layer.paramsAs<ConvolutionParams>();
  return !params.channelsLast && (params.kernel.size() == 1 || params.kernel.size() == 2) &&
         isHalfPrecision(layer.input(0)->dtype());
}

Tensor* transposed(Network& network, Tensor* tensor, const Dims& permutation,
                   const std::string& name) {
  ShuffleParams params;
  params.firstPermutation = permutation;
  Layer* shuffle = network.addShuffle(tensor, params);
  shuffle->setName(name);
  return shuffle->output(0);
}

}  // namespace

void convertConvolutionsToChannelsLast(Network& network) {
  std::vector<Layer*> convolutions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (runsBetterChannelsLast(*network.layer(i))) convolutions.push_back(network.layer(i));
  }
  for (Layer* conv : convolutions) {
    const std::string name = conv->name();
    const Dims toLast = toChannelsLastPermutation(conv->input(0)->dims().size());
    std::vector<Tensor*> inputs = {
        transposed(network, conv->input(0), toLast, concat(name, ".x_nhwc")),
        transposed(network, conv->input(1), toLast, concat(name, ".weight_nhwc")),
        conv->inputs().size() > 2 ? conv->input(2) : nullptr, nullptr};
    if (conv->inputs().size() > 3 && conv->input(3) != nullptr) {
      inputs[3] = transposed(network, conv->input(3), toLast, concat(name, ".residual_nhwc"));
    }
    auto params = conv->paramsAs<ConvolutionParams>();
    params.channelsLast = true;
    Layer* converted = network.addLayer(params, inputs);
    Tensor* out = transposed(network, converted->output(0),
                             toChannelsFirstPermutation(toLast.size()), concat(name, ".nchw"));
    const std::string outputName = conv->output(0)->name();
    network.replaceAllUsesWith(conv->output(0), out);
    network.removeLayer(conv);
    converted->setName(name);
    out->setName(outputName);
  }
}

}  // namespace kiln

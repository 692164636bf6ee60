// Folds an inference batch norm into the convolution before it: with s = scale / sqrt(var + eps),
//   bn(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta   (per output channel),
// so the network loses a pass over the convolution's output. Weights are computed in double
// and stored in the convolution's type, as TensorRT folds them.
#include <optional>
#include <string>
#include <vector>

#include "core/builder/batch_norm_affine.h"
#include "core/builder/passes.h"

namespace kiln {
namespace {

// The convolution a batch norm can fold into: its only reader is the norm, it fuses nothing yet,
// and every operand is a constant of a float type.
Layer* foldableConvolution(const Network& network, const Layer& norm) {
  const auto& p = norm.paramsAs<NormalizationParams>();
  if (p.type != NormalizationType::kBatch) return nullptr;
  Tensor* x = norm.input(0);
  Layer* conv = x->producer();
  if (conv == nullptr || conv->kind() != LayerKind::kConvolution) return nullptr;
  const auto& convParams = conv->paramsAs<ConvolutionParams>();
  if (convParams.activation != FusedActivation::kNone) return nullptr;
  // The norm's channels are the convolution's output channels.
  const size_t rank = x->dims().size();
  const int64_t axis = p.axis < 0 ? p.axis + static_cast<int64_t>(rank) : p.axis;
  if (axis != (convParams.channelsLast ? static_cast<int64_t>(rank) - 1 : 1)) return nullptr;
  if (conv->inputs().size() > 3 && conv->input(3) != nullptr) return nullptr;
  if (network.soleReader(x) != &norm) return nullptr;
  if (!isFloatingPoint(x->dtype()) || constantWeights(conv->input(1)) == nullptr) return nullptr;
  if (conv->inputs().size() > 2 && conv->input(2) != nullptr &&
      constantWeights(conv->input(2)) == nullptr) {
    return nullptr;
  }
  return conv;
}

}  // namespace

void foldBatchNormIntoConvolution(Network& network) {
  std::vector<Layer*> norms;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() == LayerKind::kNormalization) norms.push_back(network.layer(i));
  }
  for (Layer* norm : norms) {
    Layer* conv = foldableConvolution(network, *norm);
    if (conv == nullptr) continue;
    const auto& convParams = conv->paramsAs<ConvolutionParams>();
    const int64_t channels = convParams.outChannels;
    const Weights& weight = *constantWeights(conv->input(1));
    const Tensor* biasTensor = conv->inputs().size() > 2 ? conv->input(2) : nullptr;

    const std::optional<BatchNormAffine> affine = batchNormAffine(*norm, channels);
    if (!affine) continue;
    std::vector<double> w = toDoubles(weight);
    std::vector<double> b = biasTensor ? toDoubles(*constantWeights(biasTensor))
                                       : std::vector<double>(static_cast<size_t>(channels), 0.0);
    const size_t perChannel = w.size() / static_cast<size_t>(channels);
    for (size_t k = 0; k < static_cast<size_t>(channels); ++k) {
      for (size_t j = 0; j < perChannel; ++j) w[k * perChannel + j] *= affine->scale[k];
      b[k] = b[k] * affine->scale[k] + affine->shift[k];
    }

    const DataType dtype = conv->output(0)->dtype();
    Tensor* foldedWeight =
        network.addConstant(fromDoubles(weight.dtype, weight.dims, w))->output(0);
    Tensor* foldedBias = network.addConstant(fromDoubles(dtype, {channels}, b))->output(0);
    Layer* folded = network.addConvolution(conv->input(0), foldedWeight, foldedBias, convParams);
    const std::string convName = conv->name();
    const std::string normName = norm->name();
    const std::string outputName = norm->output(0)->name();
    network.replaceAllUsesWith(norm->output(0), folded->output(0));
    network.removeLayer(norm);
    network.removeLayer(conv);
    folded->setName(concat(convName, " + ", normName));
    folded->output(0)->setName(outputName);
    foldedWeight->producer()->setName(concat(convName, ".folded_weight"));
    foldedBias->producer()->setName(concat(convName, ".folded_bias"));
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

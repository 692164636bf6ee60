// Folds an inference batch norm into the convolution before it: with s = scale / sqrt(var + eps),
//   bn(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta   (per output channel),
// so the network loses a pass over the convolution's output. Weights are computed in double
// and stored in the convolution's type, as TensorRT folds them.
#include <cmath>
#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "core/engine/kernel_mapping.h"
#include "kernels/cpu/cast.h"

namespace kiln {
namespace {

std::vector<double> toDoubles(const Weights& weights) {
  std::vector<float> floats(static_cast<size_t>(weights.count()));
  cpu_kernels::cast(weights.data(), toKernelType(weights.dtype), floats.data(),
                    cpu_kernels::ScalarType::kFloat32, weights.count());
  return std::vector<double>(floats.begin(), floats.end());
}

Weights fromDoubles(DataType dtype, const Dims& dims, const std::vector<double>& values) {
  const std::vector<float> floats(values.begin(), values.end());
  std::vector<uint8_t> bytes(floats.size() * elementSize(dtype));
  cpu_kernels::cast(floats.data(), cpu_kernels::ScalarType::kFloat32, bytes.data(),
                    toKernelType(dtype), static_cast<int64_t>(floats.size()));
  return Weights::fromBytes(dtype, dims, std::move(bytes));
}

bool isFloatType(DataType type) {
  return type == DataType::kFloat32 || type == DataType::kFloat16 || type == DataType::kBFloat16;
}

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
  if (!isFloatType(x->dtype()) || constantWeights(conv->input(1)) == nullptr) return nullptr;
  if (conv->inputs().size() > 2 && conv->input(2) != nullptr &&
      constantWeights(conv->input(2)) == nullptr) {
    return nullptr;
  }
  for (size_t i = 1; i < norm.inputs().size(); ++i) {
    const Tensor* operand = norm.input(i);
    if (operand == nullptr) {
      if (i >= 3) return nullptr;  // mean and var are required
      continue;
    }
    const Weights* weights = constantWeights(operand);
    if (weights == nullptr || !isFloatType(weights->dtype) ||
        weights->count() != convParams.outChannels) {
      return nullptr;
    }
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
    const auto& p = norm->paramsAs<NormalizationParams>();
    const auto& convParams = conv->paramsAs<ConvolutionParams>();
    const int64_t channels = convParams.outChannels;
    const Weights& weight = *constantWeights(conv->input(1));
    const Tensor* biasTensor = conv->inputs().size() > 2 ? conv->input(2) : nullptr;

    std::vector<double> w = toDoubles(weight);
    std::vector<double> b = biasTensor ? toDoubles(*constantWeights(biasTensor))
                                       : std::vector<double>(static_cast<size_t>(channels), 0.0);
    auto operand = [&](size_t index, double fill) {
      const Tensor* tensor = norm->input(index);
      return tensor ? toDoubles(*constantWeights(tensor))
                    : std::vector<double>(static_cast<size_t>(channels), fill);
    };
    const std::vector<double> scale = operand(1, 1.0);
    const std::vector<double> shift = operand(2, 0.0);
    const std::vector<double> mean = operand(3, 0.0);
    const std::vector<double> var = operand(4, 1.0);
    const size_t perChannel = w.size() / static_cast<size_t>(channels);
    for (size_t k = 0; k < static_cast<size_t>(channels); ++k) {
      const double s = scale[k] / std::sqrt(var[k] + p.epsilon);
      for (size_t j = 0; j < perChannel; ++j) w[k * perChannel + j] *= s;
      b[k] = (b[k] - mean[k]) * s + shift[k];
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

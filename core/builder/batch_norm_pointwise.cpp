// Runs each inference batch norm that no convolution took (foldBatchNormIntoConvolution) as the
// per-channel affine map it computes, x * scale + shift, in fp32 between casts for fp16 and bf16
// tensors: pointwise layers, which the pointwise fusion then joins with the activation that
// follows and whatever else surrounds them. A pre-activation block (DenseNet's BN-ReLU before
// each convolution, pre-activation ResNets, the BN after a CSP stage's concatenation) then makes
// one pass over its tensor instead of one for the norm and one for the activation. The scale and
// shift are computed in double and stored in fp32, which is what the norm's kernel computes in.
#include <optional>
#include <string>
#include <vector>

#include "core/builder/batch_norm_affine.h"
#include "core/builder/passes.h"

namespace kiln {
namespace {

// A constant of `values` in fp32 with `channels` along the norm's axis, broadcasting over the
// dims after it (its dims are (C, 1, ..., 1), as many as the axis and the dims after it).
Tensor* perChannelConstant(Network& network, const std::vector<double>& values, size_t trailing,
                           const std::string& name) {
  Dims dims(trailing + 1, 1);
  dims[0] = static_cast<int64_t>(values.size());
  Layer* constant = network.addConstant(fromDoubles(DataType::kFloat32, dims, values));
  constant->setName(name);
  return constant->output(0);
}

}  // namespace

void convertBatchNormsToPointwise(Network& network) {
  std::vector<Layer*> norms;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kNormalization &&
        layer->paramsAs<NormalizationParams>().type == NormalizationType::kBatch) {
      norms.push_back(layer);
    }
  }
  for (Layer* norm : norms) {
    Tensor* x = norm->input(0);
    const Dims& dims = x->dims();
    const auto rank = static_cast<int64_t>(dims.size());
    int64_t axis = norm->paramsAs<NormalizationParams>().axis;
    axis = axis < 0 ? axis + rank : axis;
    if (!isFloatingPoint(x->dtype()) || axis < 0 || axis >= rank || dims[axis] == kDynamic)
      continue;
    const std::optional<BatchNormAffine> affine = batchNormAffine(*norm, dims[axis]);
    if (!affine) continue;

    const std::string name = norm->name();
    const auto trailing = static_cast<size_t>(rank - axis - 1);
    const DataType dtype = x->dtype();
    Tensor* input =
        dtype == DataType::kFloat32 ? x : network.addCast(x, DataType::kFloat32)->output(0);
    Tensor* scale = perChannelConstant(network, affine->scale, trailing, concat(name, ".scale"));
    Tensor* shift = perChannelConstant(network, affine->shift, trailing, concat(name, ".shift"));
    Layer* scaled = network.addElementwise(input, scale, ElementwiseOp::kProd);
    Layer* shifted = network.addElementwise(scaled->output(0), shift, ElementwiseOp::kSum);
    scaled->setName(concat(name, " (scale)"));
    shifted->setName(concat(name, " (shift)"));
    Tensor* y = shifted->output(0);
    if (dtype != DataType::kFloat32) {
      Layer* back = network.addCast(y, dtype);
      back->setName(concat(name, " (cast back)"));
      y = back->output(0);
    }
    const std::string outputName = norm->output(0)->name();
    network.replaceAllUsesWith(norm->output(0), y);
    network.removeLayer(norm);
    y->setName(outputName);
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

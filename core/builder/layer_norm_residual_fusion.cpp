// Fuses a residual add into the layer norm that reads it (a transformer block's
// LayerNorm(x + sublayer(x))): the norm reads both addends and never stores their sum, saving a
// write and a read of the whole activation.
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// The add that feeds `norm` and that only it reads: two addends of the sum's dims and type.
Layer* fusableAdd(const Network& network, const Layer& norm) {
  if (norm.paramsAs<NormalizationParams>().type != NormalizationType::kLayer) return nullptr;
  if (norm.inputs().size() > 3 && norm.input(3) != nullptr) return nullptr;
  const Tensor* sum = norm.input(0);
  Layer* add = sum->producer();
  if (add == nullptr || add->kind() != LayerKind::kElementwise ||
      add->paramsAs<ElementwiseParams>().op != ElementwiseOp::kSum) {
    return nullptr;
  }
  if (network.soleReader(sum) != &norm) return nullptr;
  for (const Tensor* addend : add->inputs()) {
    if (addend->dims() != sum->dims() || addend->dtype() != sum->dtype()) return nullptr;
  }
  return add;
}

}  // namespace

void fuseResidualIntoLayerNorm(Network& network) {
  std::vector<Layer*> norms;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() == LayerKind::kNormalization) norms.push_back(network.layer(i));
  }
  for (Layer* norm : norms) {
    Layer* add = fusableAdd(network, *norm);
    if (add == nullptr) continue;
    std::vector<Tensor*> inputs = {
        add->input(0), norm->inputs().size() > 1 ? norm->input(1) : nullptr,
        norm->inputs().size() > 2 ? norm->input(2) : nullptr, add->input(1)};
    Layer* fused = network.addLayer(norm->params(), inputs);
    const std::string name = concat(add->name(), " + ", norm->name());
    const std::string outputName = norm->output(0)->name();
    network.replaceAllUsesWith(norm->output(0), fused->output(0));
    network.removeLayer(norm);
    network.removeLayer(add);
    fused->setName(name);
    fused->output(0)->setName(outputName);
  }
}

}  // namespace kiln

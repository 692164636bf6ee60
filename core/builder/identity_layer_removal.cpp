// Removes layers that copy their input unchanged: a concatenation of one tensor (GPT-2's key and
// value caches, concatenated to an empty past that the converter dropped) and a cast to the
// type the tensor has. Each would be a kernel that copies a whole activation. A layer whose
// output is a network output stays: the output needs memory of its own.
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

bool copiesItsInput(const Layer& layer) {
  switch (layer.kind()) {
    case LayerKind::kConcat:
      return layer.inputs().size() == 1;
    case LayerKind::kCast:
      return layer.input(0)->dtype() == layer.output(0)->dtype();
    default:
      return false;
  }
}

}  // namespace

void removeIdentityLayers(Network& network) {
  std::vector<Layer*> identities;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (copiesItsInput(*layer) && !network.isOutput(layer->output(0)) &&
        layer->input(0)->dims() == layer->output(0)->dims()) {
      identities.push_back(layer);
    }
  }
  for (Layer* layer : identities) {
    network.replaceAllUsesWith(layer->output(0), layer->input(0));
    network.removeLayer(layer);
  }
}

}  // namespace kiln

#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {

void eliminateDeadLayers(Network& network) {
  // Live: every layer a network output depends on, found by walking producers from the outputs
  // (not by the layer order, which passes may leave with a producer after its consumer).
  std::unordered_set<const Layer*> live;
  std::vector<const Tensor*> pending;
  for (size_t i = 0; i < network.numOutputs(); ++i) pending.push_back(network.output(i));
  while (!pending.empty()) {
    const Tensor* tensor = pending.back();
    pending.pop_back();
    const Layer* producer = tensor->producer();
    if (producer == nullptr || !live.insert(producer).second) continue;
    for (const Tensor* input : producer->inputs()) {
      if (input != nullptr) pending.push_back(input);
    }
  }

  // A dead layer's consumers are all dead, so removing each dead layer after its consumers
  // never leaves a reader without its producer.
  std::vector<Layer*> dead;
  std::unordered_map<const Layer*, int> deadConsumerCount;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (live.count(layer) > 0) continue;
    dead.push_back(layer);
    int consumers = 0;
    for (const Tensor* output : layer->outputs()) {
      consumers += static_cast<int>(network.consumers(output).size());
    }
    deadConsumerCount[layer] = consumers;
  }
  std::vector<Layer*> removable;
  for (Layer* layer : dead) {
    if (deadConsumerCount[layer] == 0) removable.push_back(layer);
  }
  while (!removable.empty()) {
    Layer* layer = removable.back();
    removable.pop_back();
    std::vector<Layer*> producers;
    for (const Tensor* input : layer->inputs()) {
      if (input != nullptr && input->producer() != nullptr) producers.push_back(input->producer());
    }
    network.removeLayer(layer);
    for (Layer* producer : producers) {
      if (--deadConsumerCount[producer] == 0) removable.push_back(producer);
    }
  }
}

}  // namespace kiln

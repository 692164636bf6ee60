#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "core/engine/cpu_backend.h"

namespace kiln {
namespace {

// Folding trades build time and plan size for run time; results larger than this stay layers,
// unless they take the place of their one constant input (a weight's layout transpose).
constexpr int64_t kMaxFoldedElements = int64_t{4} << 20;

bool isConstant(const Tensor* tensor) {
  return tensor->producer() != nullptr && tensor->producer()->kind() == LayerKind::kConstant;
}

// Whether folding `layer` leaves the plan no larger: it reads one constant, which nothing else
// reads, and its output is no larger.
bool replacesItsInput(const Network& network, const Layer& layer) {
  if (layer.inputs().size() != 1 || layer.outputs().size() != 1) return false;
  const Tensor* input = layer.input(0);
  return input != nullptr && network.consumers(input).size() == 1 && !network.isOutput(input) &&
         volume(layer.output(0)->dims()) * elementSize(layer.output(0)->dtype()) <=
             volume(input->dims()) * elementSize(input->dtype());
}

bool isFoldable(const Network& network, const Layer& layer) {
  if (layer.kind() == LayerKind::kConstant) return false;
  bool anyInput = false;
  for (const Tensor* input : layer.inputs()) {
    if (input == nullptr) continue;
    if (!isConstant(input)) return false;
    anyInput = true;
  }
  if (!anyInput) return false;
  for (const Tensor* output : layer.outputs()) {
    if (!isStatic(output->dims())) return false;
    if (volume(output->dims()) > kMaxFoldedElements && !replacesItsInput(network, layer)) {
      return false;
    }
  }
  return true;
}

// Runs the layer on its constant inputs with the CPU backend; one byte buffer per output.
std::vector<std::vector<uint8_t>> evaluate(const Layer& layer) {
  std::vector<TensorView> inputViews;
  inputViews.reserve(layer.inputs().size());
  std::vector<const TensorView*> inputs;
  for (const Tensor* input : layer.inputs()) {
    if (input == nullptr) {
      inputs.push_back(nullptr);
      continue;
    }
    const Weights& weights = input->producer()->paramsAs<ConstantParams>().weights;
    inputViews.push_back({input->dtype(), input->dims(), const_cast<void*>(weights.data())});
    inputs.push_back(&inputViews.back());
  }
  std::vector<std::vector<uint8_t>> results;
  std::vector<TensorView> outputs;
  for (const Tensor* output : layer.outputs()) {
    results.emplace_back(static_cast<size_t>(volume(output->dims())) *
                         elementSize(output->dtype()));
  }
  for (size_t i = 0; i < layer.outputs().size(); ++i) {
    const Tensor* output = layer.output(i);
    outputs.push_back({output->dtype(), output->dims(), results[i].data()});
  }
  try {
    runLayerOnCpu(layer.params(), inputs, outputs);
  } catch (const Error& error) {
    throw Error(
        concat("constant folding: layer '", layer.name(), "' (", toString(layer.kind()),
               ") fails on its constant inputs, so the network cannot run: ", error.what()));
  }
  return results;
}

}  // namespace

void foldConstants(Network& network) {
  std::vector<Layer*> layers;
  for (size_t i = 0; i < network.numLayers(); ++i) layers.push_back(network.layer(i));
  // In network order, so that a chain of constant layers folds in one sweep.
  for (Layer* layer : layers) {
    if (!isFoldable(network, *layer)) continue;
    std::vector<std::vector<uint8_t>> results = evaluate(*layer);
    const std::string layerName = layer->name();
    std::vector<std::string> outputNames;
    std::vector<Layer*> constants;
    for (size_t i = 0; i < layer->outputs().size(); ++i) {
      Tensor* old = layer->output(i);
      outputNames.push_back(old->name());
      Layer* constant =
          network.addConstant(Weights::fromBytes(old->dtype(), old->dims(), std::move(results[i])));
      network.replaceAllUsesWith(old, constant->output(0));
      constants.push_back(constant);
    }
    network.removeLayer(layer);
    // The constants take the names of what they replace: output names are the engine's
    // binding names, and layer names are what errors and inspect show.
    for (size_t i = 0; i < constants.size(); ++i) {
      constants[i]->output(0)->setName(outputNames[i]);
      constants[i]->setName(constants.size() == 1 ? layerName : concat(layerName, "_", i));
    }
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

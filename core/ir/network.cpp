#include "core/ir/network.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/ir/shape_inference.h"

namespace kiln {
namespace {

// Dims that can describe the same tensor: equal where both are known.
bool compatible(const Dims& a, const Dims& b) {
  if (a.size() != b.size()) return false;
  for (size_t d = 0; d < a.size(); ++d) {
    if (a[d] >= 0 && b[d] >= 0 && a[d] != b[d]) return false;
  }
  return true;
}

// Ownership check by scanning from the newest tensor, which is where layer inputs usually are.
bool owns(const std::vector<std::unique_ptr<Tensor>>& tensors, const Tensor* tensor) {
  return std::any_of(tensors.rbegin(), tensors.rend(),
                     [&](const std::unique_ptr<Tensor>& owned) { return owned.get() == tensor; });
}

std::string layerLabel(const Layer& layer) {
  return concat("layer '", layer.name(), "' (", toString(layer.kind()), ")");
}

std::vector<TensorType> inferLayer(const LayerParams& params, const std::vector<Tensor*>& inputs,
                                   const std::string& label) {
  std::vector<TensorType> types(inputs.size());
  std::vector<const TensorType*> pointers(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) continue;
    types[i] = {inputs[i]->dtype(), inputs[i]->dims()};
    pointers[i] = &types[i];
  }
  try {
    return inferOutputTypes(params, pointers);
  } catch (const std::exception& error) {
    throw Error(concat(label, ": ", error.what()));
  }
}

}  // namespace

Network::Network() = default;
Network::~Network() = default;

std::unique_ptr<Network> Network::clone() const {
  auto copy = std::make_unique<Network>();
  std::unordered_map<const Tensor*, Tensor*> tensorCopies;
  for (const std::unique_ptr<Tensor>& tensor : tensors_) {
    auto duplicate = std::make_unique<Tensor>(*tensor);
    duplicate->producer_ = nullptr;
    tensorCopies[tensor.get()] = duplicate.get();
    copy->tensors_.push_back(std::move(duplicate));
  }
  for (const std::unique_ptr<Layer>& layer : layers_) {
    auto duplicate = std::make_unique<Layer>();
    duplicate->name_ = layer->name_;
    duplicate->params_ = layer->params_;  // Weights share their bytes.
    for (Tensor* input : layer->inputs_) {
      duplicate->inputs_.push_back(input == nullptr ? nullptr : tensorCopies.at(input));
    }
    for (Tensor* output : layer->outputs_) {
      Tensor* outputCopy = tensorCopies.at(output);
      outputCopy->producer_ = duplicate.get();
      duplicate->outputs_.push_back(outputCopy);
    }
    copy->layers_.push_back(std::move(duplicate));
  }
  for (Tensor* input : inputs_) copy->inputs_.push_back(tensorCopies.at(input));
  for (Tensor* output : outputs_) copy->outputs_.push_back(tensorCopies.at(output));
  copy->nextLayerId_ = nextLayerId_;
  return copy;
}

Tensor* Network::newTensor(DataType dtype, Dims dims, Layer* producer) {
  auto tensor = std::make_unique<Tensor>();
  tensor->dtype_ = dtype;
  tensor->dims_ = std::move(dims);
  tensor->producer_ = producer;
  tensors_.push_back(std::move(tensor));
  return tensors_.back().get();
}

Tensor* Network::addInput(const std::string& name, DataType dtype, const Dims& dims) {
  KILN_CHECK(!name.empty(), "a network input needs a name");
  for (const std::unique_ptr<Tensor>& tensor : tensors_) {
    KILN_CHECK(tensor->name() != name, "duplicate name: the network already has a tensor named '",
               name, "'; give input '", name, "' another name");
  }
  for (int64_t dim : dims) {
    KILN_CHECK(dim >= -1, "input '", name, "' has dims ", toString(dims),
               "; a dim must be >= 0, or -1 for one known only at run time");
  }
  Tensor* tensor = newTensor(dtype, dims, nullptr);
  tensor->name_ = name;
  inputs_.push_back(tensor);
  return tensor;
}

void Network::markOutput(Tensor* tensor) {
  KILN_CHECK(tensor != nullptr, "markOutput was given a null tensor");
  KILN_CHECK(owns(tensors_, tensor), "markOutput: tensor '", tensor->name(),
             "' is not a tensor of this network");
  KILN_CHECK(std::find(outputs_.begin(), outputs_.end(), tensor) == outputs_.end(), "tensor '",
             tensor->name(), "' is already marked as an output");
  outputs_.push_back(tensor);
}

Layer* Network::addLayer(LayerParams params, const std::vector<Tensor*>& inputs) {
  const std::string name = concat(toString(kindOf(params)), "_", nextLayerId_);
  const std::string label = concat("layer '", name, "' (", toString(kindOf(params)), ")");
  for (size_t i = 0; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i] == nullptr || owns(tensors_, inputs[i]), label, ": input ", i, " '",
               inputs[i]->name(), "' is not a tensor of this network");
  }
  const std::vector<TensorType> outputTypes = inferLayer(params, inputs, label);
  ++nextLayerId_;
  auto layer = std::make_unique<Layer>();
  layer->name_ = name;
  layer->params_ = std::move(params);
  layer->inputs_ = inputs;
  for (size_t o = 0; o < outputTypes.size(); ++o) {
    Tensor* output = newTensor(outputTypes[o].dtype, outputTypes[o].dims, layer.get());
    output->name_ = outputTypes.size() == 1 ? concat(name, "_output") : concat(name, "_output_", o);
    layer->outputs_.push_back(output);
  }
  layers_.push_back(std::move(layer));
  return layers_.back().get();
}

Layer* Network::addConvolution(Tensor* x, Tensor* weight, Tensor* bias,
                               const ConvolutionParams& p) {
  return addLayer(p, {x, weight, bias});
}

Layer* Network::addDeconvolution(Tensor* x, Tensor* weight, Tensor* bias,
                                 const DeconvolutionParams& p) {
  return addLayer(p, {x, weight, bias});
}

Layer* Network::addMatMul(Tensor* a, Tensor* b, const MatMulParams& p) {
  return addLayer(p, {a, b});
}

Layer* Network::addFullyConnected(Tensor* x, Tensor* weight, Tensor* bias) {
  return addLayer(FullyConnectedParams{}, {x, weight, bias});
}

Layer* Network::addElementwise(Tensor* a, Tensor* b, ElementwiseOp op) {
  return addLayer(ElementwiseParams{op}, {a, b});
}

Layer* Network::addUnary(Tensor* x, UnaryOp op) { return addLayer(UnaryParams{op}, {x}); }

Layer* Network::addActivation(Tensor* x, const ActivationParams& p) { return addLayer(p, {x}); }

Layer* Network::addPooling(Tensor* x, const PoolingParams& p) { return addLayer(p, {x}); }

Layer* Network::addReduce(Tensor* x, const ReduceParams& p) { return addLayer(p, {x}); }

Layer* Network::addSoftmax(Tensor* x, const SoftmaxParams& p) { return addLayer(p, {x}); }

Layer* Network::addNormalization(Tensor* x, Tensor* scale, Tensor* bias, Tensor* mean, Tensor* var,
                                 const NormalizationParams& p) {
  if (p.type == NormalizationType::kLayer && mean == nullptr && var == nullptr) {
    return addLayer(p, {x, scale, bias});
  }
  return addLayer(p, {x, scale, bias, mean, var});
}

Layer* Network::addShuffle(Tensor* x, const ShuffleParams& p) { return addLayer(p, {x}); }

Layer* Network::addShuffle(Tensor* x, Tensor* reference, const ShuffleParams& p) {
  return addLayer(p, {x, reference});
}

Layer* Network::addConcat(const std::vector<Tensor*>& xs, const ConcatParams& p) {
  return addLayer(p, xs);
}

Layer* Network::addSlice(Tensor* x, const SliceParams& p) { return addLayer(p, {x}); }

Layer* Network::addSlice(Tensor* x, Tensor* reference, const SliceParams& p) {
  return addLayer(p, {x, reference});
}

Layer* Network::addGather(Tensor* data, Tensor* indices, const GatherParams& p) {
  return addLayer(p, {data, indices});
}

Layer* Network::addConstant(const Weights& weights) {
  return addLayer(ConstantParams{weights}, {});
}

Layer* Network::addCast(Tensor* x, DataType toType) { return addLayer(CastParams{toType}, {x}); }

Layer* Network::addResize(Tensor* x, const ResizeParams& p) { return addLayer(p, {x}); }

Layer* Network::addCumulative(Tensor* x, const CumulativeParams& p) { return addLayer(p, {x}); }

Layer* Network::addAttention(Tensor* q, Tensor* k, Tensor* v, Tensor* mask,
                             const AttentionParams& p) {
  if (mask == nullptr) return addLayer(p, {q, k, v});
  return addLayer(p, {q, k, v, mask});
}

bool Network::isOutput(const Tensor* tensor) const {
  return std::find(outputs_.begin(), outputs_.end(), tensor) != outputs_.end();
}

Layer* Network::soleReader(const Tensor* tensor) const {
  if (isOutput(tensor)) return nullptr;
  const std::vector<Layer*> readers = consumers(tensor);
  if (readers.size() != 1) return nullptr;
  const std::vector<Tensor*>& inputs = readers[0]->inputs();
  return std::count(inputs.begin(), inputs.end(), tensor) == 1 ? readers[0] : nullptr;
}

std::vector<Layer*> Network::consumers(const Tensor* tensor) const {
  std::vector<Layer*> readers;
  for (const std::unique_ptr<Layer>& layer : layers_) {
    const std::vector<Tensor*>& inputs = layer->inputs_;
    if (std::find(inputs.begin(), inputs.end(), tensor) != inputs.end()) {
      readers.push_back(layer.get());
    }
  }
  return readers;
}

void Network::replaceAllUsesWith(Tensor* from, Tensor* to) {
  KILN_CHECK(from != nullptr && to != nullptr, "replaceAllUsesWith was given a null tensor");
  KILN_CHECK(owns(tensors_, from) && owns(tensors_, to), "replaceAllUsesWith: '", from->name(),
             "' and '", to->name(), "' must both be tensors of this network");
  if (from == to) return;
  KILN_CHECK(from->dtype() == to->dtype() && compatible(from->dims(), to->dims()),
             "replaceAllUsesWith: '", to->name(), "' (", toString(to->dtype()), " ",
             toString(to->dims()), ") cannot stand in for '", from->name(), "' (",
             toString(from->dtype()), " ", toString(from->dims()), ")");

  // Remembered so that a replacement that would make a cycle can be undone.
  std::vector<std::pair<Tensor**, Tensor*>> replaced;
  for (const std::unique_ptr<Layer>& layer : layers_) {
    for (Tensor*& input : layer->inputs_) {
      if (input != from) continue;
      replaced.emplace_back(&input, from);
      input = to;
    }
  }
  for (Tensor*& output : outputs_) {
    if (output != from) continue;
    replaced.emplace_back(&output, from);
    output = to;
  }

  // A producer added after the readers it now feeds breaks the topological order: restore it
  // with a stable topological sort that keeps the layers as close to their order as it can.
  std::unordered_map<const Layer*, size_t> position;
  for (size_t i = 0; i < layers_.size(); ++i) position[layers_[i].get()] = i;
  std::vector<std::vector<size_t>> readers(layers_.size());
  std::vector<size_t> pendingProducers(layers_.size(), 0);
  bool ordered = true;
  for (size_t i = 0; i < layers_.size(); ++i) {
    for (const Tensor* input : layers_[i]->inputs_) {
      if (input == nullptr || input->producer_ == nullptr) continue;
      const size_t producer = position.at(input->producer_);
      readers[producer].push_back(i);
      ++pendingProducers[i];
      ordered = ordered && producer < i;
    }
  }
  if (ordered) return;
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (pendingProducers[i] == 0) ready.push(i);
  }
  std::vector<size_t> order;
  while (!ready.empty()) {
    const size_t next = ready.top();
    ready.pop();
    order.push_back(next);
    for (size_t reader : readers[next]) {
      if (--pendingProducers[reader] == 0) ready.push(reader);
    }
  }
  if (order.size() != layers_.size()) {
    for (auto& [slot, original] : replaced) *slot = original;
    throw Error(concat("replaceAllUsesWith: '", to->name(), "' is computed from a reader of '",
                       from->name(), "', so replacing one with the other would make a cycle"));
  }
  std::vector<std::unique_ptr<Layer>> sorted;
  sorted.reserve(layers_.size());
  for (size_t index : order) sorted.push_back(std::move(layers_[index]));
  layers_ = std::move(sorted);
}

void Network::removeLayer(Layer* layer) {
  KILN_CHECK(layer != nullptr, "removeLayer was given a null layer");
  auto found =
      std::find_if(layers_.begin(), layers_.end(),
                   [&](const std::unique_ptr<Layer>& owned) { return owned.get() == layer; });
  KILN_CHECK(found != layers_.end(), "removeLayer: ", layerLabel(*layer),
             " is not a layer of this network");
  for (const Tensor* output : layer->outputs_) {
    const std::vector<Layer*> readers = consumers(output);
    KILN_CHECK(readers.empty(), "cannot remove ", layerLabel(*layer), ": its output '",
               output->name(), "' is read by ", layerLabel(*readers.front()),
               "; replace its uses first");
    KILN_CHECK(std::find(outputs_.begin(), outputs_.end(), output) == outputs_.end(),
               "cannot remove ", layerLabel(*layer), ": its output '", output->name(),
               "' is a network output; unmark it first");
  }
  const std::unordered_set<const Tensor*> outputs(layer->outputs_.begin(), layer->outputs_.end());
  tensors_.erase(std::remove_if(tensors_.begin(), tensors_.end(),
                                [&](const std::unique_ptr<Tensor>& tensor) {
                                  return outputs.count(tensor.get()) > 0;
                                }),
                 tensors_.end());
  layers_.erase(found);
}

void Network::unmarkOutput(Tensor* tensor) {
  auto found = std::find(outputs_.begin(), outputs_.end(), tensor);
  KILN_CHECK(found != outputs_.end(), "unmarkOutput: tensor '",
             tensor == nullptr ? "<null>" : tensor->name(), "' is not a network output");
  outputs_.erase(found);
}

void Network::validate() const {
  KILN_CHECK(!outputs_.empty(),
             "the network has no outputs; mark at least one tensor with markOutput");

  std::unordered_set<const Tensor*> owned;
  std::unordered_map<std::string, const Tensor*> tensorNames;
  for (const std::unique_ptr<Tensor>& tensor : tensors_) {
    owned.insert(tensor.get());
    KILN_CHECK(!tensor->name().empty(), "a tensor has an empty name; every tensor needs one");
    KILN_CHECK(tensorNames.emplace(tensor->name(), tensor.get()).second,
               "duplicate name: two tensors are named '", tensor->name(),
               "'; tensor names must be unique");
  }
  for (const Tensor* input : inputs_) {
    KILN_CHECK(owned.count(input) > 0, "network input '", input->name(),
               "' is not a tensor of this network");
    KILN_CHECK(input->producer_ == nullptr, "network input '", input->name(),
               "' is written by a layer");
  }

  std::unordered_map<std::string, const Layer*> layerNames;
  std::unordered_set<const Layer*> placed;
  for (const std::unique_ptr<Layer>& layer : layers_) {
    const std::string label = layerLabel(*layer);
    KILN_CHECK(!layer->name().empty(), "a ", toString(layer->kind()),
               " layer has an empty name; every layer needs one");
    KILN_CHECK(layerNames.emplace(layer->name(), layer.get()).second,
               "duplicate name: two layers are named '", layer->name(),
               "'; layer names must be unique");
    for (size_t i = 0; i < layer->inputs_.size(); ++i) {
      const Tensor* input = layer->inputs_[i];
      if (input == nullptr) continue;
      KILN_CHECK(owned.count(input) > 0, label, ": input ", i,
                 " is not a tensor of this network (was its producer removed?)");
      KILN_CHECK(input->producer_ == nullptr || placed.count(input->producer_) > 0, label,
                 ": input ", i, " '", input->name(), "' is written by ",
                 layerLabel(*input->producer_), ", which does not come before it");
    }
    const std::vector<TensorType> inferred = inferLayer(layer->params_, layer->inputs_, label);
    KILN_CHECK(inferred.size() == layer->outputs_.size(), label, ": its inputs give ",
               inferred.size(), " outputs, but it has ", layer->outputs_.size());
    for (size_t o = 0; o < inferred.size(); ++o) {
      const Tensor* output = layer->outputs_[o];
      KILN_CHECK(output->producer_ == layer.get(), label, ": output '", output->name(),
                 "' names another producer");
      KILN_CHECK(
          output->dtype() == inferred[o].dtype && compatible(output->dims(), inferred[o].dims),
          label, ": output '", output->name(), "' is declared ", toString(output->dtype()), " ",
          toString(output->dims()), ", but its inputs now give ", toString(inferred[o].dtype), " ",
          toString(inferred[o].dims));
    }
    placed.insert(layer.get());
  }

  for (const Tensor* output : outputs_) {
    KILN_CHECK(owned.count(output) > 0,
               "a network output is not a tensor of this network (was its producer removed?)");
    KILN_CHECK(output->producer_ == nullptr || placed.count(output->producer_) > 0,
               "network output '", output->name(),
               "' is not reachable: its producer is not in "
               "the network");
    KILN_CHECK(output->producer_ != nullptr ||
                   std::find(inputs_.begin(), inputs_.end(), output) != inputs_.end(),
               "network output '", output->name(),
               "' is not reachable: no layer writes it and it is not a network input");
  }
}

const Weights* constantWeights(const Tensor* tensor) {
  if (tensor == nullptr || tensor->producer() == nullptr ||
      tensor->producer()->kind() != LayerKind::kConstant) {
    return nullptr;
  }
  return &tensor->producer()->paramsAs<ConstantParams>().weights;
}

}  // namespace kiln

// Fuses connected groups of pointwise layers (elementwise, unary, activation, cast) into one
// Pointwise layer each, whose program the backends run in one pass over the output: the CUDA
// backend as one kernel generated for the program, instead of one kernel and one round trip
// through memory per layer.
//
// A group grows from a seed layer, one neighbour (a producer or a reader) at a time, while it
// stays valid:
//   - no path leaves the group and comes back into it (the fused layer would depend on itself);
//   - every tensor it produces that a layer outside reads, or that is a network output, becomes
//     an output of the fused layer, and each has the dims of every input broadcast together (a
//     kernel writes all its outputs at every element of one iteration space);
//   - at most kMaxInputs distinct inputs and kMaxOutputs outputs.
// Groups of two layers or more are replaced; the fused outputs keep the replaced tensors' names.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

constexpr size_t kMaxInputs = 16;
constexpr size_t kMaxOutputs = 8;

bool isFloat(DataType type) {
  return type == DataType::kFloat32 || type == DataType::kFloat16 || type == DataType::kBFloat16;
}

// The layers a program can hold: float arithmetic (whose integer forms may fail at run time, or
// have no kernel in generated code) and casts to a float type.
bool isFusable(const Layer& layer) {
  switch (layer.kind()) {
    case LayerKind::kElementwise: {
      const ElementwiseOp op = layer.paramsAs<ElementwiseParams>().op;
      return isFloat(layer.input(0)->dtype()) && op != ElementwiseOp::kAnd &&
             op != ElementwiseOp::kOr && op != ElementwiseOp::kXor;
    }
    case LayerKind::kUnary:
      return isFloat(layer.input(0)->dtype()) && layer.paramsAs<UnaryParams>().op != UnaryOp::kNot;
    case LayerKind::kActivation:
      return isFloat(layer.input(0)->dtype());
    case LayerKind::kCast:
      return isFloat(layer.paramsAs<CastParams>().toType);
    default:
      return false;
  }
}

// The network's readers of each tensor, and each layer's position (a topological order).
struct Graph {
  std::unordered_map<const Tensor*, std::vector<Layer*>> readers;
  std::unordered_map<const Layer*, size_t> position;

  explicit Graph(const Network& network) {
    for (size_t i = 0; i < network.numLayers(); ++i) {
      Layer* layer = network.layer(i);
      position[layer] = i;
      for (const Tensor* input : layer->inputs()) {
        if (input == nullptr) continue;
        std::vector<Layer*>& list = readers[input];
        if (std::find(list.begin(), list.end(), layer) == list.end()) list.push_back(layer);
      }
    }
  }
  const std::vector<Layer*>& readersOf(const Tensor* tensor) const {
    static const std::vector<Layer*> kNone;
    auto found = readers.find(tensor);
    return found == readers.end() ? kNone : found->second;
  }
};

using Group = std::set<Layer*>;

// A group's external inputs (in first-use order) and outputs (in layer order).
struct Boundary {
  std::vector<Tensor*> inputs;
  std::vector<Tensor*> outputs;
};

std::vector<Layer*> inOrder(const Group& group, const Graph& graph) {
  std::vector<Layer*> layers(group.begin(), group.end());
  std::sort(layers.begin(), layers.end(), [&](const Layer* a, const Layer* b) {
    return graph.position.at(a) < graph.position.at(b);
  });
  return layers;
}

Boundary boundaryOf(const Group& group, const Graph& graph, const Network& network) {
  Boundary boundary;
  for (Layer* layer : inOrder(group, graph)) {
    for (Tensor* input : layer->inputs()) {
      if (group.count(input->producer()) > 0) continue;
      if (std::find(boundary.inputs.begin(), boundary.inputs.end(), input) ==
          boundary.inputs.end()) {
        boundary.inputs.push_back(input);
      }
    }
    Tensor* output = layer->output(0);
    const std::vector<Layer*>& readers = graph.readersOf(output);
    const bool readOutside = std::any_of(readers.begin(), readers.end(),
                                         [&](Layer* reader) { return group.count(reader) == 0; });
    if (readOutside || network.isOutput(output)) boundary.outputs.push_back(output);
  }
  return boundary;
}

// Whether a path from the group through layers outside it leads back into it. Such a path only
// reaches layers placed before the group's last one, which bounds the search.
bool leavesAndReenters(const Group& group, const Graph& graph) {
  size_t last = 0;
  for (const Layer* layer : group) last = std::max(last, graph.position.at(layer));
  std::vector<const Layer*> stack;
  std::unordered_set<const Layer*> seen;
  for (const Layer* layer : group) {
    for (Layer* reader : graph.readersOf(layer->output(0))) {
      if (group.count(reader) == 0 && seen.insert(reader).second) stack.push_back(reader);
    }
  }
  while (!stack.empty()) {
    const Layer* layer = stack.back();
    stack.pop_back();
    if (graph.position.at(layer) > last) continue;
    for (const Tensor* output : layer->outputs()) {
      for (Layer* reader : graph.readersOf(output)) {
        if (group.count(reader) > 0) return true;
        if (seen.insert(reader).second) stack.push_back(reader);
      }
    }
  }
  return false;
}

// The group's inputs that `output` is computed from.
std::set<const Tensor*> sourcesOf(const Tensor* output, const Group& group) {
  std::set<const Tensor*> sources;
  std::vector<const Tensor*> stack = {output};
  std::set<const Tensor*> seen;
  while (!stack.empty()) {
    const Tensor* tensor = stack.back();
    stack.pop_back();
    if (!seen.insert(tensor).second) continue;
    if (group.count(tensor->producer()) == 0) {
      sources.insert(tensor);
      continue;
    }
    for (const Tensor* input : tensor->producer()->inputs()) stack.push_back(input);
  }
  return sources;
}

// Whether `output` has the dims of all the group's inputs broadcast together, for every shape
// the network runs: each input it is not computed from must be no larger anywhere, which
// declared dims prove when that input's dims are 1 or equal to a static dim of the output.
bool coversIterationSpace(const Tensor* output, const Group& group,
                          const std::vector<Tensor*>& inputs) {
  const std::set<const Tensor*> sources = sourcesOf(output, group);
  const Dims& out = output->dims();
  for (const Tensor* input : inputs) {
    if (sources.count(input) > 0) continue;
    const Dims& dims = input->dims();
    if (dims.size() > out.size()) return false;
    const size_t offset = out.size() - dims.size();
    for (size_t d = 0; d < dims.size(); ++d) {
      if (dims[d] != 1 && (dims[d] == kDynamic || dims[d] != out[offset + d])) return false;
    }
  }
  return true;
}

bool isValid(const Group& group, const Graph& graph, const Network& network) {
  const Boundary boundary = boundaryOf(group, graph, network);
  if (boundary.inputs.size() > kMaxInputs || boundary.outputs.empty() ||
      boundary.outputs.size() > kMaxOutputs) {
    return false;
  }
  for (const Tensor* output : boundary.outputs) {
    if (!coversIterationSpace(output, group, boundary.inputs)) return false;
  }
  return !leavesAndReenters(group, graph);
}

// Grows a group from `seed` over fusable neighbours not yet taken, keeping it valid.
Group growGroup(Layer* seed, const Graph& graph, const Network& network,
                const std::unordered_set<const Layer*>& taken) {
  Group group = {seed};
  std::set<const Layer*> refused;
  bool grew = true;
  while (grew) {
    grew = false;
    std::vector<Layer*> neighbours;
    for (Layer* layer : inOrder(group, graph)) {
      for (Tensor* input : layer->inputs()) neighbours.push_back(input->producer());
      for (Layer* reader : graph.readersOf(layer->output(0))) neighbours.push_back(reader);
    }
    for (Layer* neighbour : neighbours) {
      if (neighbour == nullptr || group.count(neighbour) > 0 || refused.count(neighbour) > 0 ||
          taken.count(neighbour) > 0 || !isFusable(*neighbour)) {
        continue;
      }
      Group larger = group;
      larger.insert(neighbour);
      if (!isValid(larger, graph, network)) {
        refused.insert(neighbour);
        continue;
      }
      group = std::move(larger);
      grew = true;
      break;
    }
  }
  return group;
}

PointwiseInstruction instructionFor(const Layer& layer, int64_t a, int64_t b) {
  PointwiseInstruction instruction;
  instruction.type = layer.output(0)->dtype();
  instruction.a = a;
  instruction.b = b;
  switch (layer.kind()) {
    case LayerKind::kElementwise:
      instruction.opcode = PointwiseOpcode::kElementwise;
      instruction.elementwise = layer.paramsAs<ElementwiseParams>().op;
      break;
    case LayerKind::kUnary:
      instruction.opcode = PointwiseOpcode::kUnary;
      instruction.unary = layer.paramsAs<UnaryParams>().op;
      break;
    case LayerKind::kActivation: {
      const auto& p = layer.paramsAs<ActivationParams>();
      instruction.opcode = PointwiseOpcode::kActivation;
      instruction.activation = p.type;
      instruction.alpha = p.alpha;
      instruction.beta = p.beta;
      break;
    }
    default:
      instruction.opcode = PointwiseOpcode::kCast;
      break;
  }
  return instruction;
}

// Replaces the group's layers by one Pointwise layer.
void replaceGroup(Network& network, const Group& group, const Graph& graph) {
  const Boundary boundary = boundaryOf(group, graph, network);
  const std::vector<Layer*> layers = inOrder(group, graph);
  PointwiseParams params;
  std::map<const Tensor*, int64_t> registers;
  auto registerOf = [&](Tensor* tensor) {
    auto found = registers.find(tensor);
    if (found != registers.end()) return found->second;
    const auto input = std::find(boundary.inputs.begin(), boundary.inputs.end(), tensor);
    PointwiseInstruction load;
    load.opcode = PointwiseOpcode::kInput;
    load.type = tensor->dtype();
    load.a = input - boundary.inputs.begin();
    params.program.push_back(load);
    return registers[tensor] = static_cast<int64_t>(params.program.size()) - 1;
  };
  std::string name;
  for (Layer* layer : layers) {
    const int64_t a = registerOf(layer->input(0));
    const int64_t b = layer->inputs().size() > 1 ? registerOf(layer->input(1)) : -1;
    params.program.push_back(instructionFor(*layer, a, b));
    registers[layer->output(0)] = static_cast<int64_t>(params.program.size()) - 1;
    name += (name.empty() ? "" : " + ") + layer->name();
  }
  for (const Tensor* output : boundary.outputs) params.outputs.push_back(registers.at(output));

  Layer* fused = network.addLayer(std::move(params), boundary.inputs);
  for (size_t o = 0; o < boundary.outputs.size(); ++o) {
    const std::string outputName = boundary.outputs[o]->name();
    network.replaceAllUsesWith(boundary.outputs[o], fused->output(o));
    fused->output(o)->setName(outputName);
  }
  for (auto layer = layers.rbegin(); layer != layers.rend(); ++layer) network.removeLayer(*layer);
  fused->setName(name);
}

}  // namespace

void fusePointwiseChains(Network& network) {
  std::unordered_set<const Layer*> taken;
  // Each replacement changes the graph, so the next group is grown on the network as it is then.
  bool replaced = true;
  while (replaced) {
    replaced = false;
    const Graph graph(network);
    for (size_t i = 0; i < network.numLayers(); ++i) {
      Layer* seed = network.layer(i);
      if (taken.count(seed) > 0 || !isFusable(*seed)) continue;
      const Group group = growGroup(seed, graph, network, taken);
      if (group.size() < 2) {
        taken.insert(seed);
        continue;
      }
      replaceGroup(network, group, graph);
      replaced = true;
      break;
    }
  }
}

}  // namespace kiln

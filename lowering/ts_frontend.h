// The TorchScript front end: lowers a scripted or traced module, imports its graph into an
// OpGraph, and rewrites the graph so that each segment becomes one kiln::execute_engine call.
#pragma once

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <unordered_map>
#include <vector>

#include "lowering/op_graph.h"
#include "lowering/partitioner.h"
#include "runtime/engine_holder.h"

namespace kiln {

// One module input: the shapes the engine must accept and the dtype.
struct InputSpec {
  std::vector<int64_t> min;
  std::vector<int64_t> opt;
  std::vector<int64_t> max;
  c10::ScalarType dtype = c10::ScalarType::Float;
  // Where the module runs while the importer profiles it: the device its engines are for.
  c10::Device device = c10::Device(c10::kCPU);
};

// Freezes (weights become constants, attributes fold, `training` branches go), inlines calls,
// removes what became dead and folds rank checks for inputs of these specs
// (lowering/fold_tensor_ranks.h). The module is put in eval mode.
torch::jit::Module lowerTorchScript(const torch::jit::Module& module,
                                    const std::vector<InputSpec>& inputs);

// What the TorchScript lowering passes use to run a graph and observe its values: a copy of
// `graph` whose one output is the tuple of `values` (values of `graph`), and an example input of
// a spec at `shape` (floats from randn, bools true, ints 1 or 2: valid indices and divisors).
std::shared_ptr<torch::jit::Graph> graphReturning(torch::jit::Graph& graph,
                                                  const std::vector<torch::jit::Value*>& values);
at::Tensor exampleInput(const InputSpec& spec, const std::vector<int64_t>& shape);

struct TorchScriptImport {
  OpGraph graph;
  std::vector<torch::jit::Node*> nodes;    // OpGraph node id -> node of the lowered graph
  std::vector<torch::jit::Value*> values;  // OpGraph value id -> value (null for synthesized)
};

// Imports the top-level nodes of a lowered module's forward graph. Shapes come from running the
// graph at the inputs' min, opt and max shapes: a dim or shape-derived int that differs between
// the runs is dynamic, with that range, and dims with the same range share a symbol.
TorchScriptImport importTorchScript(const torch::jit::Module& lowered,
                                    const std::vector<InputSpec>& inputs);

// A new module whose forward runs the partition: segments through their engines (held as
// attributes of the module), the rest as in the lowered graph.
torch::jit::Module rewriteTorchScript(const torch::jit::Module& lowered,
                                      const TorchScriptImport& import, const Partition& partition,
                                      const std::vector<c10::intrusive_ptr<EngineHolder>>& engines);

}  // namespace kiln

#include "lowering/fold_tensor_ranks.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/loop_unrolling.h>
#include <torch/csrc/jit/passes/remove_mutation.h>

#include <memory>

namespace kiln {

namespace {

using torch::jit::Node;
using torch::jit::Value;

// The ranks of the tensors `dims` read, from one run of the graph at the inputs' opt shapes; an
// empty vector when the graph does not run on example inputs.
std::vector<int64_t> observedRanks(const torch::jit::Module& lowered,
                                   const std::vector<InputSpec>& inputs,
                                   const std::vector<Node*>& dims) {
  auto graph = lowered.get_method("forward").graph();
  if (graph->inputs().size() != inputs.size() + 1) return {};
  // A copy of the graph that returns the aten::dim results.
  std::vector<Value*> results;
  for (Node* dim : dims) results.push_back(dim->output());
  std::shared_ptr<torch::jit::Graph> copy = graphReturning(*graph, results);

  // The simple executor, as in profile(): no fusers for an example run.
  torch::jit::GraphFunction function("kiln_ranks", copy, nullptr,
                                     torch::jit::ExecutorExecutionMode::SIMPLE);
  torch::jit::Stack stack{lowered._ivalue()};
  for (const InputSpec& spec : inputs) stack.emplace_back(exampleInput(spec, spec.opt));
  try {
    at::NoGradGuard noGrad;
    function.run(stack);
  } catch (const std::exception&) {
    return {};
  }
  std::vector<int64_t> ranks;
  for (const c10::IValue& rank : stack.back().toTupleRef().elements()) {
    ranks.push_back(rank.toInt());
  }
  return ranks;
}

}  // namespace

void foldTensorRanks(torch::jit::Module& lowered, const std::vector<InputSpec>& inputs) {
  auto graph = lowered.get_method("forward").graph();
  // Each round inlines at least one branch; library code nests a few levels deep.
  for (int round = 0; round < 16; ++round) {
    std::vector<Node*> dims;
    for (Node* node : graph->nodes()) {
      if (node->kind() == c10::aten::dim) dims.push_back(node);
    }
    if (dims.empty()) return;
    const std::vector<int64_t> ranks = observedRanks(lowered, inputs, dims);
    if (ranks.size() != dims.size()) return;
    for (size_t i = 0; i < dims.size(); ++i) {
      torch::jit::WithInsertPoint guard(dims[i]);
      dims[i]->output()->replaceAllUsesWith(graph->insertConstant(ranks[i]));
      dims[i]->destroy();
    }
    torch::jit::ConstantPropagation(graph);
    // Lists the library code builds in loops over the rank (`[scale for _ in range(dim)]`)
    // become constant lists: loops of a constant trip count unrolled, appends folded into the
    // list construction.
    torch::jit::UnrollConstantLoops(graph);
    torch::jit::RemoveListMutation(graph);
    torch::jit::ConstantPropagation(graph);
    torch::jit::EliminateDeadCode(graph);
  }
}

}  // namespace kiln

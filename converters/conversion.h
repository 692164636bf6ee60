// Conversion of a group of OpGraph nodes (a segment) into a Network, and the context that
// converters write into.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "converters/registry.h"
#include "core/ir/network.h"
#include "lowering/op_graph.h"

namespace kiln {

class ConversionContext {
 public:
  ConversionContext(const OpGraph& graph, Network& network);

  const OpGraph& graph() const { return graph_; }
  Network& network() { return network_; }

  // The Network tensor of a value: the one a converter already produced or the segment input;
  // constants (tensors, scalars) become Constant layers on first use. Throws Error for a value
  // that has no tensor (a non-constant int, say).
  Tensor* tensor(int valueId);
  Tensor* tensor(const NodeArgs& args, const std::string& name) {
    return tensor(args.value(name).id);
  }
  // The tensors of a Tensor[] argument.
  std::vector<Tensor*> tensorList(const NodeArgs& args, const std::string& name);
  void setTensor(int valueId, Tensor* tensor);
  // A tensor of this engine with a dim whose size is `symbol`, and that dim, to size layers by
  // at run time; nullopt when none has one. The partitioner gives every segment an input with
  // each symbol its nodes read, when the graph has one (OpGraph::symbolSource).
  std::optional<std::pair<Tensor*, int64_t>> dimSource(const std::string& symbol) const;
  // A tensor of this engine that has a dim of each size in `symbols`, and those dims in order.
  std::optional<std::pair<Tensor*, Dims>> dimsSource(const std::vector<std::string>& symbols) const;
  void setOutput(const NodeArgs& args, size_t i, Tensor* tensor);

  // Constant layers for weights and scalars.
  Tensor* constant(const at::Tensor& value);
  Tensor* scalar(double value, DataType dtype);  // rank 0
  // The layer just added gets a readable name from the node being converted.
  void nameLayer(Layer* layer, const std::string& suffix = "");
  void setCurrentNode(const OpNode* node) { currentNode_ = node; }

 private:
  const OpGraph& graph_;
  Network& network_;
  std::map<int, Tensor*> tensors_;
  const OpNode* currentNode_ = nullptr;
  int layerCount_ = 0;
};

struct ConvertedSegment {
  std::unique_ptr<Network> network;
  OptimizationProfile profile;  // from the ranges of the inputs' dynamic dims
};

// Builds the Network of a segment: its runtime inputs become network inputs (dims with a
// symbol become -1, their range goes into the profile), every node is converted in order, and
// the segment outputs are marked. Throws Error naming the node that failed.
ConvertedSegment convertSegment(const OpGraph& graph, const std::vector<int>& nodes,
                                const std::vector<int>& inputs, const std::vector<int>& outputs);

}  // namespace kiln

// The partitioner: groups the nodes Kiln can convert into the largest segments that do not
// create a cycle, and orders segments and the nodes left to PyTorch for the rewritten graph.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "lowering/op_graph.h"

namespace kiln {

class ConverterRegistry;

struct PartitionSettings {
  int64_t minBlockSize = 3;
  // Ops kept in PyTorch, by op name ("aten::relu") or qualified name ("aten::add.Tensor").
  std::set<std::string> torchExecutedOps;
  bool requireFullCompilation = false;
};

struct Segment {
  std::vector<int> nodes;    // in topological order
  std::vector<int> inputs;   // runtime values read from outside, in engine binding order
  std::vector<int> outputs;  // values read outside the segment or returned, in binding order
};

struct PartitionItem {
  enum class Kind { kTorchNode, kSegment };
  Kind kind = Kind::kTorchNode;
  int index = -1;  // node id or segment index
};

struct Partition {
  std::vector<Segment> segments;
  // The rewritten graph runs these in order. Nodes left to PyTorch whose results only feed
  // segments as build-time shape information are not listed: they are no longer needed.
  std::vector<PartitionItem> order;
  std::map<int, std::string> fallbackReasons;  // node id -> why it stays in PyTorch
};

// Throws Error when settings.requireFullCompilation is set and some node must stay in PyTorch,
// naming each such op and why.
Partition partition(const OpGraph& graph, const PartitionSettings& settings,
                    const ConverterRegistry& registry);

// Nodes that only pack or unpack values (lists, tuples, attributes): they run in PyTorch at no
// cost and are not counted as ops left to PyTorch.
bool isPlumbing(const std::string& op);

}  // namespace kiln

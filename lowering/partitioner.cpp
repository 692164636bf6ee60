#include "lowering/partitioner.h"

#include <algorithm>
#include <deque>
#include <numeric>
#include <queue>
#include <set>

#include "converters/registry.h"
#include "core/ir/types.h"

namespace kiln {

bool isPlumbing(const std::string& op) {
  static const std::set<std::string> plumbing = {"prim::ListConstruct",
                                                 "prim::ListUnpack",
                                                 "prim::TupleConstruct",
                                                 "prim::TupleUnpack",
                                                 "prim::GetAttr",
                                                 "prim::Constant",
                                                 "getitem"};
  return plumbing.count(op) > 0;
}

namespace {

// Producer nodes of the given values (lists expanded into their elements).
void addProducers(const OpGraph& graph, int valueId, std::vector<int>& producers) {
  const OpValue& v = graph.value(valueId);
  if (v.producer >= 0) producers.push_back(v.producer);
  if (v.elements) {
    for (int element : *v.elements) addProducers(graph, element, producers);
  }
}

class Partitioner {
 public:
  Partitioner(const OpGraph& graph, const PartitionSettings& settings,
              const ConverterRegistry& registry)
      : graph_(graph), settings_(settings), numNodes_(static_cast<int>(graph.numNodes())) {
    supported_.resize(numNodes_);
    for (int n = 0; n < numNodes_; ++n) supported_[n] = whyNotSupported(n, registry).empty();
  }

  Partition run() {
    computeDependencies();
    groupOf_.resize(numNodes_);
    std::iota(groupOf_.begin(), groupOf_.end(), 0);
    mergeSupportedGroups();
    if (!settings_.requireFullCompilation) demoteSmallGroups();

    Partition result;
    collectSegments(result);
    markLiveTorchNodes(result);
    collectSegmentOutputs(result);
    orderItems(result);
    if (settings_.requireFullCompilation) checkFullCompilation(result);
    return result;
  }

 private:
  std::string whyNotSupported(int n, const ConverterRegistry& registry) {
    const OpNode& node = graph_.node(n);
    std::string reason;
    if (!node.unsupportedReason.empty()) {
      reason = node.unsupportedReason;
    } else if (settings_.torchExecutedOps.count(node.op) ||
               settings_.torchExecutedOps.count(node.qualifiedName())) {
      reason = "listed in torch_executed_ops";
    } else {
      reason = registry.whyNotSupported(graph_, node);
    }
    if (!reason.empty()) reasons_[n] = reason;
    return reason;
  }

  // A supported node waits only for its runtime inputs (constants and shape ints are read at
  // build time); a node left to PyTorch waits for everything it reads.
  void computeDependencies() {
    deps_.resize(numNodes_);
    for (int n = 0; n < numNodes_; ++n) {
      std::vector<int> producers;
      if (supported_[n]) {
        for (int v : graph_.runtimeInputs(n)) addProducers(graph_, v, producers);
      } else {
        for (int v : graph_.node(n).inputs) addProducers(graph_, v, producers);
      }
      std::sort(producers.begin(), producers.end());
      producers.erase(std::unique(producers.begin(), producers.end()), producers.end());
      deps_[n] = std::move(producers);
    }
  }

  int find(int g) {
    while (groupOf_[g] != g) g = groupOf_[g] = groupOf_[groupOf_[g]];
    return g;
  }

  // Edges between groups (root ids), from producers' groups to consumers' groups.
  std::vector<std::vector<int>> groupSuccessors() {
    std::vector<std::vector<int>> successors(numNodes_);
    for (int n = 0; n < numNodes_; ++n) {
      for (int d : deps_[n]) {
        int from = find(d);
        int to = find(n);
        if (from != to) successors[from].push_back(to);
      }
    }
    return successors;
  }

  // True when `target` is reachable from `start` through some group other than the two.
  static bool reachableIndirectly(const std::vector<std::vector<int>>& successors, int start,
                                  int target) {
    std::vector<char> seen(successors.size(), 0);
    std::deque<int> queue;
    for (int s : successors[start]) {
      if (s != target && !seen[s]) {
        seen[s] = 1;
        queue.push_back(s);
      }
    }
    while (!queue.empty()) {
      int g = queue.front();
      queue.pop_front();
      for (int s : successors[g]) {
        if (s == target) return true;
        if (!seen[s]) {
          seen[s] = 1;
          queue.push_back(s);
        }
      }
    }
    return false;
  }

  // Merges producer/consumer pairs of supported groups while the group graph stays acyclic.
  void mergeSupportedGroups() {
    bool changed = true;
    while (changed) {
      changed = false;
      for (int n = 0; n < numNodes_; ++n) {
        if (!supported_[n]) continue;
        for (int d : deps_[n]) {
          if (!supported_[d]) continue;
          int a = find(d);
          int b = find(n);
          if (a == b) continue;
          auto successors = groupSuccessors();
          if (reachableIndirectly(successors, a, b) || reachableIndirectly(successors, b, a)) {
            continue;
          }
          groupOf_[std::max(a, b)] = std::min(a, b);
          changed = true;
        }
      }
    }
  }

  std::map<int, std::vector<int>> supportedGroups() {
    std::map<int, std::vector<int>> groups;
    for (int n = 0; n < numNodes_; ++n) {
      if (supported_[n]) groups[find(n)].push_back(n);
    }
    return groups;
  }

  void demoteSmallGroups() {
    for (const auto& [root, members] : supportedGroups()) {
      if (static_cast<int64_t>(members.size()) >= settings_.minBlockSize) continue;
      for (int n : members) {
        supported_[n] = false;
        reasons_[n] = concat("its segment of ", members.size(),
                             " op(s) is smaller than min_block_size=", settings_.minBlockSize);
      }
    }
    // Nodes left to PyTorch now wait for all their inputs.
    computeDependencies();
  }

  void collectSegments(Partition& result) {
    segmentOf_.assign(numNodes_, -1);
    for (const auto& [root, members] : supportedGroups()) {
      Segment segment;
      segment.nodes = members;
      int index = static_cast<int>(result.segments.size());
      for (int n : members) segmentOf_[n] = index;
      result.segments.push_back(std::move(segment));
    }
    for (size_t s = 0; s < result.segments.size(); ++s) {
      Segment& segment = result.segments[s];
      for (int n : segment.nodes) {
        for (int v : graph_.runtimeInputs(n)) {
          int producer = graph_.value(v).producer;
          bool inside = producer >= 0 && segmentOf_[producer] == static_cast<int>(s);
          if (!inside &&
              std::find(segment.inputs.begin(), segment.inputs.end(), v) == segment.inputs.end()) {
            segment.inputs.push_back(v);
          }
        }
      }
      addSymbolSources(segment);
    }
  }

  // Converters size some layers by a dim of a tensor at run time (a slice to x.size(1), an
  // expand to it): for each dynamic size a node reads that no input of its segment has as a
  // dim, the graph input that has it becomes a segment input too.
  void addSymbolSources(Segment& segment) const {
    auto hasSymbol = [&](const std::string& symbol) {
      for (int v : segment.inputs) {
        for (const SymInt& size : graph_.value(v).shape) {
          if (size.symbol == symbol) return true;
        }
      }
      return false;
    };
    for (int n : segment.nodes) {
      for (const std::string& symbol : graph_.shapeSymbols(n)) {
        if (hasSymbol(symbol)) continue;
        if (auto source = graph_.symbolSource(symbol)) segment.inputs.push_back(source->first);
      }
    }
  }

  // Nodes left to PyTorch are kept only when their results are needed at run time: by a graph
  // output, a segment's runtime input, or another kept node.
  void markLiveTorchNodes(const Partition& result) {
    live_.assign(numNodes_, 0);
    std::vector<int> work;
    auto need = [&](int valueId) {
      std::vector<int> producers;
      addProducers(graph_, valueId, producers);
      for (int p : producers) {
        if (segmentOf_[p] < 0 && !live_[p]) {
          live_[p] = 1;
          work.push_back(p);
        }
      }
    };
    for (int v : graph_.outputs()) need(v);
    for (const Segment& segment : result.segments) {
      for (int v : segment.inputs) need(v);
    }
    while (!work.empty()) {
      int n = work.back();
      work.pop_back();
      for (int v : graph_.node(n).inputs) need(v);
    }
  }

  void collectSegmentOutputs(Partition& result) {
    for (size_t s = 0; s < result.segments.size(); ++s) {
      Segment& segment = result.segments[s];
      auto usedOutside = [&](int v) {
        if (graph_.isGraphOutput(v)) return true;
        for (int user : graph_.users(v)) {
          if (segmentOf_[user] == static_cast<int>(s)) continue;
          if (segmentOf_[user] >= 0) {
            auto runtime = graph_.runtimeInputs(user);
            if (std::find(runtime.begin(), runtime.end(), v) != runtime.end()) return true;
          } else if (live_[user]) {
            return true;
          }
        }
        return false;
      };
      for (int n : segment.nodes) {
        for (int v : graph_.node(n).outputs) {
          if (!usedOutside(v)) continue;
          KILN_CHECK(graph_.value(v).isTensor(), "segment output ", graph_.value(v).name, " of ",
                     graph_.node(n).qualifiedName(), " is not a tensor");
          segment.outputs.push_back(v);
        }
      }
    }
  }

  // Topological order of the contracted graph (segments and live PyTorch nodes), preferring
  // the original node order.
  void orderItems(Partition& result) {
    const int numSegments = static_cast<int>(result.segments.size());
    auto itemOf = [&](int node) {
      return segmentOf_[node] >= 0 ? segmentOf_[node] : numSegments + node;
    };
    const int numItems = numSegments + numNodes_;
    std::vector<char> present(numItems, 0);
    std::vector<int> firstNode(numItems, numNodes_);
    std::vector<std::vector<int>> successors(numItems);
    std::vector<int> indegree(numItems, 0);
    for (int n = 0; n < numNodes_; ++n) {
      if (segmentOf_[n] < 0 && !live_[n]) continue;
      int item = itemOf(n);
      present[item] = 1;
      firstNode[item] = std::min(firstNode[item], n);
      for (int d : deps_[n]) {
        if (segmentOf_[d] < 0 && !live_[d]) continue;
        int from = itemOf(d);
        if (from == item) continue;
        successors[from].push_back(item);
        ++indegree[item];
      }
    }
    using Entry = std::pair<int, int>;  // (first node, item)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> ready;
    for (int i = 0; i < numItems; ++i) {
      if (present[i] && indegree[i] == 0) ready.push({firstNode[i], i});
    }
    while (!ready.empty()) {
      int item = ready.top().second;
      ready.pop();
      if (item < numSegments) {
        result.order.push_back({PartitionItem::Kind::kSegment, item});
      } else {
        result.order.push_back({PartitionItem::Kind::kTorchNode, item - numSegments});
        result.fallbackReasons[item - numSegments] = reasons_[item - numSegments];
      }
      for (int s : successors[item]) {
        if (--indegree[s] == 0) ready.push({firstNode[s], s});
      }
    }
    size_t expected = static_cast<size_t>(std::count(present.begin(), present.end(), 1));
    KILN_CHECK(result.order.size() == expected,
               "internal error: the partitioned graph has a cycle; please report this model");
  }

  void checkFullCompilation(const Partition& result) {
    std::string list;
    size_t count = 0;
    for (const auto& [n, reason] : result.fallbackReasons) {
      if (isPlumbing(graph_.node(n).op)) continue;
      list += concat("\n  ", graph_.node(n).qualifiedName(), ": ", reason);
      ++count;
    }
    if (count == 0) return;
    throw Error(concat("require_full_compilation=True, but ", count,
                       " op(s) would run in PyTorch:", list,
                       "\nRemove these ops from the model, or compile with "
                       "require_full_compilation=False to let them fall back."));
  }

  const OpGraph& graph_;
  const PartitionSettings& settings_;
  const int numNodes_;
  std::vector<char> supported_;
  std::map<int, std::string> reasons_;
  std::vector<std::vector<int>> deps_;
  std::vector<int> groupOf_;
  std::vector<int> segmentOf_;
  std::vector<char> live_;
};

}  // namespace

Partition partition(const OpGraph& graph, const PartitionSettings& settings,
                    const ConverterRegistry& registry) {
  return Partitioner(graph, settings, registry).run();
}

}  // namespace kiln

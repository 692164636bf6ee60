#include "lowering/op_graph.h"

#include <algorithm>
#include <sstream>

#include "core/ir/types.h"

namespace kiln {

const char* toString(ValueKind kind) {
  switch (kind) {
    case ValueKind::kTensor:
      return "Tensor";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kFloat:
      return "float";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kNone:
      return "None";
    case ValueKind::kString:
      return "str";
    case ValueKind::kIntList:
      return "int[]";
    case ValueKind::kFloatList:
      return "float[]";
    case ValueKind::kBoolList:
      return "bool[]";
    case ValueKind::kTensorList:
      return "Tensor[]";
    case ValueKind::kOther:
      return "other";
  }
  return "?";
}

int OpGraph::addValue(OpValue value) {
  value.id = static_cast<int>(values_.size());
  values_.push_back(std::move(value));
  return values_.back().id;
}

int OpGraph::addNode(OpNode node) {
  node.id = static_cast<int>(nodes_.size());
  for (int input : node.inputs) {
    KILN_CHECK(input >= 0 && static_cast<size_t>(input) < values_.size(), "node ", node.op,
               " reads value ", input, ", which does not exist");
  }
  for (int output : node.outputs) {
    OpValue& produced = value(output);
    KILN_CHECK(produced.producer < 0, "value ", produced.name, " is produced twice");
    produced.producer = node.id;
  }
  nodes_.push_back(std::move(node));
  return nodes_.back().id;
}

bool OpGraph::isStatic(int id) const {
  const OpValue& v = value(id);
  if (v.constant || v.shapeInt) return true;
  if (v.elements) {
    return std::all_of(v.elements->begin(), v.elements->end(),
                       [this](int element) { return isStatic(element); });
  }
  return false;
}

std::vector<int> OpGraph::runtimeInputs(int nodeId) const {
  std::vector<int> result;
  auto add = [&result](int id) {
    if (std::find(result.begin(), result.end(), id) == result.end()) result.push_back(id);
  };
  for (int input : node(nodeId).inputs) {
    const OpValue& v = value(input);
    if (isStatic(input)) continue;
    if (v.elements) {
      for (int element : *v.elements) {
        if (!isStatic(element)) add(element);
      }
    } else {
      add(input);
    }
  }
  return result;
}

std::vector<std::string> OpGraph::shapeSymbols(int nodeId) const {
  std::vector<std::string> result;
  auto add = [&](int id) {
    const OpValue& v = value(id);
    if (v.shapeInt && !v.shapeInt->isStatic() &&
        std::find(result.begin(), result.end(), v.shapeInt->symbol) == result.end()) {
      result.push_back(v.shapeInt->symbol);
    }
  };
  for (int input : node(nodeId).inputs) {
    add(input);
    if (value(input).elements) {
      for (int element : *value(input).elements) add(element);
    }
  }
  return result;
}

std::optional<std::pair<int, int64_t>> OpGraph::symbolSource(const std::string& symbol) const {
  for (int input : inputs_) {
    const std::vector<SymInt>& shape = value(input).shape;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (!shape[d].isStatic() && shape[d].symbol == symbol) {
        return std::make_pair(input, static_cast<int64_t>(d));
      }
    }
  }
  return std::nullopt;
}

std::vector<int> OpGraph::users(int id) const {
  std::vector<int> result;
  for (const OpNode& n : nodes_) {
    bool reads = false;
    for (int input : n.inputs) {
      const OpValue& v = value(input);
      if (input == id || (v.elements && std::find(v.elements->begin(), v.elements->end(), id) !=
                                            v.elements->end())) {
        reads = true;
      }
    }
    if (reads) result.push_back(n.id);
  }
  return result;
}

bool OpGraph::isGraphOutput(int id) const {
  return std::find(outputs_.begin(), outputs_.end(), id) != outputs_.end();
}

namespace {

std::string describeValue(const OpGraph& graph, int id) {
  const OpValue& v = graph.value(id);
  std::ostringstream out;
  out << "%" << v.id;
  if (v.isTensor()) {
    out << ":" << c10::toString(v.dtype) << "[";
    for (size_t i = 0; i < v.shape.size(); ++i) {
      const SymInt& d = v.shape[i];
      out << (i ? ", " : "");
      if (d.isStatic()) {
        out << d.opt;
      } else {
        out << d.symbol << "{" << d.min << ".." << d.max << "}";
      }
    }
    out << "]";
  } else if (v.constant) {
    out << "=" << *v.constant;
  } else if (v.shapeInt) {
    out << "=" << (v.shapeInt->isStatic() ? std::to_string(v.shapeInt->opt) : v.shapeInt->symbol);
  } else if (v.elements) {
    out << "=[";
    for (size_t i = 0; i < v.elements->size(); ++i) {
      out << (i ? ", " : "") << describeValue(graph, (*v.elements)[i]);
    }
    out << "]";
  } else {
    out << ":" << toString(v.kind);
  }
  return out.str();
}

}  // namespace

std::string OpGraph::toString() const {
  std::ostringstream out;
  out << "graph(";
  for (size_t i = 0; i < inputs_.size(); ++i) {
    out << (i ? ", " : "") << describeValue(*this, inputs_[i]);
  }
  out << "):\n";
  for (const OpNode& n : nodes_) {
    out << "  ";
    for (size_t i = 0; i < n.outputs.size(); ++i) {
      out << (i ? ", " : "") << describeValue(*this, n.outputs[i]);
    }
    out << " = " << n.qualifiedName() << "(";
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      out << (i ? ", " : "") << describeValue(*this, n.inputs[i]);
    }
    out << ")";
    if (!n.unsupportedReason.empty()) out << "  # " << n.unsupportedReason;
    out << "\n";
  }
  out << "  return (";
  for (size_t i = 0; i < outputs_.size(); ++i) out << (i ? ", " : "") << "%" << outputs_[i];
  out << ")\n";
  return out.str();
}

}  // namespace kiln

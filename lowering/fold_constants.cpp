#include "lowering/fold_constants.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/enum_tag.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>

#include <exception>
#include <numeric>
#include <string>
#include <vector>

namespace kiln {

namespace {

// Values that may share memory (views, lists and their elements) form one class; a class that
// some op writes in place has no single value at build time.
class MutatedValues {
 public:
  explicit MutatedValues(const OpGraph& graph) : parent_(graph.numValues()) {
    std::iota(parent_.begin(), parent_.end(), 0);
    for (size_t id = 0; id < graph.numValues(); ++id) {
      const OpValue& v = graph.value(static_cast<int>(id));
      if (v.elements) {
        for (int element : *v.elements) unite(v.id, element);
      }
    }
    std::vector<int> written;
    for (size_t n = 0; n < graph.numNodes(); ++n) {
      const OpNode& node = graph.node(static_cast<int>(n));
      if (!node.schema) {
        // No alias information (prim:: nodes): assume every result may alias every argument.
        for (int output : node.outputs) {
          for (int input : node.inputs) unite(output, input);
        }
        continue;
      }
      const c10::FunctionSchema& schema = *node.schema;
      for (size_t i = 0; i < node.inputs.size() && i < schema.arguments().size(); ++i) {
        if (schema.is_mutable({c10::SchemaArgType::input, i})) written.push_back(node.inputs[i]);
        for (size_t o = 0; o < node.outputs.size() && o < schema.returns().size(); ++o) {
          if (schema.may_alias({c10::SchemaArgType::output, o}, {c10::SchemaArgType::input, i})) {
            unite(node.outputs[o], node.inputs[i]);
          }
        }
      }
    }
    mutated_.assign(parent_.size(), 0);
    for (int v : written) mutated_[static_cast<size_t>(find(v))] = 1;
  }

  bool mutated(int value) { return mutated_[static_cast<size_t>(find(value))] != 0; }

 private:
  int find(int v) {
    while (parent_[static_cast<size_t>(v)] != v) {
      int& p = parent_[static_cast<size_t>(v)];
      p = parent_[static_cast<size_t>(p)];
      v = p;
    }
    return v;
  }
  void unite(int a, int b) { parent_[static_cast<size_t>(find(a))] = find(b); }

  std::vector<int> parent_;
  std::vector<char> mutated_;
};

// A constant as the CPU kernel takes it: tensors moved to the CPU, devices replaced by the CPU.
c10::IValue onCpu(const c10::IValue& value) {
  if (value.isTensor()) return value.toTensor().detach().to(at::kCPU);
  if (value.isDevice()) return c10::Device(c10::kCPU);
  if (value.isTensorList()) {
    c10::List<at::Tensor> list;
    for (const at::Tensor& t : value.toTensorVector()) list.push_back(t.detach().to(at::kCPU));
    return list;
  }
  return value;
}

// The build-time value of a scalar or tensor value, or nullopt.
std::optional<c10::IValue> knownValue(const OpGraph& graph, int id) {
  const OpValue& v = graph.value(id);
  if (v.constant) return onCpu(*v.constant);
  if (v.shapeInt && v.shapeInt->isStatic()) return c10::IValue(v.shapeInt->opt);
  return std::nullopt;
}

// A list assembled from values (`elements`) as the IValue the argument's type asks for.
std::optional<c10::IValue> knownList(const OpGraph& graph, const std::vector<int>& elements,
                                     const c10::TypePtr& elementType) {
  std::vector<c10::IValue> items;
  for (int element : elements) {
    std::optional<c10::IValue> item = knownValue(graph, element);
    if (!item) return std::nullopt;
    items.push_back(std::move(*item));
  }
  switch (elementType->kind()) {
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType: {
      c10::List<int64_t> list;
      for (const c10::IValue& item : items) {
        if (!item.isInt()) return std::nullopt;
        list.push_back(item.toInt());
      }
      return list;
    }
    case c10::TypeKind::FloatType: {
      c10::List<double> list;
      for (const c10::IValue& item : items) {
        if (!item.isDouble() && !item.isInt()) return std::nullopt;
        list.push_back(item.toScalar().toDouble());
      }
      return list;
    }
    case c10::TypeKind::BoolType: {
      c10::List<bool> list;
      for (const c10::IValue& item : items) {
        if (!item.isBool()) return std::nullopt;
        list.push_back(item.toBool());
      }
      return list;
    }
    case c10::TypeKind::TensorType: {
      c10::List<at::Tensor> list;
      for (const c10::IValue& item : items) {
        if (!item.isTensor()) return std::nullopt;
        list.push_back(item.toTensor());
      }
      return list;
    }
    case c10::TypeKind::OptionalType: {
      if (elementType->castRaw<c10::OptionalType>()->getElementType()->kind() !=
          c10::TypeKind::TensorType) {
        return std::nullopt;
      }
      c10::List<std::optional<at::Tensor>> list;
      for (const c10::IValue& item : items) {
        if (item.isNone()) {
          list.push_back(std::nullopt);
        } else if (item.isTensor()) {
          list.push_back(item.toTensor());
        } else {
          return std::nullopt;
        }
      }
      return list;
    }
    default:
      return std::nullopt;
  }
}

// The argument's build-time value, or nullopt when it is only known at run time.
std::optional<c10::IValue> knownArgument(const OpGraph& graph, int id,
                                         const c10::Argument& argument) {
  const OpValue& v = graph.value(id);
  if (!v.elements) return knownValue(graph, id);
  c10::TypePtr type = argument.type();
  if (type->kind() == c10::TypeKind::OptionalType) {
    type = type->castRaw<c10::OptionalType>()->getElementType();
  }
  const auto* list = type->castRaw<c10::ListType>();
  if (list == nullptr) return std::nullopt;
  return knownList(graph, *v.elements, list->getElementType());
}

bool returnsUninitializedMemory(const std::string& op) {
  return op.find("empty") != std::string::npos;
}

// Whether torch's result `result` can stand for OpGraph value `out` (its kind, dtype and shape
// as the front end recorded them); `bytes` grows by the tensor data it holds.
bool matches(const OpValue& out, const c10::IValue& result, int64_t& bytes) {
  switch (out.kind) {
    case ValueKind::kTensor: {
      if (!result.isTensor()) return false;
      const at::Tensor& t = result.toTensor();
      if (t.scalar_type() != out.dtype || t.dim() != static_cast<int64_t>(out.shape.size())) {
        return false;
      }
      for (int64_t d = 0; d < t.dim(); ++d) {
        const SymInt& size = out.shape[static_cast<size_t>(d)];
        if (!size.isStatic() || size.opt != t.size(d)) return false;
      }
      bytes += static_cast<int64_t>(t.nbytes());
      return true;
    }
    case ValueKind::kInt:
      return result.isInt();
    case ValueKind::kFloat:
      return result.isDouble();
    case ValueKind::kBool:
      return result.isBool();
    case ValueKind::kNone:
      return result.isNone();
    case ValueKind::kIntList:
      return result.isIntList();
    case ValueKind::kFloatList:
      return result.isDoubleList();
    case ValueKind::kBoolList:
      return result.isBoolList();
    case ValueKind::kTensorList:
      if (!result.isTensorList()) return false;
      for (const at::Tensor& t : result.toTensorVector()) {
        bytes += static_cast<int64_t>(t.nbytes());
      }
      return true;
    default:
      return false;
  }
}

// A folded result owns its memory: no view of an input constant, no autograd history.
c10::IValue owned(const c10::IValue& result) {
  if (result.isTensor()) return result.toTensor().detach().clone(at::MemoryFormat::Contiguous);
  if (result.isTensorList()) {
    c10::List<at::Tensor> list;
    for (const at::Tensor& t : result.toTensorVector()) {
      list.push_back(t.detach().clone(at::MemoryFormat::Contiguous));
    }
    return list;
  }
  return result;
}

class Folder {
 public:
  Folder(OpGraph& graph, int64_t maxFoldedBytes)
      : graph_(graph), mutated_(graph), maxFoldedBytes_(maxFoldedBytes) {}

  int run() {
    int folded = 0;
    for (size_t n = 0; n < graph_.numNodes(); ++n) {
      if (fold(graph_.node(static_cast<int>(n)))) ++folded;
    }
    return folded;
  }

 private:
  bool readsMutated(int id) {
    const OpValue& v = graph_.value(id);
    if (mutated_.mutated(id)) return true;
    if (v.elements) {
      for (int element : *v.elements) {
        if (mutated_.mutated(element)) return true;
      }
    }
    return false;
  }

  std::optional<c10::OperatorHandle> foldableOp(const OpNode& node) {
    if (!node.schema || !node.unsupportedReason.empty() || node.folded) return std::nullopt;
    if (node.op.rfind("aten::", 0) != 0 || returnsUninitializedMemory(node.op)) {
      return std::nullopt;
    }
    if (node.schema->is_mutable()) return std::nullopt;
    if (node.outputs.empty() || node.inputs.size() != node.schema->arguments().size() ||
        node.outputs.size() != node.schema->returns().size()) {
      return std::nullopt;
    }
    std::optional<c10::OperatorHandle> op =
        c10::Dispatcher::singleton().findSchema({node.op, node.overload});
    if (!op || op->hasTag(at::Tag::nondeterministic_seeded)) return std::nullopt;
    return op;
  }

  bool fold(OpNode& node) {
    std::optional<c10::OperatorHandle> op = foldableOp(node);
    if (!op) return false;
    bool allKnown = true;
    for (int output : node.outputs) {
      if (mutated_.mutated(output)) return false;
      allKnown = allKnown && graph_.isStatic(output);
    }
    if (allKnown) return false;

    torch::jit::Stack stack;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (readsMutated(node.inputs[i])) return false;
      std::optional<c10::IValue> value =
          knownArgument(graph_, node.inputs[i], node.schema->arguments()[i]);
      if (!value) return false;
      stack.push_back(std::move(*value));
    }
    try {
      at::NoGradGuard noGrad;
      op->callBoxed(stack);
    } catch (const std::exception&) {
      // Torch refuses these arguments: the op stays for run time, where it raises the same.
      return false;
    }
    if (stack.size() != node.outputs.size()) return false;
    int64_t bytes = 0;
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      if (!matches(graph_.value(node.outputs[o]), stack[o], bytes)) return false;
    }
    if (bytes > maxFoldedBytes_) return false;
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      graph_.value(node.outputs[o]).constant = owned(stack[o]);
    }
    node.folded = true;
    return true;
  }

  OpGraph& graph_;
  MutatedValues mutated_;
  const int64_t maxFoldedBytes_;
};

}  // namespace

int foldConstants(OpGraph& graph, int64_t maxFoldedBytes) {
  return Folder(graph, maxFoldedBytes).run();
}

}  // namespace kiln

// OpGraph: the one aten-level graph that both front ends (TorchScript, FX) import into. Lowering
// passes, the partitioner and the converters see only this.
//
// Nodes are aten ops with their schema; values are tensors (dtype and shape, each dim with its
// range over the optimization profile), constants (weights, scalars, constant lists), ints
// derived from input shapes ("shape ints": their range and a symbol), and lists built from
// other values. Constants and shape ints are known at build time, so a converter reads them
// directly and they never become engine inputs.
#pragma once

#include <ATen/core/function_schema.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

// A size known over a profile: its smallest, typical and largest value. Sizes with the same
// non-empty symbol are equal for every input shape; an empty symbol means min == opt == max.
struct SymInt {
  int64_t min = 0;
  int64_t opt = 0;
  int64_t max = 0;
  std::string symbol;
  bool isStatic() const { return symbol.empty(); }
  static SymInt of(int64_t size) { return {size, size, size, {}}; }
};

enum class ValueKind : uint8_t {
  kTensor,
  kInt,
  kFloat,
  kBool,
  kNone,
  kString,
  kIntList,
  kFloatList,
  kBoolList,
  kTensorList,
  kOther,  // devices, dtypes, layouts, objects: usable only as constants
};
const char* toString(ValueKind kind);

struct OpValue {
  int id = -1;
  ValueKind kind = ValueKind::kOther;
  std::string name;   // the front end's name, for messages
  int producer = -1;  // node id; -1 for graph inputs, constants and lists
  // kTensor: element type and shape.
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::vector<SymInt> shape;
  // Known at build time: weights, scalars, constant lists, None.
  std::optional<c10::IValue> constant;
  // A kInt computed from input shapes only.
  std::optional<SymInt> shapeInt;
  // A list assembled from other values (TorchScript's prim::ListConstruct, a Python list in FX).
  std::optional<std::vector<int>> elements;

  bool isTensor() const { return kind == ValueKind::kTensor; }
  bool isNone() const { return kind == ValueKind::kNone; }
};

struct OpNode {
  int id = -1;
  std::string op;        // "aten::convolution"
  std::string overload;  // "" for the default overload
  // Null for nodes that have no schema (prim:: nodes, control flow): never converted.
  std::shared_ptr<const c10::FunctionSchema> schema;
  std::vector<int> inputs;  // value ids in schema order, defaults filled in
  std::vector<int> outputs;
  // Why the front end could not import this node faithfully ("" when it could); such a node
  // is always left to PyTorch.
  std::string unsupportedReason;

  // "aten::convolution" or "aten::add.Tensor".
  std::string qualifiedName() const { return overload.empty() ? op : op + "." + overload; }
};

class OpGraph {
 public:
  int addValue(OpValue value);  // assigns and returns the id
  int addNode(OpNode node);     // assigns the id, sets the producer of its outputs
  void addInput(int value) { inputs_.push_back(value); }
  void addOutput(int value) { outputs_.push_back(value); }

  const OpValue& value(int id) const { return values_.at(static_cast<size_t>(id)); }
  OpValue& value(int id) { return values_.at(static_cast<size_t>(id)); }
  const OpNode& node(int id) const { return nodes_.at(static_cast<size_t>(id)); }
  OpNode& node(int id) { return nodes_.at(static_cast<size_t>(id)); }
  size_t numValues() const { return values_.size(); }
  size_t numNodes() const { return nodes_.size(); }  // node ids are in topological order
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  // The device the graph's engines run on, where their inputs and outputs live. Capability
  // checks compare device arguments (`x.to(device=...)`) with it.
  const c10::Device& device() const { return device_; }
  void setDevice(c10::Device device) { device_ = device; }

  // True for a value known at build time: a constant, a shape int, or a list of such.
  bool isStatic(int value) const;
  // The values a node needs at run time: its inputs that are not static, with lists expanded
  // into their non-static elements.
  std::vector<int> runtimeInputs(int node) const;
  // The symbols of the dynamic shape ints a node reads, directly or in a list.
  std::vector<std::string> shapeSymbols(int node) const;
  // A graph input tensor with a dim whose size is `symbol`, and that dim; nullopt when no input
  // has one (an expression of several symbols, or a size computed from data).
  std::optional<std::pair<int, int64_t>> symbolSource(const std::string& symbol) const;
  // Nodes reading a value, directly or through a list.
  std::vector<int> users(int value) const;
  bool isGraphOutput(int value) const;

  std::string toString() const;

 private:
  std::vector<OpValue> values_;
  std::vector<OpNode> nodes_;
  std::vector<int> inputs_;
  std::vector<int> outputs_;
  c10::Device device_ = c10::Device(c10::kCPU);
};

}  // namespace kiln

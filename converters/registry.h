// The converter registry: an aten op's exact schema -> a converter that emits Network layers,
// and a capability check that says whether this particular node (dtypes, constant arguments,
// ranks) can be converted faithfully.
//
// Each op family lives in one file, converters/<family>.cpp, and exposes one function
// `registerXxxConverters(ConverterRegistry&)`; converters/all_converters.cpp calls them all.
// Inside a family file each op is one `registry.add({schema, convert, check})` entry.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/ir/network.h"
#include "lowering/op_graph.h"

namespace kiln {

class ConversionContext;

// Read access to a node's arguments by their schema names, for capability checks and
// converters alike.
class NodeArgs {
 public:
  NodeArgs(const OpGraph& graph, const OpNode& node);
  const OpGraph& graph() const { return graph_; }
  const OpNode& node() const { return node_; }

  const OpValue& value(const std::string& name) const;  // throws Error for an unknown name
  const OpValue& output(size_t i = 0) const;
  bool has(const std::string& name) const;  // the schema has an argument of this name
  bool isNone(const std::string& name) const;
  bool isConstant(const std::string& name) const;
  // Constant arguments (throw Error if the argument is not a build-time constant).
  int64_t getInt(const std::string& name) const;
  double getDouble(const std::string& name) const;  // int or float scalars
  bool getBool(const std::string& name) const;
  std::vector<int64_t> getIntList(const std::string& name) const;
  std::optional<int64_t> getOptionalInt(const std::string& name) const;
  std::optional<double> getOptionalDouble(const std::string& name) const;
  // A list of ints where each element is a constant or a shape int.
  std::vector<SymInt> getSymIntList(const std::string& name) const;
  // Tensor argument's rank and dtype (tensor values or tensor constants).
  int64_t rank(const std::string& name) const;
  c10::ScalarType dtype(const std::string& name) const;
  // True when some node reads output i or it is a graph output.
  bool outputUsed(size_t i) const;

 private:
  int valueId(const std::string& name) const;
  const OpGraph& graph_;
  const OpNode& node_;
};

// A converter: reads the node's arguments and sets its outputs' Network tensors.
using ConvertFn = std::function<void(ConversionContext& ctx, const NodeArgs& args)>;
// A capability check: "" when the node converts faithfully, else the reason it cannot.
using CheckFn = std::function<std::string(const NodeArgs& args)>;

struct ConverterEntry {
  std::string schema;  // exactly as torch prints it: "aten::relu(Tensor self) -> Tensor"
  ConvertFn convert;
  CheckFn check;  // may be empty: then the generic checks alone decide
  // Scalar arguments that may be sizes known only at run time (arange's end): the generic
  // checks let them through and the converter's own check decides.
  std::vector<std::string> runTimeSizeScalars = {};
};

class ConverterRegistry {
 public:
  // The registry with every Kiln converter registered.
  static const ConverterRegistry& global();

  void add(ConverterEntry entry);  // throws Error on a duplicate or unparsable schema
  // Null when no converter is registered for this op and overload.
  const ConverterEntry* find(const std::string& qualifiedName) const;
  // "" when the node can be converted, else why not (no converter; an argument is not a
  // build-time constant; an unsupported dtype; the converter's own check).
  std::string whyNotSupported(const OpGraph& graph, const OpNode& node) const;
  // Every registered schema, sorted.
  std::vector<std::string> schemas() const;

 private:
  std::map<std::string, ConverterEntry> entries_;  // key: qualified name "aten::add.Tensor"
};

// Network dtype of a torch scalar type; throws Error for types Kiln does not support.
DataType toDataType(c10::ScalarType type);
bool isSupportedScalarType(c10::ScalarType type);

}  // namespace kiln

#include "converters/registry.h"

#include <torch/csrc/jit/frontend/function_schema_parser.h>

#include <algorithm>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {

// ---- NodeArgs ----------------------------------------------------------------------------------

namespace {

// A value known exactly at build time: a constant or a shape int whose range is one size.
bool isKnownInt(const OpValue& v) {
  if (v.constant) return v.constant->isInt() || v.constant->isBool();
  return v.shapeInt && v.shapeInt->isStatic();
}

int64_t knownInt(const OpValue& v) {
  if (v.constant && v.constant->isBool()) return v.constant->toBool() ? 1 : 0;
  if (v.constant) return v.constant->toInt();
  return v.shapeInt->opt;
}

bool isKnown(const OpGraph& graph, const OpValue& v) {
  if (v.constant) return true;
  if (v.shapeInt) return v.shapeInt->isStatic();
  if (v.elements) {
    return std::all_of(v.elements->begin(), v.elements->end(),
                       [&graph](int element) { return isKnown(graph, graph.value(element)); });
  }
  return false;
}

}  // namespace

NodeArgs::NodeArgs(const OpGraph& graph, const OpNode& node) : graph_(graph), node_(node) {
  KILN_CHECK(node.schema != nullptr, "node ", node.op, " has no schema, so it cannot be converted");
}

int NodeArgs::valueId(const std::string& name) const {
  const auto& arguments = node_.schema->arguments();
  for (size_t i = 0; i < arguments.size() && i < node_.inputs.size(); ++i) {
    if (arguments[i].name() == name) return node_.inputs[i];
  }
  throw Error(concat(node_.qualifiedName(), " has no argument named '", name,
                     "'; the converter does not match the op's schema ", toString(*node_.schema)));
}

const OpValue& NodeArgs::value(const std::string& name) const {
  return graph_.value(valueId(name));
}

const OpValue& NodeArgs::output(size_t i) const {
  KILN_CHECK(i < node_.outputs.size(), node_.qualifiedName(), " has ", node_.outputs.size(),
             " output(s); output ", i, " does not exist");
  return graph_.value(node_.outputs[i]);
}

bool NodeArgs::has(const std::string& name) const {
  const auto& arguments = node_.schema->arguments();
  return std::any_of(arguments.begin(), arguments.end(),
                     [&name](const c10::Argument& a) { return a.name() == name; });
}

bool NodeArgs::isNone(const std::string& name) const {
  const OpValue& v = value(name);
  return v.isNone() || (v.constant && v.constant->isNone());
}

bool NodeArgs::isConstant(const std::string& name) const { return isKnown(graph_, value(name)); }

int64_t NodeArgs::getInt(const std::string& name) const {
  const OpValue& v = value(name);
  KILN_CHECK(isKnownInt(v), node_.qualifiedName(), ": argument '", name,
             "' must be an int known at build time, got ",
             v.shapeInt ? "a size that depends on the input shapes" : toString(v.kind));
  return knownInt(v);
}

double NodeArgs::getDouble(const std::string& name) const {
  const OpValue& v = value(name);
  if (v.constant && v.constant->isDouble()) return v.constant->toDouble();
  KILN_CHECK(isKnownInt(v), node_.qualifiedName(), ": argument '", name,
             "' must be a number known at build time, got ", toString(v.kind));
  return static_cast<double>(knownInt(v));
}

bool NodeArgs::getBool(const std::string& name) const {
  const OpValue& v = value(name);
  KILN_CHECK(v.constant && (v.constant->isBool() || v.constant->isInt()), node_.qualifiedName(),
             ": argument '", name, "' must be a bool known at build time, got ", toString(v.kind));
  return v.constant->isBool() ? v.constant->toBool() : v.constant->toInt() != 0;
}

std::vector<int64_t> NodeArgs::getIntList(const std::string& name) const {
  const OpValue& v = value(name);
  if (v.constant && v.constant->isIntList()) return v.constant->toIntVector();
  // A single int where an int[N] is expected: torch repeats it, the converter decides how often.
  if (isKnownInt(v)) return {knownInt(v)};
  if (v.elements) {
    std::vector<int64_t> result;
    for (int element : *v.elements) {
      const OpValue& e = graph_.value(element);
      KILN_CHECK(isKnownInt(e), node_.qualifiedName(), ": argument '", name,
                 "' must be a list of ints known at build time, but element ", result.size(),
                 " depends on the input shapes or data");
      result.push_back(knownInt(e));
    }
    return result;
  }
  throw Error(concat(node_.qualifiedName(), ": argument '", name,
                     "' must be a list of ints known at build time, got ", toString(v.kind)));
}

std::optional<int64_t> NodeArgs::getOptionalInt(const std::string& name) const {
  if (isNone(name)) return std::nullopt;
  return getInt(name);
}

std::optional<double> NodeArgs::getOptionalDouble(const std::string& name) const {
  if (isNone(name)) return std::nullopt;
  return getDouble(name);
}

std::vector<SymInt> NodeArgs::getSymIntList(const std::string& name) const {
  const OpValue& v = value(name);
  std::vector<SymInt> result;
  if (v.constant && v.constant->isIntList()) {
    for (int64_t size : v.constant->toIntVector()) result.push_back(SymInt::of(size));
    return result;
  }
  KILN_CHECK(v.elements.has_value(), node_.qualifiedName(), ": argument '", name,
             "' must be a list of sizes known at build time, got ", toString(v.kind));
  for (int element : *v.elements) {
    const OpValue& e = graph_.value(element);
    if (e.shapeInt) {
      result.push_back(*e.shapeInt);
    } else {
      KILN_CHECK(isKnownInt(e), node_.qualifiedName(), ": argument '", name, "' element ",
                 result.size(), " is neither a constant nor a size of the inputs");
      result.push_back(SymInt::of(knownInt(e)));
    }
  }
  return result;
}

int64_t NodeArgs::rank(const std::string& name) const {
  const OpValue& v = value(name);
  KILN_CHECK(v.isTensor(), node_.qualifiedName(), ": argument '", name, "' is not a tensor");
  return static_cast<int64_t>(v.shape.size());
}

c10::ScalarType NodeArgs::dtype(const std::string& name) const {
  const OpValue& v = value(name);
  KILN_CHECK(v.isTensor(), node_.qualifiedName(), ": argument '", name, "' is not a tensor");
  return v.dtype;
}

bool NodeArgs::outputUsed(size_t i) const {
  int id = output(i).id;
  return graph_.isGraphOutput(id) || !graph_.users(id).empty();
}

// ---- dtypes ------------------------------------------------------------------------------------

bool isSupportedScalarType(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float:
    case c10::ScalarType::Half:
    case c10::ScalarType::BFloat16:
    case c10::ScalarType::Char:
    case c10::ScalarType::Int:
    case c10::ScalarType::Long:
    case c10::ScalarType::Bool:
    case c10::ScalarType::Byte:
      return true;
    default:
      return false;
  }
}

DataType toDataType(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float:
      return DataType::kFloat32;
    case c10::ScalarType::Half:
      return DataType::kFloat16;
    case c10::ScalarType::BFloat16:
      return DataType::kBFloat16;
    case c10::ScalarType::Char:
      return DataType::kInt8;
    case c10::ScalarType::Int:
      return DataType::kInt32;
    case c10::ScalarType::Long:
      return DataType::kInt64;
    case c10::ScalarType::Bool:
      return DataType::kBool;
    case c10::ScalarType::Byte:
      return DataType::kUInt8;
    default:
      throw Error(concat("dtype ", c10::toString(type),
                         " is not supported by Kiln (float32, float16, bfloat16, int8, int32, "
                         "int64, bool and uint8 are); cast the model or its inputs"));
  }
}

// ---- ConverterRegistry -------------------------------------------------------------------------

namespace {

std::string qualifiedNameOf(const c10::FunctionSchema& schema) {
  return schema.overload_name().empty() ? schema.name()
                                        : schema.name() + "." + schema.overload_name();
}

c10::FunctionSchema parse(const std::string& schema) {
  try {
    return torch::jit::parseSchema(schema);
  } catch (const std::exception& e) {
    throw Error(concat("converter schema '", schema, "' does not parse: ", e.what()));
  }
}

// SymInt, SymInt?, SymInt[] and SymInt[]? arguments may hold sizes that depend on the input
// shapes; other non-tensor arguments must be known exactly at build time.
bool acceptsSymbolicSizes(const c10::Argument& argument) {
  c10::TypePtr type = argument.real_type();
  if (auto optional = type->cast<c10::OptionalType>()) type = optional->getElementType();
  if (auto list = type->cast<c10::ListType>()) type = list->getElementType();
  return type->kind() == c10::TypeKind::SymIntType;
}

bool isTensorArgument(const c10::Argument& argument) {
  c10::TypePtr type = argument.type();
  if (auto optional = type->cast<c10::OptionalType>()) type = optional->getElementType();
  return type->kind() == c10::TypeKind::TensorType;
}

bool isTensorListArgument(const c10::Argument& argument) {
  c10::TypePtr type = argument.type();
  if (auto optional = type->cast<c10::OptionalType>()) type = optional->getElementType();
  auto list = type->cast<c10::ListType>();
  if (!list) return false;
  c10::TypePtr element = list->getElementType();
  if (auto optional = element->cast<c10::OptionalType>()) element = optional->getElementType();
  return element->kind() == c10::TypeKind::TensorType;
}

std::string dtypeReason(const std::string& what, c10::ScalarType type) {
  return concat(what, " has dtype ", c10::toString(type), ", which Kiln does not support");
}

// Why a Tensor argument's value cannot be read by a converter; "" when it can.
std::string tensorValueReason(const OpValue& v, const std::string& what) {
  if (isWrappedScalarConstant(v)) return "";
  if (v.isTensor()) return isSupportedScalarType(v.dtype) ? "" : dtypeReason(what, v.dtype);
  if (v.constant && (v.constant->isInt() || v.constant->isDouble() || v.constant->isBool())) {
    return "";  // a Python scalar where torch accepts a tensor (wrapped number)
  }
  if (v.shapeInt && v.shapeInt->isStatic()) return "";
  if (v.shapeInt) {
    return concat(what, " is a size that depends on the input shapes; Kiln engines do not ",
                  "take sizes as tensors");
  }
  return concat(what, " is not a tensor Kiln can read (", toString(v.kind), ")");
}

std::string argumentReason(const OpGraph& graph, const c10::Argument& argument, const OpValue& v,
                           const ConverterEntry& entry) {
  const std::string what = concat("argument '", argument.name(), "'");
  if (v.isNone() || (v.constant && v.constant->isNone())) return "";
  const auto& sizes = entry.runTimeSizeScalars;
  if (v.shapeInt && std::find(sizes.begin(), sizes.end(), argument.name()) != sizes.end()) {
    return "";
  }
  if (isTensorArgument(argument)) return tensorValueReason(v, what);
  if (isTensorListArgument(argument)) {
    if (v.constant && v.constant->isTensorList()) {
      for (const at::Tensor& t : v.constant->toTensorVector()) {
        if (!isSupportedScalarType(t.scalar_type())) return dtypeReason(what, t.scalar_type());
      }
      return "";
    }
    if (!v.elements) return concat(what, " is not a list of tensors Kiln can read");
    for (size_t i = 0; i < v.elements->size(); ++i) {
      std::string reason =
          tensorValueReason(graph.value((*v.elements)[i]), concat(what, " element ", i));
      if (!reason.empty()) return reason;
    }
    return "";
  }
  if (acceptsSymbolicSizes(argument)) {
    if (graph.isStatic(v.id)) return "";
    return concat(what, " depends on tensor data, not only on input shapes");
  }
  if (isKnown(graph, v)) return "";
  if (graph.isStatic(v.id)) {
    return concat(what, " depends on the input shapes, but the converter needs it constant");
  }
  return concat(what, " is not a build-time constant");
}

std::string whyNotSupportedUnchecked(const ConverterEntry& entry, const OpGraph& graph,
                                     const OpNode& node) {
  const c10::FunctionSchema registered = parse(entry.schema);
  const auto& arguments = node.schema->arguments();
  const auto& expected = registered.arguments();
  bool sameArguments = arguments.size() == expected.size();
  for (size_t i = 0; sameArguments && i < arguments.size(); ++i) {
    sameArguments = arguments[i].name() == expected[i].name();
  }
  if (!sameArguments) {
    return concat("the op's schema ", toString(*node.schema),
                  " differs from the converter's schema ", entry.schema);
  }
  if (node.inputs.size() != arguments.size()) {
    return concat("the node has ", node.inputs.size(), " inputs, its schema ", arguments.size());
  }
  for (size_t i = 0; i < arguments.size(); ++i) {
    std::string reason = argumentReason(graph, arguments[i], graph.value(node.inputs[i]), entry);
    if (!reason.empty()) return reason;
  }
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    const OpValue& out = graph.value(node.outputs[i]);
    if (out.isTensor()) {
      if (!isSupportedScalarType(out.dtype)) return dtypeReason(concat("output ", i), out.dtype);
    } else if (!out.constant) {
      return concat("output ", i, " is a ", toString(out.kind),
                    "; Kiln engines produce tensors whose shape the front end recorded");
    }
  }
  if (!entry.check) return "";
  return entry.check(NodeArgs(graph, node));
}

}  // namespace

const ConverterRegistry& ConverterRegistry::global() {
  static const ConverterRegistry registry = [] {
    ConverterRegistry r;
    registerAllConverters(r);
    return r;
  }();
  return registry;
}

void ConverterRegistry::add(ConverterEntry entry) {
  KILN_CHECK(entry.convert != nullptr, "converter for '", entry.schema,
             "' has no convert function");
  const std::string key = qualifiedNameOf(parse(entry.schema));
  KILN_CHECK(entries_.count(key) == 0, "a converter for ", key, " is registered twice: '",
             entries_.count(key) ? entries_.at(key).schema : "", "' and '", entry.schema, "'");
  entries_.emplace(key, std::move(entry));
}

const ConverterEntry* ConverterRegistry::find(const std::string& qualifiedName) const {
  auto it = entries_.find(qualifiedName);
  return it == entries_.end() ? nullptr : &it->second;
}

std::string ConverterRegistry::whyNotSupported(const OpGraph& graph, const OpNode& node) const {
  if (!node.schema) return concat(node.op, " has no schema");
  const ConverterEntry* entry = find(node.qualifiedName());
  if (!entry) return concat("no converter for ", node.qualifiedName());
  try {
    return whyNotSupportedUnchecked(*entry, graph, node);
  } catch (const std::exception& e) {
    // A check that could not read an argument means the node cannot be converted.
    return e.what();
  }
}

std::vector<std::string> ConverterRegistry::schemas() const {
  std::vector<std::string> result;
  for (const auto& [name, entry] : entries_) result.push_back(entry.schema);
  std::sort(result.begin(), result.end());
  return result;
}

}  // namespace kiln

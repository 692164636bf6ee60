#include "converters/conversion.h"

#include <ATen/ATen.h>

#include <set>

#include "converters/helpers.h"

namespace kiln {

namespace {

c10::ScalarType toScalarType(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return c10::ScalarType::Float;
    case DataType::kFloat16:
      return c10::ScalarType::Half;
    case DataType::kBFloat16:
      return c10::ScalarType::BFloat16;
    case DataType::kInt8:
      return c10::ScalarType::Char;
    case DataType::kInt32:
      return c10::ScalarType::Int;
    case DataType::kInt64:
      return c10::ScalarType::Long;
    case DataType::kBool:
      return c10::ScalarType::Bool;
    case DataType::kUInt8:
      return c10::ScalarType::Byte;
  }
  throw Error(concat("unknown DataType ", static_cast<int>(type)));
}

// "aten::add_.Tensor" -> "add_": the readable part of a layer name.
std::string shortOpName(const OpNode& node) {
  const std::string& op = node.op;
  size_t colon = op.rfind("::");
  return colon == std::string::npos ? op : op.substr(colon + 2);
}

}  // namespace

ConversionContext::ConversionContext(const OpGraph& graph, Network& network)
    : graph_(graph), network_(network) {}

std::optional<std::pair<Tensor*, int64_t>> ConversionContext::dimSource(
    const std::string& symbol) const {
  for (const auto& [valueId, tensor] : tensors_) {
    const std::vector<SymInt>& shape = graph_.value(valueId).shape;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (!shape[d].isStatic() && shape[d].symbol == symbol) {
        return std::make_pair(tensor, static_cast<int64_t>(d));
      }
    }
  }
  return std::nullopt;
}

std::optional<std::pair<Tensor*, Dims>> ConversionContext::dimsSource(
    const std::vector<std::string>& symbols) const {
  for (const auto& [valueId, tensor] : tensors_) {
    const std::vector<SymInt>& shape = graph_.value(valueId).shape;
    Dims dims;
    for (const std::string& symbol : symbols) {
      for (size_t d = 0; d < shape.size(); ++d) {
        if (!shape[d].isStatic() && shape[d].symbol == symbol) {
          dims.push_back(static_cast<int64_t>(d));
          break;
        }
      }
    }
    if (dims.size() == symbols.size()) return std::make_pair(tensor, dims);
  }
  return std::nullopt;
}

Tensor* ConversionContext::tensor(int valueId) {
  auto it = tensors_.find(valueId);
  if (it != tensors_.end()) return it->second;
  const OpValue& v = graph_.value(valueId);
  Tensor* result = nullptr;
  if (isWrappedScalarConstant(v)) {
    result = scalar(v.constant->toTensor().item<double>(), DataType::kFloat32);
  } else if (v.constant && v.constant->isTensor()) {
    result = constant(v.constant->toTensor());
  } else if (v.constant && v.constant->isDouble()) {
    // Python floats act as float32 (torch's default dtype) in tensor positions.
    result = scalar(v.constant->toDouble(), DataType::kFloat32);
  } else if (v.constant && v.constant->isBool()) {
    result = scalar(v.constant->toBool() ? 1.0 : 0.0, DataType::kBool);
  } else if (v.constant && v.constant->isInt()) {
    result = constant(at::scalar_tensor(v.constant->toInt(), at::kLong));
  } else if (v.shapeInt && v.shapeInt->isStatic()) {
    result = constant(at::scalar_tensor(v.shapeInt->opt, at::kLong));
  } else {
    throw Error(concat("value %", v.id, " ('", v.name, "', ", toString(v.kind),
                       ") has no tensor in this engine: it is neither computed by the segment, a "
                       "segment input, nor a constant"));
  }
  tensors_[valueId] = result;
  return result;
}

std::vector<Tensor*> ConversionContext::tensorList(const NodeArgs& args, const std::string& name) {
  const OpValue& v = args.value(name);
  std::vector<Tensor*> result;
  if (v.elements) {
    for (int element : *v.elements) result.push_back(tensor(element));
  } else if (v.constant && v.constant->isTensorList()) {
    for (const at::Tensor& t : v.constant->toTensorVector()) result.push_back(constant(t));
  } else {
    throw Error(
        concat(args.node().qualifiedName(), ": argument '", name, "' is not a list of tensors"));
  }
  return result;
}

void ConversionContext::setTensor(int valueId, Tensor* tensor) {
  KILN_CHECK(tensor != nullptr, "internal error: value %", valueId, " set to no tensor");
  tensors_[valueId] = tensor;
}

void ConversionContext::setOutput(const NodeArgs& args, size_t i, Tensor* tensor) {
  const OpValue& out = args.output(i);
  KILN_CHECK(out.isTensor(), args.node().qualifiedName(), ": output ", i, " is not a tensor");
  KILN_CHECK(tensor->rank() == static_cast<int64_t>(out.shape.size()), args.node().qualifiedName(),
             ": the converter produced a rank-", tensor->rank(), " tensor ",
             toString(tensor->dims()), " where torch produces rank ", out.shape.size());
  for (size_t d = 0; d < out.shape.size(); ++d) {
    int64_t produced = tensor->dims()[d];
    KILN_CHECK(produced == kDynamic || !out.shape[d].isStatic() || produced == out.shape[d].opt,
               args.node().qualifiedName(), ": the converter produced dims ",
               toString(tensor->dims()), " where torch produces size ", out.shape[d].opt,
               " at dim ", d);
  }
  // The output takes the dtype torch gave it, so converters need not repeat type promotion.
  const DataType expected = toDataType(out.dtype);
  if (tensor->dtype() != expected) {
    Layer* cast = network_.addCast(tensor, expected);
    nameLayer(cast, "cast");
    tensor = cast->output(0);
  }
  setTensor(out.id, tensor);
}

Tensor* ConversionContext::constant(const at::Tensor& value) {
  at::Tensor data = value.detach().to(at::kCPU).contiguous();
  const DataType dtype = toDataType(data.scalar_type());
  Dims dims(data.sizes().begin(), data.sizes().end());
  const auto* begin = static_cast<const uint8_t*>(data.data_ptr());
  std::vector<uint8_t> bytes(begin, begin + data.nbytes());
  Layer* layer = network_.addConstant(Weights::fromBytes(dtype, std::move(dims), std::move(bytes)));
  nameLayer(layer, "const");
  return layer->output(0);
}

Tensor* ConversionContext::scalar(double value, DataType dtype) {
  return constant(at::scalar_tensor(value, at::TensorOptions().dtype(toScalarType(dtype))));
}

void ConversionContext::nameLayer(Layer* layer, const std::string& suffix) {
  std::string name = currentNode_ ? concat(shortOpName(*currentNode_), "_", currentNode_->id)
                                  : std::string("layer");
  if (!suffix.empty()) name += "_" + suffix;
  // Several layers of one node: the counter keeps names unique.
  layer->setName(concat(name, "_", layerCount_++));
}

namespace {

std::string inputName(const OpValue& v, size_t index, std::set<std::string>& used) {
  std::string name = v.name.empty() ? concat("input_", index) : v.name;
  if (!used.insert(name).second) {
    name = concat(name, "_", index);
    used.insert(name);
  }
  return name;
}

}  // namespace

ConvertedSegment convertSegment(const OpGraph& graph, const std::vector<int>& nodes,
                                const std::vector<int>& inputs, const std::vector<int>& outputs) {
  ConvertedSegment result;
  result.network = std::make_unique<Network>();
  Network& network = *result.network;
  ConversionContext ctx(graph, network);

  std::set<std::string> usedNames;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const OpValue& v = graph.value(inputs[i]);
    KILN_CHECK(v.isTensor(), "segment input ", i, " ('", v.name, "') is a ", toString(v.kind),
               "; engine inputs must be tensors");
    Dims dims;
    ShapeRange range;
    bool dynamic = false;
    for (const SymInt& size : v.shape) {
      dims.push_back(size.isStatic() ? size.opt : kDynamic);
      range.min.push_back(size.min);
      range.opt.push_back(size.opt);
      range.max.push_back(size.max);
      dynamic |= !size.isStatic();
    }
    const std::string name = inputName(v, i, usedNames);
    ctx.setTensor(v.id, network.addInput(name, toDataType(v.dtype), dims));
    if (dynamic) result.profile.setRange(name, std::move(range));
  }

  const ConverterRegistry& registry = ConverterRegistry::global();
  for (int id : nodes) {
    const OpNode& node = graph.node(id);
    const ConverterEntry* entry = registry.find(node.qualifiedName());
    KILN_CHECK(entry != nullptr, "node %", id, " (", node.qualifiedName(),
               ") has no converter; the partitioner should have left it to PyTorch");
    ctx.setCurrentNode(&node);
    try {
      entry->convert(ctx, NodeArgs(graph, node));
    } catch (const std::exception& e) {
      throw Error(
          concat("converting node %", id, " (", node.qualifiedName(), ") failed: ", e.what()));
    }
  }
  ctx.setCurrentNode(nullptr);

  std::set<const Tensor*> marked;
  for (int id : outputs) {
    Tensor* out = ctx.tensor(id);
    // An engine output must be written by a layer of its own: a pass-through of an input, a
    // constant, or a tensor already returned once is copied by an identity shuffle.
    const bool needsCopy = out->isNetworkInput() || marked.count(out) > 0 ||
                           out->producer()->kind() == LayerKind::kConstant;
    if (needsCopy) {
      Layer* copy = network.addShuffle(out, ShuffleParams{});
      copy->setName(concat("output_copy_", marked.size()));
      out = copy->output(0);
    }
    network.markOutput(out);
    marked.insert(out);
  }
  return result;
}

}  // namespace kiln

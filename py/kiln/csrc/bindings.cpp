// kiln._C: the OpGraph builder for the FX front end, the partitioner, engine building and the
// TorchScript front end, for py/kiln. See py/kiln/_C.pyi for the Python-side contract.
#include <torch/csrc/Device.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/Layout.h>
#include <torch/csrc/MemoryFormat.h>
#include <torch/csrc/jit/frontend/function_schema_parser.h>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/utils/pybind.h>

#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include "converters/registry.h"
#include "lowering/compile.h"
#include "lowering/fold_constants.h"
#include "lowering/op_graph.h"
#include "lowering/partitioner.h"

namespace py = pybind11;

namespace kiln {
namespace {

c10::ScalarType toScalarType(py::handle dtype) {
  KILN_CHECK(THPDtype_Check(dtype.ptr()), "expected a torch.dtype, got ",
             py::str(py::type::of(dtype)).cast<std::string>());
  return reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type;
}

SymInt toSymInt(const py::handle& dim) {
  auto t = dim.cast<std::tuple<int64_t, int64_t, int64_t, std::string>>();
  SymInt s{std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t)};
  KILN_CHECK(s.min <= s.opt && s.opt <= s.max,
             "a dim's range must satisfy min <= opt <= max, got (", s.min, ", ", s.opt, ", ", s.max,
             ")");
  KILN_CHECK(!s.isStatic() || (s.min == s.max), "a static dim (empty symbol) must have min == max");
  return s;
}

// A Python constant (as FX graphs hold them) as an IValue and its kind.
std::pair<c10::IValue, ValueKind> toConstant(py::handle value) {
  if (value.is_none()) return {c10::IValue(), ValueKind::kNone};
  if (py::isinstance<py::bool_>(value)) return {c10::IValue(value.cast<bool>()), ValueKind::kBool};
  if (py::isinstance<py::int_>(value)) return {c10::IValue(value.cast<int64_t>()), ValueKind::kInt};
  if (py::isinstance<py::float_>(value)) {
    return {c10::IValue(value.cast<double>()), ValueKind::kFloat};
  }
  if (py::isinstance<py::str>(value)) {
    return {c10::IValue(value.cast<std::string>()), ValueKind::kString};
  }
  if (THPVariable_Check(value.ptr())) {
    return {c10::IValue(THPVariable_Unpack(value.ptr())), ValueKind::kTensor};
  }
  if (THPDtype_Check(value.ptr())) {
    return {c10::IValue(static_cast<int64_t>(toScalarType(value))), ValueKind::kInt};
  }
  if (THPDevice_Check(value.ptr())) {
    return {c10::IValue(reinterpret_cast<THPDevice*>(value.ptr())->device), ValueKind::kOther};
  }
  if (THPLayout_Check(value.ptr())) {
    return {c10::IValue(static_cast<int64_t>(reinterpret_cast<THPLayout*>(value.ptr())->layout)),
            ValueKind::kInt};
  }
  if (THPMemoryFormat_Check(value.ptr())) {
    return {c10::IValue(static_cast<int64_t>(
                reinterpret_cast<THPMemoryFormat*>(value.ptr())->memory_format)),
            ValueKind::kInt};
  }
  if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    py::sequence items = py::reinterpret_borrow<py::sequence>(value);
    bool allInts = true;
    bool allNumbers = true;
    bool allBools = true;
    bool allTensors = true;
    for (py::handle item : items) {
      bool isBool = py::isinstance<py::bool_>(item);
      bool isInt = py::isinstance<py::int_>(item) && !isBool;
      allBools &= isBool;
      allInts &= isInt;
      allNumbers &= isInt || py::isinstance<py::float_>(item);
      allTensors &= THPVariable_Check(item.ptr());
    }
    if (allInts) return {c10::IValue(items.cast<std::vector<int64_t>>()), ValueKind::kIntList};
    if (allBools) return {c10::IValue(items.cast<std::vector<bool>>()), ValueKind::kBoolList};
    if (allNumbers) return {c10::IValue(items.cast<std::vector<double>>()), ValueKind::kFloatList};
    if (allTensors) {
      std::vector<at::Tensor> tensors;
      for (py::handle item : items) tensors.push_back(THPVariable_Unpack(item.ptr()));
      return {c10::IValue(tensors), ValueKind::kTensorList};
    }
  }
  throw Error(concat("Kiln cannot hold a constant of type ",
                     py::str(py::type::of(value)).cast<std::string>()));
}

ValueKind listKind(const std::string& kind) {
  if (kind == "Tensor") return ValueKind::kTensorList;
  if (kind == "int") return ValueKind::kIntList;
  if (kind == "float") return ValueKind::kFloatList;
  if (kind == "bool") return ValueKind::kBoolList;
  throw Error(concat("unknown list kind '", kind, "'; expected Tensor, int, float or bool"));
}

Backend toBackend(const std::string& name) {
  if (name == "cpu") return Backend::kCpu;
  if (name == "cuda") return Backend::kCuda;
  throw Error(concat("unknown backend '", name, "'; expected 'cpu' or 'cuda'"));
}

PartitionSettings partitionSettings(int64_t minBlockSize,
                                    const std::vector<std::string>& torchExecutedOps,
                                    bool requireFullCompilation) {
  KILN_CHECK(minBlockSize >= 1, "min_block_size must be at least 1, got ", minBlockSize);
  PartitionSettings settings;
  settings.minBlockSize = minBlockSize;
  settings.torchExecutedOps.insert(torchExecutedOps.begin(), torchExecutedOps.end());
  settings.requireFullCompilation = requireFullCompilation;
  return settings;
}

std::vector<int64_t> intList(const py::dict& spec, const char* key) {
  KILN_CHECK(spec.contains(key), "input spec is missing '", key, "'");
  return spec[key].cast<std::vector<int64_t>>();
}

py::dict toDict(const CompileSummary& summary) {
  py::dict result;
  result["engines"] = summary.engines;
  result["ops_in_kiln"] = summary.opsInKiln;
  result["ops_in_torch"] = summary.opsInTorch;
  py::list fallback;
  for (const auto& [op, reason] : summary.fallback) fallback.append(py::make_tuple(op, reason));
  result["fallback"] = fallback;
  return result;
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// KILN_NATIVE_BACKTRACE=1: a crash in native code prints its C++ stack (Python's faulthandler
// shows only Python frames), for debugging on machines without a debugger.
void printNativeBacktrace(int signal) {
  void* frames[64];
  const int count = backtrace(frames, 64);
  const char header[] = "kiln: fatal signal; native backtrace:\n";
  (void)!write(STDERR_FILENO, header, sizeof(header) - 1);
  backtrace_symbols_fd(frames, count, STDERR_FILENO);
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

}  // namespace
}  // namespace kiln

PYBIND11_MODULE(_C, m) {
  if (const char* flag = std::getenv("KILN_NATIVE_BACKTRACE"); flag && std::string(flag) == "1") {
    std::signal(SIGSEGV, kiln::printNativeBacktrace);
    std::signal(SIGABRT, kiln::printNativeBacktrace);
  }
  using kiln::OpGraph;
  using kiln::OpNode;
  using kiln::OpValue;
  using kiln::ValueKind;
  m.doc() = "Kiln's compiler internals; use the kiln package instead.";

  py::class_<OpGraph>(m, "OpGraph")
      .def(py::init<>())
      .def_property(
          "device", [](const OpGraph& g) { return g.device(); },
          [](OpGraph& g, c10::Device device) { g.setDevice(device); })
      .def("add_tensor_value",
           [](OpGraph& g, const std::string& name, py::handle dtype, const py::list& shape) {
             OpValue v;
             v.kind = ValueKind::kTensor;
             v.name = name;
             v.dtype = kiln::toScalarType(dtype);
             for (py::handle dim : shape) v.shape.push_back(kiln::toSymInt(dim));
             return g.addValue(std::move(v));
           })
      .def("add_constant_value",
           [](OpGraph& g, const std::string& name, py::handle value) {
             OpValue v;
             v.name = name;
             auto [constant, kind] = kiln::toConstant(value);
             v.kind = kind;
             if (constant.isTensor()) {
               const at::Tensor& t = constant.toTensor();
               v.dtype = t.scalar_type();
               for (int64_t size : t.sizes()) v.shape.push_back(kiln::SymInt::of(size));
             }
             v.constant = std::move(constant);
             return g.addValue(std::move(v));
           })
      .def("add_shape_int_value",
           [](OpGraph& g, const std::string& name, py::handle dim) {
             OpValue v;
             v.kind = ValueKind::kInt;
             v.name = name;
             kiln::SymInt s = kiln::toSymInt(dim);
             if (s.isStatic()) {
               v.constant = c10::IValue(s.opt);
             } else {
               v.shapeInt = s;
             }
             return g.addValue(std::move(v));
           })
      .def("add_list_value",
           [](OpGraph& g, const std::string& name, const std::string& kind,
              const std::vector<int>& elements) {
             OpValue v;
             v.kind = kiln::listKind(kind);
             v.name = name;
             v.elements = elements;
             return g.addValue(std::move(v));
           })
      .def("add_opaque_value",
           [](OpGraph& g, const std::string& name) {
             OpValue v;
             v.kind = ValueKind::kOther;
             v.name = name;
             return g.addValue(std::move(v));
           })
      .def("add_node",
           [](OpGraph& g, const std::string& schema, const std::vector<int>& inputs,
              const std::vector<int>& outputs) {
             OpNode node;
             auto parsed = std::make_shared<c10::FunctionSchema>(torch::jit::parseSchema(schema));
             node.op = parsed->name();
             node.overload = parsed->overload_name();
             KILN_CHECK(inputs.size() == parsed->arguments().size(), node.op, " takes ",
                        parsed->arguments().size(), " arguments in schema order, got ",
                        inputs.size());
             node.schema = std::move(parsed);
             node.inputs = inputs;
             node.outputs = outputs;
             return g.addNode(std::move(node));
           })
      .def("add_unsupported_node",
           [](OpGraph& g, const std::string& op, const std::vector<int>& inputs,
              const std::vector<int>& outputs, const std::string& reason) {
             OpNode node;
             node.op = op;
             node.inputs = inputs;
             node.outputs = outputs;
             node.unsupportedReason = reason;
             return g.addNode(std::move(node));
           })
      .def("add_input", &OpGraph::addInput)
      .def("add_output", &OpGraph::addOutput)
      .def("num_nodes", [](const OpGraph& g) { return g.numNodes(); })
      .def("node_name", [](const OpGraph& g, int n) { return g.node(n).qualifiedName(); })
      .def("node_folded", [](const OpGraph& g, int n) { return g.node(n).folded; })
      .def("value_constant",
           [](const OpGraph& g, int v) -> py::object {
             const auto& constant = g.value(v).constant;
             if (!constant) return py::none();
             return torch::jit::toPyObject(*constant);
           })
      .def("__str__", &OpGraph::toString);

  py::class_<kiln::Segment>(m, "Segment")
      .def_readonly("nodes", &kiln::Segment::nodes)
      .def_readonly("inputs", &kiln::Segment::inputs)
      .def_readonly("outputs", &kiln::Segment::outputs);

  py::class_<kiln::Partition>(m, "Partition")
      .def_readonly("segments", &kiln::Partition::segments)
      .def_property_readonly("order",
                             [](const kiln::Partition& p) {
                               std::vector<std::pair<std::string, int>> order;
                               for (const auto& item : p.order) {
                                 order.emplace_back(item.kind == kiln::PartitionItem::Kind::kSegment
                                                        ? "segment"
                                                        : "node",
                                                    item.index);
                               }
                               return order;
                             })
      .def_readonly("fallback_reasons", &kiln::Partition::fallbackReasons);

  m.def(
      "fold_constants",
      [](OpGraph& g, int64_t maxFoldedBytes) { return kiln::foldConstants(g, maxFoldedBytes); },
      py::arg("graph"), py::arg("max_folded_bytes") = kiln::kMaxFoldedBytes,
      "Computes the nodes whose inputs are all build-time constants (see "
      "lowering/fold_constants.h); returns how many were folded.");

  m.def(
      "partition",
      [](const OpGraph& g, int64_t minBlockSize, const std::vector<std::string>& torchExecutedOps,
         bool requireFullCompilation) {
        return kiln::partition(
            g, kiln::partitionSettings(minBlockSize, torchExecutedOps, requireFullCompilation),
            kiln::ConverterRegistry::global());
      },
      py::arg("graph"), py::arg("min_block_size"), py::arg("torch_executed_ops"),
      py::arg("require_full_compilation"));

  m.def(
      "build_engine",
      [](const OpGraph& g, const kiln::Segment& segment, const std::string& name,
         const std::string& backend, bool debug, bool tf32Convolutions, bool tf32Matmuls) {
        auto holder = kiln::buildSegmentEngine(g, segment, name, kiln::toBackend(backend), debug,
                                               kiln::Tf32Policy{tf32Convolutions, tf32Matmuls});
        return torch::jit::toPyObject(c10::IValue(std::move(holder)));
      },
      py::arg("graph"), py::arg("segment"), py::arg("name"), py::arg("backend"), py::arg("debug"),
      py::arg("tf32_convolutions") = false, py::arg("tf32_matmuls") = false);

  m.def(
      "compile_ts",
      [](const torch::jit::Module& module, const py::list& inputSpecs, int64_t minBlockSize,
         const std::vector<std::string>& torchExecutedOps, bool requireFullCompilation,
         const std::string& backend, bool debug, bool tf32Convolutions, bool tf32Matmuls) {
        std::vector<kiln::InputSpec> specs;
        for (py::handle item : inputSpecs) {
          py::dict spec = py::reinterpret_borrow<py::dict>(item);
          kiln::InputSpec s;
          s.min = kiln::intList(spec, "min");
          s.opt = kiln::intList(spec, "opt");
          s.max = kiln::intList(spec, "max");
          s.dtype = kiln::toScalarType(spec["dtype"]);
          if (backend == "cuda") s.device = c10::Device(c10::kCUDA);
          specs.push_back(std::move(s));
        }
        kiln::CompileSettings settings;
        settings.partition =
            kiln::partitionSettings(minBlockSize, torchExecutedOps, requireFullCompilation);
        settings.backend = kiln::toBackend(backend);
        settings.debug = debug;
        settings.tf32 = kiln::Tf32Policy{tf32Convolutions, tf32Matmuls};
        auto [compiled, summary] = kiln::compileTorchScript(module, specs, settings);
        return py::make_tuple(compiled, kiln::toDict(summary));
      },
      py::arg("module"), py::arg("input_specs"), py::arg("min_block_size"),
      py::arg("torch_executed_ops"), py::arg("require_full_compilation"), py::arg("backend"),
      py::arg("debug"), py::arg("tf32_convolutions") = false, py::arg("tf32_matmuls") = false);

  m.def(
      "engine_device",
      [](const std::string& backend) { return kiln::engineDevice(kiln::toBackend(backend)); },
      py::arg("backend"));

  m.def("supported_ops", [] { return kiln::ConverterRegistry::global().schemas(); });
  m.def("has_cuda", [] {
#if defined(KILN_WITH_CUDA) && defined(KILN_TORCH_CUDA)
    return true;
#else
    return false;
#endif
  });
}

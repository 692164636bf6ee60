#include "core/engine/engine.h"

#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "core/engine/memory_plan.h"
#include "core/engine/plan.h"
#ifdef KILN_WITH_CUDA
#include "core/engine/cuda/device.h"
#endif

namespace kiln {

namespace {

constexpr const char* kInvalid = "invalid engine definition: ";

void checkTensorIndex(int32_t index, size_t tensorCount, bool mayBeAbsent,
                      const std::string& where) {
  if (mayBeAbsent && index == -1) return;
  KILN_CHECK(index >= 0 && static_cast<size_t>(index) < tensorCount, kInvalid, where,
             " refers to tensor ", index, ", but the engine has ", tensorCount,
             " tensors. The builder (or whatever made the definition) is at fault; rebuild "
             "the engine.");
}

// Every profile gives each dynamic input a min <= opt <= max range of the input's rank that
// agrees with its fixed dims; ranges name inputs only.
void checkProfiles(const EngineDefinition& definition) {
  bool anyDynamic = false;
  std::set<std::string> inputNames;
  for (int32_t index : definition.inputs) {
    const EngineTensor& input = definition.tensors[index];
    inputNames.insert(input.name);
    anyDynamic = anyDynamic || !isStatic(input.dims);
  }
  KILN_CHECK(!anyDynamic || !definition.profiles.empty(), kInvalid,
             "an input has dynamic dims, but there is no optimization profile. Build the "
             "engine with a profile (min/opt/max shapes) for every dynamic input.");
  for (size_t p = 0; p < definition.profiles.size(); ++p) {
    const OptimizationProfile& profile = definition.profiles[p];
    for (const auto& [name, range] : profile.ranges) {
      KILN_CHECK(inputNames.count(name) > 0, kInvalid, "profile ", p, " has a range for '", name,
                 "', which is not an input of the engine");
    }
    for (int32_t index : definition.inputs) {
      const EngineTensor& input = definition.tensors[index];
      auto found = profile.ranges.find(input.name);
      if (found == profile.ranges.end()) {
        KILN_CHECK(isStatic(input.dims), kInvalid, "profile ", p, " has no range for the ",
                   "dynamic input '", input.name, "' ", toString(input.dims),
                   "; give every profile min/opt/max shapes for it");
        continue;
      }
      const ShapeRange& range = found->second;
      for (const Dims* shape : {&range.min, &range.opt, &range.max}) {
        KILN_CHECK(shape->size() == input.dims.size(), kInvalid, "profile ", p, " gives input '",
                   input.name, "' the shape ", toString(*shape), ", but the input has rank ",
                   input.dims.size(), " ", toString(input.dims));
      }
      for (size_t d = 0; d < input.dims.size(); ++d) {
        KILN_CHECK(
            range.min[d] >= 0 && range.min[d] <= range.opt[d] && range.opt[d] <= range.max[d],
            kInvalid, "profile ", p, ": input '", input.name, "' dim ", d,
            " needs 0 <= min <= opt <= max, got ", range.min[d], ", ", range.opt[d], ", ",
            range.max[d]);
        KILN_CHECK(input.dims[d] == kDynamic ||
                       (range.min[d] == input.dims[d] && range.max[d] == input.dims[d]),
                   kInvalid, "profile ", p, ": input '", input.name, "' dim ", d, " is fixed at ",
                   input.dims[d], ", but the profile ranges it over ", range.min[d], "..",
                   range.max[d]);
      }
    }
  }
}

void validate(const EngineDefinition& definition) {
  KILN_CHECK(
      definition.target.backend == Backend::kCpu || definition.target.backend == Backend::kCuda,
      kInvalid, "unknown backend ", int(definition.target.backend));
  const size_t tensorCount = definition.tensors.size();
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    const std::string where = concat("layer ", l, " ('", layer.name, "')");
    KILN_CHECK(!layer.outputs.empty(), kInvalid, where, " has no outputs");
    for (int32_t index : layer.inputs) checkTensorIndex(index, tensorCount, true, where);
    for (int32_t index : layer.outputs) checkTensorIndex(index, tensorCount, false, where);
  }
  for (size_t i = 0; i < definition.inputs.size(); ++i) {
    checkTensorIndex(definition.inputs[i], tensorCount, false, concat("input binding ", i));
  }
  for (size_t o = 0; o < definition.outputs.size(); ++o) {
    checkTensorIndex(definition.outputs[o], tensorCount, false, concat("output binding ", o));
  }
  checkProfiles(definition);
}

// CUDA reports 12040 for 12.4; cuDNN 9 reports 90100 for 9.1.0, cuDNN 8 reports 8906 for 8.9.6.
std::string cudaVersionString(int version) {
  return concat(version / 1000, ".", (version % 1000) / 10);
}
std::string cudnnVersionString(int version) {
  if (version >= 90000) {
    return concat(version / 10000, ".", (version % 10000) / 100, ".", version % 100);
  }
  return concat(version / 1000, ".", (version % 1000) / 100, ".", version % 100);
}

std::string describeTarget(const BuildTarget& target) {
  if (target.backend == Backend::kCpu) {
    return concat(toString(target.backend), " (", target.deviceName, ")");
  }
  return concat(toString(target.backend), " on ", target.deviceName, ", compute capability ",
                target.computeCapabilityMajor, ".", target.computeCapabilityMinor, ", CUDA ",
                cudaVersionString(target.cudaVersion), ", cuDNN ",
                cudnnVersionString(target.cudnnVersion));
}

std::string describeBytes(uint64_t bytes) {
  if (bytes < 1024) return concat(bytes, " B");
  std::ostringstream out;
  out.precision(1);
  out << std::fixed;
  if (bytes < 1024 * 1024) {
    out << static_cast<double>(bytes) / 1024 << " KiB";
  } else {
    out << static_cast<double>(bytes) / (1024 * 1024) << " MiB";
  }
  return out.str();
}

}  // namespace

const char* toString(Backend backend) {
  switch (backend) {
    case Backend::kCpu:
      return "CPU";
    case Backend::kCuda:
      return "CUDA";
  }
  return "unknown backend";
}

Engine::Engine(EngineDefinition definition) : definition_(std::move(definition)) {
  validate(definition_);
}

const EngineTensor& Engine::inputTensor(size_t i) const {
  KILN_CHECK(i < definition_.inputs.size(), "input ", i, " does not exist: the engine has ",
             definition_.inputs.size(), " input(s)");
  return definition_.tensors[definition_.inputs[i]];
}

const EngineTensor& Engine::outputTensor(size_t i) const {
  KILN_CHECK(i < definition_.outputs.size(), "output ", i, " does not exist: the engine has ",
             definition_.outputs.size(), " output(s)");
  return definition_.tensors[definition_.outputs[i]];
}

std::vector<uint8_t> Engine::serialize() const { return writePlan(definition_); }

std::shared_ptr<Engine> Engine::deserialize(const void* data, size_t size, bool allowOtherGpu) {
  EngineDefinition definition = readPlan(data, size);
  if (definition.target.backend == Backend::kCuda) {
#ifdef KILN_WITH_CUDA
    checkRunsOnCurrentDevice(definition.target, allowOtherGpu);
#else
    (void)allowOtherGpu;
    throw PlanError(concat("this plan is a CUDA engine (built for ", definition.target.deviceName,
                           "), but this Kiln was built without CUDA; install a Kiln built with "
                           "CUDA on a machine with that GPU, or rebuild the engine for the CPU"));
#endif
  }
  try {
    return std::make_shared<Engine>(std::move(definition));
  } catch (const PlanError&) {
    throw;
  } catch (const Error& error) {
    // The checksum held, so the writer was given a definition no engine should have.
    throw PlanError(concat("the plan is corrupt: ", error.what()));
  }
}

std::string Engine::inspect() const {
  const EngineDefinition& d = definition_;
  auto tensorName = [&](int32_t index) -> std::string {
    return index < 0 ? std::string("(none)") : d.tensors[index].name;
  };
  auto tensorLine = [&](int32_t index) {
    const EngineTensor& tensor = d.tensors[index];
    return concat(tensor.name, ": ", toString(tensor.dtype), " ", toString(tensor.dims));
  };

  uint64_t weightBytes = 0;
  for (const EngineLayer& layer : d.layers) {
    if (const auto* constant = std::get_if<ConstantParams>(&layer.params)) {
      if (constant->weights.bytes) weightBytes += constant->weights.bytes->size();
    }
  }

  std::ostringstream out;
  out << "Kiln engine: " << d.layers.size() << " layer(s)";
  if (d.networkLayers > 0) out << " (the network had " << d.networkLayers << ")";
  out << ", " << d.tensors.size() << " tensor(s), " << describeBytes(weightBytes)
      << " of weights\n";
  // A hand-made definition may not infer shapes at its profiles (the builder checks its own
  // engines'); the inspector still describes the rest.
  try {
    const MemoryPlan memory = planMemory(d, largestTensorBytes(d));
    out << "activation arena: " << describeBytes(static_cast<uint64_t>(memory.arenaBytes))
        << " at the profiles' largest shapes ("
        << describeBytes(static_cast<uint64_t>(memory.naiveBytes)) << " without reuse)\n";
  } catch (const Error& error) {
    out << "activation arena: unknown (" << error.what() << ")\n";
  }
  out << "target: " << describeTarget(d.target) << "\n";
  out << "float32 on TF32 tensor cores: convolutions " << (d.tf32.convolutions ? "yes" : "no")
      << ", matmuls " << (d.tf32.matmuls ? "yes" : "no") << "\n";
  out << "inputs:\n";
  for (int32_t index : d.inputs) out << "  " << tensorLine(index) << "\n";
  out << "outputs:\n";
  for (int32_t index : d.outputs) out << "  " << tensorLine(index) << "\n";
  out << "profiles:\n";
  for (size_t p = 0; p < d.profiles.size(); ++p) {
    out << "  " << p << ":";
    if (d.profiles[p].ranges.empty()) out << " (no dynamic inputs)";
    out << "\n";
    for (const auto& [name, range] : d.profiles[p].ranges) {
      out << "    " << name << ": min " << toString(range.min) << ", opt " << toString(range.opt)
          << ", max " << toString(range.max) << "\n";
    }
  }
  out << "layers:\n";
  for (size_t l = 0; l < d.layers.size(); ++l) {
    const EngineLayer& layer = d.layers[l];
    out << "  " << l << " " << layer.name << ": " << describe(layer.params) << "  (";
    for (size_t i = 0; i < layer.inputs.size(); ++i) {
      out << (i > 0 ? ", " : "") << tensorName(layer.inputs[i]);
    }
    out << ") -> (";
    for (size_t o = 0; o < layer.outputs.size(); ++o) {
      out << (o > 0 ? ", " : "") << tensorLine(layer.outputs[o]);
    }
    out << ")\n";
  }
  return out.str();
}

namespace {

// The CUDA backend's kernel for each layer kind (core/engine/cuda/cuda_runner.cpp).
std::string cudaKernel(const EngineLayer& layer) {
  auto epilogue = [&](FusedActivation activation, size_t biasInput) {
    std::string text;
    if (layer.inputs.size() > biasInput && layer.inputs[biasInput] >= 0) text += " + bias";
    if (layer.inputs.size() > biasInput + 1 && layer.inputs[biasInput + 1] >= 0) {
      text += " + residual";
    }
    if (activation != FusedActivation::kNone) text += concat(" + ", toString(activation));
    return text;
  };
  return std::visit(
      [&](const auto& p) -> std::string {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConvolutionParams>) {
          if (p.inputActivation != FusedActivation::kNone) {
            return concat("Kiln depthwise convolution (NHWC), ", toString(p.inputActivation),
                          " on its input", epilogue(p.activation, 2));
          }
          return concat("cuDNN convolution", p.channelsLast ? " (NHWC)" : " (NCHW)",
                        epilogue(p.activation, 2));
        } else if constexpr (std::is_same_v<P, DeconvolutionParams>) {
          return "cuDNN transposed convolution";
        } else if constexpr (std::is_same_v<P, FullyConnectedParams>) {
          return concat("cuBLASLt GEMM", epilogue(p.activation, 2));
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          return "cuBLASLt batched GEMM";
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          return p.type == NormalizationType::kBatch ? "Kiln batch norm" : "Kiln layer norm";
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          return "Kiln fused attention";
        } else if constexpr (std::is_same_v<P, PointwiseParams>) {
          return concat("Kiln generated pointwise kernel (NVRTC, ", p.cudaKernel.architecture, ")");
        } else if constexpr (std::is_same_v<P, SqueezeExcitationParams>) {
          return "Kiln squeeze-and-excitation (pooling, MLP)";
        } else if constexpr (std::is_same_v<P, ConstantParams>) {
          return "none (weights)";
        } else {
          return concat("Kiln ", toString(kindOf(layer.params)));
        }
      },
      layer.params);
}

}  // namespace

std::string Engine::layerKernel(size_t index) const {
  const EngineLayer& layer = definition_.layers.at(index);
  if (std::holds_alternative<ConstantParams>(layer.params)) return "none (weights)";
  if (definition_.target.backend == Backend::kCuda) return cudaKernel(layer);
  return concat("cpu reference ", toString(kindOf(layer.params)));
}

std::string Engine::layerPrecision(size_t index) const {
  const EngineLayer& layer = definition_.layers.at(index);
  const DataType type =
      layer.outputs.empty() ? DataType::kFloat32 : definition_.tensors.at(layer.outputs[0]).dtype;
  const bool gemm = std::holds_alternative<FullyConnectedParams>(layer.params) ||
                    std::holds_alternative<MatMulParams>(layer.params);
  const bool convolution = std::holds_alternative<ConvolutionParams>(layer.params) ||
                           std::holds_alternative<DeconvolutionParams>(layer.params);
  const bool tf32 =
      definition_.target.backend == Backend::kCuda && type == DataType::kFloat32 &&
      ((gemm && definition_.tf32.matmuls) || (convolution && definition_.tf32.convolutions));
  return tf32 ? "float32 (TF32)" : toString(type);
}

std::shared_ptr<const EngineBackendState> Engine::backendState(
    const std::function<std::shared_ptr<const EngineBackendState>()>& create) const {
  std::lock_guard<std::mutex> lock(backendStateMutex_);
  if (!backendState_) backendState_ = create();
  return backendState_;
}

}  // namespace kiln

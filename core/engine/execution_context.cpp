#include "core/engine/execution_context.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <string>

#include "core/engine/cpu_backend.h"
#ifdef KILN_WITH_CUDA
#include "core/engine/cuda/cuda_runner.h"
#else
namespace kiln {
// A Kiln without CUDA never makes one; the context's member needs a complete type to delete.
class CudaRunner {};
}  // namespace kiln
#endif
#include "core/ir/shape_inference.h"

namespace kiln {

namespace {

// Where a tensor's data comes from during execute.
enum class TensorSource : uint8_t {
  kInput,       // the caller's input pointer
  kConstant,    // the engine's weights, never copied
  kActivation,  // written by a layer into the context's memory or the caller's output
};

// The first dim of one input that a profile does not hold.
struct ProfileViolation {
  size_t profile = 0;
  size_t input = 0;
  size_t dim = 0;
  const ShapeRange* range = nullptr;
};

std::string rangeOf(const ProfileViolation& v) {
  return concat("[", v.range->min[v.dim], ", ", v.range->max[v.dim], "] (profile ", v.profile,
                ": min ", toString(v.range->min), ", max ", toString(v.range->max), ")");
}

// "input 'x' has shape [9,3,64,64] but dim 0 = 9 is outside the optimization profile range
// [1, 8] (profile 0: min [1,3,64,64], max [8,3,64,64]); rebuild the engine with a larger
// max_shape", listing every profile's range when there are several.
std::string describeViolations(const Engine& engine, const std::vector<Dims>& shapes,
                               const std::vector<ProfileViolation>& violations) {
  const ProfileViolation& first = violations.front();
  const std::string& name = engine.inputTensor(first.input).name;
  const int64_t value = shapes[first.input][first.dim];
  std::string message = concat("input '", name, "' has shape ", toString(shapes[first.input]),
                               " but dim ", first.dim, " = ", value, " is outside ");
  if (violations.size() == 1) {
    message += concat("the optimization profile range ", rangeOf(first));
  } else {
    message += "every optimization profile's range: ";
    for (size_t i = 0; i < violations.size(); ++i) {
      const ProfileViolation& v = violations[i];
      if (i > 0) message += " or ";
      if (v.input != first.input || v.dim != first.dim) {
        // This profile fails on another dim first.
        message += concat("input '", engine.inputTensor(v.input).name, "' dim ", v.dim, " = ",
                          shapes[v.input][v.dim], " is outside ");
      }
      message += rangeOf(v);
    }
  }
  const bool tooLarge = value > first.range->max[first.dim];
  message +=
      concat("; rebuild the engine with a ", tooLarge ? "larger max_shape" : "smaller min_shape",
             tooLarge && first.dim == 0 ? ", or split the batch" : "");
  return message;
}

}  // namespace

// Per-engine bookkeeping computed once, plus the activation memory that is kept across runs.
struct ExecutionContext::Buffers {
  std::vector<TensorSource> sources;   // per tensor
  std::vector<int32_t> inputBinding;   // per tensor: index of its input binding, or -1
  std::vector<int32_t> outputBinding;  // per tensor: the output binding it is written to, or -1
  std::vector<const void*> weights;    // per tensor: constant data, or null
  // Per output binding: whether a layer writes it straight into the caller's buffer. When the
  // tensor is an input, a constant or already bound to an earlier output, it is copied instead.
  std::vector<bool> outputInPlace;
  std::vector<std::vector<uint8_t>> memory;  // per tensor: activation storage, only ever grown
  std::vector<TensorView> views;             // per tensor, rebuilt by each execute
  std::vector<Dims> lastInputShapes;         // the shapes tensorDims_ were inferred for
  std::vector<Dims> lastOutputDims;
};

ExecutionContext::ExecutionContext(std::shared_ptr<const Engine> engine,
                                   const ExecutionSettings& settings)
    : engine_(std::move(engine)), buffers_(std::make_unique<Buffers>()) {
  KILN_CHECK(engine_ != nullptr, "an ExecutionContext needs an engine");
  if (engine_->target().backend == Backend::kCuda) {
#ifdef KILN_WITH_CUDA
    cudaRunner_ = std::make_unique<CudaRunner>(engine_, settings);
#else
    throw Error(concat("this engine was built for CUDA (", engine_->target().deviceName,
                       "), but this Kiln was built without CUDA; use a Kiln built with CUDA, or "
                       "build the engine for the CPU backend"));
#endif
  }
  (void)settings;
  const EngineDefinition& definition = engine_->definition();
  const size_t tensorCount = definition.tensors.size();
  Buffers& buffers = *buffers_;
  buffers.sources.assign(tensorCount, TensorSource::kActivation);
  buffers.inputBinding.assign(tensorCount, -1);
  buffers.outputBinding.assign(tensorCount, -1);
  buffers.weights.assign(tensorCount, nullptr);
  buffers.memory.resize(tensorCount);
  buffers.views.resize(tensorCount);
  for (size_t i = 0; i < definition.inputs.size(); ++i) {
    const int32_t tensor = definition.inputs[i];
    buffers.sources.at(tensor) = TensorSource::kInput;
    buffers.inputBinding[tensor] = static_cast<int32_t>(i);
  }
  for (const EngineLayer& layer : definition.layers) {
    if (const auto* constant = std::get_if<ConstantParams>(&layer.params)) {
      const int32_t tensor = layer.outputs.at(0);
      buffers.sources.at(tensor) = TensorSource::kConstant;
      buffers.weights[tensor] = constant->weights.data();
    }
  }
  for (size_t o = 0; o < definition.outputs.size(); ++o) {
    const int32_t tensor = definition.outputs[o];
    const bool inPlace = buffers.sources.at(tensor) == TensorSource::kActivation &&
                         buffers.outputBinding[tensor] < 0;
    buffers.outputInPlace.push_back(inPlace);
    if (inPlace) buffers.outputBinding[tensor] = static_cast<int32_t>(o);
  }
}

ExecutionContext::~ExecutionContext() = default;

std::vector<Dims> ExecutionContext::setInputShapes(const std::vector<Dims>& shapes) {
  const Engine& engine = *engine_;
  const EngineDefinition& definition = engine.definition();
  Buffers& buffers = *buffers_;
  if (activeProfile_ >= 0 && shapes == buffers.lastInputShapes) return buffers.lastOutputDims;
  activeProfile_ = -1;

  KILN_CHECK(shapes.size() == engine.numInputs(), "the engine takes ", engine.numInputs(),
             " input(s), but ", shapes.size(), " shape(s) were given");
  for (size_t i = 0; i < shapes.size(); ++i) {
    const EngineTensor& input = engine.inputTensor(i);
    const Dims& shape = shapes[i];
    KILN_CHECK(shape.size() == input.dims.size(), "input '", input.name, "' has rank ",
               shape.size(), " (shape ", toString(shape), "), but the engine expects rank ",
               input.dims.size(), " (shape ", toString(input.dims), ")");
    for (size_t d = 0; d < shape.size(); ++d) {
      KILN_CHECK(shape[d] >= 0, "input '", input.name, "' dim ", d, " is ", shape[d],
                 "; run-time shapes must not be negative");
      KILN_CHECK(input.dims[d] == kDynamic || input.dims[d] == shape[d], "input '", input.name,
                 "' dim ", d, " is ", shape[d], ", but the engine was built for a fixed ",
                 input.dims[d], " there (shape ", toString(input.dims), ")");
    }
  }

  // The first profile holding every dynamic dim; for each profile, its first violation.
  std::vector<ProfileViolation> violations;
  int chosen = -1;
  const std::vector<OptimizationProfile>& profiles = engine.profiles();
  for (size_t p = 0; p < profiles.size() && chosen < 0; ++p) {
    bool holds = true;
    for (size_t i = 0; i < shapes.size() && holds; ++i) {
      const EngineTensor& input = engine.inputTensor(i);
      if (isStatic(input.dims)) continue;
      auto found = profiles[p].ranges.find(input.name);
      KILN_CHECK(found != profiles[p].ranges.end(), "profile ", p, " of the engine has no range",
                 " for the dynamic input '", input.name, "'; rebuild the engine");
      const ShapeRange& range = found->second;
      KILN_CHECK(range.min.size() == shapes[i].size() && range.max.size() == shapes[i].size(),
                 "profile ", p, " of the engine gives input '", input.name, "' a range of rank ",
                 range.min.size(), ", but the input has rank ", shapes[i].size(),
                 "; the engine is inconsistent, rebuild it");
      for (size_t d = 0; d < shapes[i].size() && holds; ++d) {
        if (shapes[i][d] < range.min[d] || shapes[i][d] > range.max[d]) {
          violations.push_back({p, i, d, &range});
          holds = false;
        }
      }
    }
    if (holds) chosen = static_cast<int>(p);
  }
  if (chosen < 0) {
    KILN_CHECK(!violations.empty(), "the engine has no optimization profile; rebuild it");
    throw Error(describeViolations(engine, shapes, violations));
  }

  // Every tensor's dims at these shapes, layer by layer.
  std::vector<Dims> dims(definition.tensors.size());
  for (size_t i = 0; i < definition.tensors.size(); ++i) {
    if (isStatic(definition.tensors[i].dims)) dims[i] = definition.tensors[i].dims;
  }
  for (size_t i = 0; i < shapes.size(); ++i) dims.at(definition.inputs[i]) = shapes[i];
  for (const EngineLayer& layer : definition.layers) {
    std::vector<TensorType> inputTypes(layer.inputs.size());
    std::vector<const TensorType*> inputPointers(layer.inputs.size(), nullptr);
    for (size_t i = 0; i < layer.inputs.size(); ++i) {
      const int32_t tensor = layer.inputs[i];
      if (tensor < 0) continue;
      inputTypes[i] = {definition.tensors.at(tensor).dtype, dims.at(tensor)};
      inputPointers[i] = &inputTypes[i];
    }
    std::vector<TensorType> outputTypes;
    try {
      outputTypes = inferOutputTypes(layer.params, inputPointers);
    } catch (const std::exception& error) {
      throw Error(concat("layer '", layer.name, "' (", toString(kindOf(layer.params)),
                         ") at input shapes ", toString(shapes.at(0)),
                         shapes.size() > 1 ? ", ..." : "", ": ", error.what()));
    }
    KILN_CHECK(outputTypes.size() == layer.outputs.size(), "layer '", layer.name, "' infers ",
               outputTypes.size(), " outputs but has ", layer.outputs.size());
    for (size_t o = 0; o < outputTypes.size(); ++o) dims.at(layer.outputs[o]) = outputTypes[o].dims;
  }

  std::vector<Dims> outputDims;
  for (int32_t tensor : definition.outputs) outputDims.push_back(dims.at(tensor));
  tensorDims_ = std::move(dims);
  buffers.lastInputShapes = shapes;
  buffers.lastOutputDims = outputDims;
  activeProfile_ = chosen;
  return outputDims;
}

void ExecutionContext::checkInputTypes(const std::vector<DataType>& types) const {
  const Engine& engine = *engine_;
  KILN_CHECK(types.size() == engine.numInputs(), "the engine takes ", engine.numInputs(),
             " input(s), but ", types.size(), " input type(s) were given");
  for (size_t i = 0; i < types.size(); ++i) {
    const EngineTensor& input = engine.inputTensor(i);
    KILN_CHECK(types[i] == input.dtype, "input '", input.name, "' is ", toString(types[i]),
               ", but the engine was built for ", toString(input.dtype), "; cast the input to ",
               toString(input.dtype), " or rebuild the engine for ", toString(types[i]));
  }
}

void ExecutionContext::checkExecuteArguments(const std::vector<const void*>& inputs,
                                             const std::vector<void*>& outputs) const {
  const Engine& engine = *engine_;
  KILN_CHECK(activeProfile_ >= 0,
             "execute was called before setInputShapes; set this run's input shapes first");
  KILN_CHECK(inputs.size() == engine.numInputs(), "the engine takes ", engine.numInputs(),
             " input(s), but ", inputs.size(), " input pointer(s) were given");
  KILN_CHECK(outputs.size() == engine.numOutputs(), "the engine gives ", engine.numOutputs(),
             " output(s), but ", outputs.size(), " output pointer(s) were given");
}

void ExecutionContext::execute(const std::vector<const void*>& inputs,
                               const std::vector<void*>& outputs, void* stream) {
  checkExecuteArguments(inputs, outputs);
#ifdef KILN_WITH_CUDA
  if (cudaRunner_) {
    cudaRunner_->execute(tensorDims_, inputs, outputs, static_cast<cudaStream_t>(stream));
    return;
  }
#endif
  (void)stream;
  executeOnCpu(inputs, outputs, nullptr);
}

std::vector<LayerTiming> ExecutionContext::profileLayers(const std::vector<const void*>& inputs,
                                                         const std::vector<void*>& outputs,
                                                         int iterations, void* stream) {
  checkExecuteArguments(inputs, outputs);
  KILN_CHECK(iterations >= 1, "profiling needs at least one iteration, got ", iterations);
#ifdef KILN_WITH_CUDA
  if (cudaRunner_) {
    return cudaRunner_->profileLayers(tensorDims_, inputs, outputs,
                                      static_cast<cudaStream_t>(stream), iterations);
  }
#endif
  (void)stream;
  const size_t layers = engine_->definition().layers.size();
  std::vector<double> warmUp(layers, 0.0);
  executeOnCpu(inputs, outputs, &warmUp);
  std::vector<double> milliseconds(layers, 0.0);
  for (int i = 0; i < iterations; ++i) executeOnCpu(inputs, outputs, &milliseconds);
  std::vector<LayerTiming> timings(layers);
  for (size_t l = 0; l < layers; ++l) timings[l].milliseconds = milliseconds[l] / iterations;
  return timings;
}

void ExecutionContext::executeOnCpu(const std::vector<const void*>& inputs,
                                    const std::vector<void*>& outputs,
                                    std::vector<double>* layerMilliseconds) {
  const EngineDefinition& definition = engine_->definition();
  Buffers& buffers = *buffers_;

  // Bind every tensor to its memory for this run.
  for (size_t t = 0; t < definition.tensors.size(); ++t) {
    TensorView& view = buffers.views[t];
    view.dtype = definition.tensors[t].dtype;
    view.dims = tensorDims_[t];
    const size_t bytes = static_cast<size_t>(volume(view.dims)) * elementSize(view.dtype);
    switch (buffers.sources[t]) {
      case TensorSource::kInput: {
        const int32_t binding = buffers.inputBinding[t];
        KILN_CHECK(inputs[binding] != nullptr || bytes == 0, "input '", definition.tensors[t].name,
                   "' was given a null pointer");
        // Layers never write their inputs; the view type is shared with outputs.
        view.data = const_cast<void*>(inputs[binding]);
        break;
      }
      case TensorSource::kConstant:
        view.data = const_cast<void*>(buffers.weights[t]);
        break;
      case TensorSource::kActivation:
        if (buffers.outputBinding[t] >= 0) {
          view.data = outputs[buffers.outputBinding[t]];
          break;
        }
        if (buffers.memory[t].size() < bytes) buffers.memory[t].resize(bytes);
        view.data = buffers.memory[t].data();
        break;
    }
  }
  for (size_t o = 0; o < outputs.size(); ++o) {
    const int32_t tensor = definition.outputs[o];
    KILN_CHECK(outputs[o] != nullptr || volume(buffers.views[tensor].dims) == 0, "output '",
               definition.tensors[tensor].name, "' was given a null pointer");
  }

  std::vector<const TensorView*> layerInputs;
  std::vector<TensorView> layerOutputs;
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    if (std::holds_alternative<ConstantParams>(layer.params)) continue;
    layerInputs.clear();
    layerOutputs.clear();
    for (int32_t tensor : layer.inputs) {
      layerInputs.push_back(tensor < 0 ? nullptr : &buffers.views[tensor]);
    }
    for (int32_t tensor : layer.outputs) layerOutputs.push_back(buffers.views[tensor]);
    const auto start = std::chrono::steady_clock::now();
    try {
      runLayerOnCpu(layer.params, layerInputs, layerOutputs);
    } catch (const std::exception& error) {
      throw Error(concat("layer '", layer.name, "' (", toString(kindOf(layer.params)),
                         ") failed: ", error.what()));
    }
    if (layerMilliseconds != nullptr) {
      const std::chrono::duration<double, std::milli> took =
          std::chrono::steady_clock::now() - start;
      (*layerMilliseconds)[l] += took.count();
    }
  }

  for (size_t o = 0; o < outputs.size(); ++o) {
    if (buffers.outputInPlace[o]) continue;
    const TensorView& view = buffers.views[definition.outputs[o]];
    const size_t bytes = static_cast<size_t>(volume(view.dims)) * elementSize(view.dtype);
    if (bytes > 0) std::memcpy(outputs[o], view.data, bytes);
  }
}

std::unique_ptr<ExecutionContext> Engine::createExecutionContext(
    const ExecutionSettings& settings) const {
  std::shared_ptr<const Engine> self = weak_from_this().lock();
  KILN_CHECK(self != nullptr,
             "createExecutionContext needs the engine to be owned by a std::shared_ptr (as "
             "Builder::build and Engine::deserialize return it); wrap it in std::make_shared");
  return std::make_unique<ExecutionContext>(std::move(self), settings);
}

}  // namespace kiln

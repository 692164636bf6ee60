#include "runtime/engine_holder.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <atomic>
#include <cstring>
#include <optional>

#include "core/engine/memory_plan.h"

#ifdef KILN_TORCH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace kiln {
namespace {

at::ScalarType toScalarType(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return at::kFloat;
    case DataType::kFloat16:
      return at::kHalf;
    case DataType::kBFloat16:
      return at::kBFloat16;
    case DataType::kInt8:
      return at::kChar;
    case DataType::kInt32:
      return at::kInt;
    case DataType::kInt64:
      return at::kLong;
    case DataType::kBool:
      return at::kBool;
    case DataType::kUInt8:
      return at::kByte;
  }
  throw Error(concat("unknown Kiln data type ", static_cast<int>(dtype)));
}

std::string shapeString(at::IntArrayRef sizes) {
  return toString(Dims(sizes.begin(), sizes.end()));
}

std::atomic<bool> allowOtherGpu{false};

}  // namespace

bool setAllowOtherGpu(bool allow) { return allowOtherGpu.exchange(allow); }

EngineHolder::EngineHolder(std::shared_ptr<const Engine> engine, std::string name)
    : engine_(std::move(engine)), name_(std::move(name)) {
  KILN_CHECK(engine_ != nullptr, "kiln.Engine needs an engine");
}

c10::intrusive_ptr<EngineHolder> EngineHolder::fromPlan(const at::Tensor& plan, std::string name) {
  KILN_CHECK(plan.device().is_cpu() && plan.scalar_type() == at::kByte && plan.dim() == 1,
             "kiln.Engine expects its plan as a 1-D uint8 CPU tensor, got a ",
             c10::toString(plan.scalar_type()), " tensor of shape ", shapeString(plan.sizes()),
             " on ", plan.device().str());
  at::Tensor bytes = plan.contiguous();
  std::shared_ptr<const Engine> engine = Engine::deserialize(
      bytes.data_ptr(), static_cast<size_t>(bytes.numel()), allowOtherGpu.load());
  return c10::make_intrusive<EngineHolder>(std::move(engine), std::move(name));
}

at::Tensor EngineHolder::serialize() const {
  std::vector<uint8_t> plan = engine_->serialize();
  at::Tensor bytes = at::empty({static_cast<int64_t>(plan.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), plan.data(), plan.size());
  return bytes;
}

std::unique_ptr<ExecutionContext> EngineHolder::acquireContext() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!freeContexts_.empty()) {
      auto context = std::move(freeContexts_.back());
      freeContexts_.pop_back();
      return context;
    }
  }
  return engine_->createExecutionContext(settings());
}

ExecutionSettings EngineHolder::settings() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return settings_;
}

void EngineHolder::setCudaGraphs(bool enabled) {
  std::lock_guard<std::mutex> lock(mutex_);
  settings_.cudaGraphs = enabled;
  // Contexts made with the old setting go; new ones are made on demand.
  freeContexts_.clear();
}

std::vector<int64_t> EngineHolder::arenaBytes() const {
  const EngineDefinition& definition = engine_->definition();
  const MemoryPlan plan = planMemory(definition, largestTensorBytes(definition));
  return {plan.arenaBytes, plan.naiveBytes};
}

void EngineHolder::releaseContext(std::unique_ptr<ExecutionContext> context) {
  std::lock_guard<std::mutex> lock(mutex_);
  freeContexts_.push_back(std::move(context));
}

void EngineHolder::setCaptureInputs(bool enabled) {
  std::lock_guard<std::mutex> lock(mutex_);
  captureInputs_ = enabled;
  if (!enabled) capturedInputs_.clear();
}

std::vector<at::Tensor> EngineHolder::capturedInputs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return capturedInputs_;
}

std::vector<at::Tensor> EngineHolder::execute(const std::vector<at::Tensor>& inputs) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (captureInputs_) {
      capturedInputs_.clear();
      for (const at::Tensor& input : inputs) {
        capturedInputs_.push_back(input.defined() ? input.clone() : input);
      }
    }
  }
  return run(inputs,
             [](ExecutionContext& context, const std::vector<const void*>& in,
                const std::vector<void*>& out, void* stream) { context.execute(in, out, stream); });
}

std::vector<EngineHolder::LayerProfile> EngineHolder::profile(const std::vector<at::Tensor>& inputs,
                                                              int64_t iterations) {
  KILN_CHECK(iterations >= 1, "kiln engine '", name_, "': profiling needs at least one ",
             "iteration, got ", iterations);
  std::vector<LayerTiming> timings;
  run(inputs, [&](ExecutionContext& context, const std::vector<const void*>& in,
                  const std::vector<void*>& out, void* stream) {
    timings = context.profileLayers(in, out, static_cast<int>(iterations), stream);
  });
  const Engine& engine = *engine_;
  const EngineDefinition& definition = engine.definition();
  std::vector<LayerProfile> layers;
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    if (std::holds_alternative<ConstantParams>(layer.params)) continue;
    const LayerTiming& timing = timings.at(l);
    std::string kernel = engine.layerKernel(l);
    if (!timing.tactic.empty()) kernel += concat(" [", timing.tactic, "]");
    layers.emplace_back(layer.name, toString(kindOf(layer.params)), kernel,
                        engine.layerPrecision(l), timing.milliseconds);
  }
  return layers;
}

std::vector<at::Tensor> EngineHolder::run(const std::vector<at::Tensor>& inputs,
                                          const RunBody& body) {
  const Engine& engine = *engine_;
  KILN_CHECK(inputs.size() == engine.numInputs(), "kiln engine '", name_, "' takes ",
             engine.numInputs(), " input(s), got ", inputs.size());
  const bool onCpu = engine.target().backend == Backend::kCpu;
  std::vector<at::Tensor> contiguous;
  std::vector<Dims> shapes;
  contiguous.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& input = inputs[i];
    const EngineTensor& expected = engine.inputTensor(i);
    KILN_CHECK(input.defined(), "kiln engine '", name_, "': input ", i, " ('", expected.name,
               "') is an undefined tensor");
    KILN_CHECK(onCpu ? input.device().is_cpu() : input.device().is_cuda(), "kiln engine '", name_,
               "': input ", i, " ('", expected.name, "') is on ", input.device().str(),
               ", but this engine runs on ", onCpu ? "the CPU" : "CUDA", ". Move the input with .",
               onCpu ? "cpu()" : "cuda()", " or compile the model for ",
               input.device().type() == c10::DeviceType::CUDA ? "CUDA" : "the CPU", ".");
    const at::ScalarType expectedType = toScalarType(expected.dtype);
    KILN_CHECK(input.scalar_type() == expectedType, "kiln engine '", name_, "': input ", i, " ('",
               expected.name, "') has dtype ", c10::toString(input.scalar_type()),
               ", but the engine was built for ", c10::toString(expectedType),
               ". Convert it with .to(", c10::toString(expectedType), ").");
    KILN_CHECK(input.dim() == static_cast<int64_t>(expected.dims.size()), "kiln engine '", name_,
               "': input ", i, " ('", expected.name, "') has rank ", input.dim(), " (shape ",
               shapeString(input.sizes()), "), but the engine expects rank ", expected.dims.size(),
               " (shape ", toString(expected.dims), ")");
    contiguous.push_back(input.contiguous());
    shapes.emplace_back(input.sizes().begin(), input.sizes().end());
  }

#ifdef KILN_TORCH_CUDA
  std::optional<c10::cuda::CUDAGuard> deviceGuard;
  void* stream = nullptr;
  if (!onCpu) {
    const at::Device device = contiguous.empty()
                                  ? at::Device(at::kCUDA, c10::cuda::current_device())
                                  : contiguous[0].device();
    for (size_t i = 1; i < contiguous.size(); ++i) {
      KILN_CHECK(contiguous[i].device() == device, "kiln engine '", name_, "': input ", i, " ('",
                 engine.inputTensor(i).name, "') is on ", contiguous[i].device().str(),
                 ", but input 0 is on ", device.str(), "; put every input on one GPU");
    }
    deviceGuard.emplace(device);
    // Runs on the caller's current stream, so it composes with the rest of PyTorch.
    stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  }
#else
  void* stream = nullptr;
  KILN_CHECK(onCpu, "kiln engine '", name_,
             "' is a CUDA engine, but this Kiln runtime was built "
             "against a PyTorch without CUDA; install a CUDA build of PyTorch and rebuild Kiln");
#endif
  std::unique_ptr<ExecutionContext> context = acquireContext();
  std::vector<at::Tensor> outputs;
  try {
    std::vector<Dims> outputDims = context->setInputShapes(shapes);
    std::vector<const void*> inputPointers;
    for (const at::Tensor& t : contiguous) inputPointers.push_back(t.data_ptr());
    std::vector<void*> outputPointers;
    const at::TensorOptions options = at::TensorOptions().device(
        contiguous.empty() ? at::Device(at::kCPU) : contiguous[0].device());
    for (size_t i = 0; i < outputDims.size(); ++i) {
      at::Tensor output =
          at::empty(outputDims[i], options.dtype(toScalarType(engine.outputTensor(i).dtype)));
      outputPointers.push_back(output.data_ptr());
      outputs.push_back(std::move(output));
    }
    body(*context, inputPointers, outputPointers, stream);
  } catch (const Error& error) {
    releaseContext(std::move(context));
    throw Error(concat("kiln engine '", name_, "': ", error.what()));
  }
  releaseContext(std::move(context));
  return outputs;
}

namespace {

std::vector<at::Tensor> executeEngine(std::vector<at::Tensor> inputs,
                                      c10::intrusive_ptr<EngineHolder> engine) {
  return engine->execute(inputs);
}

}  // namespace

TORCH_LIBRARY(kiln, m) {
  m.class_<EngineHolder>("Engine")
      .def(torch::init(
          [](const at::Tensor& plan) { return EngineHolder::fromPlan(plan, "engine"); }))
      .def("serialize", &EngineHolder::serialize)
      .def("inspect",
           [](const c10::intrusive_ptr<EngineHolder>& self) { return self->engine().inspect(); })
      .def("name", [](const c10::intrusive_ptr<EngineHolder>& self) { return self->name(); })
      .def("num_inputs",
           [](const c10::intrusive_ptr<EngineHolder>& self) {
             return static_cast<int64_t>(self->engine().numInputs());
           })
      .def("num_outputs",
           [](const c10::intrusive_ptr<EngineHolder>& self) {
             return static_cast<int64_t>(self->engine().numOutputs());
           })
      .def("backend",
           [](const c10::intrusive_ptr<EngineHolder>& self) {
             return std::string(toString(self->engine().target().backend));
           })
      .def("device_name",
           [](const c10::intrusive_ptr<EngineHolder>& self) {
             return self->engine().target().deviceName;
           })
      .def("tf32",
           [](const c10::intrusive_ptr<EngineHolder>& self) {
             const Tf32Policy& tf32 = self->engine().definition().tf32;
             return std::make_tuple(tf32.convolutions, tf32.matmuls);
           })
      .def("arena_bytes",
           [](const c10::intrusive_ptr<EngineHolder>& self) { return self->arenaBytes(); })
      .def("profile",
           [](const c10::intrusive_ptr<EngineHolder>& self, std::vector<at::Tensor> inputs,
              int64_t iterations) { return self->profile(inputs, iterations); })
      .def("set_capture_inputs", [](const c10::intrusive_ptr<EngineHolder>& self,
                                    bool enabled) { self->setCaptureInputs(enabled); })
      .def("captured_inputs",
           [](const c10::intrusive_ptr<EngineHolder>& self) { return self->capturedInputs(); })
      .def("set_cuda_graphs", [](const c10::intrusive_ptr<EngineHolder>& self,
                                 bool enabled) { self->setCudaGraphs(enabled); })
      .def_pickle(
          [](const c10::intrusive_ptr<EngineHolder>& self) -> std::tuple<std::string, at::Tensor> {
            return {self->name(), self->serialize()};
          },
          [](std::tuple<std::string, at::Tensor> state) {
            return EngineHolder::fromPlan(std::get<1>(state), std::get<0>(state));
          });
  m.def("execute_engine(Tensor[] inputs, __torch__.torch.classes.kiln.Engine engine) -> Tensor[]",
        &executeEngine);
  // Engines built for a GPU of another compute capability load (with a warning) while this is
  // on; returns the previous setting.
  m.def("allow_other_gpu(bool allow) -> bool", &setAllowOtherGpu);
}

}  // namespace kiln

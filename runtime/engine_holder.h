// torch.classes.kiln.Engine: a Kiln engine inside PyTorch. It pickles to the engine's plan, so
// torch.jit.save carries compiled engines and torch.jit.load (Python or C++) brings them back.
#pragma once

#include <torch/custom_class.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/execution_context.h"

namespace kiln {

// Lets plans built for a GPU of another compute capability load, with a warning. Returns the
// previous setting. Process-wide, because torch.jit.load gives unpickling no options.
bool setAllowOtherGpu(bool allow);

class EngineHolder : public torch::CustomClassHolder {
 public:
  EngineHolder(std::shared_ptr<const Engine> engine, std::string name);
  // From a plan: a 1-D uint8 CPU tensor as serialize() returns.
  static c10::intrusive_ptr<EngineHolder> fromPlan(const at::Tensor& plan, std::string name);

  const Engine& engine() const { return *engine_; }
  const std::string& name() const { return name_; }
  at::Tensor serialize() const;

  // Runs the engine on torch tensors: checks every input (count, device, dtype, rank, shape in
  // a profile) and returns freshly allocated outputs.
  std::vector<at::Tensor> execute(const std::vector<at::Tensor>& inputs);

  // Runs the engine on `inputs` (checked as execute checks them) with every layer timed (see
  // ExecutionContext::profileLayers): (layer name, kind, kernel, precision, mean milliseconds)
  // for each layer that is not a constant, in execution order.
  using LayerProfile = std::tuple<std::string, std::string, std::string, std::string, double>;
  std::vector<LayerProfile> profile(const std::vector<at::Tensor>& inputs, int64_t iterations);

  // While on, execute keeps a copy of the inputs of its latest run (what kiln.profile replays
  // through each engine of a compiled module); turning it off drops them.
  void setCaptureInputs(bool enabled);
  std::vector<at::Tensor> capturedInputs() const;

  // CUDA engines: whether contexts capture and replay CUDA graphs (on by default).
  void setCudaGraphs(bool enabled);
  // The activation arena a context allocates, planned and without sharing: {planned, naive}.
  std::vector<int64_t> arenaBytes() const;

 private:
  // Contexts are per caller: a free one is taken for a run and given back after, so one engine
  // serves any number of threads at once.
  std::unique_ptr<ExecutionContext> acquireContext();
  ExecutionSettings settings() const;
  // Checks the inputs, allocates the outputs, and calls `body` on a context with their data and
  // the stream to run on; returns the outputs.
  using RunBody = std::function<void(ExecutionContext&, const std::vector<const void*>&,
                                     const std::vector<void*>&, void*)>;
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs, const RunBody& body);
  void releaseContext(std::unique_ptr<ExecutionContext> context);

  std::shared_ptr<const Engine> engine_;
  std::string name_;
  mutable std::mutex mutex_;
  ExecutionSettings settings_;
  std::vector<std::unique_ptr<ExecutionContext>> freeContexts_;
  bool captureInputs_ = false;
  std::vector<at::Tensor> capturedInputs_;
};

}  // namespace kiln

// torch.classes.kiln.Engine: a Kiln engine inside PyTorch. It pickles to the engine's plan, so
// torch.jit.save carries compiled engines and torch.jit.load (Python or C++) brings them back.
#pragma once

#include <torch/custom_class.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/execution_context.h"

namespace kiln {

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

 private:
  // Contexts are per caller: a free one is taken for a run and given back after, so one engine
  // serves any number of threads at once.
  std::unique_ptr<ExecutionContext> acquireContext();
  void releaseContext(std::unique_ptr<ExecutionContext> context);

  std::shared_ptr<const Engine> engine_;
  std::string name_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<ExecutionContext>> freeContexts_;
};

}  // namespace kiln

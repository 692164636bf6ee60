// ExecutionContext: one caller's state for running an Engine (activation buffers, the shapes
// of the current run). Not thread-safe; use one context per thread or stream.
#pragma once

#include <memory>
#include <vector>

#include "core/engine/engine.h"

namespace kiln {

class CudaRunner;

class ExecutionContext {
 public:
  explicit ExecutionContext(std::shared_ptr<const Engine> engine,
                            const ExecutionSettings& settings = {});
  ~ExecutionContext();

  const Engine& engine() const { return *engine_; }

  // Sets the shapes of this run's inputs (binding order). Checks each input's rank and every
  // dim against the optimization profiles, picks the first profile that holds them all, infers
  // every tensor's dims, and returns the output dims. Throws Error naming the input, the dim
  // and the profile's range when no profile holds the shapes.
  std::vector<Dims> setInputShapes(const std::vector<Dims>& shapes);
  // Checks the element types of this run's inputs (binding order) against the engine's inputs;
  // throws Error naming the input, its type and the one the engine was built for.
  void checkInputTypes(const std::vector<DataType>& types) const;
  // Index of the profile chosen by the last setInputShapes.
  int activeProfile() const { return activeProfile_; }

  // Runs the engine on the shapes of the last setInputShapes. Buffers live where the engine's
  // backend runs (host memory for the CPU backend); outputs are allocated by the caller with the
  // dims setInputShapes returned. `stream` is a cudaStream_t for the CUDA backend.
  void execute(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
               void* stream = nullptr);

  // Runs the engine as execute does (outputs included), one warm-up run then `iterations` runs,
  // timing every layer (and naming the tactic it runs, where the backend chose one): CUDA events
  // around each layer's kernels on the CUDA backend (no CUDA graph), the wall clock on the CPU.
  // Returns each layer's mean milliseconds, in the order of the engine's layers; a layer that runs
  // nothing (a constant, a reshape that aliases its input) takes 0. For finding where the time
  // goes: it synchronizes after every run.
  std::vector<LayerTiming> profileLayers(const std::vector<const void*>& inputs,
                                         const std::vector<void*>& outputs, int iterations,
                                         void* stream = nullptr);

 private:
  void checkExecuteArguments(const std::vector<const void*>& inputs,
                             const std::vector<void*>& outputs) const;
  // The CPU backend's run; adds each layer's milliseconds to `layerMilliseconds` when given.
  void executeOnCpu(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                    std::vector<double>* layerMilliseconds);
  std::shared_ptr<const Engine> engine_;
  int activeProfile_ = -1;
  std::vector<Dims> tensorDims_;  // every tensor's dims for the current shapes
  struct Buffers;
  std::unique_ptr<Buffers> buffers_;
  std::unique_ptr<CudaRunner> cudaRunner_;  // CUDA engines only
};

}  // namespace kiln

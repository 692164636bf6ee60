// The CUDA backend's per-context state and its execution of an engine: weights uploaded once
// per engine, one planned activation arena per context, cuBLASLt and cuDNN handles and plans,
// and CUDA graphs captured per input shape.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/memory_plan.h"

namespace kiln {

struct ExecutionSettings;

class CudaRunner {
 public:
  CudaRunner(std::shared_ptr<const Engine> engine, const ExecutionSettings& settings);
  ~CudaRunner();
  CudaRunner(const CudaRunner&) = delete;
  CudaRunner& operator=(const CudaRunner&) = delete;

  // Runs the engine on `stream` with every tensor's dims for this run. Inputs and outputs are
  // device pointers. Returns before the GPU is done, like any CUDA launch.
  void execute(const std::vector<Dims>& tensorDims, const std::vector<const void*>& inputs,
               const std::vector<void*>& outputs, cudaStream_t stream);

  // ExecutionContext::profileLayers on the GPU: a warm-up run (which also picks every
  // algorithm), then `iterations` runs with a pair of timing events around each layer. Waits for
  // the GPU before it returns.
  std::vector<LayerTiming> profileLayers(const std::vector<Dims>& tensorDims,
                                         const std::vector<const void*>& inputs,
                                         const std::vector<void*>& outputs, cudaStream_t stream,
                                         int iterations);

  const MemoryPlan& memoryPlan() const;
  size_t capturedGraphs() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kiln

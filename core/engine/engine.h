// Engine: the optimized, immutable, serializable result of building a Network.
//
// An Engine is shared (std::shared_ptr<const Engine>) by any number of ExecutionContexts, each
// holding one caller's per-run state. Engines hold no torch types: they are built, saved, loaded
// and run by plain C++.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/ir/layers.h"
#include "core/ir/network.h"
#include "core/ir/types.h"

namespace kiln {

enum class Backend : uint8_t { kCpu = 0, kCuda = 1 };
const char* toString(Backend backend);

// What an engine was built for; a CUDA engine runs only where these match.
struct BuildTarget {
  Backend backend = Backend::kCpu;
  std::string deviceName;  // "cpu", or the GPU's name
  int computeCapabilityMajor = 0;
  int computeCapabilityMinor = 0;
  int cudaVersion = 0;   // CUDA runtime version the engine was built with, 0 on CPU
  int cudnnVersion = 0;  // 0 on CPU
};

// Whether float32 layers may run on TF32 tensor cores (10-bit mantissa inputs, float32
// accumulation) on the GPU. PyTorch decides this per op family (torch.backends.cudnn.allow_tf32,
// torch.backends.cuda.matmul.allow_tf32), and so does Kiln. The CPU backend computes float32.
struct Tf32Policy {
  bool convolutions = false;
  bool matmuls = false;  // matrix multiplies and fully connected layers
};

struct EngineTensor {
  std::string name;
  DataType dtype = DataType::kFloat32;
  Dims dims;  // declared: -1 where dynamic
};

struct EngineLayer {
  std::string name;
  LayerParams params;
  std::vector<int32_t> inputs;   // indices into EngineDefinition::tensors; -1 = absent optional
  std::vector<int32_t> outputs;  // indices into EngineDefinition::tensors
};

// Everything an engine is: what the builder produces and what a plan file holds.
struct EngineDefinition {
  BuildTarget target;
  std::vector<EngineTensor> tensors;
  std::vector<EngineLayer> layers;  // in execution order
  std::vector<int32_t> inputs;      // tensor indices of the engine inputs, in binding order
  std::vector<int32_t> outputs;     // tensor indices of the engine outputs, in binding order
  std::vector<OptimizationProfile> profiles;  // at least one; covers every dynamic input dim
  Tf32Policy tf32;
  // Layers of the network the builder was given, before its passes (0: not made by the builder).
  uint32_t networkLayers = 0;
};

class ExecutionContext;

// One layer's time from ExecutionContext::profileLayers, and the tactic the backend chose for it
// where it chooses among several (the cuDNN algorithm of a convolution); else empty.
struct LayerTiming {
  double milliseconds = 0.0;
  std::string tactic;
};

struct ExecutionSettings {
  // CUDA backend: capture a CUDA graph the first time an input shape is seen and replay it for
  // that shape after. Inputs and outputs then pass through the context's own buffers.
  bool cudaGraphs = true;
  // At most this many graphs are kept (one per input shape); the least recently used goes.
  size_t maxCudaGraphs = 16;
};

// State a backend keeps per engine and shares between the engine's execution contexts (the CUDA
// backend's weights on the GPU).
class EngineBackendState {
 public:
  virtual ~EngineBackendState() = default;
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  explicit Engine(EngineDefinition definition);

  const EngineDefinition& definition() const { return definition_; }
  const BuildTarget& target() const { return definition_.target; }
  size_t numInputs() const { return definition_.inputs.size(); }
  size_t numOutputs() const { return definition_.outputs.size(); }
  const EngineTensor& inputTensor(size_t i) const;
  const EngineTensor& outputTensor(size_t i) const;
  const std::vector<OptimizationProfile>& profiles() const { return definition_.profiles; }

  std::unique_ptr<ExecutionContext> createExecutionContext(
      const ExecutionSettings& settings = {}) const;

  // The plan: a versioned, checksummed byte string (see plan.h).
  std::vector<uint8_t> serialize() const;
  // Throws PlanError when the bytes are truncated, corrupt, foreign or of a newer format, or
  // when a CUDA engine was built for a GPU of another compute capability (unless
  // `allowOtherGpu`, which only warns).
  static std::shared_ptr<Engine> deserialize(const void* data, size_t size,
                                             bool allowOtherGpu = false);

  // A readable description: target, inputs with profiles, layers with kinds and parameters.
  std::string inspect() const;
  // What runs layer `index` of definition().layers on this engine's backend ("cuBLASLt GEMM +
  // bias + relu", "cuDNN convolution", "cpu reference attention", "none (weights)").
  std::string layerKernel(size_t index) const;
  // The type layer `index` computes in: its output's type, and "float32 (TF32)" where float32
  // GEMMs or convolutions may run on TF32 tensor cores.
  std::string layerPrecision(size_t index) const;

  // The backend's state, made by `create` on the first call; later calls return the same one.
  std::shared_ptr<const EngineBackendState> backendState(
      const std::function<std::shared_ptr<const EngineBackendState>()>& create) const;

 private:
  EngineDefinition definition_;
  mutable std::mutex backendStateMutex_;
  mutable std::shared_ptr<const EngineBackendState> backendState_;
};

}  // namespace kiln

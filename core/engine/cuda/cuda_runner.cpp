#include "core/engine/cuda/cuda_runner.h"

#include <algorithm>
#include <exception>
#include <iostream>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "core/engine/cuda/device.h"
#include "core/engine/cuda/pointwise_kernels.h"
#include "core/engine/execution_context.h"
#include "core/engine/kernel_mapping.h"
#include "core/engine/layer_dims.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/convolution.h"
#include "kernels/cuda/cumulative.h"
#include "kernels/cuda/data_movement.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/pooling.h"
#include "kernels/cuda/reduce_softmax.h"
#include "kernels/cuda/resize.h"
#include "kernels/cuda/squeeze_excitation.h"
#include "kernels/cuda/unary_activation.h"

namespace kiln {
namespace {

namespace ck = cuda_kernels;

void check(cudaError_t status, const char* what) {
  KILN_CHECK(status == cudaSuccess, what, " failed: ", cudaGetErrorName(status), " (",
             cudaGetErrorString(status), ")");
}

int64_t roundUp(int64_t value, int64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) {
      const cudaError_t status = cudaMalloc(&data_, bytes);
      KILN_CHECK(status == cudaSuccess, "allocating ", bytes,
                 " bytes of GPU memory failed: ", cudaGetErrorString(status),
                 "; free GPU memory or use a smaller max_shape");
    }
  }
  ~DeviceMemory() {
    if (data_) cudaFree(data_);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  DeviceMemory(DeviceMemory&& other) noexcept { *this = std::move(other); }
  DeviceMemory& operator=(DeviceMemory&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedMemory {
 public:
  explicit PinnedMemory(size_t bytes) {
    if (bytes > 0) check(cudaMallocHost(&data_, bytes), "cudaMallocHost");
  }
  ~PinnedMemory() {
    if (data_) cudaFreeHost(data_);
  }
  PinnedMemory(const PinnedMemory&) = delete;
  PinnedMemory& operator=(const PinnedMemory&) = delete;
  uint8_t* data() const { return static_cast<uint8_t*>(data_); }

 private:
  void* data_ = nullptr;
};

class Stream {
 public:
  Stream() {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// An event that records time, for profiling.
class TimingEvent {
 public:
  TimingEvent() { check(cudaEventCreate(&event_), "cudaEventCreate"); }
  ~TimingEvent() { cudaEventDestroy(event_); }
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class GraphExec {
 public:
  explicit GraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  ~GraphExec() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

class Graph {
 public:
  explicit Graph(cudaGraph_t graph) : graph_(graph) {}
  ~Graph() {
    if (graph_) cudaGraphDestroy(graph_);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  cudaGraph_t get() const { return graph_; }

 private:
  cudaGraph_t graph_ = nullptr;
};

// An engine's constants on the GPU, uploaded once, and its generated pointwise kernels, loaded
// once: shared by every context of the engine.
class DeviceWeights : public EngineBackendState {
 public:
  explicit DeviceWeights(const EngineDefinition& definition)
      : offsets_(definition.tensors.size(), -1),
        pointwiseKernels_(loadPointwiseKernels(definition)) {
    check(cudaGetDevice(&device_), "cudaGetDevice");
    int64_t total = 0;
    std::vector<const ConstantParams*> constants(definition.tensors.size(), nullptr);
    for (const EngineLayer& layer : definition.layers) {
      if (const auto* constant = std::get_if<ConstantParams>(&layer.params)) {
        const int32_t tensor = layer.outputs.at(0);
        constants[tensor] = constant;
        offsets_[tensor] = total;
        total += roundUp(
            constant->weights.bytes ? static_cast<int64_t>(constant->weights.bytes->size()) : 0,
            256);
      }
    }
    memory_ = DeviceMemory(static_cast<size_t>(total));
    for (size_t t = 0; t < constants.size(); ++t) {
      if (!constants[t] || !constants[t]->weights.bytes || constants[t]->weights.bytes->empty()) {
        continue;
      }
      check(cudaMemcpy(memory_.data() + offsets_[t], constants[t]->weights.data(),
                       constants[t]->weights.bytes->size(), cudaMemcpyHostToDevice),
            "uploading weights");
    }
  }
  void* data(int32_t tensor) const { return memory_.data() + offsets_.at(tensor); }

  // The convolution algorithm timed for a shape, shared by every context of the engine so that
  // all of them compute the same bits. The first choice recorded for a shape is kept and
  // returned.
  std::optional<ck::ConvolutionAlgorithm> convolutionChoice(const std::string& shape) const {
    std::lock_guard<std::mutex> lock(choicesMutex_);
    auto found = convolutionChoices_.find(shape);
    if (found == convolutionChoices_.end()) return std::nullopt;
    return found->second;
  }
  ck::ConvolutionAlgorithm rememberConvolutionChoice(const std::string& shape,
                                                     const ck::ConvolutionAlgorithm& choice) const {
    std::lock_guard<std::mutex> lock(choicesMutex_);
    return convolutionChoices_.emplace(shape, choice).first->second;
  }
  // The GEMM algorithms timed per configuration, shared by every context of the engine for the
  // same reason.
  const std::shared_ptr<ck::GemmChoices>& gemmChoices() const { return gemmChoices_; }
  int device() const { return device_; }
  size_t bytes() const { return memory_.bytes(); }
  const ck::PointwiseKernel& pointwiseKernel(size_t layer) const {
    KILN_CHECK(layer < pointwiseKernels_.size() && pointwiseKernels_[layer] != nullptr, "layer ",
               layer, " has no loaded pointwise kernel");
    return *pointwiseKernels_[layer];
  }

 private:
  std::vector<int64_t> offsets_;
  std::vector<std::unique_ptr<ck::PointwiseKernel>> pointwiseKernels_;
  DeviceMemory memory_;
  int device_ = 0;
  mutable std::mutex choicesMutex_;
  mutable std::map<std::string, ck::ConvolutionAlgorithm> convolutionChoices_;
  std::shared_ptr<ck::GemmChoices> gemmChoices_ = std::make_shared<ck::GemmChoices>();
};

struct DeviceView {
  DataType dtype = DataType::kFloat32;
  Dims dims;
  void* data = nullptr;
  size_t bytes() const { return static_cast<size_t>(volume(dims)) * elementSize(dtype); }
};

using Inputs = std::vector<const DeviceView*>;
using Outputs = std::vector<DeviceView*>;

const DeviceView& requiredInput(const Inputs& inputs, size_t index, const char* what) {
  KILN_CHECK(index < inputs.size() && inputs[index] != nullptr, "input ", index, " (", what,
             ") is missing");
  return *inputs[index];
}

const void* optionalData(const Inputs& inputs, size_t index) {
  return index < inputs.size() && inputs[index] ? inputs[index]->data : nullptr;
}

// The dims of a (N, spatial..., C) tensor in the (N, C, spatial...) order kernels take them in.
Dims channelsFirstDims(const Dims& dims) {
  return permuteDims(dims, toChannelsFirstPermutation(dims.size()));
}

template <typename ConvParams>
ck::ConvolutionParams convolutionParams(const ConvParams& p, bool transposed, const DeviceView& x,
                                        const DeviceView& out) {
  bool channelsLast = false;
  if constexpr (std::is_same_v<ConvParams, ConvolutionParams>) channelsLast = p.channelsLast;
  auto c = channelsLast ? convolutionGeometry<ck::ConvolutionParams>(p, channelsFirstDims(x.dims),
                                                                     channelsFirstDims(out.dims))
                        : convolutionGeometry<ck::ConvolutionParams>(p, x.dims, out.dims);
  c.layout = channelsLast ? ck::TensorLayout::kNHWC : ck::TensorLayout::kNCHW;
  c.transposed = transposed;
  c.type = toKernelType(x.dtype);
  return c;
}

ck::ShuffleParams shuffleParams(const ShuffleParams& p, const DeviceView& x,
                                const DeviceView& out) {
  ck::ShuffleParams s;
  s.inShape = x.dims;
  s.firstPermutation = p.firstPermutation;
  s.secondPermutation = p.secondPermutation;
  s.reshapedShape = shuffleReshapedDims(p, out.dims);
  return s;
}

ck::ConvolutionActivation convolutionActivation(FusedActivation activation) {
  switch (activation) {
    case FusedActivation::kNone:
      return ck::ConvolutionActivation::kNone;
    case FusedActivation::kRelu:
      return ck::ConvolutionActivation::kRelu;
    case FusedActivation::kRelu6:
      return ck::ConvolutionActivation::kRelu6;
    case FusedActivation::kSilu:
      return ck::ConvolutionActivation::kSilu;
    case FusedActivation::kHardSwish:
      return ck::ConvolutionActivation::kHardSwish;
    case FusedActivation::kGeluErf:
    case FusedActivation::kGeluTanh:
      break;
  }
  throw Error(concat("a convolution cannot apply the fused activation ", toString(activation)));
}

// cuBLASLt has one GELU epilogue, the tanh approximation: the builder fuses erf GELU only into
// fp16 and bf16 layers (fully_connected_epilogue_fusion.cpp bounds the difference).
ck::GemmActivation gemmActivation(FusedActivation activation) {
  switch (activation) {
    case FusedActivation::kNone:
      return ck::GemmActivation::kNone;
    case FusedActivation::kRelu:
      return ck::GemmActivation::kRelu;
    case FusedActivation::kGeluErf:
    case FusedActivation::kGeluTanh:
      return ck::GemmActivation::kGeluTanh;
    case FusedActivation::kRelu6:
    case FusedActivation::kSilu:
    case FusedActivation::kHardSwish:
      break;
  }
  throw Error(concat("a GEMM epilogue cannot apply the fused activation ", toString(activation)));
}

ck::ReduceParams reduceParams(const ReduceParams& p, const DeviceView& x) {
  ck::ReduceParams r;
  r.function = toReduceFunction(p.op);
  r.type = toKernelType(x.dtype);
  r.inShape = x.dims;
  r.reduced.assign(x.dims.size(), p.axes.empty());
  for (int64_t axis : p.axes) r.reduced[normalizeAxis(axis, x.dims.size(), "axis")] = true;
  return r;
}

ck::GatherParams gatherParams(const GatherParams& p, const DeviceView& data,
                              const DeviceView& indices) {
  KILN_CHECK(indices.dtype == DataType::kInt32 || indices.dtype == DataType::kInt64,
             "gather indices must be int32 or int64, got ", toString(indices.dtype));
  auto g = gatherGeometry<ck::GatherParams>(p, data.dims, indices.dims);
  g.indexType = toKernelType(indices.dtype);
  return g;
}

ck::AdaptivePoolingParams adaptivePoolingParams(const PoolingParams& p, const DeviceView& x,
                                                const DeviceView& out) {
  KILN_CHECK(x.dims.size() >= 3, "pooling needs an input (N, C, spatial...), got ",
             toString(x.dims));
  const Dims xDims = p.channelsLast ? channelsFirstDims(x.dims) : x.dims;
  const Dims yDims = p.channelsLast ? channelsFirstDims(out.dims) : out.dims;
  ck::AdaptivePoolingParams a;
  a.mode = p.type == PoolingType::kMax ? ck::PoolingMode::kMax : ck::PoolingMode::kAverage;
  a.batch = xDims[0];
  a.channels = xDims[1];
  a.inSpatial = spatialDims(xDims);
  a.outSpatial = spatialDims(yDims);
  a.type = toKernelType(x.dtype);
  a.channelsLast = p.channelsLast;
  return a;
}

// x (N, spatial..., C) read as (N, plane, C); w1 (R, C), w2 (K, R).
ck::SqueezeExcitationParams squeezeExcitationParams(const SqueezeExcitationParams& p, const Dims& x,
                                                    const Dims& w1, const Dims& w2,
                                                    DataType dtype) {
  KILN_CHECK(x.size() >= 3 && w1.size() == 2 && w2.size() == 2,
             "squeeze-and-excitation needs x (N, spatial..., C), w1 (R, C) and w2 (K, R), got ",
             toString(x), ", ", toString(w1), " and ", toString(w2));
  ck::SqueezeExcitationParams s;
  s.batch = x.front();
  s.plane = volume(Dims(x.begin() + 1, x.end() - 1));
  s.channels = x.back();
  s.hidden = w1[0];
  s.outFeatures = w2[0];
  s.hasHiddenActivation = p.hasHiddenActivation;
  s.hiddenActivation = {toActivation(p.hiddenActivation), p.hiddenAlpha, p.hiddenBeta};
  s.type = toKernelType(dtype);
  return s;
}

// Scratch a layer needs at the given dims, and at any smaller ones of a dynamic profile (its
// largest shapes are among those it is asked for), beyond the fixed GEMM and convolution
// workspace.
size_t layerScratchBytes(const LayerParams& params, const std::vector<const Dims*>& inputDims,
                         const std::vector<const Dims*>& outputDims,
                         const std::vector<DataType>& inputTypes) {
  if (const auto* reduce = std::get_if<ReduceParams>(&params)) {
    DeviceView x{inputTypes.at(0), *inputDims.at(0), nullptr};
    return ck::reduceWorkspaceBound(reduceParams(*reduce, x));
  }
  if (const auto* shuffle = std::get_if<ShuffleParams>(&params)) {
    DeviceView x{inputTypes.at(0), *inputDims.at(0), nullptr};
    DeviceView out{inputTypes.at(0), *outputDims.at(0), nullptr};
    return ck::shuffleWorkspaceSize(shuffleParams(*shuffle, x, out), elementSize(x.dtype));
  }
  if (const auto* pooling = std::get_if<PoolingParams>(&params); pooling && pooling->adaptive) {
    DeviceView x{inputTypes.at(0), *inputDims.at(0), nullptr};
    DeviceView out{inputTypes.at(0), *outputDims.at(0), nullptr};
    return ck::adaptivePoolingWorkspaceBound(adaptivePoolingParams(*pooling, x, out));
  }
  if (const auto* squeeze = std::get_if<SqueezeExcitationParams>(&params)) {
    return ck::squeezeExcitationWorkspaceBound(squeezeExcitationParams(
        *squeeze, *inputDims.at(0), *inputDims.at(1), *inputDims.at(3), inputTypes.at(0)));
  }
  return 0;
}

// GEMMs get cuBLASLt's recommended workspace; convolutions choose algorithms that fit theirs:
// at least this much, and more for large tensors, since cuDNN's tensor-core kernels on NCHW
// tensors transpose the input and output through the workspace (without room for that, only
// much slower CUDA-core kernels qualify).
constexpr size_t kMinConvolutionWorkspaceBytes = size_t{256} << 20;
constexpr size_t kConvolutionWorkspaceSlackBytes = size_t{32} << 20;

// What a run reports back from the GPU: per gather layer, out-of-range indices; per elementwise
// layer, an integer division by zero. A kernel cannot throw, and waiting for the run would stall
// the caller, so each run's status is copied to the host behind it and checked by a later run of
// the context once it has landed.
struct StatusLayout {
  std::vector<int64_t> gatherOffset;       // per layer: offset of its GatherStatus, or -1
  std::vector<int64_t> domainErrorOffset;  // per layer: offset of its int32 flag, or -1
  size_t bytes = 0;
};

// Runs whose status may be in flight at once: the host runs at most this many runs ahead of the
// GPU on an engine that reports status, and waits for the oldest beyond that.
constexpr size_t kStatusSlots = 8;

// One run's status on its way to the host: the copy lands in `host`, then `landed` fires.
struct StatusSlot {
  explicit StatusSlot(size_t bytes) : host(bytes) {}
  PinnedMemory host;
  Event landed;
  bool pending = false;
  uint64_t run = 0;  // which run of the context it reports
};

}  // namespace

struct CudaRunner::State {
  std::shared_ptr<const Engine> engine;
  ExecutionSettings settings;
  std::shared_ptr<const DeviceWeights> weights;
  MemoryPlan memoryPlan;
  DeviceMemory arena;
  DeviceMemory workspace;
  size_t scratchBytes = 0;  // at the start of `workspace`, for reduce, shuffle, pooling layers
  StatusLayout statusLayout;
  DeviceMemory status;
  std::vector<std::unique_ptr<StatusSlot>> statusSlots;  // a ring, used in run order
  size_t nextStatusSlot = 0;
  uint64_t runs = 0;
  Event done;
  cudaStream_t lastStream = nullptr;
  bool ranBefore = false;
  ck::CublasLtHandle cublasLt;
  ck::GemmPlanCache gemmPlans;
  ck::CudnnHandle cudnn;
  std::map<std::string, std::unique_ptr<ck::ConvolutionPlan>> convolutionPlans;  // by shape

  // CUDA graphs: inputs and outputs of graph runs pass through these context buffers.
  std::vector<DeviceMemory> stagedInputs;
  std::vector<DeviceMemory> stagedOutputs;
  std::unique_ptr<Stream> captureStream;
  struct CapturedGraph {
    std::unique_ptr<Graph> graph;
    std::unique_ptr<GraphExec> exec;
  };
  std::map<std::vector<Dims>, CapturedGraph> graphs;
  std::list<std::vector<Dims>> graphUse;  // most recently used first
  std::map<std::vector<Dims>, bool> uncapturable;

  std::vector<DeviceView> views;
  // While profileLayers' warm-up run is in flight: where runLayer names each layer's tactic.
  std::vector<LayerTiming>* layerTimings = nullptr;

  State(std::shared_ptr<const Engine> e, const ExecutionSettings& s, const StatusLayout& layout)
      : engine(std::move(e)), settings(s), statusLayout(layout), status(layout.bytes) {
    if (layout.bytes == 0) return;
    for (size_t i = 0; i < kStatusSlots; ++i) {
      statusSlots.push_back(std::make_unique<StatusSlot>(layout.bytes));
    }
  }

  void bindViews(const std::vector<Dims>& tensorDims, const std::vector<const void*>& inputs,
                 const std::vector<void*>& outputs);
  // `layerEvents`, when given, holds two events per layer, recorded before and after it.
  void runLayers(cudaStream_t stream,
                 const std::vector<std::unique_ptr<TimingEvent>>* layerEvents = nullptr);
  void runLayer(size_t index, const EngineLayer& layer, cudaStream_t stream);
  // Whether running the layer does anything: constants are weights, and a reshape whose output
  // aliases its input has nothing to do.
  bool launches(const EngineLayer& layer) const {
    return !std::holds_alternative<ConstantParams>(layer.params) &&
           (layer.outputs.empty() || memoryPlan.aliasOf[layer.outputs[0]] == MemoryPlan::kNoAlias);
  }
  void copyOutputsNotWrittenInPlace(const std::vector<void*>& outputs, cudaStream_t stream);
  // Before a run: reports the errors of earlier runs whose status has landed, and waits for the
  // oldest one in flight when every status slot is taken.
  void checkEarlierRuns();
  // After a run: copies its status to the host behind it.
  void readStatus(cudaStream_t stream);
  void checkStatus(StatusSlot& slot);
  void captureGraph(const std::vector<Dims>& key, const std::vector<Dims>& tensorDims);
};

namespace {

StatusLayout layoutStatus(const EngineDefinition& definition) {
  StatusLayout layout;
  layout.gatherOffset.assign(definition.layers.size(), -1);
  layout.domainErrorOffset.assign(definition.layers.size(), -1);
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const LayerParams& params = definition.layers[l].params;
    if (std::holds_alternative<GatherParams>(params)) {
      layout.gatherOffset[l] = static_cast<int64_t>(layout.bytes);
      layout.bytes += sizeof(ck::GatherStatus);
    } else if (std::holds_alternative<ElementwiseParams>(params)) {
      layout.domainErrorOffset[l] = static_cast<int64_t>(layout.bytes);
      layout.bytes += 8;
    }
  }
  return layout;
}

}  // namespace

CudaRunner::CudaRunner(std::shared_ptr<const Engine> engine, const ExecutionSettings& settings) {
  KILN_CHECK(engine != nullptr, "a CudaRunner needs an engine");
  currentCudaDevice();  // a clear error when there is no GPU, before any CUDA call fails
  const EngineDefinition& definition = engine->definition();
  state_ = std::make_unique<State>(engine, settings, layoutStatus(definition));
  State& s = *state_;
  s.weights = std::static_pointer_cast<const DeviceWeights>(
      engine->backendState([&]() -> std::shared_ptr<const EngineBackendState> {
        return std::make_shared<DeviceWeights>(definition);
      }));
  s.gemmPlans.shareChoices(s.weights->gemmChoices());
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  KILN_CHECK(device == s.weights->device(), "this engine's weights are on GPU ",
             s.weights->device(), ", but the current device is GPU ", device,
             "; run the engine on GPU ", s.weights->device(), " or build another for GPU ", device);

  const std::vector<std::vector<Dims>> corners = dimsAtProfileCorners(definition);
  std::vector<int64_t> largest(definition.tensors.size(), 0);
  bool hasConvolution = false;
  size_t convolutionWorkspace = kMinConvolutionWorkspaceBytes;
  for (const std::vector<Dims>& dims : corners) {
    for (size_t t = 0; t < dims.size(); ++t) {
      largest[t] =
          std::max(largest[t], volume(dims[t]) *
                                   static_cast<int64_t>(elementSize(definition.tensors[t].dtype)));
    }
    for (const EngineLayer& layer : definition.layers) {
      std::vector<const Dims*> inputDims, outputDims;
      std::vector<DataType> inputTypes;
      for (int32_t t : layer.inputs) {
        inputDims.push_back(t < 0 ? nullptr : &dims[t]);
        inputTypes.push_back(t < 0 ? DataType::kFloat32 : definition.tensors[t].dtype);
      }
      for (int32_t t : layer.outputs) outputDims.push_back(&dims[t]);
      s.scratchBytes = std::max(
          s.scratchBytes,
          static_cast<size_t>(roundUp(static_cast<int64_t>(layerScratchBytes(
                                          layer.params, inputDims, outputDims, inputTypes)),
                                      256)));
      if (std::holds_alternative<ConvolutionParams>(layer.params) ||
          std::holds_alternative<DeconvolutionParams>(layer.params)) {
        hasConvolution = true;
        size_t operands = kConvolutionWorkspaceSlackBytes;
        for (int32_t t : {layer.inputs.at(0), layer.inputs.at(1), layer.outputs.at(0)}) {
          operands +=
              static_cast<size_t>(volume(dims[t])) * elementSize(definition.tensors[t].dtype);
        }
        convolutionWorkspace = std::max(convolutionWorkspace, operands);
      }
    }
  }
  s.memoryPlan = planMemory(definition, largest);
  s.arena = DeviceMemory(static_cast<size_t>(s.memoryPlan.arenaBytes));
  s.workspace =
      DeviceMemory(s.scratchBytes + std::max(ck::kGemmRecommendedWorkspaceSize,
                                             hasConvolution ? convolutionWorkspace : size_t{0}));
  if (settings.cudaGraphs) {
    for (int32_t t : definition.inputs)
      s.stagedInputs.emplace_back(static_cast<size_t>(largest[t]));
    for (int32_t t : definition.outputs) {
      s.stagedOutputs.emplace_back(static_cast<size_t>(largest[t]));
    }
    s.captureStream = std::make_unique<Stream>();
  }
  s.views.resize(definition.tensors.size());
}

CudaRunner::~CudaRunner() {
  if (state_ && state_->ranBefore) {
    // The GPU may still be reading the arena; let it finish before the memory goes.
    cudaEventSynchronize(state_->done.get());
  }
}

const MemoryPlan& CudaRunner::memoryPlan() const { return state_->memoryPlan; }

size_t CudaRunner::capturedGraphs() const { return state_->graphs.size(); }

void CudaRunner::State::bindViews(const std::vector<Dims>& tensorDims,
                                  const std::vector<const void*>& inputs,
                                  const std::vector<void*>& outputs) {
  const EngineDefinition& definition = engine->definition();
  for (size_t t = 0; t < definition.tensors.size(); ++t) {
    views[t].dtype = definition.tensors[t].dtype;
    views[t].dims = tensorDims[t];
    views[t].data = memoryPlan.offsets[t] >= 0 ? arena.data() + memoryPlan.offsets[t] : nullptr;
    const auto needed = static_cast<int64_t>(views[t].bytes());
    KILN_CHECK(memoryPlan.offsets[t] < 0 || needed <= memoryPlan.bytes[t], "tensor '",
               definition.tensors[t].name, "' needs ", needed, " bytes at these input shapes, ",
               "more than the ", memoryPlan.bytes[t], " planned from the profiles' shapes");
  }
  for (const EngineLayer& layer : definition.layers) {
    if (std::holds_alternative<ConstantParams>(layer.params)) {
      views[layer.outputs.at(0)].data = weights->data(layer.outputs.at(0));
    }
  }
  // Outputs first, so that an output that is also an input or a constant keeps its source.
  for (size_t o = 0; o < definition.outputs.size(); ++o) {
    DeviceView& view = views[definition.outputs[o]];
    if (view.data == nullptr) view.data = outputs[o];
  }
  for (size_t i = 0; i < definition.inputs.size(); ++i) {
    views[definition.inputs[i]].data = const_cast<void*>(inputs[i]);
  }
  // Last, once every root has its memory (roots are never aliases themselves).
  for (size_t t = 0; t < definition.tensors.size(); ++t) {
    const int32_t root = memoryPlan.aliasOf[t];
    if (root != MemoryPlan::kNoAlias) views[t].data = views[root].data;
  }
}

void CudaRunner::State::copyOutputsNotWrittenInPlace(const std::vector<void*>& outputs,
                                                     cudaStream_t stream) {
  const EngineDefinition& definition = engine->definition();
  for (size_t o = 0; o < definition.outputs.size(); ++o) {
    const DeviceView& view = views[definition.outputs[o]];
    if (view.data == outputs[o] || view.bytes() == 0) continue;
    check(cudaMemcpyAsync(outputs[o], view.data, view.bytes(), cudaMemcpyDeviceToDevice, stream),
          "copying an engine output");
  }
}

void CudaRunner::State::runLayers(cudaStream_t stream,
                                  const std::vector<std::unique_ptr<TimingEvent>>* layerEvents) {
  const EngineDefinition& definition = engine->definition();
  cudnn.setStream(stream);
  if (statusLayout.bytes > 0) {
    check(cudaMemsetAsync(status.data(), 0, statusLayout.bytes, stream), "clearing run status");
  }
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    if (!launches(layer)) continue;
    if (layerEvents != nullptr) {
      check(cudaEventRecord((*layerEvents)[2 * l]->get(), stream), "recording a layer's start");
    }
    try {
      runLayer(l, layer, stream);
    } catch (const Error& error) {
      throw Error(concat("layer '", layer.name, "' (", toString(kindOf(layer.params)),
                         ") failed on the GPU: ", error.what()));
    } catch (const std::exception& error) {
      throw Error(concat("layer '", layer.name, "' (", toString(kindOf(layer.params)),
                         ") failed on the GPU: ", error.what()));
    }
    if (layerEvents != nullptr) {
      check(cudaEventRecord((*layerEvents)[2 * l + 1]->get(), stream), "recording a layer's end");
    }
  }
}

void CudaRunner::State::runLayer(size_t index, const EngineLayer& layer, cudaStream_t stream) {
  Inputs in;
  for (int32_t t : layer.inputs) in.push_back(t < 0 ? nullptr : &views[t]);
  Outputs out;
  for (int32_t t : layer.outputs) out.push_back(&views[t]);
  DeviceView& y = *out.at(0);
  uint8_t* scratch = workspace.data();
  ck::GemmWorkspace gemmWorkspace{workspace.data() + scratchBytes,
                                  workspace.bytes() - scratchBytes};
  ck::ConvolutionWorkspace convolutionWorkspace{workspace.data() + scratchBytes,
                                                workspace.bytes() - scratchBytes};
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConvolutionParams> ||
                      std::is_same_v<P, DeconvolutionParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::ConvolutionParams params =
              convolutionParams(p, std::is_same_v<P, DeconvolutionParams>, x, y);
          params.allowTf32 = engine->definition().tf32.convolutions;
          if constexpr (std::is_same_v<P, ConvolutionParams>) {
            params.activation = convolutionActivation(p.activation);
            params.inputActivation = convolutionActivation(p.inputActivation);
          }
          const ck::ConvolutionTensors tensors{x.data, requiredInput(in, 1, "weight").data,
                                               optionalData(in, 2), y.data, optionalData(in, 3)};
          const std::string shape = ck::describe(params);
          auto found = convolutionPlans.find(shape);
          if (found == convolutionPlans.end()) {
            std::unique_ptr<ck::ConvolutionPlan> plan;
            if (auto choice = weights->convolutionChoice(shape)) {
              plan = ck::ConvolutionPlan::create(cudnn, params, *choice);
            } else {
              // First sight of this shape: time cuDNN's algorithms on the real buffers.
              plan = ck::ConvolutionPlan::autotune(cudnn, params, tensors, convolutionWorkspace,
                                                   stream);
              const ck::ConvolutionAlgorithm kept =
                  weights->rememberConvolutionChoice(shape, plan->algorithm());
              if (!ck::sameChoice(kept, plan->algorithm())) {
                // Another context timed this shape first; use its choice.
                plan = ck::ConvolutionPlan::create(cudnn, params, kept);
              }
            }
            found = convolutionPlans.emplace(shape, std::move(plan)).first;
          }
          const ck::ConvolutionPlan* plan = found->second.get();
          if (layerTimings != nullptr) {
            (*layerTimings)[index].tactic = ck::describe(plan->algorithm());
          }
          ck::convolution(cudnn, *plan, tensors, convolutionWorkspace, stream);
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          const DeviceView& a = requiredInput(in, 0, "a");
          const DeviceView& b = requiredInput(in, 1, "b");
          ck::MatMulParams params;
          params.aShape = a.dims;
          params.bShape = b.dims;
          params.transposeA = p.transposeA;
          params.transposeB = p.transposeB;
          params.dtype = toKernelType(a.dtype);
          params.allowTf32 = engine->definition().tf32.matmuls;
          ck::matmul(cublasLt, gemmPlans, params, a.data, b.data, nullptr, y.data, gemmWorkspace,
                     stream);
        } else if constexpr (std::is_same_v<P, FullyConnectedParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          const DeviceView& weight = requiredInput(in, 1, "weight");
          KILN_CHECK(!x.dims.empty() && weight.dims.size() == 2,
                     "fully connected needs x (..., K) and weight (N, K)");
          ck::FullyConnectedParams params;
          params.inFeatures = x.dims.back();
          params.outFeatures = weight.dims[0];
          params.rows = volume(Dims(x.dims.begin(), x.dims.end() - 1));
          params.dtype = toKernelType(x.dtype);
          params.allowTf32 = engine->definition().tf32.matmuls;
          KILN_CHECK(
              p.activation != FusedActivation::kGeluErf || x.dtype != DataType::kFloat32,
              "the GPU computes a fused erf GELU with the tanh approximation, which float32 ",
              "does not take: keep the GELU a separate layer");
          params.activation = gemmActivation(p.activation);
          ck::fullyConnected(cublasLt, gemmPlans, params, x.data, weight.data, optionalData(in, 2),
                             optionalData(in, 3), y.data, gemmWorkspace, stream);
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          const DeviceView& a = requiredInput(in, 0, "a");
          const DeviceView& b = requiredInput(in, 1, "b");
          const size_t rank = y.dims.size();
          ck::BinaryParams params;
          params.op = toBinaryOp(p.op);
          params.type = toKernelType(a.dtype);
          params.aShape = alignToRank(a.dims, rank);
          params.bShape = alignToRank(b.dims, rank);
          params.outShape = y.dims;
          auto* domainError =
              reinterpret_cast<int32_t*>(status.data() + statusLayout.domainErrorOffset.at(index));
          ck::binaryElementwise(params, a.data, b.data, y.data, stream, domainError);
        } else if constexpr (std::is_same_v<P, UnaryParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::unary(toUnaryFunction(p.op), toKernelType(x.dtype), x.data, y.data, volume(x.dims),
                    stream);
        } else if constexpr (std::is_same_v<P, ActivationParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::activation({toActivation(p.type), p.alpha, p.beta}, toKernelType(x.dtype), x.data,
                         y.data, volume(x.dims), stream);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          if (p.adaptive) {
            ck::adaptivePooling(adaptivePoolingParams(p, x, y), x.data, y.data, scratch, stream);
            return;
          }
          KILN_CHECK(x.dims.size() >= 3, "pooling needs an input (N, C, spatial...), got ",
                     toString(x.dims));
          const ck::PoolingMode mode =
              p.type == PoolingType::kMax ? ck::PoolingMode::kMax : ck::PoolingMode::kAverage;
          const Dims xDims = p.channelsLast ? channelsFirstDims(x.dims) : x.dims;
          const Dims yDims = p.channelsLast ? channelsFirstDims(y.dims) : y.dims;
          const size_t rank = p.kernel.size();
          KILN_CHECK(x.dims.size() == rank + 2, "input rank ", x.dims.size(),
                     " does not match a window of ", rank, " spatial dims");
          ck::PoolingParams params;
          params.mode = mode;
          params.batch = xDims[0];
          params.channels = xDims[1];
          params.inSpatial = spatialDims(xDims);
          params.outSpatial = spatialDims(yDims);
          params.channelsLast = p.channelsLast;
          params.kernel = p.kernel;
          params.stride = orDefault(p.stride, rank, 1);
          params.prePadding = orDefault(p.prePadding, rank, 0);
          params.postPadding = orDefault(p.postPadding, rank, 0);
          params.dilation = orDefault(p.dilation, rank, 1);
          params.countIncludePad = p.countIncludePad;
          params.type = toKernelType(x.dtype);
          ck::pooling(params, x.data, y.data, stream);
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::reduce(reduceParams(p, x), x.data, y.data, scratch, stream);
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::SoftmaxParams params;
          // A scalar is a one-element row: softmax 1, log-softmax 0, as torch gives.
          params.shape = x.dims.empty() ? Dims{1} : x.dims;
          params.axis = x.dims.empty() ? 0 : normalizeAxis(p.axis, x.dims.size(), "axis");
          params.log = p.log;
          params.type = toKernelType(x.dtype);
          ck::softmax(params, x.data, y.data, stream);
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          const DeviceView* scale = in.size() > 1 ? in[1] : nullptr;
          if (p.type == NormalizationType::kBatch) {
            KILN_CHECK(x.dims.size() >= 2, "batch norm needs an input (N, C, ...), got ",
                       toString(x.dims));
            const DeviceView& mean = requiredInput(in, 3, "mean");
            // (outer, channels, inner) around the channel axis; channels last (inner 1), the
            // kernel's channels-last form, which loads vectors across channels.
            const auto axis = static_cast<size_t>(normalizeAxis(p.axis, x.dims.size(), "axis"));
            ck::BatchNormParams params;
            params.batch = volume(Dims(x.dims.begin(), x.dims.begin() + axis));
            params.channels = x.dims[axis];
            params.spatial = volume(Dims(x.dims.begin() + axis + 1, x.dims.end()));
            params.channelsLast = axis + 1 == x.dims.size();
            params.epsilon = p.epsilon;
            params.type = toKernelType(x.dtype);
            params.parameterType = toKernelType(mean.dtype);
            ck::batchNorm(params, x.data, optionalData(in, 1), optionalData(in, 2), mean.data,
                          requiredInput(in, 4, "var").data, y.data, stream);
            return;
          }
          const int64_t axis = normalizeAxis(p.axis, x.dims.size(), "axis");
          ck::LayerNormParams params;
          params.rows = volume(Dims(x.dims.begin(), x.dims.begin() + axis));
          params.cols = volume(Dims(x.dims.begin() + axis, x.dims.end()));
          params.epsilon = p.epsilon;
          params.type = toKernelType(x.dtype);
          params.parameterType = toKernelType(scale ? scale->dtype : x.dtype);
          ck::layerNorm(params, x.data, optionalData(in, 1), optionalData(in, 2),
                        optionalData(in, 3), y.data, stream);
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::shuffle(shuffleParams(p, x, y), elementSize(x.dtype), x.data, y.data, scratch,
                      stream);
        } else if constexpr (std::is_same_v<P, ConcatParams>) {
          KILN_CHECK(!in.empty(), "concat needs at least one input");
          std::vector<const void*> data;
          std::vector<Dims> shapes;
          for (size_t i = 0; i < in.size(); ++i) {
            const DeviceView& x = requiredInput(in, i, "x");
            data.push_back(x.data);
            shapes.push_back(x.dims);
          }
          ck::concat(data, shapes, normalizeAxis(p.axis, y.dims.size(), "axis"),
                     elementSize(y.dtype), y.data, stream);
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::slice(sliceGeometry<ck::SliceParams>(p, x.dims, y.dims), elementSize(x.dtype), x.data,
                    y.data, stream);
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          const DeviceView& data = requiredInput(in, 0, "data");
          const DeviceView& indices = requiredInput(in, 1, "indices");
          auto* gatherStatus = reinterpret_cast<ck::GatherStatus*>(
              status.data() + statusLayout.gatherOffset.at(index));
          ck::gather(gatherParams(p, data, indices), elementSize(data.dtype), data.data,
                     indices.data, y.data, gatherStatus, stream);
        } else if constexpr (std::is_same_v<P, CastParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          ck::cast(x.data, toKernelType(x.dtype), y.data, toKernelType(p.toType), volume(x.dims),
                   stream);
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          const DeviceView& q = requiredInput(in, 0, "q");
          const DeviceView& k = requiredInput(in, 1, "k");
          const DeviceView& v = requiredInput(in, 2, "v");
          const DeviceView* mask = in.size() > 3 ? in[3] : nullptr;
          AttentionOffsets offsets;
          auto params = attentionGeometry<ck::AttentionParams>(
              p, q.dims, k.dims, v.dims, y.dims, mask ? &mask->dims : nullptr, &offsets);
          params.type = toKernelType(q.dtype);
          if (mask != nullptr) {
            params.mask = mask->dtype == DataType::kBool ? ck::AttentionMask::kBool
                                                         : ck::AttentionMask::kAdditive;
            params.maskType = toKernelType(mask->dtype);
          }
          const size_t element = elementSize(q.dtype);
          auto at = [&](const DeviceView& view, int64_t offset) {
            return static_cast<uint8_t*>(view.data) + static_cast<size_t>(offset) * element;
          };
          ck::attention(params, at(q, offsets.q), at(k, offsets.k), at(v, offsets.v),
                        mask ? mask->data : nullptr, at(y, offsets.out), stream);
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          auto params = resizeGeometry<ck::ResizeParams>(p, x.dims, y.dims);
          params.mode = toResizeMode(p.mode);
          params.type = toKernelType(x.dtype);
          ck::resize(params, x.data, y.data, stream);
        } else if constexpr (std::is_same_v<P, CumulativeParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          auto params = cumulativeGeometry<ck::CumulativeParams>(p, x.dims);
          params.function = toCumulativeFunction(p.op);
          params.type = toKernelType(x.dtype);
          ck::cumulative(params, x.data, y.data, stream);
        } else if constexpr (std::is_same_v<P, PointwiseParams>) {
          std::vector<ck::PointwiseOperand> operands;
          for (size_t i = 0; i < in.size(); ++i) {
            const DeviceView& x = requiredInput(in, i, "x");
            operands.push_back({x.data, toKernelType(x.dtype), x.dims});
          }
          std::vector<void*> outputs;
          std::vector<ck::ScalarType> outputTypes;
          for (DeviceView* output : out) {
            outputs.push_back(output->data);
            outputTypes.push_back(toKernelType(output->dtype));
          }
          weights->pointwiseKernel(index).launch(operands, outputs, outputTypes, y.dims, stream);
        } else if constexpr (std::is_same_v<P, SqueezeExcitationParams>) {
          const DeviceView& x = requiredInput(in, 0, "x");
          const DeviceView& w1 = requiredInput(in, 1, "w1");
          const DeviceView& w2 = requiredInput(in, 3, "w2");
          ck::SqueezeExcitationTensors tensors;
          tensors.x = x.data;
          tensors.w1 = w1.data;
          tensors.b1 = optionalData(in, 2);
          tensors.w2 = w2.data;
          tensors.b2 = optionalData(in, 4);
          tensors.out = y.data;
          ck::squeezeExcitation(squeezeExcitationParams(p, x.dims, w1.dims, w2.dims, x.dtype),
                                tensors, scratch, stream);
        } else {
          static_assert(std::is_same_v<P, ConstantParams>, "every layer kind needs a CUDA runner");
        }
      },
      layer.params);
}

void CudaRunner::State::checkEarlierRuns() {
  for (size_t i = 0; i < statusSlots.size(); ++i) {
    StatusSlot& slot = *statusSlots[(nextStatusSlot + i) % statusSlots.size()];
    if (!slot.pending) continue;
    const cudaError_t landed = cudaEventQuery(slot.landed.get());
    if (landed == cudaErrorNotReady) break;  // and so are the runs after it
    check(landed, "reading an earlier run's status");
    checkStatus(slot);
  }
  StatusSlot* next = statusSlots.empty() ? nullptr : statusSlots[nextStatusSlot].get();
  if (next != nullptr && next->pending) {
    check(cudaEventSynchronize(next->landed.get()), "waiting for an earlier run");
    checkStatus(*next);
  }
}

void CudaRunner::State::checkStatus(StatusSlot& slot) {
  slot.pending = false;
  const EngineDefinition& definition = engine->definition();
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    if (statusLayout.gatherOffset[l] >= 0) {
      const auto* failure = reinterpret_cast<const ck::GatherStatus*>(slot.host.data() +
                                                                      statusLayout.gatherOffset[l]);
      if (failure->outOfRange != 0) {
        throw Error(concat("run ", slot.run, " of this engine's context gathered an out-of-range ",
                           "index (", failure->badIndex, ") in layer '", layer.name,
                           "'; that run's outputs are invalid. Check the indices fed to the ",
                           "model"));
      }
    }
    if (statusLayout.domainErrorOffset[l] >= 0) {
      const auto* flag =
          reinterpret_cast<const int32_t*>(slot.host.data() + statusLayout.domainErrorOffset[l]);
      if (*flag != 0) {
        throw Error(concat("run ", slot.run, " of this engine's context divided an integer by ",
                           "zero (or raised one to a negative power) in layer '", layer.name,
                           "'; that run's outputs are invalid"));
      }
    }
  }
}

void CudaRunner::State::readStatus(cudaStream_t stream) {
  ++runs;
  if (statusSlots.empty()) return;
  StatusSlot& slot = *statusSlots[nextStatusSlot];
  check(cudaMemcpyAsync(slot.host.data(), status.data(), statusLayout.bytes, cudaMemcpyDeviceToHost,
                        stream),
        "reading run status");
  check(cudaEventRecord(slot.landed.get(), stream), "recording run status");
  slot.pending = true;
  slot.run = runs;
  nextStatusSlot = (nextStatusSlot + 1) % statusSlots.size();
}

void CudaRunner::State::captureGraph(const std::vector<Dims>& key,
                                     const std::vector<Dims>& tensorDims) {
  const EngineDefinition& definition = engine->definition();
  std::vector<const void*> inputs;
  for (const DeviceMemory& staged : stagedInputs) inputs.push_back(staged.data());
  std::vector<void*> outputs;
  for (const DeviceMemory& staged : stagedOutputs) outputs.push_back(staged.data());
  for (size_t i = 0; i < definition.inputs.size(); ++i) {
    KILN_CHECK(static_cast<int64_t>(views[definition.inputs[i]].bytes()) <=
                   static_cast<int64_t>(stagedInputs[i].bytes()),
               "input '", definition.tensors[definition.inputs[i]].name,
               "' is larger than its profiles allow");
  }
  bindViews(tensorDims, inputs, outputs);
  cudaStream_t stream = captureStream->get();
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "starting a CUDA graph");
  cudaGraph_t graph = nullptr;
  try {
    runLayers(stream);
    copyOutputsNotWrittenInPlace(outputs, stream);
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  check(cudaStreamEndCapture(stream, &graph), "capturing a CUDA graph");
  auto owned = std::make_unique<Graph>(graph);
  cudaGraphExec_t exec = nullptr;
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiating a CUDA graph");
  CapturedGraph captured{std::move(owned), std::make_unique<GraphExec>(exec)};
  while (graphs.size() >= std::max<size_t>(settings.maxCudaGraphs, 1)) {
    graphs.erase(graphUse.back());
    graphUse.pop_back();
  }
  graphs.emplace(key, std::move(captured));
  graphUse.push_front(key);
}

void CudaRunner::execute(const std::vector<Dims>& tensorDims,
                         const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                         cudaStream_t stream) {
  State& s = *state_;
  const EngineDefinition& definition = s.engine->definition();
  s.checkEarlierRuns();
  if (s.ranBefore && stream != s.lastStream) {
    // The last run on another stream may still use the arena.
    check(cudaStreamWaitEvent(stream, s.done.get(), 0), "ordering after the previous run");
  }
  std::vector<Dims> key;
  for (int32_t t : definition.inputs) key.push_back(tensorDims[t]);

  auto found = s.graphs.find(key);
  if (found != s.graphs.end()) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      const size_t bytes = static_cast<size_t>(volume(key[i])) *
                           elementSize(definition.tensors[definition.inputs[i]].dtype);
      if (bytes == 0) continue;
      check(cudaMemcpyAsync(s.stagedInputs[i].data(), inputs[i], bytes, cudaMemcpyDeviceToDevice,
                            stream),
            "staging an input");
    }
    check(cudaGraphLaunch(found->second.exec->get(), stream), "launching the CUDA graph");
    for (size_t o = 0; o < outputs.size(); ++o) {
      const size_t bytes = static_cast<size_t>(volume(tensorDims[definition.outputs[o]])) *
                           elementSize(definition.tensors[definition.outputs[o]].dtype);
      if (bytes == 0) continue;
      check(cudaMemcpyAsync(outputs[o], s.stagedOutputs[o].data(), bytes, cudaMemcpyDeviceToDevice,
                            stream),
            "copying an output");
    }
    s.graphUse.remove(key);
    s.graphUse.push_front(key);
  } else {
    s.bindViews(tensorDims, inputs, outputs);
    s.runLayers(stream);
    s.copyOutputsNotWrittenInPlace(outputs, stream);
    if (s.settings.cudaGraphs && s.uncapturable.count(key) == 0) {
      // This run chose every algorithm for the shape; the next one replays a graph of it.
      try {
        s.captureGraph(key, tensorDims);
      } catch (const std::exception& error) {
        s.uncapturable[key] = true;
        std::cerr << "kiln: warning: could not capture a CUDA graph of engine layers for input "
                  << "shapes; running them one by one instead: " << error.what() << "\n";
      }
    }
  }
  s.readStatus(stream);
  check(cudaEventRecord(s.done.get(), stream), "recording the end of the run");
  s.lastStream = stream;
  s.ranBefore = true;
}

std::vector<LayerTiming> CudaRunner::profileLayers(const std::vector<Dims>& tensorDims,
                                                   const std::vector<const void*>& inputs,
                                                   const std::vector<void*>& outputs,
                                                   cudaStream_t stream, int iterations) {
  State& s = *state_;
  const size_t layers = s.engine->definition().layers.size();
  s.checkEarlierRuns();
  if (s.ranBefore && stream != s.lastStream) {
    check(cudaStreamWaitEvent(stream, s.done.get(), 0), "ordering after the previous run");
  }
  std::vector<std::unique_ptr<TimingEvent>> events;
  for (size_t e = 0; e < 2 * layers; ++e) events.push_back(std::make_unique<TimingEvent>());
  s.bindViews(tensorDims, inputs, outputs);
  std::vector<LayerTiming> timings(layers);
  s.layerTimings = &timings;
  try {
    s.runLayers(stream);
  } catch (...) {
    s.layerTimings = nullptr;
    throw;
  }
  s.layerTimings = nullptr;
  s.readStatus(stream);
  for (int i = 0; i < iterations; ++i) {
    s.checkEarlierRuns();
    s.runLayers(stream, &events);
    s.readStatus(stream);
    check(cudaStreamSynchronize(stream), "waiting for a profiled run");
    s.checkEarlierRuns();
    for (size_t l = 0; l < layers; ++l) {
      if (!s.launches(s.engine->definition().layers[l])) continue;
      float elapsed = 0.0f;
      check(cudaEventElapsedTime(&elapsed, events[2 * l]->get(), events[2 * l + 1]->get()),
            "reading a layer's time");
      timings[l].milliseconds += elapsed;
    }
  }
  s.copyOutputsNotWrittenInPlace(outputs, stream);
  check(cudaEventRecord(s.done.get(), stream), "recording the end of the run");
  s.lastStream = stream;
  s.ranBefore = true;
  for (LayerTiming& timing : timings) timing.milliseconds /= iterations;
  return timings;
}

}  // namespace kiln

#include "kernels/cuda/cudnn_graph_convolution.h"

#include "kernels/cuda/convolution.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace kiln::cuda_kernels {

namespace {

// Unique ids of the graph's tensors, which a variant pack pairs with pointers.
constexpr int64_t kXId = 1;
constexpr int64_t kWeightId = 2;
constexpr int64_t kYId = 3;

template <typename T>
void setAttribute(const BackendDescriptor& descriptor, cudnnBackendAttributeName_t name,
                  cudnnBackendAttributeType_t type, int64_t count, const T* values) {
  KILN_CUDNN_CHECK(cudnnBackendSetAttribute(descriptor.get(), name, type, count, values));
}

void setDescriptor(const BackendDescriptor& descriptor, cudnnBackendAttributeName_t name,
                   const BackendDescriptor& value) {
  cudnnBackendDescriptor_t raw = value.get();
  setAttribute(descriptor, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw);
}

void setInts(const BackendDescriptor& descriptor, cudnnBackendAttributeName_t name,
             const Shape& values) {
  setAttribute(descriptor, name, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()),
               values.data());
}

void finalize(const BackendDescriptor& descriptor) {
  KILN_CUDNN_CHECK(cudnnBackendFinalize(descriptor.get()));
}

// Strides of a tensor of NCHW-ordered dims (outer, channels, spatial...) laid out as NCHW or
// with the channels innermost.
Shape stridesOf(const Shape& dims, bool channelsLast) {
  Shape strides(dims.size());
  if (!channelsLast) {
    int64_t stride = 1;
    for (size_t i = dims.size(); i-- > 0;) {
      strides[i] = stride;
      stride *= dims[i];
    }
    return strides;
  }
  int64_t stride = 1;
  strides[1] = stride;
  stride *= dims[1];
  for (size_t i = dims.size(); i-- > 2;) {
    strides[i] = stride;
    stride *= dims[i];
  }
  strides[0] = stride;
  return strides;
}

BackendDescriptor tensorDescriptor(int64_t id, ScalarType type, const Shape& dims,
                                   bool channelsLast, int64_t alignment) {
  BackendDescriptor tensor(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const cudnnDataType_t dataType = cudnnTypeOf(type);
  setAttribute(tensor, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dataType);
  setInts(tensor, CUDNN_ATTR_TENSOR_DIMENSIONS, dims);
  setInts(tensor, CUDNN_ATTR_TENSOR_STRIDES, stridesOf(dims, channelsLast));
  setAttribute(tensor, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id);
  setAttribute(tensor, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  finalize(tensor);
  return tensor;
}

Shape dimsOf(int64_t outer, int64_t channels, const Shape& spatial) {
  Shape dims = {outer, channels};
  dims.insert(dims.end(), spatial.begin(), spatial.end());
  return dims;
}

// An engine's numerical and behavior notes.
struct EngineNotes {
  std::vector<cudnnBackendNumericalNote_t> numerical;
  std::vector<cudnnBackendBehaviorNote_t> behavior;

  bool has(cudnnBackendNumericalNote_t note) const {
    return std::find(numerical.begin(), numerical.end(), note) != numerical.end();
  }
  bool has(cudnnBackendBehaviorNote_t note) const {
    return std::find(behavior.begin(), behavior.end(), note) != behavior.end();
  }
};

EngineNotes notesOf(const BackendDescriptor& engine) {
  EngineNotes notes;
  notes.numerical.resize(CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  int64_t count = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(
      engine.get(), CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
      CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, notes.numerical.data()));
  notes.numerical.resize(static_cast<size_t>(count));
  notes.behavior.resize(CUDNN_BEHAVIOR_NOTE_TYPE_COUNT);
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(
      engine.get(), CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
      CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &count, notes.behavior.data()));
  notes.behavior.resize(static_cast<size_t>(count));
  return notes;
}

// The engine and knob values of a finalized engine config (one of the heuristics' results).
std::pair<CudnnEngineConfig, EngineNotes> describeConfig(const BackendDescriptor& config) {
  BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t rawEngine = engine.get();
  int64_t count = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count, &rawEngine));
  CudnnEngineConfig described;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
                                            CUDNN_TYPE_INT64, 1, &count, &described.globalIndex));

  std::vector<BackendDescriptor> choices;
  std::vector<cudnnBackendDescriptor_t> rawChoices;
  for (int i = 0; i < CUDNN_KNOB_TYPE_COUNTS; ++i) {
    choices.emplace_back(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
    rawChoices.push_back(choices.back().get());
  }
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, CUDNN_KNOB_TYPE_COUNTS,
                                            &count, rawChoices.data()));
  for (int64_t i = 0; i < count; ++i) {
    const BackendDescriptor& choice = choices[static_cast<size_t>(i)];
    cudnnBackendKnobType_t type{};
    int64_t value = 0;
    int64_t one = 0;
    KILN_CUDNN_CHECK(cudnnBackendGetAttribute(choice.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                              CUDNN_TYPE_KNOB_TYPE, 1, &one, &type));
    KILN_CUDNN_CHECK(cudnnBackendGetAttribute(choice.get(), CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                              CUDNN_TYPE_INT64, 1, &one, &value));
    described.knobs.emplace_back(static_cast<int64_t>(type), value);
  }
  EngineNotes notes = notesOf(engine);
  described.tensorCores = notes.has(CUDNN_NUMERICAL_NOTE_TENSOR_CORE);
  return {std::move(described), std::move(notes)};
}

// An execution plan of `config` on `handle`, or null when cuDNN does not build it.
std::unique_ptr<BackendDescriptor> buildPlan(const CudnnHandle& handle,
                                             const BackendDescriptor& config, size_t* bytes) {
  auto plan = std::make_unique<BackendDescriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  cudnnHandle_t rawHandle = handle.get();
  setAttribute(*plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &rawHandle);
  setDescriptor(*plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config);
  if (cudnnBackendFinalize(plan->get()) != CUDNN_STATUS_SUCCESS) return nullptr;
  int64_t workspace = 0;
  int64_t count = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                            CUDNN_TYPE_INT64, 1, &count, &workspace));
  *bytes = static_cast<size_t>(workspace);
  return plan;
}

bool isAligned(const void* pointer, int64_t alignment) {
  return reinterpret_cast<uintptr_t>(pointer) % static_cast<uintptr_t>(alignment) == 0;
}

}  // namespace

BackendDescriptor::BackendDescriptor(cudnnBackendDescriptorType_t type) {
  KILN_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &descriptor_));
}

BackendDescriptor::~BackendDescriptor() {
  if (descriptor_ != nullptr) cudnnBackendDestroyDescriptor(descriptor_);
}

BackendDescriptor::BackendDescriptor(BackendDescriptor&& other) noexcept
    : descriptor_(std::exchange(other.descriptor_, nullptr)) {}

BackendDescriptor& BackendDescriptor::operator=(BackendDescriptor&& other) noexcept {
  if (this != &other) {
    if (descriptor_ != nullptr) cudnnBackendDestroyDescriptor(descriptor_);
    descriptor_ = std::exchange(other.descriptor_, nullptr);
  }
  return *this;
}

// The graph and the descriptors it references, kept alive as long as plans built from it.
struct CudnnGraphConvolution::Graph {
  BackendDescriptor x{CUDNN_BACKEND_TENSOR_DESCRIPTOR};
  BackendDescriptor weight{CUDNN_BACKEND_TENSOR_DESCRIPTOR};
  BackendDescriptor y{CUDNN_BACKEND_TENSOR_DESCRIPTOR};
  BackendDescriptor convolution{CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR};
  BackendDescriptor operation{CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR};
  BackendDescriptor operationGraph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};
};

CudnnGraphConvolution::CudnnGraphConvolution(const CudnnHandle& handle,
                                             const ConvolutionParams& params,
                                             const CudnnConvolutionGeometry& geometry,
                                             int64_t alignment)
    : graph_(std::make_unique<Graph>()),
      alignment_(alignment),
      allowTensorCoresForFloat32_(params.allowTf32),
      float32_(params.type == ScalarType::kFloat32) {
  if (params.transposed) {
    throw std::invalid_argument("cuDNN graph convolution: forward convolutions only");
  }
  const size_t rank = geometry.kernel.size();
  const bool channelsLast = params.layout == TensorLayout::kNHWC;
  Graph& g = *graph_;
  g.x = tensorDescriptor(kXId, params.type,
                         dimsOf(params.batch, params.inChannels,
                                geometry.useScratch ? geometry.scratchSpatial : geometry.inSpatial),
                         channelsLast, alignment);
  g.weight = tensorDescriptor(
      kWeightId, params.type,
      dimsOf(params.outChannels, params.inChannels / params.groups, geometry.kernel), channelsLast,
      alignment);
  g.y = tensorDescriptor(kYId, params.type,
                         dimsOf(params.batch, params.outChannels, geometry.outSpatial),
                         channelsLast, alignment);

  const int64_t spatialDims = static_cast<int64_t>(rank);
  const cudnnDataType_t computeType = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  setAttribute(g.convolution, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1,
               &spatialDims);
  setAttribute(g.convolution, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
               &computeType);
  setAttribute(g.convolution, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1,
               &mode);
  setInts(g.convolution, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, geometry.padding);
  setInts(g.convolution, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, geometry.padding);
  setInts(g.convolution, CUDNN_ATTR_CONVOLUTION_DILATIONS, geometry.dilation);
  setInts(g.convolution, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, geometry.stride);
  finalize(g.convolution);

  const float alpha = 1.0f;
  const float beta = 0.0f;
  setDescriptor(g.operation, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, g.x);
  setDescriptor(g.operation, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, g.weight);
  setDescriptor(g.operation, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, g.y);
  setDescriptor(g.operation, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, g.convolution);
  setAttribute(g.operation, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1,
               &alpha);
  setAttribute(g.operation, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1,
               &beta);
  finalize(g.operation);

  cudnnHandle_t rawHandle = handle.get();
  setDescriptor(g.operationGraph, CUDNN_ATTR_OPERATIONGRAPH_OPS, g.operation);
  setAttribute(g.operationGraph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1,
               &rawHandle);
  finalize(g.operationGraph);
}

CudnnGraphConvolution::~CudnnGraphConvolution() = default;

std::vector<CudnnExecutionPlan> CudnnGraphConvolution::candidates(const CudnnHandle& handle,
                                                                  size_t count,
                                                                  size_t maxWorkspaceBytes) const {
  BackendDescriptor heuristics(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  setDescriptor(heuristics, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph_->operationGraph);
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  setAttribute(heuristics, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  if (cudnnBackendFinalize(heuristics.get()) != CUDNN_STATUS_SUCCESS) return {};
  int64_t available = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available, nullptr));
  std::vector<BackendDescriptor> configs;
  std::vector<cudnnBackendDescriptor_t> rawConfigs;
  for (int64_t i = 0; i < available; ++i) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    rawConfigs.push_back(configs.back().get());
  }
  int64_t returned = 0;
  KILN_CUDNN_CHECK(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, available, &returned,
                                            rawConfigs.data()));

  std::vector<CudnnExecutionPlan> found;
  for (int64_t i = 0; i < returned && found.size() < count; ++i) {
    const BackendDescriptor& config = configs[static_cast<size_t>(i)];
    auto [described, notes] = describeConfig(config);
    const bool keepsNumerics =
        !notes.has(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) &&
        !notes.has(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) &&
        !notes.has(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) &&
        !(float32_ && !allowTensorCoresForFloat32_ && notes.has(CUDNN_NUMERICAL_NOTE_TENSOR_CORE));
    if (!keepsNumerics || notes.has(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION)) continue;
    CudnnExecutionPlan candidate;
    candidate.plan = buildPlan(handle, config, &candidate.workspaceBytes);
    if (candidate.plan == nullptr || candidate.workspaceBytes > maxWorkspaceBytes) continue;
    described.alignment = alignment_;
    candidate.config = std::move(described);
    found.push_back(std::move(candidate));
  }
  return found;
}

CudnnExecutionPlan CudnnGraphConvolution::plan(const CudnnHandle& handle,
                                               const CudnnEngineConfig& config) const {
  if (config.alignment != alignment_) {
    throw std::invalid_argument("cuDNN graph convolution: the engine config was chosen for " +
                                std::to_string(config.alignment) +
                                "-byte aligned tensors, this graph's are aligned to " +
                                std::to_string(alignment_));
  }
  BackendDescriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  setDescriptor(engine, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, graph_->operationGraph);
  setAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &config.globalIndex);
  finalize(engine);
  std::vector<BackendDescriptor> choices;
  std::vector<cudnnBackendDescriptor_t> rawChoices;
  for (const auto& [type, value] : config.knobs) {
    choices.emplace_back(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
    const auto knobType = static_cast<cudnnBackendKnobType_t>(type);
    setAttribute(choices.back(), CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1,
                 &knobType);
    setAttribute(choices.back(), CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &value);
    finalize(choices.back());
    rawChoices.push_back(choices.back().get());
  }
  BackendDescriptor engineConfig(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
  setDescriptor(engineConfig, CUDNN_ATTR_ENGINECFG_ENGINE, engine);
  if (!rawChoices.empty()) {
    setAttribute(engineConfig, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                 static_cast<int64_t>(rawChoices.size()), rawChoices.data());
  }
  finalize(engineConfig);
  CudnnExecutionPlan result;
  result.config = config;
  result.plan = buildPlan(handle, engineConfig, &result.workspaceBytes);
  if (result.plan == nullptr) {
    throw CudaError("cuDNN does not build an execution plan of engine " +
                    std::to_string(config.globalIndex) + " for this convolution");
  }
  return result;
}

void CudnnGraphConvolution::execute(const CudnnHandle& handle, const CudnnExecutionPlan& plan,
                                    const void* x, const void* weight, void* y, void* workspace) {
  for (const void* pointer : {x, weight, static_cast<const void*>(y)}) {
    if (!isAligned(pointer, plan.config.alignment)) {
      throw std::invalid_argument(
          "cuDNN graph convolution: engine " + std::to_string(plan.config.globalIndex) +
          " was chosen for " + std::to_string(plan.config.alignment) +
          "-byte aligned tensors and got a less aligned one; rebuild the engine");
    }
  }
  BackendDescriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const int64_t ids[] = {kXId, kWeightId, kYId};
  void* pointers[] = {const_cast<void*>(x), const_cast<void*>(weight), y};
  setAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, ids);
  setAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, pointers);
  setAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  finalize(pack);
  KILN_CUDNN_CHECK(cudnnBackendExecute(handle.get(), plan.plan->get(), pack.get()));
}

int64_t commonAlignment(std::initializer_list<const void*> pointers) {
  int64_t alignment = 16;
  for (const void* pointer : pointers) {
    if (pointer == nullptr) continue;
    while (alignment > 1 && !isAligned(pointer, alignment)) alignment /= 2;
  }
  return alignment;
}

}  // namespace kiln::cuda_kernels

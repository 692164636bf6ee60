#include "kernels/cuda/convolution.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/convolution_kernels.h"
#include "kernels/cuda/depthwise_convolution.h"

namespace kiln::cuda_kernels {

struct ConvolutionPlan::Descriptors {
  // cuDNN's x and y (forward) or dy and dx (transposed): the input is x or the padded scratch,
  // the output is out or the uncropped scratch.
  TensorDescriptor input;
  TensorDescriptor output;
  FilterDescriptor filter;
  ConvolutionDescriptor convolution;
  TensorDescriptor bias;
  ActivationDescriptor activation;
};

namespace {

constexpr size_t kScratchAlignment = 256;

size_t alignUp(size_t bytes) {
  return (bytes + kScratchAlignment - 1) / kScratchAlignment * kScratchAlignment;
}

std::string shapeString(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

[[noreturn]] void invalid(const ConvolutionParams& params, const std::string& what) {
  throw std::invalid_argument("convolution: " + what + " in " + describe(params));
}

bool isFloatType(ScalarType type) {
  return type == ScalarType::kFloat32 || type == ScalarType::kFloat16 ||
         type == ScalarType::kBFloat16;
}

// cuDNN's convolutions read x as it is: an input activation needs Kiln's depthwise kernels.
bool runsOnKilnKernelsOnly(const ConvolutionParams& params) {
  return params.inputActivation != ConvolutionActivation::kNone;
}

bool strictFloat32(const ConvolutionParams& params) {
  return params.type == ScalarType::kFloat32 && !params.allowTf32;
}

void validate(const ConvolutionParams& params) {
  const size_t rank = params.kernel.size();
  if (rank < 1 || rank > 3)
    invalid(params,
            "the kernel has " + std::to_string(rank) + " spatial dims; 1 to 3 are supported");
  for (const Shape* shape : {&params.inSpatial, &params.outSpatial, &params.stride,
                             &params.prePadding, &params.dilation}) {
    if (shape->size() != rank) {
      invalid(params, "every spatial parameter needs " + std::to_string(rank) + " dims");
    }
  }
  if (!isFloatType(params.type)) {
    invalid(params, std::string("element type ") + scalarName(params.type) +
                        " is not supported; use float32, float16 or bfloat16");
  }
  if (runsOnKilnKernelsOnly(params) && !depthwiseConvolutionApplies(params)) {
    invalid(params,
            "an input activation runs in Kiln's depthwise kernels only, which need a forward 1-D "
            "or 2-D NHWC convolution with groups == inChannels; apply the activation as a layer "
            "of its own");
  }
  if (params.batch < 0 || params.inChannels <= 0 || params.outChannels <= 0) {
    invalid(params, "batch must be >= 0 and the channel counts > 0");
  }
  if (params.groups <= 0 || params.inChannels % params.groups != 0 ||
      params.outChannels % params.groups != 0) {
    invalid(params, "groups must divide the input and output channels");
  }
  for (size_t i = 0; i < rank; ++i) {
    if (params.kernel[i] < 1 || params.stride[i] < 1 || params.dilation[i] < 1) {
      invalid(params, "kernel, stride and dilation must be >= 1");
    }
    if (params.prePadding[i] < 0 || params.outSpatial[i] < 0) {
      invalid(params, "padding and output dims must be >= 0");
    }
    if (params.inSpatial[i] < 1) {
      invalid(params, "an input spatial dim is " + std::to_string(params.inSpatial[i]) +
                          "; cuDNN needs every input spatial dim >= 1");
    }
  }
}

bool isEmpty(const ConvolutionParams& params) {
  return params.batch == 0 || shapeVolume(params.outSpatial) == 0;
}

// cuDNN's descriptors take int dims and strides: a sample of every tensor must fit in int32.
void checkFitsInt(const ConvolutionParams& params, int64_t channels, const Shape& spatial) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (params.batch > kMax || channels * shapeVolume(spatial) > kMax) {
    invalid(params, "a tensor of (" + std::to_string(params.batch) + ", " +
                        std::to_string(channels) + ", " + shapeString(spatial) +
                        ") is too large for cuDNN's 32-bit dims; split the batch");
  }
}

std::vector<int> toInts(const Shape& shape) { return std::vector<int>(shape.begin(), shape.end()); }

cudnnTensorFormat_t formatOf(TensorLayout layout) {
  return layout == TensorLayout::kNHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
}

// (batch, channels, spatial...) in NCHW order, whatever the layout (the format says the rest).
Shape tensorDims(int64_t batch, int64_t channels, const Shape& spatial) {
  Shape dims = {batch, channels};
  dims.insert(dims.end(), spatial.begin(), spatial.end());
  return dims;
}

void setTensor(const TensorDescriptor& descriptor, const ConvolutionParams& params,
               const Shape& dims) {
  const std::vector<int> ints = toInts(dims);
  KILN_CUDNN_CHECK(cudnnSetTensorNdDescriptorEx(descriptor.get(), formatOf(params.layout),
                                                cudnnTypeOf(params.type),
                                                static_cast<int>(ints.size()), ints.data()));
}

// The math type the convolution descriptor starts with: tensor cores for fp16 and bf16 (fp32
// accumulation), TF32 for fp32 only when allowed (CUDNN_FMA_MATH keeps plain fp32 FMA kernels).
cudnnMathType_t initialMathType(const ConvolutionParams& params) {
  switch (params.type) {
    case ScalarType::kFloat16:
      return CUDNN_TENSOR_OP_MATH;
    case ScalarType::kFloat32:
      return params.allowTf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    default:
      return CUDNN_DEFAULT_MATH;
  }
}

// Strict fp32 stays on FMA kernels whatever an algorithm reports; the rest run with the math
// type cuDNN reported for the algorithm.
cudnnMathType_t runMathType(const ConvolutionParams& params, cudnnMathType_t reported) {
  return strictFloat32(params) ? CUDNN_FMA_MATH : reported;
}

bool usesTensorCores(cudnnMathType_t mathType) {
  return mathType == CUDNN_TENSOR_OP_MATH || mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

Shape liftToCudnnRank(const Shape& values, int64_t fill) {
  if (values.size() != 1) return values;
  return Shape{fill, values[0]};
}

// A candidate algorithm from cuDNN's heuristics or timing, in a form common to both directions.
struct Candidate {
  int algorithm;
  cudnnStatus_t status;
  cudnnMathType_t mathType;
  cudnnDeterminism_t determinism;
  size_t memory;
  float timeMs;
};

template <typename Perf>
std::vector<Candidate> toCandidates(const std::vector<Perf>& results, int count) {
  std::vector<Candidate> candidates;
  for (int i = 0; i < count; ++i) {
    const Perf& r = results[static_cast<size_t>(i)];
    candidates.push_back(
        {static_cast<int>(r.algo), r.status, r.mathType, r.determinism, r.memory, r.time});
  }
  return candidates;
}

// Engines of the graph API that autotune times beside the legacy algorithms: cuDNN's heuristics
// rank the fastest first, and each timed one costs build time.
constexpr size_t kGraphCandidates = 6;

}  // namespace

const char* toString(ConvolutionActivation activation) {
  switch (activation) {
    case ConvolutionActivation::kNone:
      return "none";
    case ConvolutionActivation::kRelu:
      return "relu";
    case ConvolutionActivation::kRelu6:
      return "relu6";
    case ConvolutionActivation::kSilu:
      return "silu";
    case ConvolutionActivation::kHardSwish:
      return "hardswish";
  }
  return "unknown";
}

std::string describe(const ConvolutionParams& params) {
  std::ostringstream text;
  text << (params.transposed ? "Deconvolution" : "Convolution") << "(batch=" << params.batch
       << ", inChannels=" << params.inChannels << ", outChannels=" << params.outChannels
       << ", groups=" << params.groups << ", inSpatial=" << shapeString(params.inSpatial)
       << ", outSpatial=" << shapeString(params.outSpatial)
       << ", kernel=" << shapeString(params.kernel) << ", stride=" << shapeString(params.stride)
       << ", prePadding=" << shapeString(params.prePadding)
       << ", dilation=" << shapeString(params.dilation) << ", type=" << scalarName(params.type)
       << ", layout=" << (params.layout == TensorLayout::kNHWC ? "NHWC" : "NCHW")
       << ", activation=" << toString(params.activation)
       << ", inputActivation=" << toString(params.inputActivation)
       << ", allowTf32=" << (params.allowTf32 ? "true" : "false") << ")";
  return text.str();
}

std::string describe(const ConvolutionAlgorithm& algorithm) {
  if (algorithm.kernel == ConvolutionKernel::kKilnDepthwise) {
    return describeDepthwiseVariant(algorithm.algorithm);
  }
  if (algorithm.kernel == ConvolutionKernel::kCudnnGraph) {
    return "cuDNN engine " + std::to_string(algorithm.engine.globalIndex) + " (graph API" +
           (algorithm.engine.tensorCores ? ", tensor ops)" : ")");
  }
  return "cuDNN algorithm " + std::to_string(algorithm.algorithm) +
         (algorithm.mathType == CUDNN_DEFAULT_MATH ? "" : ", tensor ops") +
         (algorithm.fusedEpilogue ? ", fused epilogue" : "");
}

bool sameChoice(const ConvolutionAlgorithm& a, const ConvolutionAlgorithm& b) {
  return a.kernel == b.kernel && a.algorithm == b.algorithm && a.mathType == b.mathType &&
         a.fusedEpilogue == b.fusedEpilogue &&
         (a.kernel != ConvolutionKernel::kCudnnGraph || a.engine == b.engine);
}

CudnnConvolutionGeometry cudnnConvolutionGeometry(const ConvolutionParams& params) {
  validate(params);
  CudnnConvolutionGeometry g;
  g.inSpatial = liftToCudnnRank(params.inSpatial, 1);
  g.outSpatial = liftToCudnnRank(params.outSpatial, 1);
  g.kernel = liftToCudnnRank(params.kernel, 1);
  g.stride = liftToCudnnRank(params.stride, 1);
  g.padding = liftToCudnnRank(params.prePadding, 0);
  g.dilation = liftToCudnnRank(params.dilation, 1);
  const size_t rank = g.kernel.size();
  // cuDNN's output size for input n: (n + 2 * padding - extent) / stride + 1. A transposed
  // convolution is the adjoint of the forward one from `out` to `in`.
  for (size_t i = 0; i < rank; ++i) {
    const int64_t extent = g.dilation[i] * (g.kernel[i] - 1) + 1;
    const int64_t from = params.transposed ? g.outSpatial[i] : g.inSpatial[i];
    const int64_t to = params.transposed ? g.inSpatial[i] : g.outSpatial[i];
    const int64_t span = from + 2 * g.padding[i] - extent;
    if (span < 0 || span / g.stride[i] + 1 != to) g.useScratch = true;
  }
  if (!g.useScratch) return g;
  // Unpadded cuDNN convolution over a scratch tensor sized so that cuDNN's sizes match exactly.
  g.scratchSpatial.resize(rank);
  g.shift.resize(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t extent = g.dilation[i] * (g.kernel[i] - 1) + 1;
    const int64_t positions = params.transposed ? g.inSpatial[i] : g.outSpatial[i];
    g.scratchSpatial[i] = std::max<int64_t>(positions - 1, 0) * g.stride[i] + extent;
    g.shift[i] = params.transposed ? g.padding[i] : -g.padding[i];
    g.padding[i] = 0;
  }
  return g;
}

// Builds plans: descriptors from params, then the algorithm by heuristics, timing or decree.
struct ConvolutionPlanBuilder {
  static std::unique_ptr<ConvolutionPlan> describe(const ConvolutionParams& params) {
    validate(params);
    if (isEmpty(params))
      return std::unique_ptr<ConvolutionPlan>(new ConvolutionPlan(params, nullptr));
    const CudnnConvolutionGeometry g = cudnnConvolutionGeometry(params);
    auto d = std::make_unique<ConvolutionPlan::Descriptors>();
    const bool forward = !params.transposed;
    const Shape& inputSpatial = forward && g.useScratch ? g.scratchSpatial : g.inSpatial;
    const Shape& outputSpatial = !forward && g.useScratch ? g.scratchSpatial : g.outSpatial;
    checkFitsInt(params, params.inChannels, inputSpatial);
    checkFitsInt(params, params.outChannels, outputSpatial);
    setTensor(d->input, params, tensorDims(params.batch, params.inChannels, inputSpatial));
    setTensor(d->output, params, tensorDims(params.batch, params.outChannels, outputSpatial));

    // Forward weights are (out, in / groups, kernel...); transposed ones (in, out / groups,
    // kernel...), which is the filter of the forward convolution from out to in.
    const Shape filterDims =
        forward ? tensorDims(params.outChannels, params.inChannels / params.groups, g.kernel)
                : tensorDims(params.inChannels, params.outChannels / params.groups, g.kernel);
    const std::vector<int> filterInts = toInts(filterDims);
    KILN_CUDNN_CHECK(cudnnSetFilterNdDescriptor(
        d->filter.get(), cudnnTypeOf(params.type), formatOf(params.layout),
        static_cast<int>(filterInts.size()), filterInts.data()));

    const std::vector<int> padding = toInts(g.padding);
    const std::vector<int> stride = toInts(g.stride);
    const std::vector<int> dilation = toInts(g.dilation);
    KILN_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(
        d->convolution.get(), static_cast<int>(padding.size()), padding.data(), stride.data(),
        dilation.data(), CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    KILN_CUDNN_CHECK(
        cudnnSetConvolutionGroupCount(d->convolution.get(), static_cast<int>(params.groups)));
    KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(d->convolution.get(), initialMathType(params)));

    Shape biasDims(g.kernel.size() + 2, 1);
    biasDims[1] = params.outChannels;
    setTensor(d->bias, params, biasDims);
    const cudnnActivationMode_t mode = params.activation == ConvolutionActivation::kRelu
                                           ? CUDNN_ACTIVATION_RELU
                                           : CUDNN_ACTIVATION_IDENTITY;
    KILN_CUDNN_CHECK(
        cudnnSetActivationDescriptor(d->activation.get(), mode, CUDNN_PROPAGATE_NAN, 0.0));

    auto plan = std::unique_ptr<ConvolutionPlan>(new ConvolutionPlan(params, std::move(d)));
    plan->geometry_ = g;
    if (g.useScratch) {
      const int64_t channels = forward ? params.inChannels : params.outChannels;
      plan->scratchBytes_ =
          static_cast<size_t>(params.batch * channels * shapeVolume(g.scratchSpatial)) *
          scalarSize(params.type);
    }
    return plan;
  }

  // cuDNN's workspace for `algorithm` with the descriptor's current math type, or an error.
  static cudnnStatus_t queryWorkspace(const CudnnHandle& handle, const ConvolutionPlan& plan,
                                      int algorithm, size_t* bytes) {
    const ConvolutionPlan::Descriptors& d = *plan.descriptors_;
    if (!plan.params_.transposed) {
      return cudnnGetConvolutionForwardWorkspaceSize(
          handle.get(), d.input.get(), d.filter.get(), d.convolution.get(), d.output.get(),
          static_cast<cudnnConvolutionFwdAlgo_t>(algorithm), bytes);
    }
    return cudnnGetConvolutionBackwardDataWorkspaceSize(
        handle.get(), d.filter.get(), d.input.get(), d.convolution.get(), d.output.get(),
        static_cast<cudnnConvolutionBwdDataAlgo_t>(algorithm), bytes);
  }

  static void setMathType(const ConvolutionPlan& plan, cudnnMathType_t mathType) {
    KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.descriptors_->convolution.get(),
                                                 runMathType(plan.params_, mathType)));
  }

  static void finish(ConvolutionPlan& plan, const Candidate& chosen, size_t workspaceBytes,
                     bool fusedEpilogue = true) {
    plan.algorithm_.kernel = ConvolutionKernel::kCudnn;
    plan.algorithm_.algorithm = chosen.algorithm;
    plan.algorithm_.fusedEpilogue = fusedEpilogue;
    plan.algorithm_.mathType = runMathType(plan.params_, chosen.mathType);
    plan.algorithm_.cudnnWorkspaceBytes = workspaceBytes;
    plan.algorithm_.measuredMs = chosen.timeMs;
    // cuDNN fuses bias + ReLU with any algorithm, bias alone (identity) only with this one, and
    // no other activation.
    const ConvolutionActivation activation = plan.params_.activation;
    plan.fusable_ = !plan.params_.transposed &&
                    (activation == ConvolutionActivation::kRelu ||
                     (activation == ConvolutionActivation::kNone &&
                      chosen.algorithm == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM));
  }

  // Has the plan run graph plan `index`.
  static void finishGraph(ConvolutionPlan& plan, size_t index, float timeMs) {
    const CudnnExecutionPlan& chosen = plan.graphPlans_.at(index);
    plan.algorithm_ = ConvolutionAlgorithm{};
    plan.algorithm_.kernel = ConvolutionKernel::kCudnnGraph;
    plan.algorithm_.algorithm = static_cast<int>(chosen.config.globalIndex);
    plan.algorithm_.mathType =
        chosen.config.tensorCores ? CUDNN_TENSOR_OP_MATH : CUDNN_DEFAULT_MATH;
    plan.algorithm_.cudnnWorkspaceBytes = chosen.workspaceBytes;
    plan.algorithm_.measuredMs = timeMs;
    plan.algorithm_.fusedEpilogue = false;
    plan.algorithm_.engine = chosen.config;
    plan.graphPlan_ = index;
    plan.fusable_ = false;
  }

  // Keeps the chosen graph plan alone, or none when the choice is not a graph engine.
  static void dropUnchosenGraphPlans(ConvolutionPlan& plan) {
    if (plan.algorithm_.kernel != ConvolutionKernel::kCudnnGraph) {
      plan.graphPlans_.clear();
      plan.graph_.reset();
      return;
    }
    CudnnExecutionPlan chosen = std::move(plan.graphPlans_.at(plan.graphPlan_));
    plan.graphPlans_.clear();
    plan.graphPlans_.push_back(std::move(chosen));
    plan.graphPlan_ = 0;
  }

  // Has the plan run the given variant of Kiln's depthwise kernels.
  static void finishKilnDepthwise(ConvolutionPlan& plan, int variant, float timeMs) {
    plan.algorithm_ = ConvolutionAlgorithm{};
    plan.algorithm_.kernel = ConvolutionKernel::kKilnDepthwise;
    plan.algorithm_.algorithm = variant;
    plan.algorithm_.measuredMs = timeMs;
    plan.fusable_ = false;
  }

  // The candidates a plan may run, in cuDNN's order (best first), each with the workspace it
  // needs: supported, within the workspace, without TF32 for strict fp32, and, for the transposed
  // direction (cuDNN's backward data, where algorithm 0 accumulates with atomics), deterministic
  // when any deterministic one is, so that every run gives the same bits. Every forward
  // algorithm is deterministic.
  static std::vector<std::pair<Candidate, size_t>> usable(const CudnnHandle& handle,
                                                          ConvolutionPlan& plan,
                                                          const std::vector<Candidate>& candidates,
                                                          size_t maxWorkspaceBytes) {
    for (bool requireDeterministic : {plan.params_.transposed, false}) {
      std::vector<std::pair<Candidate, size_t>> found;
      for (const Candidate& candidate : candidates) {
        if (candidate.status != CUDNN_STATUS_SUCCESS) continue;
        if (requireDeterministic && candidate.determinism != CUDNN_DETERMINISTIC) continue;
        if (strictFloat32(plan.params_) && usesTensorCores(candidate.mathType)) continue;
        setMathType(plan, candidate.mathType);
        size_t bytes = 0;
        if (queryWorkspace(handle, plan, candidate.algorithm, &bytes) != CUDNN_STATUS_SUCCESS) {
          continue;
        }
        bytes = std::max(bytes, candidate.memory);
        if (bytes <= maxWorkspaceBytes) found.emplace_back(candidate, bytes);
      }
      if (!found.empty()) return found;
    }
    return {};
  }

  [[noreturn]] static void throwNoAlgorithm(const ConvolutionPlan& plan, size_t maxWorkspaceBytes,
                                            const char* how) {
    throw CudaError("cuDNN " + std::string(how) + " found no algorithm for " +
                    cuda_kernels::describe(plan.params_) + " within " +
                    std::to_string(maxWorkspaceBytes) + " bytes of workspace");
  }

  // Takes the first usable candidate.
  static void choose(const CudnnHandle& handle, ConvolutionPlan& plan,
                     const std::vector<Candidate>& candidates, size_t maxWorkspaceBytes,
                     const char* how) {
    const std::vector<std::pair<Candidate, size_t>> found =
        usable(handle, plan, candidates, maxWorkspaceBytes);
    if (found.empty()) throwNoAlgorithm(plan, maxWorkspaceBytes, how);
    setMathType(plan, found.front().first.mathType);
    finish(plan, found.front().first, found.front().second);
  }

  // Times the launch itself (convolution() as an engine runs it, epilogue included) for the
  // fastest usable candidates of cuDNN's timing, each with cuDNN's fused bias epilogue where it
  // offers one and with Kiln's, on the caller's buffers, and keeps the fastest. cuDNN's own
  // ranking times the bare convolution only, and its fused call runs its own kernels, which for
  // some shapes are many times slower than the best algorithm with a separate epilogue.
  static void chooseByTiming(const CudnnHandle& handle, ConvolutionPlan& plan,
                             const std::vector<Candidate>& candidates, size_t maxWorkspaceBytes,
                             const ConvolutionTensors& tensors, ConvolutionWorkspace workspace,
                             cudaStream_t stream) {
    constexpr size_t kTimedCandidates = 6;
    std::vector<std::pair<Candidate, size_t>> found =
        usable(handle, plan, candidates, maxWorkspaceBytes);
    const std::vector<int> depthwise = depthwiseConvolutionVariants(plan.params_);
    if (found.empty() && depthwise.empty() && plan.graphPlans_.empty()) {
      throwNoAlgorithm(plan, maxWorkspaceBytes, "autotune");
    }
    if (found.size() > kTimedCandidates) found.resize(kTimedCandidates);

    // A cuDNN candidate (`found[index]`) with or without its fused epilogue, a graph engine
    // (`plan.graphPlans_[index]`), or a variant of Kiln's depthwise kernels; `algorithm` is what
    // the plan runs for it.
    struct Variant {
      size_t index;
      ConvolutionAlgorithm algorithm;
    };
    const auto select = [&](const Variant& v) {
      if (v.algorithm.kernel == ConvolutionKernel::kKilnDepthwise) {
        finishKilnDepthwise(plan, v.algorithm.algorithm, -1.0f);
        return;
      }
      if (v.algorithm.kernel == ConvolutionKernel::kCudnnGraph) {
        finishGraph(plan, v.index, -1.0f);
        return;
      }
      setMathType(plan, found[v.index].first.mathType);
      finish(plan, found[v.index].first, found[v.index].second, v.algorithm.fusedEpilogue);
      // Each fused variant is tried afresh: cuDNN refuses the fused call per algorithm.
      plan.fusionSupported_.store(true, std::memory_order_relaxed);
    };
    std::vector<Variant> variants;
    for (size_t i = 0; i < found.size(); ++i) {
      for (bool fused : {false, true}) {
        ConvolutionAlgorithm algorithm;
        algorithm.fusedEpilogue = fused;
        select({i, algorithm});
        if (fused && !(tensors.bias != nullptr && plan.fusesBias())) continue;
        variants.push_back({i, plan.algorithm_});
      }
    }
    for (size_t i = 0; i < plan.graphPlans_.size(); ++i) {
      finishGraph(plan, i, -1.0f);
      variants.push_back({i, plan.algorithm_});
    }
    for (int variant : depthwise) {
      finishKilnDepthwise(plan, variant, -1.0f);
      variants.push_back({0, plan.algorithm_});
    }
    std::vector<float> times;
    const std::optional<TimedCandidate> fastest = fastestCandidate(
        variants.size(), stream,
        [&](size_t v) {
          select(variants[v]);
          convolution(handle, plan, tensors, workspace, stream);
          // A fused call cuDNN refused ran unfused: it is not a fused candidate.
          const ConvolutionAlgorithm& timed = variants[v].algorithm;
          return timed.kernel != ConvolutionKernel::kCudnn || !timed.fusedEpilogue ||
                 plan.fusesBias();
        },
        &times);
    plan.timedCandidates_.clear();
    for (size_t v = 0; v < variants.size(); ++v) {
      plan.timedCandidates_.emplace_back(variants[v].algorithm, times[v]);
    }
    // Unfused, graph and Kiln variants always launch (a failure throws), so one was timed.
    const Variant chosen = variants[fastest->index];
    if (chosen.algorithm.kernel == ConvolutionKernel::kKilnDepthwise) {
      finishKilnDepthwise(plan, chosen.algorithm.algorithm, fastest->ms);
      return;
    }
    if (chosen.algorithm.kernel == ConvolutionKernel::kCudnnGraph) {
      finishGraph(plan, chosen.index, fastest->ms);
      return;
    }
    select(chosen);
    Candidate candidate = found[chosen.index].first;
    candidate.timeMs = fastest->ms;
    finish(plan, candidate, found[chosen.index].second, chosen.algorithm.fusedEpilogue);
  }

  static std::vector<Candidate> heuristics(const CudnnHandle& handle, const ConvolutionPlan& plan) {
    const ConvolutionPlan::Descriptors& d = *plan.descriptors_;
    int maxCount = 0;
    int count = 0;
    if (!plan.params_.transposed) {
      KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle.get(), &maxCount));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> results(static_cast<size_t>(maxCount));
      KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
          handle.get(), d.input.get(), d.filter.get(), d.convolution.get(), d.output.get(),
          maxCount, &count, results.data()));
      return toCandidates(results, count);
    }
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle.get(), &maxCount));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> results(static_cast<size_t>(maxCount));
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        handle.get(), d.filter.get(), d.input.get(), d.convolution.get(), d.output.get(), maxCount,
        &count, results.data()));
    return toCandidates(results, count);
  }

  static std::vector<Candidate> timings(const CudnnHandle& handle, const ConvolutionPlan& plan,
                                        const void* input, const void* weight, void* output,
                                        void* workspace, size_t workspaceBytes) {
    const ConvolutionPlan::Descriptors& d = *plan.descriptors_;
    int maxCount = 0;
    int count = 0;
    if (!plan.params_.transposed) {
      KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle.get(), &maxCount));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> results(static_cast<size_t>(maxCount));
      KILN_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
          handle.get(), d.input.get(), input, d.filter.get(), weight, d.convolution.get(),
          d.output.get(), output, maxCount, &count, results.data(), workspace, workspaceBytes));
      return toCandidates(results, count);
    }
    KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle.get(), &maxCount));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> results(static_cast<size_t>(maxCount));
    KILN_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
        handle.get(), d.filter.get(), weight, d.input.get(), input, d.convolution.get(),
        d.output.get(), output, maxCount, &count, results.data(), workspace, workspaceBytes));
    return toCandidates(results, count);
  }
};

ConvolutionPlan::ConvolutionPlan(ConvolutionParams params, std::unique_ptr<Descriptors> descriptors)
    : params_(std::move(params)), descriptors_(std::move(descriptors)) {}

ConvolutionPlan::~ConvolutionPlan() = default;

size_t ConvolutionPlan::workspaceSize() const {
  // Kiln's depthwise kernels pad as they read.
  if (algorithm_.kernel == ConvolutionKernel::kKilnDepthwise) return 0;
  if (algorithm_.cudnnWorkspaceBytes == 0) return scratchBytes_;
  return alignUp(scratchBytes_) + algorithm_.cudnnWorkspaceBytes;
}

bool ConvolutionPlan::fusesBias() const {
  return fusable_ && algorithm_.fusedEpilogue && fusionSupported_.load(std::memory_order_relaxed);
}

std::unique_ptr<ConvolutionPlan> ConvolutionPlan::select(const CudnnHandle& handle,
                                                         const ConvolutionParams& params,
                                                         size_t maxCudnnWorkspaceBytes) {
  std::unique_ptr<ConvolutionPlan> plan = ConvolutionPlanBuilder::describe(params);
  if (plan->descriptors_ == nullptr) return plan;
  if (runsOnKilnKernelsOnly(params)) {
    // The last variant listed is the one for the largest feature maps.
    ConvolutionPlanBuilder::finishKilnDepthwise(*plan, depthwiseConvolutionVariants(params).back(),
                                                -1.0f);
    return plan;
  }
  ConvolutionPlanBuilder::choose(handle, *plan, ConvolutionPlanBuilder::heuristics(handle, *plan),
                                 maxCudnnWorkspaceBytes, "heuristics");
  return plan;
}

std::unique_ptr<ConvolutionPlan> ConvolutionPlan::autotune(const CudnnHandle& handle,
                                                           const ConvolutionParams& params,
                                                           const ConvolutionTensors& tensors,
                                                           ConvolutionWorkspace workspace,
                                                           cudaStream_t stream) {
  std::unique_ptr<ConvolutionPlan> plan = ConvolutionPlanBuilder::describe(params);
  if (plan->descriptors_ == nullptr) return plan;
  if (tensors.x == nullptr || tensors.weight == nullptr || tensors.out == nullptr) {
    invalid(params, "autotune needs x, weight and out buffers");
  }
  const size_t scratchEnd = plan->scratchBytes_ ? alignUp(plan->scratchBytes_) : 0;
  if (workspace.bytes < scratchEnd || (scratchEnd > 0 && workspace.data == nullptr)) {
    invalid(params, "autotune needs a workspace of at least " + std::to_string(scratchEnd) +
                        " bytes for the padding scratch, got " + std::to_string(workspace.bytes));
  }
  if (runsOnKilnKernelsOnly(params)) {
    ConvolutionPlanBuilder::chooseByTiming(handle, *plan, {}, 0, tensors, workspace, stream);
    return plan;
  }
  char* scratch = static_cast<char*>(workspace.data);
  void* cudnnWorkspace = workspace.bytes > scratchEnd ? scratch + scratchEnd : nullptr;
  const size_t cudnnWorkspaceBytes = workspace.bytes - scratchEnd;

  handle.setStream(stream);
  const CudnnConvolutionGeometry& g = plan->geometry_;
  const void* input = tensors.x;
  void* output = tensors.out;
  if (g.useScratch && !params.transposed) {
    // Time on the real padded input.
    convolution_detail::WindowCopy copy;
    copy.type = params.type;
    copy.layout = params.layout;
    copy.dstDims = tensorDims(params.batch, params.inChannels, g.scratchSpatial);
    copy.srcDims = tensorDims(params.batch, params.inChannels, g.inSpatial);
    copy.shift = g.shift;
    convolution_detail::launchWindowCopy(copy, tensors.x, scratch, nullptr, stream);
    input = scratch;
  } else if (g.useScratch) {
    output = scratch;
  }
  const std::vector<Candidate> candidates = ConvolutionPlanBuilder::timings(
      handle, *plan, input, tensors.weight, output, cudnnWorkspace, cudnnWorkspaceBytes);
  if (!params.transposed) {
    try {
      plan->graph_ = std::make_unique<CudnnGraphConvolution>(
          handle, params, g, commonAlignment({input, tensors.weight, tensors.out}));
      plan->graphPlans_ = plan->graph_->candidates(handle, kGraphCandidates, cudnnWorkspaceBytes);
    } catch (const CudaError&) {
      // cuDNN's graph API refuses this convolution: the legacy algorithms remain.
      plan->graph_.reset();
      plan->graphPlans_.clear();
    }
  }
  ConvolutionPlanBuilder::chooseByTiming(handle, *plan, candidates, cudnnWorkspaceBytes, tensors,
                                         workspace, stream);
  ConvolutionPlanBuilder::dropUnchosenGraphPlans(*plan);
  return plan;
}

std::unique_ptr<ConvolutionPlan> ConvolutionPlan::create(const CudnnHandle& handle,
                                                         const ConvolutionParams& params,
                                                         const ConvolutionAlgorithm& choice) {
  std::unique_ptr<ConvolutionPlan> plan = ConvolutionPlanBuilder::describe(params);
  if (plan->descriptors_ == nullptr) return plan;
  if (choice.kernel == ConvolutionKernel::kKilnDepthwise) {
    const std::vector<int> variants = depthwiseConvolutionVariants(params);
    if (std::find(variants.begin(), variants.end(), choice.algorithm) == variants.end()) {
      invalid(params, describeDepthwiseVariant(choice.algorithm) + " does not apply");
    }
    ConvolutionPlanBuilder::finishKilnDepthwise(*plan, choice.algorithm, choice.measuredMs);
    return plan;
  }
  if (runsOnKilnKernelsOnly(params)) {
    invalid(params, "an input activation runs in Kiln's depthwise kernels only, not in " +
                        describe(choice));
  }
  if (choice.kernel == ConvolutionKernel::kCudnnGraph) {
    plan->graph_ = std::make_unique<CudnnGraphConvolution>(handle, params, plan->geometry_,
                                                           choice.engine.alignment);
    plan->graphPlans_.push_back(plan->graph_->plan(handle, choice.engine));
    ConvolutionPlanBuilder::finishGraph(*plan, 0, choice.measuredMs);
    return plan;
  }
  ConvolutionPlanBuilder::setMathType(*plan, choice.mathType);
  size_t bytes = 0;
  KILN_CUDNN_CHECK(ConvolutionPlanBuilder::queryWorkspace(handle, *plan, choice.algorithm, &bytes));
  ConvolutionPlanBuilder::finish(*plan,
                                 Candidate{choice.algorithm, CUDNN_STATUS_SUCCESS, choice.mathType,
                                           CUDNN_DETERMINISTIC, bytes, -1.0f},
                                 bytes, choice.fusedEpilogue);
  return plan;
}

void convolution(const CudnnHandle& handle, const ConvolutionPlan& plan,
                 const ConvolutionTensors& tensors, ConvolutionWorkspace workspace,
                 cudaStream_t stream) {
  const ConvolutionParams& params = plan.params_;
  if (plan.descriptors_ == nullptr) return;  // empty output
  if (tensors.x == nullptr || tensors.weight == nullptr || tensors.out == nullptr) {
    invalid(params, "x, weight and out must be device pointers, got a null one");
  }
  if (plan.algorithm_.kernel == ConvolutionKernel::kKilnDepthwise) {
    depthwiseConvolution(params, plan.algorithm_.algorithm, tensors, stream);
    return;
  }
  const size_t needed = plan.workspaceSize();
  if (workspace.bytes < needed || (needed > 0 && workspace.data == nullptr)) {
    invalid(params, "the workspace has " + std::to_string(workspace.bytes) +
                        " bytes; the plan needs " + std::to_string(needed) +
                        " (ConvolutionPlan::workspaceSize)");
  }
  const ConvolutionPlan::Descriptors& d = *plan.descriptors_;
  const CudnnConvolutionGeometry& g = plan.geometry_;
  char* scratch = static_cast<char*>(workspace.data);
  const size_t cudnnWorkspaceBytes = plan.algorithm_.cudnnWorkspaceBytes;
  void* cudnnWorkspace = cudnnWorkspaceBytes > 0
                             ? scratch + (plan.scratchBytes_ ? alignUp(plan.scratchBytes_) : 0)
                             : nullptr;
  const float one = 1.0f;
  const float zero = 0.0f;
  handle.setStream(stream);

  if (!params.transposed) {
    const void* input = tensors.x;
    if (g.useScratch) {
      convolution_detail::WindowCopy copy;
      copy.type = params.type;
      copy.layout = params.layout;
      copy.dstDims = tensorDims(params.batch, params.inChannels, g.scratchSpatial);
      copy.srcDims = tensorDims(params.batch, params.inChannels, g.inSpatial);
      copy.shift = g.shift;
      convolution_detail::launchWindowCopy(copy, tensors.x, scratch, nullptr, stream);
      input = scratch;
    }
    if (plan.algorithm_.kernel == ConvolutionKernel::kCudnnGraph) {
      CudnnGraphConvolution::execute(handle, plan.graphPlans_.at(plan.graphPlan_), input,
                                     tensors.weight, tensors.out, cudnnWorkspace);
      convolution_detail::launchBiasActivation(params.type, params.layout, params.batch,
                                               params.outChannels, shapeVolume(params.outSpatial),
                                               tensors.out, tensors.bias, tensors.residual,
                                               params.activation, stream);
      return;
    }
    const auto algorithm = static_cast<cudnnConvolutionFwdAlgo_t>(plan.algorithm_.algorithm);
    if (tensors.bias != nullptr && plan.fusesBias()) {
      // y = act(conv(x) + z + bias) with z the residual, or out itself with weight 0.
      const bool hasResidual = tensors.residual != nullptr;
      const cudnnStatus_t status = cudnnConvolutionBiasActivationForward(
          handle.get(), &one, d.input.get(), input, d.filter.get(), tensors.weight,
          d.convolution.get(), algorithm, cudnnWorkspace, cudnnWorkspaceBytes,
          hasResidual ? &one : &zero, d.output.get(), hasResidual ? tensors.residual : tensors.out,
          d.bias.get(), tensors.bias, d.activation.get(), d.output.get(), tensors.out);
      if (status == CUDNN_STATUS_SUCCESS) return;
      // cuDNN documents the fused call for fewer type and layout combinations than it runs
      // unfused; a refusal (not supported, or parameters it rejects) comes before any work is
      // enqueued, so run unfused from now on. Errors of the unfused calls are real errors.
      const int category = CUDNN_STATUS_CATEGORY(status);
      if (category != CUDNN_STATUS_NOT_SUPPORTED && category != CUDNN_STATUS_BAD_PARAM) {
        throwCudnnError(status, "cudnnConvolutionBiasActivationForward", __FILE__, __LINE__);
      }
      plan.fusionSupported_.store(false, std::memory_order_relaxed);
    }
    KILN_CUDNN_CHECK(cudnnConvolutionForward(handle.get(), &one, d.input.get(), input,
                                             d.filter.get(), tensors.weight, d.convolution.get(),
                                             algorithm, cudnnWorkspace, cudnnWorkspaceBytes, &zero,
                                             d.output.get(), tensors.out));
    convolution_detail::launchBiasActivation(params.type, params.layout, params.batch,
                                             params.outChannels, shapeVolume(params.outSpatial),
                                             tensors.out, tensors.bias, tensors.residual,
                                             params.activation, stream);
    return;
  }
  if (tensors.residual != nullptr) {
    invalid(params, "a transposed convolution takes no residual");
  }

  void* result = g.useScratch ? static_cast<void*>(scratch) : tensors.out;
  KILN_CUDNN_CHECK(cudnnConvolutionBackwardData(
      handle.get(), &one, d.filter.get(), tensors.weight, d.input.get(), tensors.x,
      d.convolution.get(), static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.algorithm_.algorithm),
      cudnnWorkspace, cudnnWorkspaceBytes, &zero, d.output.get(), result));
  if (g.useScratch) {
    // Crop (or zero-extend) the unpadded result into out, adding the bias on the way.
    convolution_detail::WindowCopy copy;
    copy.type = params.type;
    copy.layout = params.layout;
    copy.dstDims = tensorDims(params.batch, params.outChannels, g.outSpatial);
    copy.srcDims = tensorDims(params.batch, params.outChannels, g.scratchSpatial);
    copy.shift = g.shift;
    copy.activation = params.activation;
    convolution_detail::launchWindowCopy(copy, scratch, tensors.out, tensors.bias, stream);
    return;
  }
  convolution_detail::launchBiasActivation(
      params.type, params.layout, params.batch, params.outChannels, shapeVolume(params.outSpatial),
      tensors.out, tensors.bias, nullptr, params.activation, stream);
}

const ConvolutionPlan& ConvolutionPlanCache::select(const CudnnHandle& handle,
                                                    const ConvolutionParams& params) {
  std::unique_ptr<ConvolutionPlan>& slot = plans_[describe(params)];
  if (slot == nullptr) slot = ConvolutionPlan::select(handle, params);
  return *slot;
}

const ConvolutionPlan& ConvolutionPlanCache::autotune(const CudnnHandle& handle,
                                                      const ConvolutionParams& params,
                                                      const ConvolutionTensors& tensors,
                                                      ConvolutionWorkspace workspace,
                                                      cudaStream_t stream) {
  std::unique_ptr<ConvolutionPlan>& slot = plans_[describe(params)];
  if (slot == nullptr || slot->algorithm().measuredMs < 0.0f) {
    slot = ConvolutionPlan::autotune(handle, params, tensors, workspace, stream);
  }
  return *slot;
}

const ConvolutionPlan* ConvolutionPlanCache::find(const ConvolutionParams& params) const {
  const auto it = plans_.find(describe(params));
  return it == plans_.end() ? nullptr : it->second.get();
}

}  // namespace kiln::cuda_kernels

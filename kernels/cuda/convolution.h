// Convolution and transposed convolution (deconvolution) on the GPU through cuDNN's convolution
// API: 1 to 3 spatial dims (1-D runs as 2-D with a unit height), groups, stride, dilation,
// padding, output padding; fp32 (TF32 off unless allowed), fp16 and bf16 (tensor cores, fp32
// accumulation); NCHW or NHWC; optional bias, residual and ReLU, fused into cuDNN's
// cudnnConvolutionBiasActivationForward where it applies.
//
// Same fields and semantics as kernels/cpu/convolution.h: padding after the input and a
// deconvolution's output padding only show in outSpatial, which the caller computes. cuDNN pads
// symmetrically; when outSpatial needs more or less than that, the plan pads the input (forward)
// or crops a larger result (transposed) through a scratch area of the workspace.
//
// Use: build a ConvolutionPlan once per shape (ConvolutionPlan::select from cuDNN's heuristics,
// or ::autotune by timing every algorithm on real buffers), or let a ConvolutionPlanCache keep
// one per shape; give convolution() a workspace of plan.workspaceSize() bytes. Launches only
// enqueue work on the stream (no allocation, no synchronization), so they can be graph-captured.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/common.h"
#include "kernels/cuda/cudnn_common.h"
#include "kernels/cuda/cudnn_graph_convolution.h"

namespace kiln::cuda_kernels {

// Where the channels are: kNCHW (batch, channels, spatial...) or kNHWC (batch, spatial...,
// channels). The weights follow: (K, C/groups, kernel...) or (K, kernel..., C/groups).
enum class TensorLayout : uint8_t { kNCHW, kNHWC };

// Applied after the bias and residual, on the output. cuDNN's fused call takes ReLU only; the
// others run in Kiln's epilogue kernel after cuDNN's convolution, or in Kiln's depthwise kernels.
enum class ConvolutionActivation : uint8_t { kNone, kRelu, kRelu6, kSilu, kHardSwish };
const char* toString(ConvolutionActivation activation);

// Shapes of one convolution, as kernels/cpu's ConvolutionParams plus the element type, layout
// and epilogue. The spatial vectors all have the spatial rank (1, 2 or 3).
//   forward:    x (batch, inChannels, inSpatial...), weight (outChannels, inChannels / groups,
//               kernel...), bias (outChannels) or null -> out (batch, outChannels, outSpatial...)
//   transposed: weight (inChannels, outChannels / groups, kernel...); the rest as forward.
// (NCHW order; NHWC moves every channel dim last.) x, weight, bias and out share `type`.
struct ConvolutionParams {
  bool transposed = false;
  int64_t batch = 1;
  int64_t inChannels = 0;
  int64_t outChannels = 0;
  int64_t groups = 1;
  Shape inSpatial;
  Shape outSpatial;
  Shape kernel;
  Shape stride;
  Shape prePadding;
  Shape dilation;
  ScalarType type = ScalarType::kFloat32;  // float32, float16 or bfloat16
  TensorLayout layout = TensorLayout::kNCHW;
  ConvolutionActivation activation = ConvolutionActivation::kNone;
  // Applied to each element of x as it is read (padding stays zero). Only Kiln's depthwise
  // kernels apply it: a plan with one runs them alone.
  ConvolutionActivation inputActivation = ConvolutionActivation::kNone;
  // float32 only: let cuDNN use TF32 tensor cores (10-bit mantissa products).
  bool allowTf32 = false;
};

// One line naming every field, e.g. for error messages; also the plan cache's key.
std::string describe(const ConvolutionParams& params);

// Who computes a plan's convolution: one of cuDNN's legacy algorithms, an engine of cuDNN's graph
// API (kernels/cuda/cudnn_graph_convolution.h), or Kiln's own depthwise kernels
// (kernels/cuda/depthwise_convolution.h); autotune times all three.
enum class ConvolutionKernel : uint8_t { kCudnn, kKilnDepthwise, kCudnnGraph };

// The algorithm a plan runs. For cuDNN: a cudnnConvolutionFwdAlgo_t (forward) or
// cudnnConvolutionBwdDataAlgo_t (transposed), the math type it runs with, the workspace cuDNN
// needs for it, the time autotune measured (negative when chosen by heuristics), and whether a
// bias epilogue runs inside cuDNN's fused call (cudnnConvolutionBiasActivationForward) where
// cuDNN offers one, or as Kiln's epilogue kernel after the convolution. cuDNN's fused call runs
// its own kernels, which for some shapes are many times slower than the convolution's best
// algorithm plus a separate epilogue: autotune times both. For Kiln's depthwise kernels,
// `algorithm` is the variant (depthwiseConvolutionVariants) and the epilogue is always fused. An
// engine stores this to rebuild the same plan with ConvolutionPlan::create.
struct ConvolutionAlgorithm {
  ConvolutionKernel kernel = ConvolutionKernel::kCudnn;
  int algorithm = 0;
  cudnnMathType_t mathType = CUDNN_DEFAULT_MATH;
  size_t cudnnWorkspaceBytes = 0;
  float measuredMs = -1.0f;
  bool fusedEpilogue = true;
  CudnnEngineConfig engine;
};

// Whether two choices run the same kernels (their measured times aside).
bool sameChoice(const ConvolutionAlgorithm& a, const ConvolutionAlgorithm& b);

// The kernel an algorithm runs, for profiles: "cuDNN algorithm 1, tensor ops, fused epilogue"
// or "Kiln depthwise, shared-memory tiles".
std::string describe(const ConvolutionAlgorithm& algorithm);

// How a plan maps the params onto cuDNN's symmetric padding (computed without a GPU, exposed so
// that tests check the arithmetic). All vectors have the cuDNN spatial rank (2 or 3: a 1-D
// convolution gets a leading unit dim).
//   forward:    when the symmetric padding gives outSpatial, cuDNN runs on x directly
//               (!useScratch). Otherwise x is copied into a zero-padded scratch tensor of
//               scratchSpatial (element p of the scratch is element p + shift of x, zero where
//               that is outside x) and cuDNN runs on it unpadded.
//   transposed: when cuDNN's result for the padding has the size outSpatial, it writes out
//               directly. Otherwise it writes an unpadded result of scratchSpatial into scratch,
//               and out[p] = scratch[p + shift] (zero outside the scratch).
struct CudnnConvolutionGeometry {
  Shape inSpatial;
  Shape outSpatial;
  Shape kernel;
  Shape stride;
  Shape padding;  // what cuDNN is given
  Shape dilation;
  bool useScratch = false;
  Shape scratchSpatial;
  Shape shift;
};
CudnnConvolutionGeometry cudnnConvolutionGeometry(const ConvolutionParams& params);

// Device pointers of one launch. bias may be null (then no bias is added); residual (forward
// only, laid out as out) may be null (then nothing is added).
struct ConvolutionTensors {
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* out = nullptr;
  const void* residual = nullptr;
};

// Scratch memory the caller owns; 256-byte aligned (as cudaMalloc gives).
struct ConvolutionWorkspace {
  void* data = nullptr;
  size_t bytes = 0;
};

// The descriptors and algorithm of one ConvolutionParams, created once and reused by every
// launch. Immutable once built except for one flag (fusion found unsupported), which is atomic,
// so one plan may serve several handles and streams at once.
class ConvolutionPlan {
 public:
  // The first algorithm of cuDNN's heuristics (cudnnGetConvolution*Algorithm_v7) that supports
  // these params and needs at most maxCudnnWorkspaceBytes of workspace. Needs a GPU, runs none.
  static std::unique_ptr<ConvolutionPlan> select(const CudnnHandle& handle,
                                                 const ConvolutionParams& params,
                                                 size_t maxCudnnWorkspaceBytes = size_t{1} << 30);
  // The fastest algorithm as timed by cudnnFind*AlgorithmEx on the given buffers (out is
  // overwritten), within the given workspace; with a bias, the faster of cuDNN's fused epilogue
  // and Kiln's, timed on the same buffers; beside them, for a forward convolution the first
  // engines of cuDNN's graph API heuristics, and for a depthwise one Kiln's own kernels.
  // Synchronizes the stream: for build time only.
  static std::unique_ptr<ConvolutionPlan> autotune(const CudnnHandle& handle,
                                                   const ConvolutionParams& params,
                                                   const ConvolutionTensors& tensors,
                                                   ConvolutionWorkspace workspace,
                                                   cudaStream_t stream);
  // The plan that runs a given algorithm, math type and epilogue choice (one stored by an
  // engine); throws CudaError when cuDNN does not support it for these params, and
  // std::invalid_argument when it names a Kiln kernel that does not apply to them.
  static std::unique_ptr<ConvolutionPlan> create(const CudnnHandle& handle,
                                                 const ConvolutionParams& params,
                                                 const ConvolutionAlgorithm& choice);

  ~ConvolutionPlan();
  ConvolutionPlan(const ConvolutionPlan&) = delete;
  ConvolutionPlan& operator=(const ConvolutionPlan&) = delete;

  const ConvolutionParams& params() const { return params_; }
  const ConvolutionAlgorithm& algorithm() const { return algorithm_; }
  // Every candidate autotune timed, with its time a launch in ms (negative for a fused call
  // cuDNN refused); empty for a plan that was not autotuned.
  const std::vector<std::pair<ConvolutionAlgorithm, float>>& timedCandidates() const {
    return timedCandidates_;
  }
  const CudnnConvolutionGeometry& geometry() const { return geometry_; }
  // Bytes of workspace convolution() needs: cuDNN's plus the padding / cropping scratch.
  size_t workspaceSize() const;
  // Whether a launch with a bias runs as one cudnnConvolutionBiasActivationForward.
  bool fusesBias() const;

  struct Descriptors;  // cuDNN descriptors, defined in convolution.cpp

 private:
  ConvolutionPlan(ConvolutionParams params, std::unique_ptr<Descriptors> descriptors);
  friend void convolution(const CudnnHandle& handle, const ConvolutionPlan& plan,
                          const ConvolutionTensors& tensors, ConvolutionWorkspace workspace,
                          cudaStream_t stream);
  friend struct ConvolutionPlanBuilder;

  ConvolutionParams params_;
  CudnnConvolutionGeometry geometry_;
  std::unique_ptr<Descriptors> descriptors_;
  ConvolutionAlgorithm algorithm_;
  std::vector<std::pair<ConvolutionAlgorithm, float>> timedCandidates_;
  // The graph API's operation graph and execution plans: during autotune, one plan a timed
  // engine; afterwards the chosen engine's alone (none when the choice is not a graph engine).
  std::unique_ptr<CudnnGraphConvolution> graph_;
  std::vector<CudnnExecutionPlan> graphPlans_;
  size_t graphPlan_ = 0;
  size_t scratchBytes_ = 0;
  bool fusable_ = false;
  // Cleared when cuDNN refuses the fused call for these params; launches then run conv + epilogue.
  mutable std::atomic<bool> fusionSupported_{true};
};

// Runs the plan: out = activation(conv(x, weight) + bias + residual), forward or transposed as
// planned (a transposed convolution takes no residual).
// Only enqueues work on `stream`. Throws std::invalid_argument when the workspace is smaller
// than plan.workspaceSize() or a needed pointer is null, CudaError when CUDA or cuDNN fails.
void convolution(const CudnnHandle& handle, const ConvolutionPlan& plan,
                 const ConvolutionTensors& tensors, ConvolutionWorkspace workspace,
                 cudaStream_t stream);

// Plans by params, owned by the caller (one per execution context or engine). References it
// returns stay valid until clear(), or until autotune replaces a heuristic plan of the same
// params.
class ConvolutionPlanCache {
 public:
  // The cached plan of params, selected by heuristics on first use.
  const ConvolutionPlan& select(const CudnnHandle& handle, const ConvolutionParams& params);
  // The cached autotuned plan of params, timed on first use (replacing a heuristic one).
  const ConvolutionPlan& autotune(const CudnnHandle& handle, const ConvolutionParams& params,
                                  const ConvolutionTensors& tensors, ConvolutionWorkspace workspace,
                                  cudaStream_t stream);
  // The cached plan of params, or null.
  const ConvolutionPlan* find(const ConvolutionParams& params) const;
  size_t size() const { return plans_.size(); }
  void clear() { plans_.clear(); }

 private:
  std::map<std::string, std::unique_ptr<ConvolutionPlan>> plans_;
};

}  // namespace kiln::cuda_kernels

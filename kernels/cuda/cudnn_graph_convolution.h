// Forward convolutions through cuDNN's graph (backend) API, as candidates that
// ConvolutionPlan::autotune times beside the legacy API's algorithms.
//
// The legacy API (cudnnFindConvolutionForwardAlgorithmEx) names eight algorithms, each a family
// inside which cuDNN picks a kernel; for grouped convolutions, stems of few channels and 1-D
// convolutions its picks run without tensor cores. The graph API lists the engines themselves
// (each kernel with its knobs: tiles, splits, stages), ranked by cuDNN's heuristics for the one
// operation graph, and holds the tensor-core kernels that PyTorch's own convolutions run.
//
// A CudnnGraphConvolution is the operation graph of one convolution; its candidates() are
// execution plans of the engines its heuristics rank first, each with the engine config an
// engine stores (CudnnEngineConfig) to rebuild the same plan with plan().
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/common.h"
#include "kernels/cuda/cudnn_common.h"

namespace kiln::cuda_kernels {

// Owner of one backend descriptor (cudnnBackendCreateDescriptor / Destroy). Movable, not
// copyable.
class BackendDescriptor {
 public:
  explicit BackendDescriptor(cudnnBackendDescriptorType_t type);
  ~BackendDescriptor();
  BackendDescriptor(BackendDescriptor&& other) noexcept;
  BackendDescriptor& operator=(BackendDescriptor&& other) noexcept;
  BackendDescriptor(const BackendDescriptor&) = delete;
  BackendDescriptor& operator=(const BackendDescriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return descriptor_; }

 private:
  cudnnBackendDescriptor_t descriptor_ = nullptr;
};

// An engine of cuDNN's graph API with its knob values, and the byte alignment of the tensors it
// was chosen for: enough to rebuild the same execution plan for the same convolution.
struct CudnnEngineConfig {
  int64_t globalIndex = -1;
  std::vector<std::pair<int64_t, int64_t>> knobs;  // (cudnnBackendKnobType_t, value)
  int64_t alignment = 16;                          // bytes x, weight and out are aligned to
  bool tensorCores = false;                        // cuDNN's numerical note, for profiles

  bool operator==(const CudnnEngineConfig& other) const {
    return globalIndex == other.globalIndex && knobs == other.knobs && alignment == other.alignment;
  }
  bool operator!=(const CudnnEngineConfig& other) const { return !(*this == other); }
};

// An execution plan of one engine config, bound to the handle it was built with.
struct CudnnExecutionPlan {
  CudnnEngineConfig config;
  size_t workspaceBytes = 0;
  std::unique_ptr<BackendDescriptor> plan;
};

struct ConvolutionParams;         // kernels/cuda/convolution.h
struct CudnnConvolutionGeometry;  // kernels/cuda/convolution.h

class CudnnGraphConvolution {
 public:
  // The operation graph of a forward convolution as its geometry maps it onto cuDNN (on x, or on
  // the padded scratch), for tensors aligned to `alignment` bytes: x (batch, inChannels,
  // spatial...), weight (outChannels, inChannels / groups, kernel...) and y in NCHW order with
  // the strides of params' layout; cuDNN infers the groups from x's and the weight's channels.
  // Throws CudaError when cuDNN refuses the graph.
  CudnnGraphConvolution(const CudnnHandle& handle, const ConvolutionParams& params,
                        const CudnnConvolutionGeometry& geometry, int64_t alignment);
  ~CudnnGraphConvolution();
  CudnnGraphConvolution(const CudnnGraphConvolution&) = delete;
  CudnnGraphConvolution& operator=(const CudnnGraphConvolution&) = delete;

  // Execution plans of the first `count` engines of cuDNN's heuristics (mode A) that build and
  // keep the convolution's numerics, within maxWorkspaceBytes: fp32 accumulation (no reduced
  // precision reduction), no inputs converted to a narrower type, no TF32 for strict fp32,
  // deterministic, and no kernels compiled at run time (minutes of build time).
  std::vector<CudnnExecutionPlan> candidates(const CudnnHandle& handle, size_t count,
                                             size_t maxWorkspaceBytes) const;
  // The execution plan of a config that candidates() gave for the same shape; throws CudaError
  // when cuDNN does not build it.
  CudnnExecutionPlan plan(const CudnnHandle& handle, const CudnnEngineConfig& config) const;
  int64_t alignment() const { return alignment_; }

  // Enqueues plan on the handle's stream: y = conv(x, weight). workspace holds at least
  // plan.workspaceBytes. Throws std::invalid_argument when a pointer is not aligned as the plan
  // needs, CudaError when cuDNN fails.
  static void execute(const CudnnHandle& handle, const CudnnExecutionPlan& plan, const void* x,
                      const void* weight, void* y, void* workspace);

 private:
  struct Graph;
  std::unique_ptr<Graph> graph_;
  int64_t alignment_;
  bool allowTensorCoresForFloat32_;
  bool float32_;
};

// The largest power of two up to 16 that divides every pointer's address (null ones ignored).
int64_t commonAlignment(std::initializer_list<const void*> pointers);

}  // namespace kiln::cuda_kernels

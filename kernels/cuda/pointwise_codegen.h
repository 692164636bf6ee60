// Fused pointwise kernels generated at build time: CUDA C++ written for one program, compiled by
// NVRTC into a CUBIN for the GPU's exact architecture, loaded from that CUBIN (which the engine
// plan keeps, so that loading a plan needs no compiler) and launched over the output's elements
// with numpy broadcasting of the inputs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/common/pointwise_program.h"
#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::PointwiseProgram;

constexpr size_t kPointwiseMaxInputs = 16;
constexpr size_t kPointwiseMaxOutputs = 8;
constexpr size_t kPointwiseMaxRank = 8;  // after merging dims that broadcast alike

// The CUDA C++ source of a program's kernels (entry points kiln_pointwise_i32 and _i64). Throws
// std::invalid_argument for a step the generator has no code for (integer arithmetic), naming it.
std::string generatePointwiseSource(const PointwiseProgram& program);

// "sm_90a" for compute capability 9.0: the architecture NVRTC compiles for.
std::string pointwiseArchitecture(int computeCapabilityMajor, int computeCapabilityMinor);
// The architecture of the current CUDA device.
std::string currentPointwiseArchitecture();

// Compiles a source from generatePointwiseSource with NVRTC into a CUBIN for `architecture`.
// Throws CudaError with NVRTC's log when compilation fails.
std::vector<uint8_t> compilePointwiseKernel(const std::string& source,
                                            const std::string& architecture);
// How many times compilePointwiseKernel ran NVRTC in this process (tests prove with it that a
// loaded plan compiles nothing).
size_t pointwiseCompilationCount();

struct PointwiseOperand {
  const void* data = nullptr;
  ScalarType type = ScalarType::kFloat32;
  Shape dims;
};

// A loaded CUBIN of a pointwise program (a CUDA library; unloaded on destruction).
class PointwiseKernel {
 public:
  explicit PointwiseKernel(const std::vector<uint8_t>& cubin);
  ~PointwiseKernel();
  PointwiseKernel(const PointwiseKernel&) = delete;
  PointwiseKernel& operator=(const PointwiseKernel&) = delete;

  // Computes every output element (outputs: device pointers of `outputDims`, in the program's
  // output order) from the inputs, each broadcast to outputDims (right-aligned numpy rules).
  void launch(const std::vector<PointwiseOperand>& inputs, const std::vector<void*>& outputs,
              const std::vector<ScalarType>& outputTypes, const Shape& outputDims,
              cudaStream_t stream) const;

 private:
  cudaLibrary_t library_ = nullptr;
  cudaKernel_t kernel32_ = nullptr;
  cudaKernel_t kernel64_ = nullptr;
};

}  // namespace kiln::cuda_kernels

// Matrix products on the GPU through cuBLASLt: a strided-batched GEMM on row-major matrices with
// bias, residual and activation epilogues, and the MatMul and FullyConnected layers built on it.
// Mirrors kernels/cpu/matmul.h. fp32, fp16 and bf16, accumulating in fp32 (CUBLAS_COMPUTE_32F; fp32
// may opt in to TF32 tensor cores). Launches are asynchronous on the caller's stream; nothing here
// allocates device memory or synchronizes.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

// Throws CudaError naming the call, cuBLAS's status name, the file and the line.
void throwCublasError(cublasStatus_t status, const char* call, const char* file, int line);

#define KILN_CUBLAS_CHECK(call)                                                               \
  do {                                                                                        \
    cublasStatus_t kiln_cublas_status_ = (call);                                              \
    if (kiln_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                         \
      ::kiln::cuda_kernels::throwCublasError(kiln_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

// One cuBLASLt handle, created once per execution context and used for all its GEMMs.
class CublasLtHandle {
 public:
  CublasLtHandle();
  ~CublasLtHandle();
  CublasLtHandle(const CublasLtHandle&) = delete;
  CublasLtHandle& operator=(const CublasLtHandle&) = delete;
  CublasLtHandle(CublasLtHandle&& other) noexcept;
  CublasLtHandle& operator=(CublasLtHandle&& other) noexcept;

  cublasLtHandle_t get() const { return handle_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
};

// The activation applied in the GEMM's epilogue, after the bias.
enum class GemmActivation : uint8_t {
  kNone,
  kRelu,
  kGeluTanh,  // cuBLASLt's GELU: torch.nn.functional.gelu(x, approximate="tanh")
};

// Scratch cuBLASLt may use; more lets it pick split-k and stream-k algorithms.
constexpr size_t kGemmRecommendedWorkspaceSize = size_t{32} << 20;

// Device scratch owned by the caller (one per stream: GEMMs on one stream may share it).
struct GemmWorkspace {
  void* data = nullptr;
  size_t size = 0;
};

// c[i] = act(alpha * op(a[i]) * op(b[i]) + beta * r[i] + bias) for i < batchCount, all
// matrices row-major. r is the residual when one is given (laid out as c: cuBLASLt's C, read,
// while c is its D, written), else c itself. op(a) is m x k: a is stored m x k with row stride
// lda, or k x m when transposeA; op(b) is k x n: b is stored k x n, or n x k when transposeB; c
// is m x n with row stride ldc. Batch strides are in elements; 0 shares one matrix across the
// batch. The bias (n values, one per column of c, shared by every batch) is optional. a, b, c,
// the residual and the bias all have type `dtype`.
struct GemmParams {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  bool transposeA = false;
  bool transposeB = false;
  int64_t lda = 0;
  int64_t ldb = 0;
  int64_t ldc = 0;
  int64_t batchCount = 1;
  int64_t batchStrideA = 0;
  int64_t batchStrideB = 0;
  int64_t batchStrideC = 0;
  ScalarType dtype = ScalarType::kFloat32;
  bool allowTf32 = false;  // fp32 only: round the inputs to TF32 for tensor cores
  GemmActivation activation = GemmActivation::kNone;
  float alpha = 1.0f;
  float beta = 0.0f;  // non-zero reads the residual, or c before overwriting it
};

// The algorithm each GEMM configuration was timed to, shared by the plan caches of one engine's
// execution contexts so that all of them compute a configuration alike, whichever timed it
// first. Thread-safe.
class GemmChoices {
 public:
  GemmChoices();
  ~GemmChoices();
  GemmChoices(const GemmChoices&) = delete;
  GemmChoices& operator=(const GemmChoices&) = delete;

  size_t size() const;

  struct Impl;  // gemm.cpp's table of choices
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Plans (cuBLASLt descriptors and the algorithm) by configuration: shapes, strides, dtype,
// epilogue, pointer alignments and workspace size, so that the algorithm is chosen once per
// configuration: the fastest of cuBLASLt's heuristic candidates, timed on the first call's
// buffers and stream (see gemm()). Owned by the caller, one per execution context; not
// thread-safe.
class GemmPlanCache {
 public:
  GemmPlanCache();
  ~GemmPlanCache();
  GemmPlanCache(const GemmPlanCache&) = delete;
  GemmPlanCache& operator=(const GemmPlanCache&) = delete;
  GemmPlanCache(GemmPlanCache&&) noexcept;
  GemmPlanCache& operator=(GemmPlanCache&&) noexcept;

  size_t size() const;
  void clear();
  // Takes the choices other caches made for a configuration, and offers them its own.
  void shareChoices(std::shared_ptr<GemmChoices> choices);

  struct Impl;  // gemm.cpp's table of plans
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Runs one strided-batched GEMM. k == 0 yields act(beta * r + bias) (it needs
// max(m, n) elements of the workspace, 256-byte aligned, for zero operands). The residual may
// be null; it may be c itself, not otherwise overlap it. Throws std::invalid_argument for an
// unsupported dtype or inconsistent strides, CudaError for a failed cuBLASLt call or when no
// algorithm fits.
//
// The first call of a configuration chooses its algorithm: one a sharing cache chose, else the
// fastest of cuBLASLt's heuristic candidates, each launched a few times on the call's buffers
// with the stream waited for. Where that cannot be done (the stream is being captured into a
// CUDA graph, or c is read as the residual and so cannot be written more than once), the
// heuristic's first is taken.
void gemm(const CublasLtHandle& handle, GemmPlanCache& cache, const GemmParams& params,
          const void* a, const void* b, const void* bias, const void* residual, void* c,
          GemmWorkspace workspace, cudaStream_t stream);

// a (..., M, K) x b (..., K, N) -> out (..., M, N), ranks >= 2, batch dims broadcast
// numpy-style (right-aligned). A transpose flag swaps that operand's last two dims first.
// The bias (N values) and activation are optional epilogues.
struct MatMulParams {
  Shape aShape;
  Shape bShape;
  bool transposeA = false;
  bool transposeB = false;
  ScalarType dtype = ScalarType::kFloat32;
  bool allowTf32 = false;
  GemmActivation activation = GemmActivation::kNone;
};

// The output shape of a matmul; throws std::invalid_argument when the shapes do not fit.
Shape matmulOutputShape(const MatMulParams& params);
// Broadcast batches become one strided-batched GEMM where the batch dims allow (each operand's
// batch is either the output's or shared), else one strided-batched GEMM per index of the
// leading batch dims that do not.
void matmul(const CublasLtHandle& handle, GemmPlanCache& cache, const MatMulParams& params,
            const void* a, const void* b, const void* bias, void* out, GemmWorkspace workspace,
            cudaStream_t stream);

// torch.nn.functional.linear: x (rows, inFeatures), weight (outFeatures, inFeatures), bias
// (outFeatures) or null, residual (rows, outFeatures) or null -> out (rows, outFeatures) =
// activation(x weight^T + bias + residual). The residual may be out itself, not otherwise
// overlap it.
struct FullyConnectedParams {
  int64_t rows = 0;
  int64_t inFeatures = 0;
  int64_t outFeatures = 0;
  ScalarType dtype = ScalarType::kFloat32;
  bool allowTf32 = false;
  GemmActivation activation = GemmActivation::kNone;
};
void fullyConnected(const CublasLtHandle& handle, GemmPlanCache& cache,
                    const FullyConnectedParams& params, const void* x, const void* weight,
                    const void* bias, const void* residual, void* out, GemmWorkspace workspace,
                    cudaStream_t stream);

}  // namespace kiln::cuda_kernels

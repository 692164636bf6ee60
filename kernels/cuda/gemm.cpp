#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/common/shapes.h"

namespace kiln::cuda_kernels {
namespace {

// Heuristic candidates timed for a configuration: cuBLASLt ranks by a model of the GPU, and its
// first is not always the fastest for the shapes of a model.
constexpr size_t kGemmCandidates = 8;

// Everything the heuristic's choice depends on.
struct GemmKey {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t lda = 0;
  int64_t ldb = 0;
  int64_t ldc = 0;
  int64_t batchCount = 1;
  int64_t batchStrideA = 0;
  int64_t batchStrideB = 0;
  int64_t batchStrideC = 0;
  uint64_t workspaceSize = 0;
  uint32_t alignmentA = 0;
  uint32_t alignmentB = 0;
  uint32_t alignmentC = 0;  // the matrix read: the residual, or c
  uint32_t alignmentD = 0;  // c, written
  uint32_t alignmentBias = 0;
  ScalarType dtype = ScalarType::kFloat32;
  GemmActivation activation = GemmActivation::kNone;
  bool transposeA = false;
  bool transposeB = false;
  bool allowTf32 = false;
  bool hasBias = false;
  bool outOfPlace = false;  // a residual other than c: cuBLASLt's C and D differ

  auto fields() const {
    return std::tie(m, n, k, lda, ldb, ldc, batchCount, batchStrideA, batchStrideB, batchStrideC,
                    workspaceSize, alignmentA, alignmentB, alignmentC, alignmentD, alignmentBias,
                    dtype, activation, transposeA, transposeB, allowTf32, hasBias, outOfPlace);
  }
  bool operator==(const GemmKey& other) const { return fields() == other.fields(); }
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& key) const {
    size_t hash = 0;
    const auto mix = [&hash](uint64_t value) {
      hash ^= std::hash<uint64_t>{}(value) + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2);
    };
    std::apply([&mix](const auto&... field) { (mix(static_cast<uint64_t>(field)), ...); },
               key.fields());
    return hash;
  }
};

// The descriptors of one configuration, the heuristic's candidate algorithms (best first) and
// the one chosen. In cuBLASLt's column-major terms it computes D (n x m) = op(b) (n x k) *
// op(a) (k x m): a row-major matrix is its column-major transpose, so no data is transposed.
struct GemmPlan {
  cublasLtMatmulDesc_t operation = nullptr;
  cublasLtMatrixLayout_t layoutB = nullptr;  // cuBLASLt's "A": our b
  cublasLtMatrixLayout_t layoutA = nullptr;  // cuBLASLt's "B": our a
  cublasLtMatrixLayout_t layoutC = nullptr;  // C and D (the residual is laid out as c)
  std::vector<cublasLtMatmulAlgo_t> candidates;
  cublasLtMatmulAlgo_t algo{};

  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (layoutC != nullptr) cublasLtMatrixLayoutDestroy(layoutC);
    if (layoutA != nullptr) cublasLtMatrixLayoutDestroy(layoutA);
    if (layoutB != nullptr) cublasLtMatrixLayoutDestroy(layoutB);
    if (operation != nullptr) cublasLtMatmulDescDestroy(operation);
  }
};

struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreference_t preference) const {
    cublasLtMatmulPreferenceDestroy(preference);
  }
};
using PreferencePtr =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, PreferenceDeleter>;

cudaDataType_t cudaTypeOf(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat32:
      return CUDA_R_32F;
    case ScalarType::kFloat16:
      return CUDA_R_16F;
    case ScalarType::kBFloat16:
      return CUDA_R_16BF;
    default:
      throw std::invalid_argument(std::string("gemm: cuBLASLt GEMMs take float32, float16 or "
                                              "bfloat16, not ") +
                                  scalarName(type) + "; cast the operands first");
  }
}

cublasLtEpilogue_t epilogueOf(bool hasBias, GemmActivation activation) {
  switch (activation) {
    case GemmActivation::kNone:
      return hasBias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    case GemmActivation::kRelu:
      return hasBias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    case GemmActivation::kGeluTanh:
      return hasBias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  }
  throw std::invalid_argument("gemm: unknown activation " +
                              std::to_string(static_cast<int>(activation)));
}

const char* activationName(GemmActivation activation) {
  switch (activation) {
    case GemmActivation::kNone:
      return "none";
    case GemmActivation::kRelu:
      return "relu";
    case GemmActivation::kGeluTanh:
      return "gelu_tanh";
  }
  return "unknown";
}

std::string describe(const GemmParams& p, bool hasBias) {
  return "m=" + std::to_string(p.m) + " n=" + std::to_string(p.n) + " k=" + std::to_string(p.k) +
         " lda=" + std::to_string(p.lda) + " ldb=" + std::to_string(p.ldb) +
         " ldc=" + std::to_string(p.ldc) + " transposeA=" + std::to_string(p.transposeA) +
         " transposeB=" + std::to_string(p.transposeB) + " batch=" + std::to_string(p.batchCount) +
         " dtype=" + scalarName(p.dtype) + (p.allowTf32 ? " tf32" : "") +
         " bias=" + std::to_string(hasBias) + " activation=" + activationName(p.activation);
}

// The largest power of two (up to 256, cuBLASLt's default assumption) dividing the address of
// every matrix of the batch.
uint32_t alignmentOf(const void* pointer, int64_t batchStrideBytes) {
  const uint64_t bits =
      reinterpret_cast<uint64_t>(pointer) | uint64_t{256} | static_cast<uint64_t>(batchStrideBytes);
  return static_cast<uint32_t>(bits & (~bits + 1));
}

bool writesOutOfPlace(const cublasLtMatmulAlgo_t& algo) {
  int32_t supported = 0;
  size_t written = 0;
  KILN_CUBLAS_CHECK(cublasLtMatmulAlgoCapGetAttribute(&algo,
                                                      CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT,
                                                      &supported, sizeof(supported), &written));
  return supported != 0;
}

template <typename T>
void setDescAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute,
                      const T& value) {
  KILN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

cublasLtMatrixLayout_t createLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld,
                                    int64_t batchCount, int64_t batchStride) {
  cublasLtMatrixLayout_t layout = nullptr;
  KILN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  if (batchCount > 1) {
    const auto count = static_cast<int32_t>(batchCount);
    const cublasStatus_t countStatus = cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count));
    const cublasStatus_t strideStatus =
        countStatus != CUBLAS_STATUS_SUCCESS
            ? countStatus
            : cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                               &batchStride, sizeof(batchStride));
    if (strideStatus != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatrixLayoutDestroy(layout);
      KILN_CUBLAS_CHECK(strideStatus);
    }
  }
  return layout;
}

std::unique_ptr<GemmPlan> createPlan(const CublasLtHandle& handle, const GemmParams& p,
                                     const GemmKey& key, const void* bias) {
  const cudaDataType_t type = cudaTypeOf(p.dtype);
  const cublasComputeType_t computeType = p.dtype == ScalarType::kFloat32 && p.allowTf32
                                              ? CUBLAS_COMPUTE_32F_FAST_TF32
                                              : CUBLAS_COMPUTE_32F;
  auto plan = std::make_unique<GemmPlan>();
  KILN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->operation, computeType, CUDA_R_32F));
  const cublasOperation_t transposeB = p.transposeB ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t transposeA = p.transposeA ? CUBLAS_OP_T : CUBLAS_OP_N;
  setDescAttribute(plan->operation, CUBLASLT_MATMUL_DESC_TRANSA, transposeB);
  setDescAttribute(plan->operation, CUBLASLT_MATMUL_DESC_TRANSB, transposeA);
  setDescAttribute(plan->operation, CUBLASLT_MATMUL_DESC_EPILOGUE,
                   epilogueOf(key.hasBias, p.activation));
  if (key.hasBias) {
    setDescAttribute(plan->operation, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                     static_cast<int32_t>(type));
    // The heuristic reads the pointer's alignment, not its data.
    setDescAttribute(plan->operation, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  // Row-major b stored (k x n) is column-major (n x k); stored (n x k) is column-major (k x n).
  plan->layoutB = p.transposeB ? createLayout(type, p.k, p.n, p.ldb, p.batchCount, p.batchStrideB)
                               : createLayout(type, p.n, p.k, p.ldb, p.batchCount, p.batchStrideB);
  plan->layoutA = p.transposeA ? createLayout(type, p.m, p.k, p.lda, p.batchCount, p.batchStrideA)
                               : createLayout(type, p.k, p.m, p.lda, p.batchCount, p.batchStrideA);
  plan->layoutC = createLayout(type, p.n, p.m, p.ldc, p.batchCount, p.batchStrideC);

  cublasLtMatmulPreference_t rawPreference = nullptr;
  KILN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&rawPreference));
  PreferencePtr preference(rawPreference);
  const auto setPreference = [&](cublasLtMatmulPreferenceAttributes_t attribute, auto value) {
    KILN_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(preference.get(), attribute, &value, sizeof(value)));
  };
  setPreference(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, key.workspaceSize);
  setPreference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.alignmentB);
  setPreference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.alignmentA);
  setPreference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.alignmentC);
  setPreference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.alignmentD);

  // The heuristic sees layouts, not pointers: when C and D differ, only algorithms that can
  // write D out of place qualify.
  std::array<cublasLtMatmulHeuristicResult_t, kGemmCandidates> results{};
  int found = 0;
  KILN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(
      handle.get(), plan->operation, plan->layoutB, plan->layoutA, plan->layoutC, plan->layoutC,
      preference.get(), static_cast<int>(results.size()), results.data(), &found));
  for (int i = 0; i < found; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS &&
        (!key.outOfPlace || writesOutOfPlace(results[i].algo))) {
      plan->candidates.push_back(results[i].algo);
    }
  }
  if (!plan->candidates.empty()) {
    plan->algo = plan->candidates.front();
    return plan;
  }
  throw CudaError("cublasLtMatmulAlgoGetHeuristic found no algorithm for the GEMM " +
                  describe(p, key.hasBias) +
                  (key.outOfPlace ? " reading a separate residual" : "") + " with " +
                  std::to_string(key.workspaceSize) +
                  " bytes of workspace; a larger workspace or 16-byte aligned operands and "
                  "leading dims may help");
}

// What one gemm() call launches, for timing its plan's candidates.
struct GemmLaunch {
  const CublasLtHandle& handle;
  const GemmParams& params;
  const void* a;
  const void* b;
  const void* read;  // cuBLASLt's C: the residual, or c
  void* c;
  GemmWorkspace workspace;
  size_t workspaceSize;
  cudaStream_t stream;

  cublasStatus_t operator()(const GemmPlan& plan, const cublasLtMatmulAlgo_t& algo) const {
    return cublasLtMatmul(handle.get(), plan.operation, &params.alpha, b, plan.layoutB, a,
                          plan.layoutA, &params.beta, read, plan.layoutC, c, plan.layoutC, &algo,
                          workspace.data, workspaceSize, stream);
  }
};

// Whether the plan's candidates can be timed on this call: the stream waited for (not while it
// is captured into a graph), and c written more than once (not while it is also the residual).
bool timeable(const GemmLaunch& launch) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  KILN_CUDA_CHECK(cudaStreamIsCapturing(launch.stream, &capture));
  return capture == cudaStreamCaptureStatusNone &&
         (launch.read != launch.c || launch.params.beta == 0.0f);
}

// The fastest of the plan's candidates (the first when none launches).
cublasLtMatmulAlgo_t fastestAlgorithm(const GemmPlan& plan, const GemmLaunch& launch) {
  const std::optional<TimedCandidate> fastest = fastestCandidate(
      plan.candidates.size(), launch.stream,
      [&](size_t i) { return launch(plan, plan.candidates[i]) == CUBLAS_STATUS_SUCCESS; });
  return plan.candidates[fastest ? fastest->index : 0];
}

void checkParams(const GemmParams& p) {
  const auto fail = [&p](const std::string& what) {
    throw std::invalid_argument("gemm: " + what + " (" + describe(p, false) + ")");
  };
  if (p.m < 0 || p.n < 0 || p.k < 0 || p.batchCount < 0) fail("negative sizes");
  if (p.batchCount > std::numeric_limits<int32_t>::max()) fail("more batches than cuBLASLt takes");
  if (p.lda < std::max<int64_t>(1, p.transposeA ? p.m : p.k))
    fail("lda is smaller than a row of a");
  if (p.ldb < std::max<int64_t>(1, p.transposeB ? p.k : p.n))
    fail("ldb is smaller than a row of b");
  if (p.ldc < std::max<int64_t>(1, p.n)) fail("ldc is smaller than a row of c");
  if (p.batchStrideA < 0 || p.batchStrideB < 0 || p.batchStrideC < 0) fail("negative batch stride");
  if (p.batchCount > 1 && p.batchStrideC < (p.m - 1) * p.ldc + p.n) {
    fail("the batches of c overlap");
  }
}

// k == 0: the product is all zeros, so c = act(beta * r + bias). The epilogue still has to
// run, so this multiplies zero operands of depth 1, kept at the start of the workspace.
void gemmWithoutDepth(const CublasLtHandle& handle, GemmPlanCache& cache, const GemmParams& p,
                      const void* bias, const void* residual, void* c, GemmWorkspace workspace,
                      cudaStream_t stream) {
  constexpr size_t kAlignment = 256;
  const size_t zeroBytes = static_cast<size_t>(std::max(p.m, p.n)) * scalarSize(p.dtype);
  const size_t reserved = (zeroBytes + kAlignment - 1) / kAlignment * kAlignment;
  if (workspace.data == nullptr || workspace.size < reserved) {
    throw std::invalid_argument("gemm: a product with k = 0 needs " + std::to_string(reserved) +
                                " bytes of workspace for zero operands, " +
                                std::to_string(workspace.size) + " were given");
  }
  KILN_CUDA_CHECK(cudaMemsetAsync(workspace.data, 0, zeroBytes, stream));
  GemmParams depthOne = p;
  depthOne.k = 1;
  depthOne.transposeA = false;
  depthOne.transposeB = false;
  depthOne.lda = 1;
  depthOne.ldb = p.n;
  depthOne.batchStrideA = 0;
  depthOne.batchStrideB = 0;
  GemmWorkspace rest{static_cast<unsigned char*>(workspace.data) + reserved,
                     workspace.size - reserved};
  gemm(handle, cache, depthOne, workspace.data, workspace.data, bias, residual, c, rest, stream);
}

}  // namespace

struct GemmChoices::Impl {
  mutable std::mutex mutex;
  std::unordered_map<GemmKey, cublasLtMatmulAlgo_t, GemmKeyHash> algorithms;
};

struct GemmPlanCache::Impl {
  std::unordered_map<GemmKey, std::unique_ptr<GemmPlan>, GemmKeyHash> plans;
  std::shared_ptr<GemmChoices> choices;
};

namespace {

// The plan's algorithm (see gemm()): a sharing cache's choice, else the fastest candidate when
// they can be timed (offered to the sharing caches), else the heuristic's first.
void chooseAlgorithm(GemmPlan& plan, const GemmKey& key, GemmChoices* choices,
                     const GemmLaunch& launch) {
  if (choices != nullptr) {
    std::lock_guard<std::mutex> lock(choices->impl().mutex);
    const auto found = choices->impl().algorithms.find(key);
    if (found != choices->impl().algorithms.end()) {
      plan.algo = found->second;
      return;
    }
  }
  if (plan.candidates.size() < 2 || !timeable(launch)) return;
  plan.algo = fastestAlgorithm(plan, launch);
  if (choices != nullptr) {
    std::lock_guard<std::mutex> lock(choices->impl().mutex);
    // Another cache may have timed the configuration meanwhile: the first choice stands.
    plan.algo = choices->impl().algorithms.emplace(key, plan.algo).first->second;
  }
}

}  // namespace

GemmChoices::GemmChoices() : impl_(std::make_unique<Impl>()) {}
GemmChoices::~GemmChoices() = default;

size_t GemmChoices::size() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->algorithms.size();
}

void throwCublasError(cublasStatus_t status, const char* call, const char* file, int line) {
  throw CudaError(std::string(call) + " failed with " + cublasLtGetStatusName(status) + " (" +
                  cublasLtGetStatusString(status) + ") at " + file + ":" + std::to_string(line));
}

CublasLtHandle::CublasLtHandle() { KILN_CUBLAS_CHECK(cublasLtCreate(&handle_)); }

CublasLtHandle::~CublasLtHandle() {
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

CublasLtHandle::CublasLtHandle(CublasLtHandle&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)) {}

CublasLtHandle& CublasLtHandle::operator=(CublasLtHandle&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) cublasLtDestroy(handle_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

GemmPlanCache::GemmPlanCache() : impl_(std::make_unique<Impl>()) {}
GemmPlanCache::~GemmPlanCache() = default;
GemmPlanCache::GemmPlanCache(GemmPlanCache&&) noexcept = default;
GemmPlanCache& GemmPlanCache::operator=(GemmPlanCache&&) noexcept = default;

size_t GemmPlanCache::size() const { return impl_->plans.size(); }

void GemmPlanCache::clear() { impl_->plans.clear(); }

void GemmPlanCache::shareChoices(std::shared_ptr<GemmChoices> choices) {
  impl_->choices = std::move(choices);
}

void gemm(const CublasLtHandle& handle, GemmPlanCache& cache, const GemmParams& params,
          const void* a, const void* b, const void* bias, const void* residual, void* c,
          GemmWorkspace workspace, cudaStream_t stream) {
  cudaTypeOf(params.dtype);  // throws for a dtype cuBLASLt GEMMs do not take
  if (params.m == 0 || params.n == 0 || params.batchCount == 0) {
    checkParams(params);
    return;
  }
  if (params.k == 0) {
    checkParams(params);
    gemmWithoutDepth(handle, cache, params, bias, residual, c, workspace, stream);
    return;
  }
  checkParams(params);
  const auto elementSize = static_cast<int64_t>(scalarSize(params.dtype));
  const bool batched = params.batchCount > 1;
  GemmKey key;
  key.m = params.m;
  key.n = params.n;
  key.k = params.k;
  key.lda = params.lda;
  key.ldb = params.ldb;
  key.ldc = params.ldc;
  key.batchCount = params.batchCount;
  key.batchStrideA = batched ? params.batchStrideA : 0;
  key.batchStrideB = batched ? params.batchStrideB : 0;
  key.batchStrideC = batched ? params.batchStrideC : 0;
  key.workspaceSize = workspace.data != nullptr ? workspace.size : 0;
  key.alignmentA = alignmentOf(a, key.batchStrideA * elementSize);
  key.alignmentB = alignmentOf(b, key.batchStrideB * elementSize);
  const void* read = residual != nullptr ? residual : c;
  key.alignmentC = alignmentOf(read, key.batchStrideC * elementSize);
  key.alignmentD = alignmentOf(c, key.batchStrideC * elementSize);
  key.outOfPlace = read != c;
  key.hasBias = bias != nullptr;
  key.alignmentBias = key.hasBias ? alignmentOf(bias, 0) : 0;
  key.dtype = params.dtype;
  key.activation = params.activation;
  key.transposeA = params.transposeA;
  key.transposeB = params.transposeB;
  key.allowTf32 = params.dtype == ScalarType::kFloat32 && params.allowTf32;

  GemmParams normalized = params;
  normalized.batchStrideA = key.batchStrideA;
  normalized.batchStrideB = key.batchStrideB;
  normalized.batchStrideC = key.batchStrideC;
  const GemmLaunch launch{
      handle, params, a, b, read, c, workspace, static_cast<size_t>(key.workspaceSize), stream};
  auto& plans = cache.impl().plans;
  auto found = plans.find(key);
  if (found == plans.end()) {
    std::unique_ptr<GemmPlan> plan = createPlan(handle, normalized, key, bias);
    if (key.hasBias) setDescAttribute(plan->operation, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
    chooseAlgorithm(*plan, key, cache.impl().choices.get(), launch);
    found = plans.emplace(key, std::move(plan)).first;
  }
  GemmPlan& plan = *found->second;
  if (key.hasBias) setDescAttribute(plan.operation, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  KILN_CUBLAS_CHECK(launch(plan, plan.algo));
}

Shape matmulOutputShape(const MatMulParams& params) {
  return kernels::matmulOutputShape(params.aShape, params.bShape, params.transposeA,
                                    params.transposeB);
}

void matmul(const CublasLtHandle& handle, GemmPlanCache& cache, const MatMulParams& params,
            const void* a, const void* b, const void* bias, void* out, GemmWorkspace workspace,
            cudaStream_t stream) {
  const Shape outShape = matmulOutputShape(params);
  if (shapeVolume(outShape) == 0) return;
  const size_t aRank = params.aShape.size();
  const size_t bRank = params.bShape.size();
  const size_t batchRank = outShape.size() - 2;

  GemmParams gemmParams;
  gemmParams.m = outShape[batchRank];
  gemmParams.n = outShape[batchRank + 1];
  gemmParams.k = params.transposeA ? params.aShape[aRank - 2] : params.aShape[aRank - 1];
  gemmParams.transposeA = params.transposeA;
  gemmParams.transposeB = params.transposeB;
  gemmParams.lda = std::max<int64_t>(1, params.aShape[aRank - 1]);
  gemmParams.ldb = std::max<int64_t>(1, params.bShape[bRank - 1]);
  gemmParams.ldc = gemmParams.n;
  gemmParams.dtype = params.dtype;
  gemmParams.allowTf32 = params.allowTf32;
  gemmParams.activation = params.activation;
  const int64_t aMatrix = params.aShape[aRank - 2] * params.aShape[aRank - 1];
  const int64_t bMatrix = params.bShape[bRank - 2] * params.bShape[bRank - 1];
  const int64_t outMatrix = gemmParams.m * gemmParams.n;
  const size_t elementSize = scalarSize(params.dtype);

  // Batch dims of each operand, padded on the left with 1s to the output's batch rank.
  const auto paddedBatch = [batchRank](const Shape& shape) {
    Shape batch(batchRank, 1);
    std::copy(shape.begin(), shape.end() - 2, batch.end() - (shape.size() - 2));
    return batch;
  };
  const Shape aBatch = paddedBatch(params.aShape);
  const Shape bBatch = paddedBatch(params.bShape);
  const Shape outBatch(outShape.begin(), outShape.end() - 2);
  const int64_t batches = shapeVolume(outBatch);

  if (shapeVolume(bBatch) == 1 && !params.transposeA) {
    // b is shared by every batch and a's rows are contiguous: one GEMM over all rows of a.
    gemmParams.m *= batches;
    gemm(handle, cache, gemmParams, a, b, bias, nullptr, out, workspace, stream);
    return;
  }

  // The trailing batch dims over which each operand is either the output's batch or one shared
  // matrix become one strided batch; the leading rest is looped over.
  const auto stridedFrom = [&](const Shape& operand) {
    size_t split = batchRank;
    while (split > 0) {
      bool full = true;
      bool shared = true;
      for (size_t d = split - 1; d < batchRank; ++d) {
        full = full && operand[d] == outBatch[d];
        shared = shared && operand[d] == 1;
      }
      if (!full && !shared) break;
      --split;
    }
    return split;
  };
  const size_t split = std::max(stridedFrom(aBatch), stridedFrom(bBatch));
  const auto sharesTail = [&](const Shape& operand) {
    for (size_t d = split; d < batchRank; ++d) {
      if (operand[d] != outBatch[d]) return true;
    }
    return false;
  };
  const Shape tail(outBatch.begin() + split, outBatch.end());
  gemmParams.batchCount = shapeVolume(tail);
  gemmParams.batchStrideA = sharesTail(aBatch) ? 0 : aMatrix;
  gemmParams.batchStrideB = sharesTail(bBatch) ? 0 : bMatrix;
  gemmParams.batchStrideC = outMatrix;

  // Strides (in matrices) of each operand's batch dims; a broadcast dim does not move.
  const auto batchStrides = [batchRank](const Shape& operand) {
    Shape strides(batchRank, 0);
    int64_t stride = 1;
    for (size_t d = batchRank; d-- > 0;) {
      strides[d] = operand[d] == 1 ? 0 : stride;
      stride *= operand[d];
    }
    return strides;
  };
  const Shape aStrides = batchStrides(aBatch);
  const Shape bStrides = batchStrides(bBatch);
  const auto* aBytes = static_cast<const unsigned char*>(a);
  const auto* bBytes = static_cast<const unsigned char*>(b);
  auto* outBytes = static_cast<unsigned char*>(out);
  const int64_t loops = batches / gemmParams.batchCount;
  Shape index(split, 0);
  for (int64_t loop = 0; loop < loops; ++loop) {
    int64_t aOffset = 0;
    int64_t bOffset = 0;
    for (size_t d = 0; d < split; ++d) {
      aOffset += index[d] * aStrides[d];
      bOffset += index[d] * bStrides[d];
    }
    gemm(handle, cache, gemmParams, aBytes + aOffset * aMatrix * elementSize,
         bBytes + bOffset * bMatrix * elementSize, bias, nullptr,
         outBytes + loop * gemmParams.batchCount * outMatrix * elementSize, workspace, stream);
    for (size_t d = split; d-- > 0;) {
      if (++index[d] < outBatch[d]) break;
      index[d] = 0;
    }
  }
}

void fullyConnected(const CublasLtHandle& handle, GemmPlanCache& cache,
                    const FullyConnectedParams& params, const void* x, const void* weight,
                    const void* bias, const void* residual, void* out, GemmWorkspace workspace,
                    cudaStream_t stream) {
  GemmParams gemmParams;
  gemmParams.m = params.rows;
  gemmParams.n = params.outFeatures;
  gemmParams.k = params.inFeatures;
  gemmParams.transposeB = true;
  gemmParams.lda = std::max<int64_t>(1, params.inFeatures);
  gemmParams.ldb = std::max<int64_t>(1, params.inFeatures);
  gemmParams.ldc = std::max<int64_t>(1, params.outFeatures);
  gemmParams.dtype = params.dtype;
  gemmParams.allowTf32 = params.allowTf32;
  gemmParams.activation = params.activation;
  gemmParams.beta = residual != nullptr ? 1.0f : 0.0f;
  gemm(handle, cache, gemmParams, x, weight, bias, residual, out, workspace, stream);
}

}  // namespace kiln::cuda_kernels

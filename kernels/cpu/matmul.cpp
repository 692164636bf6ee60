#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/shapes.h"

namespace kiln::cpu_kernels {
namespace {

// GotoBLAS-style blocking: op(b) is packed into kc x kNr column panels and op(a) into kc x kMr
// row panels, so that the micro-kernel streams both from contiguous memory and keeps a
// kMr x kNr tile of c in registers for the whole kc loop.
constexpr int64_t kMr = 4;
constexpr int64_t kNr = 8;
constexpr int64_t kKc = 256;   // packed panels of a and b stay in L1/L2 over one k block
constexpr int64_t kMc = 128;   // rows of a packed at once (kMc * kKc floats = 128 KiB)
constexpr int64_t kNc = 2048;  // columns of b packed at once (kKc * kNc floats = 2 MiB)

// Packs op(a)[row0 : row0 + rows, col0 : col0 + depth] into panels of kMr rows, each stored
// depth-major (kMr values per k), zero-padding the last panel.
void packA(const float* a, int64_t lda, bool transposed, int64_t row0, int64_t rows, int64_t col0,
           int64_t depth, float* packed) {
  for (int64_t panel = 0; panel < rows; panel += kMr) {
    const int64_t panelRows = std::min(kMr, rows - panel);
    for (int64_t p = 0; p < depth; ++p) {
      for (int64_t r = 0; r < kMr; ++r) {
        const int64_t row = row0 + panel + r;
        const int64_t col = col0 + p;
        packed[p * kMr + r] =
            r < panelRows ? (transposed ? a[col * lda + row] : a[row * lda + col]) : 0.0f;
      }
    }
    packed += depth * kMr;
  }
}

// Packs op(b)[row0 : row0 + depth, col0 : col0 + cols] into panels of kNr columns, each stored
// depth-major (kNr values per k), zero-padding the last panel.
void packB(const float* b, int64_t ldb, bool transposed, int64_t row0, int64_t depth, int64_t col0,
           int64_t cols, float* packed) {
  for (int64_t panel = 0; panel < cols; panel += kNr) {
    const int64_t panelCols = std::min(kNr, cols - panel);
    for (int64_t p = 0; p < depth; ++p) {
      const int64_t row = row0 + p;
      float* out = packed + p * kNr;
      if (!transposed && panelCols == kNr) {
        std::memcpy(out, b + row * ldb + col0 + panel, kNr * sizeof(float));
        continue;
      }
      for (int64_t c = 0; c < kNr; ++c) {
        const int64_t col = col0 + panel + c;
        out[c] = c < panelCols ? (transposed ? b[col * ldb + row] : b[row * ldb + col]) : 0.0f;
      }
    }
    packed += depth * kNr;
  }
}

// c[0:rows, 0:cols] += packedA panel * packedB panel over `depth`.
void microKernel(int64_t depth, const float* packedA, const float* packedB, float* c, int64_t ldc,
                 int64_t rows, int64_t cols) {
  float tile[kMr][kNr] = {};
  for (int64_t p = 0; p < depth; ++p) {
    const float* aValues = packedA + p * kMr;
    const float* bValues = packedB + p * kNr;
    for (int64_t r = 0; r < kMr; ++r) {
      const float aValue = aValues[r];
      for (int64_t col = 0; col < kNr; ++col) tile[r][col] += aValue * bValues[col];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* cRow = c + r * ldc;
    for (int64_t col = 0; col < cols; ++col) cRow[col] += tile[r][col];
  }
}

// Packing costs more than it saves on tiny products; the plain i-k-j loop is fine there.
void smallGemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool transposeA,
               const float* b, int64_t ldb, bool transposeB, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* cRow = c + i * ldc;
    for (int64_t p = 0; p < k; ++p) {
      const float aValue = transposeA ? a[p * lda + i] : a[i * lda + p];
      if (transposeB) {
        for (int64_t j = 0; j < n; ++j) cRow[j] += aValue * b[j * ldb + p];
      } else {
        const float* bRow = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) cRow[j] += aValue * bRow[j];
      }
    }
  }
}

}  // namespace

void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool transposeA,
          const float* b, int64_t ldb, bool transposeB, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (!accumulate) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
  }
  if (k <= 0) return;
  if (m * n * k < 32 * 32 * 32) {
    smallGemm(m, n, k, a, lda, transposeA, b, ldb, transposeB, c, ldc);
    return;
  }
  // Scratch reused across calls on this thread instead of allocated per product.
  thread_local std::vector<float> packedA;
  thread_local std::vector<float> packedB;
  packedA.resize(static_cast<size_t>(kMc * kKc));
  packedB.resize(static_cast<size_t>(kKc * (kNc + kNr)));
  for (int64_t jc = 0; jc < n; jc += kNc) {
    const int64_t nc = std::min(kNc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = std::min(kKc, k - pc);
      packB(b, ldb, transposeB, pc, kc, jc, nc, packedB.data());
      for (int64_t ic = 0; ic < m; ic += kMc) {
        const int64_t mc = std::min(kMc, m - ic);
        packA(a, lda, transposeA, ic, mc, pc, kc, packedA.data());
        for (int64_t jr = 0; jr < nc; jr += kNr) {
          const float* bPanel = packedB.data() + (jr / kNr) * kc * kNr;
          for (int64_t ir = 0; ir < mc; ir += kMr) {
            const float* aPanel = packedA.data() + (ir / kMr) * kc * kMr;
            microKernel(kc, aPanel, bPanel, c + (ic + ir) * ldc + jc + jr, ldc,
                        std::min(kMr, mc - ir), std::min(kNr, nc - jr));
          }
        }
      }
    }
  }
}

Shape matmulOutputShape(const MatMulParams& params) {
  return kernels::matmulOutputShape(params.aShape, params.bShape, params.transposeA,
                                    params.transposeB);
}

void matmul(const MatMulParams& params, const float* a, const float* b, float* out) {
  const Shape outShape = matmulOutputShape(params);
  const size_t aRank = params.aShape.size();
  const size_t bRank = params.bShape.size();
  const size_t batchRank = outShape.size() - 2;
  const int64_t m = outShape[batchRank];
  const int64_t n = outShape[batchRank + 1];
  const int64_t k = params.transposeA ? params.aShape[aRank - 2] : params.aShape[aRank - 1];
  const int64_t lda = params.aShape[aRank - 1];
  const int64_t ldb = params.bShape[bRank - 1];
  const int64_t aMatrix = params.aShape[aRank - 2] * params.aShape[aRank - 1];
  const int64_t bMatrix = params.bShape[bRank - 2] * params.bShape[bRank - 1];

  const Shape aBatch(params.aShape.begin(), params.aShape.end() - 2);
  const Shape bBatch(params.bShape.begin(), params.bShape.end() - 2);
  const int64_t batches = shapeVolume(Shape(outShape.begin(), outShape.end() - 2));
  if (shapeVolume(bBatch) == 1 && !params.transposeA) {
    // b is shared by every batch and a's rows are contiguous: one product of all rows of a.
    gemm(batches * m, n, k, a, lda, false, b, ldb, params.transposeB, out, n, false);
    return;
  }

  // Batch offsets of a and b for each output batch index, walking an odometer.
  Shape index(batchRank, 0);
  const Shape aStrides = contiguousStrides(aBatch);
  const Shape bStrides = contiguousStrides(bBatch);
  for (int64_t batch = 0; batch < batches; ++batch) {
    int64_t aOffset = 0;
    int64_t bOffset = 0;
    for (size_t i = 0; i < batchRank; ++i) {
      const int64_t aIndex =
          static_cast<int64_t>(i) - static_cast<int64_t>(batchRank - aBatch.size());
      const int64_t bIndex =
          static_cast<int64_t>(i) - static_cast<int64_t>(batchRank - bBatch.size());
      if (aIndex >= 0 && aBatch[aIndex] != 1) aOffset += index[i] * aStrides[aIndex];
      if (bIndex >= 0 && bBatch[bIndex] != 1) bOffset += index[i] * bStrides[bIndex];
    }
    gemm(m, n, k, a + aOffset * aMatrix, lda, params.transposeA, b + bOffset * bMatrix, ldb,
         params.transposeB, out + batch * m * n, n, false);
    for (size_t d = batchRank; d-- > 0;) {
      if (++index[d] < outShape[d]) break;
      index[d] = 0;
    }
  }
}

void fullyConnected(const FullyConnectedParams& params, const float* x, const float* weight,
                    const float* bias, float* out) {
  const int64_t rows = params.rows;
  const int64_t n = params.outFeatures;
  if (bias != nullptr) {
    for (int64_t i = 0; i < rows; ++i) std::memcpy(out + i * n, bias, n * sizeof(float));
  }
  gemm(rows, n, params.inFeatures, x, params.inFeatures, false, weight, params.inFeatures, true,
       out, n, bias != nullptr);
}

}  // namespace kiln::cpu_kernels

// Matrix products on float32: a blocked GEMM and the layers built on it.
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

// c (m x n, row stride ldc) = op(a) * op(b), or c += op(a) * op(b) when `accumulate`.
// op(a) is m x k: a is stored m x k with row stride lda, or k x m when transposeA. Likewise
// op(b) is k x n: b is stored k x n, or n x k when transposeB. Accumulates in float.
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, bool transposeA,
          const float* b, int64_t ldb, bool transposeB, float* c, int64_t ldc, bool accumulate);

// a (..., M, K) x b (..., K, N) -> out (..., M, N), ranks >= 2, batch dims broadcast
// numpy-style (right-aligned). A transpose flag swaps that operand's last two dims first.
struct MatMulParams {
  Shape aShape;
  Shape bShape;
  bool transposeA = false;
  bool transposeB = false;
};

// The output shape of a matmul; throws std::invalid_argument when the shapes do not fit.
Shape matmulOutputShape(const MatMulParams& params);
void matmul(const MatMulParams& params, const float* a, const float* b, float* out);

// torch.nn.functional.linear: x (rows, inFeatures), weight (outFeatures, inFeatures), bias
// (outFeatures) or null -> out (rows, outFeatures).
struct FullyConnectedParams {
  int64_t rows = 0;
  int64_t inFeatures = 0;
  int64_t outFeatures = 0;
};
void fullyConnected(const FullyConnectedParams& params, const float* x, const float* weight,
                    const float* bias, float* out);

}  // namespace kiln::cpu_kernels

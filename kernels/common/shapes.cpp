#include "kernels/common/shapes.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kiln::kernels {

Shape contiguousStrides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

namespace {

Shape stridesBroadcastTo(const Shape& inShape, const Shape& outShape) {
  Shape strides = contiguousStrides(inShape);
  for (size_t i = 0; i < inShape.size(); ++i) {
    if (inShape[i] != outShape[i]) {
      if (inShape[i] != 1) {
        throw std::invalid_argument("elementwise: input dim " + std::to_string(inShape[i]) +
                                    " does not broadcast to output dim " +
                                    std::to_string(outShape[i]));
      }
      strides[i] = 0;
    }
  }
  return strides;
}

}  // namespace

BroadcastLayout broadcastLayout(const Shape& aShape, const Shape& bShape, const Shape& outShape) {
  if (aShape.size() != outShape.size() || bShape.size() != outShape.size()) {
    throw std::invalid_argument("elementwise: inputs must be given at the output's rank");
  }
  const Shape aStrides = stridesBroadcastTo(aShape, outShape);
  const Shape bStrides = stridesBroadcastTo(bShape, outShape);
  BroadcastLayout layout;
  for (size_t i = 0; i < outShape.size(); ++i) {
    const int64_t dim = outShape[i];
    if (dim == 1) continue;  // size-1 dims change no index
    if (!layout.dims.empty() && layout.aStrides.back() == aStrides[i] * dim &&
        layout.bStrides.back() == bStrides[i] * dim) {
      layout.dims.back() *= dim;
      layout.aStrides.back() = aStrides[i];
      layout.bStrides.back() = bStrides[i];
      continue;
    }
    layout.dims.push_back(dim);
    layout.aStrides.push_back(aStrides[i]);
    layout.bStrides.push_back(bStrides[i]);
  }
  if (layout.dims.empty()) {
    layout.dims = {1};
    layout.aStrides = {0};
    layout.bStrides = {0};
  }
  return layout;
}

Shape matmulOutputShape(const Shape& aShape, const Shape& bShape, bool transposeA,
                        bool transposeB) {
  if (aShape.size() < 2 || bShape.size() < 2) {
    throw std::invalid_argument("matmul needs operands of rank >= 2");
  }
  const size_t aRank = aShape.size();
  const size_t bRank = bShape.size();
  const int64_t m = transposeA ? aShape[aRank - 1] : aShape[aRank - 2];
  const int64_t kA = transposeA ? aShape[aRank - 2] : aShape[aRank - 1];
  const int64_t kB = transposeB ? bShape[bRank - 1] : bShape[bRank - 2];
  const int64_t n = transposeB ? bShape[bRank - 2] : bShape[bRank - 1];
  if (kA != kB) {
    throw std::invalid_argument("matmul: inner dims differ (" + std::to_string(kA) + " vs " +
                                std::to_string(kB) + ")");
  }
  const size_t batchRank = std::max(aRank, bRank) - 2;
  Shape out(batchRank + 2);
  for (size_t i = 0; i < batchRank; ++i) {
    // Right-aligned: batch dim i of the output is dim i - (batchRank - (rank - 2)) of each.
    const int64_t aIndex = static_cast<int64_t>(i) - static_cast<int64_t>(batchRank - (aRank - 2));
    const int64_t bIndex = static_cast<int64_t>(i) - static_cast<int64_t>(batchRank - (bRank - 2));
    const int64_t aDim = aIndex >= 0 ? aShape[aIndex] : 1;
    const int64_t bDim = bIndex >= 0 ? bShape[bIndex] : 1;
    if (aDim != bDim && aDim != 1 && bDim != 1) {
      throw std::invalid_argument("matmul: batch dims " + std::to_string(aDim) + " and " +
                                  std::to_string(bDim) + " do not broadcast");
    }
    out[i] = aDim == 1 ? bDim : aDim;
  }
  out[batchRank] = m;
  out[batchRank + 1] = n;
  return out;
}

}  // namespace kiln::kernels

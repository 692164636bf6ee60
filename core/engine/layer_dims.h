// Dim arithmetic both backends need to map a layer onto its kernels, written once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/ir/types.h"

namespace kiln {

// A possibly negative axis as an index into `rank` dims; throws Error naming `what`.
inline int64_t normalizeAxis(int64_t axis, size_t rank, const char* what) {
  const int64_t signedRank = static_cast<int64_t>(rank);
  KILN_CHECK(axis >= -signedRank && axis < std::max<int64_t>(signedRank, 1), what, " ", axis,
             " is out of range for rank ", rank);
  return axis < 0 ? axis + signedRank : axis;
}

// A per-spatial-dim parameter, or `fill` for every dim when the converter left it empty.
inline Dims orDefault(const Dims& values, size_t rank, int64_t fill) {
  return values.empty() ? Dims(rank, fill) : values;
}

// The dims after (N, C).
inline Dims spatialDims(const Dims& dims) { return Dims(dims.begin() + 2, dims.end()); }

// `dims` with leading 1s up to `rank`, as broadcasting aligns them.
inline Dims alignToRank(const Dims& dims, size_t rank) {
  Dims aligned(rank - dims.size(), 1);
  aligned.insert(aligned.end(), dims.begin(), dims.end());
  return aligned;
}

}  // namespace kiln

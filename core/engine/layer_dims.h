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

// The geometry of a convolution or deconvolution layer (params `p`, input dims `x`, output dims
// `out`) in a backend's kernel parameters: every kernel family names these fields alike.
template <typename KernelParams, typename LayerParams>
KernelParams convolutionGeometry(const LayerParams& p, const Dims& x, const Dims& out) {
  KILN_CHECK(x.size() == p.kernel.size() + 2, "input rank ", x.size(),
             " does not match a kernel of ", p.kernel.size(), " spatial dims");
  const size_t rank = p.kernel.size();
  KernelParams geometry;
  geometry.batch = x[0];
  geometry.inChannels = x[1];
  geometry.outChannels = out[1];
  geometry.groups = p.groups;
  geometry.inSpatial = spatialDims(x);
  geometry.outSpatial = spatialDims(out);
  geometry.kernel = p.kernel;
  geometry.stride = orDefault(p.stride, rank, 1);
  geometry.prePadding = orDefault(p.prePadding, rank, 0);
  geometry.dilation = orDefault(p.dilation, rank, 1);
  return geometry;
}

}  // namespace kiln

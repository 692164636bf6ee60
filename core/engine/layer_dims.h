// Dim arithmetic both backends need to map a layer onto its kernels, written once.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/ir/layers.h"
#include "core/ir/types.h"

namespace kiln {

// A possibly negative axis as an index into `rank` dims; throws Error naming `what`.
inline int64_t normalizeAxis(int64_t axis, size_t rank, const char* what) {
  const auto signedRank = static_cast<int64_t>(rank);
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

// A slice layer (params `p`, input dims `x`, output dims `out`) in a backend's kernel
// parameters: the start and step of every input dim.
template <typename KernelParams>
KernelParams sliceGeometry(const SliceParams& p, const Dims& x, const Dims& out) {
  checkSliceParams(p);
  const size_t rank = x.size();
  KernelParams geometry;
  geometry.inShape = x;
  geometry.starts.assign(rank, 0);
  geometry.steps.assign(rank, 1);
  geometry.outShape = out;
  for (size_t i = 0; i < p.axes.size(); ++i) {
    const auto axis = static_cast<size_t>(normalizeAxis(p.axes[i], rank, "axis"));
    const int64_t step = p.steps.empty() ? 1 : p.steps[i];
    geometry.steps[axis] = step;
    if (out[axis] > 0) geometry.starts[axis] = sliceStart(p.starts[i], step, x[axis]);
  }
  return geometry;
}

// A gather layer (params `p`, the dims of its data and indices) in a backend's kernel
// parameters, the index type aside: both kernel families name these fields alike.
template <typename KernelParams>
KernelParams gatherGeometry(const GatherParams& p, const Dims& data, const Dims& indices) {
  KILN_CHECK(!data.empty(), "gather needs data of rank >= 1");
  const auto axis = static_cast<size_t>(normalizeAxis(p.axis, data.size(), "axis"));
  KernelParams g;
  g.outer = volume(Dims(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(axis)));
  g.axisSize = data[axis];
  g.inner = volume(Dims(data.begin() + static_cast<std::ptrdiff_t>(axis) + 1, data.end()));
  g.indexCount = volume(indices);
  if (p.mode == GatherMode::kElement) {
    bool sameDims = indices.size() == data.size();
    for (size_t d = 0; sameDims && d < data.size(); ++d) {
      sameDims = d == axis || indices[d] == data[d];
    }
    KILN_CHECK(sameDims, "an element gather along axis ", axis, " takes indices with the dims of ",
               "the data ", toString(data), " except along the axis, got ", toString(indices));
    g.indexCount = indices[axis];
    g.perElement = true;
  }
  return g;
}

// Element offsets of the attention operands in their tensors (non-zero for views).
struct AttentionOffsets {
  int64_t q = 0, k = 0, v = 0, out = 0;
};

// An attention layer (params `p`; the dims of the tensors given as q, k and v and of its output,
// each the operand itself or the tensor its view reads; the mask dims, right-aligned to
// (N, H, L, S), or null) in a backend's kernel parameters: both kernel families name these fields
// alike. A mask dim of size 1 broadcasts (stride 0). The mask kind and type are the caller's.
template <typename KernelParams, typename LayerParams>
KernelParams attentionGeometry(const LayerParams& p, const Dims& qTensor, const Dims& kTensor,
                               const Dims& vTensor, const Dims& outTensor, const Dims* mask,
                               AttentionOffsets* offsets) {
  const AttentionOperand q = attentionOperand(p.queryView, qTensor);
  const AttentionOperand k = attentionOperand(p.keyView, kTensor);
  const AttentionOperand v = attentionOperand(p.valueView, vTensor);
  const AttentionOperand out = attentionOperand(p.outputView, outTensor);
  KernelParams a;
  a.batch = q.dims[0];
  a.heads = q.dims[1];
  a.kvHeads = k.dims[1];
  a.queries = q.dims[2];
  a.keys = k.dims[2];
  a.headDim = q.dims[3];
  a.valueDim = v.dims[3];
  a.scale = static_cast<float>(p.scale);
  a.causal = p.causal;
  a.q = {q.batchStride, q.headStride, q.rowStride};
  a.k = {k.batchStride, k.headStride, k.rowStride};
  a.v = {v.batchStride, v.headStride, v.rowStride};
  a.out = {out.batchStride, out.headStride, out.rowStride};
  *offsets = {q.offset, k.offset, v.offset, out.offset};
  if (mask != nullptr) {
    const Dims m = alignToRank(*mask, 4);
    KILN_CHECK(m[3] == a.keys, "the attention mask's last dim ", m[3], " must be the key count ",
               a.keys);
    const int64_t rowStride = m[3];
    const int64_t headStride = m[2] * rowStride;
    const int64_t batchStride = m[1] * headStride;
    a.maskRowStride = m[2] == 1 ? 0 : rowStride;
    a.maskHeadStride = m[1] == 1 ? 0 : headStride;
    a.maskBatchStride = m[0] == 1 ? 0 : batchStride;
  }
  return a;
}

// A resize layer (params `p`, input dims `x`, output dims `out`) in the kernels' parameters, the
// mode and element type aside.
template <typename KernelParams>
KernelParams resizeGeometry(const ResizeParams& p, const Dims& x, const Dims& out) {
  KILN_CHECK(x.size() == p.outputSize.size() + 2 && out.size() == x.size(),
             "resize needs an input ", p.channelsLast ? "(N, spatial..., C)" : "(N, C, spatial...)",
             " with ", p.outputSize.size(), " spatial dims, got ", toString(x));
  KernelParams r;
  if (p.channelsLast) {
    r.planes = x[0];
    r.channels = x.back();
    r.inSpatial.assign(x.begin() + 1, x.end() - 1);
    r.outSpatial.assign(out.begin() + 1, out.end() - 1);
  } else {
    r.planes = x[0] * x[1];
    r.inSpatial = spatialDims(x);
    r.outSpatial = spatialDims(out);
  }
  r.scales = p.scales;
  r.alignCorners = p.alignCorners;
  return r;
}

// A cumulative layer over a tensor of dims `x` as (outer, axisSize, inner), the function and
// element type aside; a scalar is one element.
template <typename KernelParams>
KernelParams cumulativeGeometry(const CumulativeParams& p, const Dims& x) {
  const Dims dims = x.empty() ? Dims{1} : x;
  const auto axis = static_cast<size_t>(normalizeAxis(p.axis, dims.size(), "axis"));
  KernelParams c;
  c.outer = volume(Dims(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(axis)));
  c.axisSize = dims[axis];
  c.inner = volume(Dims(dims.begin() + static_cast<std::ptrdiff_t>(axis) + 1, dims.end()));
  return c;
}

}  // namespace kiln

// Indexing: select.int and slice.Tensor (basic indexing, x[:, 1], x[..., 2:5]), index_select,
// embedding and gather (Gather, along an axis or per element), advanced indexing with integer
// tensors (index.Tensor), and the functional writes into a slice (slice_scatter,
// select_scatter: Concat of slices, or a Gather from self and src concatenated).
#include <ATen/ATen.h>

#include <limits>
#include <numeric>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

Tensor* gather(ConversionContext& ctx, Tensor* data, Tensor* indices, int64_t axis,
               GatherMode mode = GatherMode::kAxis) {
  GatherParams params;
  params.axis = axis;
  params.mode = mode;
  Layer* layer = ctx.network().addGather(data, indices, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// select: a rank-0 index removes the axis; Gather counts a negative index from the end.
void convertSelect(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  Tensor* index = ctx.constant(at::scalar_tensor(args.getInt("index"), at::kLong));
  ctx.setOutput(args, 0, gather(ctx, ctx.tensor(args, "self"), index, axis));
}

std::string checkSelect(const NodeArgs& args) {
  if (args.rank("self") == 0) return "select on a scalar";
  return requireConstants(args, {"index"});
}

// A slice bound: None, the largest int64 (what FX writes for "to the end") and the input's own
// size along the axis mean "to the end"; a static one is that end; nullopt for a dynamic size
// (another tensor's dim at run time).
std::optional<int64_t> sliceEnd(const NodeArgs& args, int64_t axis) {
  if (args.isNone("end")) return kSliceEnd;
  const OpValue& end = args.value("end");
  if (end.shapeInt && !end.shapeInt->isStatic()) {
    const SymInt& size = args.value("self").shape[static_cast<size_t>(axis)];
    if (end.shapeInt->symbol == size.symbol) return kSliceEnd;
    return std::nullopt;
  }
  const int64_t value = args.getInt("end");
  return value >= std::numeric_limits<int64_t>::max() ? kSliceEnd : value;
}

void convertSlice(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  const int64_t start = args.isNone("start") ? 0 : args.getInt("start");
  const int64_t step = args.getInt("step");
  Tensor* self = ctx.tensor(args, "self");
  const std::optional<int64_t> end = sliceEnd(args, axis);
  if (!end) {
    ctx.setOutput(args, 0,
                  sliceToDynamicEnd(ctx, self, axis, start, step, *args.value("end").shapeInt));
    return;
  }
  SliceParams params;
  params.axes = {axis};
  params.starts = {start};
  params.ends = {*end};
  params.steps = {step};
  Layer* layer = ctx.network().addSlice(self, params);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

std::string checkSlice(const NodeArgs& args) {
  if (args.rank("self") == 0) return "slice of a scalar";
  if (!args.isNone("start") && !args.isConstant("start")) {
    return "the slice start depends on the input shapes";
  }
  if (!args.isConstant("step")) return "the slice step depends on the input shapes";
  if (args.getInt("step") < 1) return "slice step must be positive";
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  if (!sliceEnd(args, axis)) {
    const SymInt& end = *args.value("end").shapeInt;
    if (std::string reason = requireDimSource(args, end); !reason.empty()) {
      return concat("the slice end is known only at run time: ", reason);
    }
    if (!args.isNone("start") && args.getInt("start") < 0) {
      return "a slice to a run-time end from a negative start";
    }
  }
  return "";
}

std::string requireIndexDtype(const NodeArgs& args, const std::string& name) {
  const c10::ScalarType type = args.dtype(name);
  if (type != c10::ScalarType::Long && type != c10::ScalarType::Int) {
    return concat("argument '", name, "' has dtype ", c10::toString(type),
                  "; indices must be int32 or int64");
  }
  return "";
}

// index_select keeps the axis even for a rank-0 index (torch treats it as one index).
void convertIndexSelect(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  Tensor* index = ctx.tensor(args, "index");
  if (index->rank() == 0) index = reshape(ctx, index, {1});
  ctx.setOutput(args, 0, gather(ctx, ctx.tensor(args, "self"), index, axis));
}

std::string checkIndexSelect(const NodeArgs& args) {
  if (args.rank("self") == 0) return "index_select on a scalar";
  if (args.rank("index") > 1) return "index_select with an index of rank > 1";
  return requireIndexDtype(args, "index");
}

// embedding: rows of the weight; padding_idx only matters for gradients.
void convertEmbedding(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, gather(ctx, ctx.tensor(args, "weight"), ctx.tensor(args, "indices"), 0));
}

std::string checkEmbedding(const NodeArgs& args) {
  if (args.rank("weight") != 2) return "embedding with a weight that is not a matrix";
  return requireIndexDtype(args, "indices");
}

// torch.gather: the Gather layer's element mode takes indices with the data's dims off the axis,
// so where the index is smaller there (torch allows it) the data is sliced to it first.
void convertGather(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  const int64_t axis = normalizeDim(args.getInt("dim"), rank);
  const std::vector<SymInt>& dataShape = args.value("self").shape;
  const std::vector<SymInt>& indexShape = args.value("index").shape;
  SliceParams narrow;
  for (int64_t d = 0; d < rank; ++d) {
    const auto i = static_cast<size_t>(d);
    if (d == axis || !dataShape[i].isStatic() || indexShape[i].max == dataShape[i].max) continue;
    narrow.axes.push_back(d);
    narrow.starts.push_back(0);
    narrow.ends.push_back(indexShape[i].max);
    narrow.steps.push_back(1);
  }
  Tensor* data = ctx.tensor(args, "self");
  if (!narrow.axes.empty()) {
    Layer* layer = ctx.network().addSlice(data, narrow);
    ctx.nameLayer(layer);
    data = layer->output(0);
  }
  ctx.setOutput(args, 0, gather(ctx, data, ctx.tensor(args, "index"), axis, GatherMode::kElement));
}

std::string checkGather(const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  if (rank == 0) return "gather on a scalar";
  if (args.rank("index") != rank) return "gather with an index of another rank than the input";
  if (!args.isConstant("dim")) return "the gather dim depends on the input shapes";
  const int64_t axis = normalizeDim(args.getInt("dim"), rank);
  const std::vector<SymInt>& dataShape = args.value("self").shape;
  const std::vector<SymInt>& indexShape = args.value("index").shape;
  for (int64_t d = 0; d < rank; ++d) {
    const auto i = static_cast<size_t>(d);
    if (d == axis) continue;
    const SymInt& data = dataShape[i];
    const SymInt& index = indexShape[i];
    if (data.isStatic() && index.isStatic()) {
      if (index.max > data.max) {
        return concat("gather index dim ", d, " is larger than the input's");
      }
    } else if (data.symbol != index.symbol) {
      return concat("gather index dim ", d, " may differ from the input's at run time");
    }
  }
  return requireIndexDtype(args, "index");
}

// ---- index.Tensor ------------------------------------------------------------------------------

// The largest dynamic size an index into several dims may count with a constant (sizeTensor).
constexpr int64_t kMaxDimConstant = int64_t{1} << 20;

// One non-None entry of index.Tensor's `indices`: the dim it indexes and the index tensor (a
// value of the graph, or a tensor of a constant list).
struct IndexEntry {
  int64_t dim = 0;
  int valueId = -1;
  at::Tensor constant;
  c10::ScalarType dtype = c10::ScalarType::Long;
};

// The non-None entries of `indices`, or the reason they cannot be read at build time.
std::vector<IndexEntry> indexEntries(const NodeArgs& args, std::string& why) {
  const OpValue& list = args.value("indices");
  std::vector<IndexEntry> entries;
  auto add = [&](int64_t dim, const OpValue* value, const at::Tensor* constant) {
    IndexEntry entry;
    entry.dim = dim;
    if (value != nullptr) {
      // Its shape may be dynamic: a Gather takes indices of any dims, and several index
      // tensors broadcast together in the elementwise layers that combine them.
      entry.valueId = value->id;
      entry.dtype = value->dtype;
    } else {
      entry.constant = *constant;
      entry.dtype = constant->scalar_type();
    }
    entries.push_back(std::move(entry));
  };
  if (list.elements) {
    for (size_t i = 0; i < list.elements->size(); ++i) {
      const OpValue& element = args.graph().value((*list.elements)[i]);
      if (element.isNone() || (element.constant && element.constant->isNone())) continue;
      if (!element.isTensor()) {
        why = "an index that is not a tensor";
        return {};
      }
      add(static_cast<int64_t>(i), &element, nullptr);
    }
  } else if (list.constant && list.constant->isList()) {
    const c10::List<c10::IValue> items = list.constant->toList();
    for (size_t i = 0; i < items.size(); ++i) {
      const c10::IValue item = items.get(i);
      if (item.isNone()) continue;
      if (!item.isTensor()) {
        why = "an index that is not a tensor";
        return {};
      }
      const at::Tensor t = item.toTensor();
      add(static_cast<int64_t>(i), nullptr, &t);
    }
  } else {
    why = "the index list is not known at build time";
  }
  return entries;
}

Tensor* indexTensor(ConversionContext& ctx, const IndexEntry& entry) {
  return entry.valueId >= 0 ? ctx.tensor(entry.valueId) : ctx.constant(entry.constant);
}

std::string checkIndex(const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  if (rank == 0) return "indexing a scalar";
  std::string why;
  std::vector<IndexEntry> entries = indexEntries(args, why);
  if (!why.empty()) return why;
  if (entries.empty()) return "no index tensor";
  if (entries.back().dim >= rank) return "more indices than dims";
  for (const IndexEntry& entry : entries) {
    if (entry.dtype == c10::ScalarType::Bool || entry.dtype == c10::ScalarType::Byte) {
      return "boolean mask indexing: the output shape depends on the mask's values";
    }
    if (entry.dtype != c10::ScalarType::Long && entry.dtype != c10::ScalarType::Int) {
      return concat("an index of dtype ", c10::toString(entry.dtype),
                    "; indices must be int32 or int64");
    }
  }
  if (entries.size() > 1) {
    // An indexed dim may be dynamic (its size then comes from a tensor that has it); the others
    // are kept whole in the flattened input, which a reshape can do with static sizes only.
    const std::vector<SymInt>& shape = args.value("self").shape;
    std::vector<char> indexed(shape.size(), 0);
    for (const IndexEntry& entry : entries) indexed[static_cast<size_t>(entry.dim)] = 1;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d].isStatic()) continue;
      if (!indexed[d]) return "several index tensors into an input with a dynamic dim they keep";
      if (std::string reason = requireDimSource(args, shape[d]); !reason.empty()) return reason;
      if (shape[d].max > kMaxDimConstant) {
        return concat("an indexed dim may reach ", shape[d].max, ", more than the ",
                      kMaxDimConstant, " Kiln counts with a constant");
      }
    }
  }
  return "";
}

// A dim's size as a 0-d int64 tensor: a static size is a constant; a dynamic one is the count of
// a constant of ones sliced to the dim of a tensor that has it at run time.
Tensor* sizeTensor(ConversionContext& ctx, const SymInt& size) {
  if (size.isStatic()) return ctx.scalar(static_cast<double>(size.opt), DataType::kInt64);
  Tensor* ones = ctx.constant(at::ones({size.max}, at::kLong));
  ReduceParams count;
  count.op = ReduceOp::kSum;
  count.axes = {0};
  Layer* layer = ctx.network().addReduce(sliceToDynamicEnd(ctx, ones, 0, 0, 1, size), count);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// x[..., idx, ...] with one index tensor is a Gather along its dim. Several index tensors are
// broadcast together to B and address the indexed dims jointly: those dims are moved to the
// front and flattened into one, the per-dim indices (negatives wrapped) combine into one flat
// index of shape B, and one Gather reads it. torch places B where the indexed dims were when
// they are adjacent, else in front.
void convertIndex(ConversionContext& ctx, const NodeArgs& args) {
  std::string why;
  const std::vector<IndexEntry> entries = indexEntries(args, why);
  Tensor* self = ctx.tensor(args, "self");
  if (entries.size() == 1) {
    ctx.setOutput(args, 0, gather(ctx, self, indexTensor(ctx, entries[0]), entries[0].dim));
    return;
  }
  const std::vector<SymInt>& shape = args.value("self").shape;
  const int64_t rank = static_cast<int64_t>(shape.size());
  Dims permutation;
  std::vector<char> indexed(static_cast<size_t>(rank), 0);
  for (const IndexEntry& entry : entries) {
    permutation.push_back(entry.dim);
    indexed[static_cast<size_t>(entry.dim)] = 1;
  }
  Dims flatDims = {-1};  // the indexed dims, flattened; the kept ones are static (checkIndex)
  for (int64_t d = 0; d < rank; ++d) {
    if (indexed[static_cast<size_t>(d)]) continue;
    permutation.push_back(d);
    flatDims.push_back(shape[static_cast<size_t>(d)].opt);
  }
  Tensor* data = reshape(ctx, permute(ctx, self, permutation), flatDims);

  // flat = sum of (index wrapped into [0, size)) * (product of the later indexed dims' sizes),
  // with the sizes as tensors when they are known only at run time.
  // Each indexed dim's size, counted once.
  std::vector<Tensor*> sizes;
  for (const IndexEntry& entry : entries) {
    sizes.push_back(sizeTensor(ctx, shape[static_cast<size_t>(entry.dim)]));
  }
  Tensor* flat = nullptr;
  for (size_t e = 0; e < entries.size(); ++e) {
    Tensor* index = castTo(ctx, indexTensor(ctx, entries[e]), DataType::kInt64);
    Tensor* negative = addElementwise(ctx, index, ctx.scalar(0.0, DataType::kInt64),
                                      ElementwiseOp::kLess, DataType::kInt64);
    Tensor* wrap = addElementwise(ctx, castTo(ctx, negative, DataType::kInt64), sizes[e],
                                  ElementwiseOp::kProd, DataType::kInt64);
    index = addElementwise(ctx, index, wrap, ElementwiseOp::kSum, DataType::kInt64);
    for (size_t later = e + 1; later < entries.size(); ++later) {
      const SymInt& stride = shape[static_cast<size_t>(entries[later].dim)];
      if (stride.isStatic() && stride.opt == 1) continue;
      index = addElementwise(ctx, index, sizes[later], ElementwiseOp::kProd, DataType::kInt64);
    }
    flat = flat == nullptr
               ? index
               : addElementwise(ctx, flat, index, ElementwiseOp::kSum, DataType::kInt64);
  }
  Tensor* result = gather(ctx, data, flat, 0);

  const int64_t first = entries.front().dim;
  const bool adjacent = entries.back().dim - first == static_cast<int64_t>(entries.size()) - 1;
  if (adjacent && first > 0) {
    const int64_t broadcastRank = flat->rank();
    Dims order;
    for (int64_t d = 0; d < first; ++d) order.push_back(broadcastRank + d);
    for (int64_t d = 0; d < broadcastRank; ++d) order.push_back(d);
    for (int64_t d = broadcastRank + first; d < result->rank(); ++d) order.push_back(d);
    result = permute(ctx, result, order);
  }
  ctx.setOutput(args, 0, result);
}

// ---- slice_scatter, select_scatter -------------------------------------------------------------

// Python's slice bounds over a dim of `size`: negatives count from the end, then clamped.
int64_t clampSliceBound(int64_t bound, int64_t size) {
  if (bound < 0) bound += size;
  return std::min(std::max<int64_t>(bound, 0), size);
}

struct ScatterRange {
  int64_t axis = 0;
  int64_t start = 0;
  int64_t end = 0;
  int64_t step = 1;
  int64_t count() const { return end > start ? (end - start + step - 1) / step : 0; }
};

ScatterRange sliceScatterRange(const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  const int64_t size = args.value("self").shape[static_cast<size_t>(axis)].opt;
  ScatterRange range;
  range.axis = axis;
  range.start = args.isNone("start") ? 0 : clampSliceBound(args.getInt("start"), size);
  range.end = args.isNone("end") ? size : clampSliceBound(args.getInt("end"), size);
  range.step = args.getInt("step");
  return range;
}

// self with the positions `range` selects along its axis replaced by src's slices, in order:
// with step 1 a Concat of self's slices before and after around src; else a Gather from self
// and src concatenated, of self's own index or src's, position by position.
Tensor* scatterInto(ConversionContext& ctx, Tensor* self, Tensor* src, const ScatterRange& range,
                    int64_t size) {
  auto sliceOf = [&](int64_t start, int64_t end) {
    SliceParams params;
    params.axes = {range.axis};
    params.starts = {start};
    params.ends = {end};
    params.steps = {1};
    Layer* layer = ctx.network().addSlice(self, params);
    ctx.nameLayer(layer);
    return layer->output(0);
  };
  ConcatParams concatParams;
  concatParams.axis = range.axis;
  if (range.count() == 0) return self;
  if (range.step == 1) {
    std::vector<Tensor*> pieces;
    if (range.start > 0) pieces.push_back(sliceOf(0, range.start));
    pieces.push_back(src);
    if (range.end < size) pieces.push_back(sliceOf(range.end, size));
    if (pieces.size() == 1) return src;
    Layer* layer = ctx.network().addConcat(pieces, concatParams);
    ctx.nameLayer(layer);
    return layer->output(0);
  }
  Layer* both = ctx.network().addConcat({self, src}, concatParams);
  ctx.nameLayer(both);
  at::Tensor index = at::arange(size, at::kLong);
  for (int64_t k = 0; k < range.count(); ++k) index[range.start + k * range.step] = size + k;
  return gather(ctx, both->output(0), ctx.constant(index), range.axis);
}

void convertSliceScatter(ConversionContext& ctx, const NodeArgs& args) {
  const ScatterRange range = sliceScatterRange(args);
  const int64_t size = args.value("self").shape[static_cast<size_t>(range.axis)].opt;
  const DataType type = outputDataType(args);
  Tensor* self = castTo(ctx, ctx.tensor(args, "self"), type);
  Tensor* src = castTo(ctx, ctx.tensor(args, "src"), type);
  ctx.setOutput(args, 0, scatterInto(ctx, self, src, range, size));
}

// The scattered dim must be static (its positions are chosen at build time) and src must have
// self's shape with that dim cut to the slice.
std::string checkScatterShapes(const NodeArgs& args, int64_t axis, int64_t count, bool srcHasAxis) {
  const std::vector<SymInt>& self = args.value("self").shape;
  const std::vector<SymInt>& src = args.value("src").shape;
  if (!self[static_cast<size_t>(axis)].isStatic()) return "the scattered dim is dynamic";
  if (src.size() + (srcHasAxis ? 0 : 1) != self.size()) return "src has the wrong rank";
  for (size_t d = 0, s = 0; d < self.size(); ++d) {
    if (static_cast<int64_t>(d) == axis) {
      if (srcHasAxis && (!src[s].isStatic() || src[s].opt != count)) {
        return "src's size along the dim differs from the slice's";
      }
      if (srcHasAxis) ++s;
      continue;
    }
    const bool same = self[d].isStatic() ? (src[s].isStatic() && src[s].opt == self[d].opt)
                                         : src[s].symbol == self[d].symbol;
    if (!same) return concat("src's dim ", s, " may differ from self's");
    ++s;
  }
  return "";
}

std::string checkSliceScatter(const NodeArgs& args) {
  if (args.rank("self") == 0) return "slice_scatter into a scalar";
  if (std::string why = requireConstants(args, {"dim", "start", "end", "step"}); !why.empty()) {
    return why;
  }
  if (args.getInt("step") < 1) return "slice step must be positive";
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  if (!args.value("self").shape[static_cast<size_t>(axis)].isStatic()) {
    return "the scattered dim is dynamic";
  }
  const ScatterRange range = sliceScatterRange(args);
  return checkScatterShapes(args, axis, range.count(), true);
}

void convertSelectScatter(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  const int64_t size = args.value("self").shape[static_cast<size_t>(axis)].opt;
  int64_t index = args.getInt("index");
  if (index < 0) index += size;
  const DataType type = outputDataType(args);
  Tensor* self = castTo(ctx, ctx.tensor(args, "self"), type);
  Tensor* src = unsqueeze(ctx, castTo(ctx, ctx.tensor(args, "src"), type), axis);
  ctx.setOutput(args, 0, scatterInto(ctx, self, src, {axis, index, index + 1, 1}, size));
}

std::string checkSelectScatter(const NodeArgs& args) {
  if (args.rank("self") == 0) return "select_scatter into a scalar";
  if (std::string why = requireConstants(args, {"dim", "index"}); !why.empty()) return why;
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  const SymInt& size = args.value("self").shape[static_cast<size_t>(axis)];
  if (!size.isStatic()) return "the scattered dim is dynamic";
  const int64_t index = args.getInt("index");
  if (index < -size.opt || index >= size.opt) return "select_scatter index out of range";
  return checkScatterShapes(args, axis, 1, false);
}

}  // namespace

void registerIndexingConverters(ConverterRegistry& registry) {
  registry.add({"aten::select.int(Tensor(a) self, int dim, SymInt index) -> Tensor(a)",
                convertSelect, checkSelect});
  registry.add(
      {"aten::slice.Tensor(Tensor(a) self, int dim=0, SymInt? start=None, SymInt? "
       "end=None, SymInt step=1) -> Tensor(a)",
       convertSlice, checkSlice});
  registry.add({"aten::index_select(Tensor self, int dim, Tensor index) -> Tensor",
                convertIndexSelect, checkIndexSelect});
  registry.add(
      {"aten::embedding(Tensor weight, Tensor indices, SymInt padding_idx=-1, bool "
       "scale_grad_by_freq=False, bool sparse=False) -> Tensor",
       convertEmbedding, checkEmbedding});
  registry.add(
      {"aten::gather(Tensor self, int dim, Tensor index, *, bool sparse_grad=False) -> "
       "Tensor",
       convertGather, checkGather});
  registry.add(
      {"aten::index.Tensor(Tensor self, Tensor?[] indices) -> Tensor", convertIndex, checkIndex});
  registry.add(
      {"aten::slice_scatter(Tensor self, Tensor src, int dim=0, SymInt? start=None, SymInt? "
       "end=None, SymInt step=1) -> Tensor",
       convertSliceScatter, checkSliceScatter});
  registry.add({"aten::select_scatter(Tensor self, Tensor src, int dim, SymInt index) -> Tensor",
                convertSelectScatter, checkSelectScatter});
}

}  // namespace kiln

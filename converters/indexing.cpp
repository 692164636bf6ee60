// Indexing: select.int and slice.Tensor (basic indexing, x[:, 1], x[..., 2:5]), index_select,
// embedding and gather (Gather, along an axis or per element).
#include <ATen/ATen.h>

#include <limits>

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
}

}  // namespace kiln

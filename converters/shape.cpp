// Shape ops: view/reshape/_unsafe_view/flatten (Shuffle reshapes), permute/transpose/t
// (Shuffle transposes), unsqueeze/squeeze, expand, cat, and split/chunk/unbind/narrow (Slice and
// Gather). Reshape targets come from the output shape torch recorded, so -1 entries and sizes
// computed from input shapes need no arithmetic here.
#include <algorithm>

#include <ATen/ATen.h>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// ---- reshapes ----------------------------------------------------------------------------------

// A reshape target whose dynamic sizes neither copy the input's dim at the same index nor fit
// the one inferred size (GPT-2's (N * L, C) viewed back as (N, L, C)): those sizes are read at
// run time from a tensor that has them all as dims. `symbols` lists them, `references` gives
// each target dim's index in `symbols` or -1, `dims` the rest (a placeholder 1 where referenced).
struct ReferencedTarget {
  Dims dims;
  Dims references;
  std::vector<std::string> symbols;
};

std::optional<ReferencedTarget> referencedTarget(const std::vector<SymInt>& from,
                                                 const std::vector<SymInt>& to) {
  ReferencedTarget target;
  for (size_t j = 0; j < to.size(); ++j) {
    const SymInt& size = to[j];
    if (size.isStatic()) {
      if (size.opt <= 0) return std::nullopt;
      target.dims.push_back(size.opt);
      target.references.push_back(-1);
    } else if (j < from.size() && from[j].symbol == size.symbol) {
      target.dims.push_back(0);
      target.references.push_back(-1);
    } else {
      target.dims.push_back(1);
      target.references.push_back(static_cast<int64_t>(target.symbols.size()));
      target.symbols.push_back(size.symbol);
    }
  }
  return target;
}

// Whether one graph input has a dim of every size in `symbols` (the partitioner then gives the
// segment a tensor that has them).
bool oneInputHasAll(const OpGraph& graph, const std::vector<std::string>& symbols) {
  for (int input : graph.inputs()) {
    const std::vector<SymInt>& shape = graph.value(input).shape;
    const bool hasAll = std::all_of(symbols.begin(), symbols.end(), [&](const std::string& symbol) {
      return std::any_of(shape.begin(), shape.end(),
                         [&](const SymInt& size) { return size.symbol == symbol; });
    });
    if (hasAll) return true;
  }
  return false;
}

void convertReshape(ConversionContext& ctx, const NodeArgs& args) {
  const std::vector<SymInt>& from = args.value("self").shape;
  if (std::optional<Dims> dims = shuffleReshapeDims(from, args.output().shape)) {
    ctx.setOutput(args, 0, reshape(ctx, ctx.tensor(args, "self"), *dims));
    return;
  }
  const std::optional<ReferencedTarget> target = referencedTarget(from, args.output().shape);
  KILN_CHECK(target.has_value(), "the reshape target cannot be expressed");
  const auto source = ctx.dimsSource(target->symbols);
  KILN_CHECK(source.has_value(), "no tensor of this engine has every dynamic size of the reshape ",
             "target as a dim");
  ShuffleParams params;
  params.hasReshape = true;
  params.reshapeDims = target->dims;
  for (int64_t index : target->references) {
    params.reshapeReferences.push_back(index < 0 ? -1 : source->second[static_cast<size_t>(index)]);
  }
  Layer* layer = ctx.network().addShuffle(ctx.tensor(args, "self"), source->first, params);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

std::string checkReshape(const NodeArgs& args) {
  const std::vector<SymInt>& from = args.value("self").shape;
  if (shuffleReshapeDims(from, args.output().shape)) return "";
  const std::optional<ReferencedTarget> target = referencedTarget(from, args.output().shape);
  if (!target || !oneInputHasAll(args.graph(), target->symbols)) {
    return "reshape to a shape with more than one size that depends on the input shapes, not "
           "copied from the same dim of the input and not all dims of one input of the graph";
  }
  return "";
}

// ---- transposes --------------------------------------------------------------------------------

void convertPermute(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  Dims permutation;
  for (int64_t dim : args.getIntList("dims")) permutation.push_back(normalizeDim(dim, rank));
  ctx.setOutput(args, 0, permute(ctx, ctx.tensor(args, "self"), permutation));
}

void convertTranspose(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  Tensor* x = ctx.tensor(args, "self");
  if (rank == 0) {
    ctx.setOutput(args, 0, x);
    return;
  }
  const int64_t dim0 = normalizeDim(args.getInt("dim0"), rank);
  const int64_t dim1 = normalizeDim(args.getInt("dim1"), rank);
  Dims permutation(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) permutation[static_cast<size_t>(i)] = i;
  std::swap(permutation[static_cast<size_t>(dim0)], permutation[static_cast<size_t>(dim1)]);
  ctx.setOutput(args, 0, permute(ctx, x, permutation));
}

// t(): a matrix transposed; tensors of rank < 2 are returned as they are.
void convertT(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "self");
  ctx.setOutput(args, 0, x->rank() < 2 ? x : permute(ctx, x, {1, 0}));
}

std::string checkT(const NodeArgs& args) {
  if (args.rank("self") > 2) return "t() of a tensor of rank > 2";
  return "";
}

// ---- unsqueeze / squeeze -----------------------------------------------------------------------

void convertUnsqueeze(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t dim = normalizeDim(args.getInt("dim"), args.rank("self") + 1);
  ctx.setOutput(args, 0, unsqueeze(ctx, ctx.tensor(args, "self"), dim));
}

// The dims squeeze removes: those asked for (all when `requested` is empty and `all`) that have
// size 1. A dynamic dim that may be 1 at run time makes the result shape-dependent: nullopt.
std::optional<std::vector<int64_t>> squeezedDims(const NodeArgs& args,
                                                 const std::vector<int64_t>& requested, bool all) {
  const std::vector<SymInt>& shape = args.value("self").shape;
  const int64_t rank = static_cast<int64_t>(shape.size());
  std::vector<int64_t> candidates;
  if (all) {
    for (int64_t i = 0; i < rank; ++i) candidates.push_back(i);
  } else {
    for (int64_t dim : requested) {
      if (rank == 0) continue;  // squeezing a scalar returns it unchanged
      candidates.push_back(normalizeDim(dim, rank));
    }
  }
  std::vector<int64_t> removed;
  for (int64_t i : candidates) {
    const SymInt& size = shape[static_cast<size_t>(i)];
    if (size.isStatic()) {
      if (size.opt == 1 && std::find(removed.begin(), removed.end(), i) == removed.end()) {
        removed.push_back(i);
      }
    } else if (size.min <= 1) {
      return std::nullopt;
    }
  }
  return removed;
}

std::vector<int64_t> squeezeRequest(const NodeArgs& args) {
  if (args.has("dim")) return args.getIntList("dim");
  return {};
}

void convertSqueeze(ConversionContext& ctx, const NodeArgs& args) {
  auto removed = squeezedDims(args, squeezeRequest(args), !args.has("dim"));
  KILN_CHECK(removed.has_value(), "squeeze of a dynamic dim that may be 1");
  ctx.setOutput(args, 0, squeezeDims(ctx, ctx.tensor(args, "self"), *removed));
}

std::string checkSqueeze(const NodeArgs& args) {
  if (!squeezedDims(args, squeezeRequest(args), !args.has("dim"))) {
    return "squeezes a dynamic dim whose range includes 1, so the result rank depends on the "
           "input shape";
  }
  return "";
}

// ---- expand ------------------------------------------------------------------------------------

// Each stretched size-1 dim is a Slice of step 0, its length static or a dim of another tensor.
void convertExpand(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, broadcastTo(ctx, ctx.tensor(args, "self"), args.output().shape));
}

std::string checkExpand(const NodeArgs& args) {
  const std::vector<SymInt>& in = args.value("self").shape;
  const std::vector<SymInt>& out = args.output().shape;
  const size_t offset = out.size() - in.size();
  for (size_t d = 0; d < out.size(); ++d) {
    const SymInt source = d < offset ? SymInt::of(1) : in[d - offset];
    const bool stretched = source.isStatic() && source.opt == 1;
    if (stretched) {
      if (std::string reason = requireDimSource(args, out[d]); !reason.empty()) {
        return concat("expands dim ", d, " to a size known only at run time: ", reason);
      }
    }
    if (!source.isStatic() && source.symbol != out[d].symbol) {
      return concat("expands dynamic dim ", d, ", which may be 1 at run time");
    }
  }
  return "";
}

// ---- cat ---------------------------------------------------------------------------------------

// torch skips empty 1-D tensors in a cat of tensors of another rank (a legacy rule that caches
// starting from torch.tensor([]) rely on).
bool skippedByCat(bool emptyVector, size_t outputRank) { return emptyVector && outputRank != 1; }

void convertCat(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  const size_t rank = args.output().shape.size();
  std::vector<Tensor*> inputs;
  for (Tensor* t : ctx.tensorList(args, "tensors")) {
    if (!skippedByCat(t->dims() == Dims{0}, rank)) inputs.push_back(castTo(ctx, t, type));
  }
  KILN_CHECK(!inputs.empty(), "cat of empty 1-D tensors only");
  ConcatParams params;
  params.axis = normalizeDim(args.getInt("dim"), static_cast<int64_t>(rank));
  Layer* layer = ctx.network().addConcat(inputs, params);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

std::string checkCat(const NodeArgs& args) {
  const OpValue& list = args.value("tensors");
  const size_t rank = args.output().shape.size();
  if (!list.elements) return "";
  size_t kept = 0;
  for (int element : *list.elements) {
    const OpValue& v = args.graph().value(element);
    const bool emptyVector = v.shape.size() == 1 && v.shape[0].isStatic() && v.shape[0].max == 0;
    if (v.isTensor() && skippedByCat(emptyVector, rank)) continue;
    if (!v.isTensor() || v.shape.size() != rank) {
      return "cat of tensors whose ranks differ, other than empty 1-D tensors";
    }
    ++kept;
  }
  if (kept == 0) return "cat of empty 1-D tensors only";
  return "";
}

// ---- split / chunk / unbind / narrow -----------------------------------------------------------

Tensor* sliceAxis(ConversionContext& ctx, Tensor* x, int64_t axis, int64_t start, int64_t end) {
  SliceParams params;
  params.axes = {axis};
  params.starts = {start};
  params.ends = {end};
  params.steps = {1};
  Layer* layer = ctx.network().addSlice(x, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// split, split_with_sizes and chunk: each output is the slice whose length along `dim` torch
// recorded, one after the other.
void convertSplit(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  Tensor* x = ctx.tensor(args, "self");
  int64_t start = 0;
  for (size_t i = 0; i < args.node().outputs.size(); ++i) {
    const int64_t length = args.output(i).shape[static_cast<size_t>(axis)].opt;
    ctx.setOutput(args, i, sliceAxis(ctx, x, axis, start, start + length));
    start += length;
  }
}

std::string checkMultiOutput(const NodeArgs& args) {
  const auto& outputs = args.node().outputs;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!args.output(i).isTensor()) {
      return "returns a list of tensors that the graph unpacks later; only graphs that take "
             "each piece directly (FX getitem) are supported";
    }
  }
  return "";
}

std::string checkSplit(const NodeArgs& args) {
  std::string reason = checkMultiOutput(args);
  if (!reason.empty()) return reason;
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  for (size_t i = 0; i < args.node().outputs.size(); ++i) {
    if (!args.output(i).shape[static_cast<size_t>(axis)].isStatic()) {
      return "splits along a dynamic dim";
    }
  }
  return "";
}

// unbind: output i is self[..., i, ...] along dim.
void convertUnbind(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t axis = normalizeDim(args.getInt("dim"), args.rank("self"));
  Tensor* x = ctx.tensor(args, "self");
  for (size_t i = 0; i < args.node().outputs.size(); ++i) {
    Tensor* index = ctx.constant(at::scalar_tensor(static_cast<int64_t>(i), at::kLong));
    GatherParams params;
    params.axis = axis;
    Layer* layer = ctx.network().addGather(x, index, params);
    ctx.nameLayer(layer);
    ctx.setOutput(args, i, layer->output(0));
  }
}

void convertNarrow(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  const int64_t axis = normalizeDim(args.getInt("dim"), rank);
  const int64_t start = args.getInt("start");
  const int64_t length = args.getInt("length");
  const int64_t end = start < 0 && start + length == 0 ? kSliceEnd : start + length;
  ctx.setOutput(args, 0, sliceAxis(ctx, ctx.tensor(args, "self"), axis, start, end));
}

std::string checkNarrow(const NodeArgs& args) {
  std::string reason = requireConstants(args, {"start", "length"});
  if (!reason.empty()) return reason;
  const int64_t start = args.getInt("start");
  const int64_t length = args.getInt("length");
  if (start < 0 && start + length > 0) return "narrow with a negative start that wraps past 0";
  return "";
}

}  // namespace

void registerShapeConverters(ConverterRegistry& registry) {
  const char* reshapes[] = {
      "aten::view(Tensor(a) self, SymInt[] size) -> Tensor(a)",
      "aten::reshape(Tensor(a) self, SymInt[] shape) -> Tensor(a)",
      "aten::_unsafe_view(Tensor self, SymInt[] size) -> Tensor",
      "aten::flatten.using_ints(Tensor(a) self, int start_dim=0, int end_dim=-1) -> Tensor(a)",
  };
  for (const char* schema : reshapes) registry.add({schema, convertReshape, checkReshape});

  registry.add({"aten::permute(Tensor(a) self, int[] dims) -> Tensor(a)", convertPermute, nullptr});
  registry.add({"aten::transpose.int(Tensor(a) self, int dim0, int dim1) -> Tensor(a)",
                convertTranspose, nullptr});
  registry.add({"aten::t(Tensor(a) self) -> Tensor(a)", convertT, checkT});

  registry.add(
      {"aten::unsqueeze(Tensor(a) self, int dim) -> Tensor(a)", convertUnsqueeze, nullptr});
  registry.add({"aten::squeeze(Tensor(a) self) -> Tensor(a)", convertSqueeze, checkSqueeze});
  registry.add(
      {"aten::squeeze.dim(Tensor(a) self, int dim) -> Tensor(a)", convertSqueeze, checkSqueeze});
  registry.add(
      {"aten::squeeze.dims(Tensor(a) self, int[] dim) -> Tensor(a)", convertSqueeze, checkSqueeze});

  registry.add({"aten::expand(Tensor(a) self, SymInt[] size, *, bool implicit=False) -> Tensor(a)",
                convertExpand, checkExpand});
  registry.add(
      {"aten::expand_as(Tensor(a) self, Tensor other) -> Tensor(a)", convertExpand, checkExpand});

  registry.add({"aten::cat(Tensor[] tensors, int dim=0) -> Tensor", convertCat, checkCat});
  registry.add({"aten::concat(Tensor[] tensors, int dim=0) -> Tensor", convertCat, checkCat});

  registry.add(
      {"aten::split.Tensor(Tensor(a -> *) self, SymInt split_size, int dim=0) -> "
       "Tensor(a)[]",
       convertSplit, checkSplit});
  registry.add(
      {"aten::split.sizes(Tensor(a -> *) self, SymInt[] split_size, int dim=0) -> "
       "Tensor(a)[]",
       convertSplit, checkSplit});
  registry.add({"aten::split(Tensor(a -> *) self, int[] split_sizes, int dim=0) -> Tensor(a)[]",
                convertSplit, checkSplit});
  registry.add(
      {"aten::split_with_sizes(Tensor(a -> *) self, SymInt[] split_sizes, int dim=0) -> "
       "Tensor(a)[]",
       convertSplit, checkSplit});
  registry.add({"aten::chunk(Tensor(a -> *) self, int chunks, int dim=0) -> Tensor(a)[]",
                convertSplit, checkSplit});
  registry.add({"aten::unbind.int(Tensor(a -> *) self, int dim=0) -> Tensor(a)[]", convertUnbind,
                checkMultiOutput});
  registry.add({"aten::narrow(Tensor(a) self, int dim, SymInt start, SymInt length) -> Tensor(a)",
                convertNarrow, checkNarrow});
}

}  // namespace kiln

// Ops that move elements around without computing: flip, roll, repeat, tile (Gathers of
// constant indices along each dim), stack (Concat of unsqueezed inputs), unflatten and
// pixel_shuffle / pixel_unshuffle (Shuffles), tril and triu (an element Gather between the input
// and zeros, picked by a constant mask). Dims whose positions are chosen at build time must be
// static.
#include <ATen/ATen.h>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// x's elements along `axis` in the order `index` lists them.
Tensor* gatherAlong(ConversionContext& ctx, Tensor* x, const std::vector<int64_t>& index,
                    int64_t axis) {
  GatherParams params;
  params.axis = axis;
  Layer* layer = ctx.network().addGather(x, ctx.constant(at::tensor(index, at::kLong)), params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

std::string requireStaticDims(const NodeArgs& args, const std::vector<int64_t>& dims) {
  const std::vector<SymInt>& shape = args.value("self").shape;
  for (int64_t d : dims) {
    if (!shape[static_cast<size_t>(d)].isStatic()) return concat("dim ", d, " is dynamic");
  }
  return "";
}

std::vector<int64_t> normalizedDims(const NodeArgs& args, const std::string& name) {
  std::vector<int64_t> dims = args.getIntList(name);
  for (int64_t& d : dims) d = normalizeDim(d, args.rank("self"));
  return dims;
}

int64_t staticSize(const NodeArgs& args, int64_t dim) {
  return args.value("self").shape[static_cast<size_t>(dim)].opt;
}

// ---- flip, roll
// ----------------------------------------------------------------------------------

void convertFlip(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* x = ctx.tensor(args, "self");
  for (int64_t d : normalizedDims(args, "dims")) {
    const int64_t size = staticSize(args, d);
    std::vector<int64_t> index(static_cast<size_t>(size));
    for (int64_t i = 0; i < size; ++i) index[static_cast<size_t>(i)] = size - 1 - i;
    x = gatherAlong(ctx, x, index, d);
  }
  ctx.setOutput(args, 0, x);
}

std::string checkFlip(const NodeArgs& args) {
  if (args.rank("self") == 0) return "flip of a scalar";
  return requireStaticDims(args, normalizedDims(args, "dims"));
}

// Output position i along a dim of `size` reads input position (i - shift) mod size.
std::vector<int64_t> rolledIndex(int64_t size, int64_t shift) {
  std::vector<int64_t> index(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) {
    index[static_cast<size_t>(i)] = (((i - shift) % size) + size) % size;
  }
  return index;
}

// Without dims, roll shifts the flattened tensor and restores the shape.
void convertRoll(ConversionContext& ctx, const NodeArgs& args) {
  const std::vector<int64_t> shifts = args.getIntList("shifts");
  const std::vector<int64_t> dims = normalizedDims(args, "dims");
  Tensor* x = ctx.tensor(args, "self");
  if (dims.empty()) {
    const Dims shape = toDims(args.value("self").shape);
    int64_t count = 1;
    for (int64_t size : shape) count *= size;
    Tensor* flat = gatherAlong(ctx, reshape(ctx, x, {count}), rolledIndex(count, shifts[0]), 0);
    ctx.setOutput(args, 0, reshape(ctx, flat, shape));
    return;
  }
  for (size_t i = 0; i < dims.size(); ++i) {
    x = gatherAlong(ctx, x, rolledIndex(staticSize(args, dims[i]), shifts[i]), dims[i]);
  }
  ctx.setOutput(args, 0, x);
}

std::string checkRoll(const NodeArgs& args) {
  if (args.rank("self") == 0) return "roll of a scalar";
  if (std::string why = requireConstants(args, {"shifts"}); !why.empty()) return why;
  const std::vector<int64_t> shifts = args.getIntList("shifts");
  const std::vector<int64_t> dims = normalizedDims(args, "dims");
  if (dims.empty()) {
    if (shifts.size() != 1) return "roll without dims takes one shift";
    std::vector<int64_t> all(static_cast<size_t>(args.rank("self")));
    for (size_t d = 0; d < all.size(); ++d) all[d] = static_cast<int64_t>(d);
    return requireStaticDims(args, all);
  }
  if (shifts.size() != dims.size()) return "roll with as many shifts as dims";
  return requireStaticDims(args, dims);
}

// ---- repeat, tile
// --------------------------------------------------------------------------------

// x (brought to the rank of `repeats` by leading unit dims) repeated `repeats[d]` times along d.
void convertRepeatWith(ConversionContext& ctx, const NodeArgs& args,
                       const std::vector<int64_t>& repeats) {
  const int64_t rank = static_cast<int64_t>(repeats.size());
  Tensor* x = padRankTo(ctx, ctx.tensor(args, "self"), rank);
  for (int64_t d = 0; d < rank; ++d) {
    const int64_t times = repeats[static_cast<size_t>(d)];
    if (times == 1) continue;
    const int64_t size = x->dims()[static_cast<size_t>(d)];
    std::vector<int64_t> index(static_cast<size_t>(size * times));
    for (size_t i = 0; i < index.size(); ++i) index[i] = static_cast<int64_t>(i) % size;
    x = gatherAlong(ctx, x, index, d);
  }
  ctx.setOutput(args, 0, x);
}

// tile's dims shorter than the input's rank are padded with leading ones; repeat's may not be.
std::vector<int64_t> repeatCounts(const NodeArgs& args, const std::string& name) {
  std::vector<int64_t> repeats = args.getIntList(name);
  const auto rank = static_cast<size_t>(args.rank("self"));
  if (repeats.size() < rank) repeats.insert(repeats.begin(), rank - repeats.size(), 1);
  return repeats;
}

ConvertFn convertRepeat(std::string name) {
  return [name](ConversionContext& ctx, const NodeArgs& args) {
    convertRepeatWith(ctx, args, repeatCounts(args, name));
  };
}

CheckFn checkRepeat(std::string name) {
  return [name](const NodeArgs& args) -> std::string {
    if (std::string why = requireConstants(args, {name}); !why.empty()) return why;
    const std::vector<int64_t> repeats = repeatCounts(args, name);
    const int64_t rank = args.rank("self");
    const std::vector<SymInt>& shape = args.value("self").shape;
    const int64_t offset = static_cast<int64_t>(repeats.size()) - rank;
    for (size_t d = 0; d < repeats.size(); ++d) {
      if (repeats[d] < 1) return "a repeat count below 1 (an empty result)";
      const int64_t inputDim = static_cast<int64_t>(d) - offset;
      if (repeats[d] != 1 && inputDim >= 0 && !shape[static_cast<size_t>(inputDim)].isStatic()) {
        return concat("repeats a dynamic dim ", inputDim);
      }
    }
    return "";
  };
}

// ---- stack, unflatten
// ----------------------------------------------------------------------------

void convertStack(ConversionContext& ctx, const NodeArgs& args) {
  const int64_t rank = static_cast<int64_t>(args.output().shape.size());
  const int64_t axis = normalizeDim(args.getInt("dim"), rank);
  std::vector<Tensor*> parts;
  for (Tensor* t : ctx.tensorList(args, "tensors")) parts.push_back(unsqueeze(ctx, t, axis));
  const DataType type = outputDataType(args);
  for (Tensor*& part : parts) part = castTo(ctx, part, type);
  ConcatParams params;
  params.axis = axis;
  Layer* layer = ctx.network().addConcat(parts, params);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

void convertUnflatten(ConversionContext& ctx, const NodeArgs& args) {
  std::optional<Dims> dims = shuffleReshapeDims(args.value("self").shape, args.output().shape);
  KILN_CHECK(dims.has_value(), "unflatten: the new shape cannot be expressed");
  ctx.setOutput(args, 0, reshape(ctx, ctx.tensor(args, "self"), *dims));
}

std::string checkUnflatten(const NodeArgs& args) {
  if (!shuffleReshapeDims(args.value("self").shape, args.output().shape)) {
    return "the unflattened shape depends on the input shapes in a way a reshape cannot express";
  }
  return "";
}

// ---- tril, triu
// ----------------------------------------------------------------------------------

// Keeps x where mask (over the last two dims) is true, else 0: an element Gather from zeros and
// x stacked, so that infinities and NaNs outside the triangle do not leak as a product would.
Tensor* keepWhere(ConversionContext& ctx, const NodeArgs& args, const at::Tensor& mask) {
  const std::vector<SymInt>& out = args.output().shape;
  const DataType type = outputDataType(args);
  auto leadingUnit = [&](Tensor* t) { return unsqueeze(ctx, broadcastTo(ctx, t, out), 0); };
  ConcatParams stacked;
  stacked.axis = 0;
  Layer* data = ctx.network().addConcat({leadingUnit(ctx.scalar(0.0, type)),
                                         leadingUnit(castTo(ctx, ctx.tensor(args, "self"), type))},
                                        stacked);
  ctx.nameLayer(data);
  GatherParams pick;
  pick.axis = 0;
  pick.mode = GatherMode::kElement;
  Layer* gather =
      ctx.network().addGather(data->output(0), leadingUnit(ctx.constant(mask.to(at::kLong))), pick);
  ctx.nameLayer(gather);
  return squeezeDims(ctx, gather->output(0), {0});
}

ConvertFn convertTriangle(bool lower) {
  return [lower](ConversionContext& ctx, const NodeArgs& args) {
    const std::vector<SymInt>& shape = args.value("self").shape;
    const int64_t rows = shape[shape.size() - 2].opt;
    const int64_t cols = shape[shape.size() - 1].opt;
    const int64_t diagonal = args.getInt("diagonal");
    at::Tensor offset =
        at::arange(cols, at::kLong).unsqueeze(0) - at::arange(rows, at::kLong).unsqueeze(1);
    at::Tensor mask = lower ? offset.le(diagonal) : offset.ge(diagonal);
    ctx.setOutput(args, 0, keepWhere(ctx, args, mask));
  };
}

std::string checkTriangle(const NodeArgs& args) {
  if (args.rank("self") < 2) return "tril/triu of a tensor with fewer than 2 dims";
  if (std::string why = requireConstants(args, {"diagonal"}); !why.empty()) return why;
  if (std::string why = requireStaticShapes(args, {"self"}); !why.empty()) return why;
  return "";
}

// ---- pixel_shuffle, pixel_unshuffle
// --------------------------------------------------------------

// [..., C*r*r, H, W] <-> [..., C, H*r, W*r] through [..., C, r, r, H, W] and
// [..., C, H, r, W, r]; leading dims are copied (0), so they may be dynamic.
void convertPixelShuffle(ConversionContext& ctx, const NodeArgs& args) {
  const bool shuffle = args.has("upscale_factor");
  const int64_t r = args.getInt(shuffle ? "upscale_factor" : "downscale_factor");
  const std::vector<SymInt>& shape = args.value("self").shape;
  const int64_t lead = static_cast<int64_t>(shape.size()) - 3;
  const int64_t c = shape[shape.size() - 3].opt;
  const int64_t h = shape[shape.size() - 2].opt;
  const int64_t w = shape[shape.size() - 1].opt;
  Dims split(static_cast<size_t>(lead), 0);
  Dims order;
  for (int64_t d = 0; d < lead; ++d) order.push_back(d);
  Dims merged(static_cast<size_t>(lead), 0);
  if (shuffle) {
    split.insert(split.end(), {c / (r * r), r, r, h, w});
    for (int64_t d : {0, 3, 1, 4, 2}) order.push_back(lead + d);
    merged.insert(merged.end(), {c / (r * r), h * r, w * r});
  } else {
    split.insert(split.end(), {c, h / r, r, w / r, r});
    for (int64_t d : {0, 2, 4, 1, 3}) order.push_back(lead + d);
    merged.insert(merged.end(), {c * r * r, h / r, w / r});
  }
  Tensor* x = reshape(ctx, ctx.tensor(args, "self"), split);
  ctx.setOutput(args, 0, reshape(ctx, permute(ctx, x, order), merged));
}

std::string checkPixelShuffle(const NodeArgs& args) {
  const int64_t rank = args.rank("self");
  if (rank < 3) return "pixel_shuffle of a tensor with fewer than 3 dims";
  const std::vector<SymInt>& shape = args.value("self").shape;
  for (size_t d = shape.size() - 3; d < shape.size(); ++d) {
    if (!shape[d].isStatic()) return "a dynamic channel or spatial dim";
  }
  return "";
}

}  // namespace

void registerRearrangeConverters(ConverterRegistry& registry) {
  registry.add({"aten::flip(Tensor self, int[] dims) -> Tensor", convertFlip, checkFlip});
  registry.add({"aten::roll(Tensor self, SymInt[1] shifts, int[1] dims=[]) -> Tensor", convertRoll,
                checkRoll});
  registry.add({"aten::repeat(Tensor self, SymInt[] repeats) -> Tensor", convertRepeat("repeats"),
                checkRepeat("repeats")});
  registry.add({"aten::tile(Tensor self, SymInt[] dims) -> Tensor", convertRepeat("dims"),
                checkRepeat("dims")});
  registry.add({"aten::stack(Tensor[] tensors, int dim=0) -> Tensor", convertStack, nullptr});
  registry.add({"aten::unflatten.int(Tensor(a) self, int dim, SymInt[] sizes) -> Tensor(a)",
                convertUnflatten, checkUnflatten});
  registry.add({"aten::tril(Tensor self, SymInt diagonal=0) -> Tensor", convertTriangle(true),
                checkTriangle});
  registry.add({"aten::triu(Tensor self, SymInt diagonal=0) -> Tensor", convertTriangle(false),
                checkTriangle});
  registry.add({"aten::pixel_shuffle(Tensor self, int upscale_factor) -> Tensor",
                convertPixelShuffle, checkPixelShuffle});
  registry.add({"aten::pixel_unshuffle(Tensor self, int downscale_factor) -> Tensor",
                convertPixelShuffle, checkPixelShuffle});
}

}  // namespace kiln

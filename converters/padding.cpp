// Padding: constant_pad_nd, reflection_pad{1,2,3}d, replication_pad{1,2,3}d and pad (constant,
// reflect, replicate, circular). torch lists pads from the last dim backwards, (before, after)
// a dim. Per padded dim, with existing layers only:
//   reflect, replicate, circular: a Gather of constant indices along the dim (static size);
//   constant: negative pads crop with a Slice, positive ones concatenate constant blocks (the
//             input's other dims static).
#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

enum class PadMode { kConstant, kReflect, kReplicate, kCircular };

std::optional<PadMode> padMode(const std::string& name) {
  if (name == "constant") return PadMode::kConstant;
  if (name == "reflect") return PadMode::kReflect;
  if (name == "replicate") return PadMode::kReplicate;
  if (name == "circular") return PadMode::kCircular;
  return std::nullopt;
}

struct DimPad {
  int64_t axis;
  int64_t before;
  int64_t after;
};

// torch's (before, after) pairs, last dim first, as one entry per padded dim.
std::vector<DimPad> dimPads(const std::vector<int64_t>& pads, int64_t rank) {
  std::vector<DimPad> result;
  for (size_t i = 0; i + 1 < pads.size(); i += 2) {
    result.push_back({rank - 1 - static_cast<int64_t>(i / 2), pads[i], pads[i + 1]});
  }
  return result;
}

// The source index of each output position along a dim of `size` padded by mode.
std::vector<int64_t> sourceIndices(PadMode mode, int64_t size, int64_t before, int64_t after) {
  std::vector<int64_t> indices;
  for (int64_t out = -before; out < size + after; ++out) {
    int64_t i = out;
    if (mode == PadMode::kReflect) {
      if (i < 0) i = -i;
      if (i >= size) i = 2 * (size - 1) - i;
    } else if (mode == PadMode::kReplicate) {
      i = std::min(std::max<int64_t>(i, 0), size - 1);
    } else {
      i = ((i % size) + size) % size;
    }
    indices.push_back(i);
  }
  return indices;
}

Tensor* gatherPad(ConversionContext& ctx, Tensor* x, PadMode mode, const DimPad& pad) {
  const int64_t size = x->dims()[static_cast<size_t>(pad.axis)];
  const std::vector<int64_t> indices = sourceIndices(mode, size, pad.before, pad.after);
  GatherParams params;
  params.axis = pad.axis;
  Layer* layer = ctx.network().addGather(
      x, ctx.constant(at::tensor(indices, at::TensorOptions().dtype(at::kLong))), params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

Tensor* constantPad(ConversionContext& ctx, const NodeArgs& args, Tensor* x, const DimPad& pad,
                    const c10::Scalar& value) {
  if (pad.before < 0 || pad.after < 0) {
    SliceParams crop;
    crop.axes = {pad.axis};
    crop.starts = {std::max<int64_t>(-pad.before, 0)};
    crop.ends = {pad.after < 0 ? pad.after : kSliceEnd};
    crop.steps = {1};
    Layer* layer = ctx.network().addSlice(x, crop);
    ctx.nameLayer(layer);
    x = layer->output(0);
  }
  std::vector<Tensor*> parts;
  auto block = [&](int64_t length) {
    std::vector<int64_t> dims(x->dims().begin(), x->dims().end());
    dims[static_cast<size_t>(pad.axis)] = length;
    return ctx.constant(at::full(dims, value, at::TensorOptions().dtype(args.output(0).dtype)));
  };
  if (pad.before > 0) parts.push_back(block(pad.before));
  parts.push_back(x);
  if (pad.after > 0) parts.push_back(block(pad.after));
  if (parts.size() == 1) return x;
  ConcatParams params;
  params.axis = pad.axis;
  Layer* layer = ctx.network().addConcat(parts, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

Tensor* padTensor(ConversionContext& ctx, const NodeArgs& args, PadMode mode,
                  const std::vector<int64_t>& pads, const c10::Scalar& value) {
  Tensor* x = ctx.tensor(args, "self");
  for (const DimPad& pad : dimPads(pads, x->rank())) {
    if (pad.before == 0 && pad.after == 0) continue;
    x = mode == PadMode::kConstant ? constantPad(ctx, args, x, pad, value)
                                   : gatherPad(ctx, x, mode, pad);
  }
  return x;
}

// Why the pads cannot convert, or "".
std::string checkPads(const NodeArgs& args, PadMode mode, const std::vector<int64_t>& pads) {
  const int64_t rank = args.rank("self");
  if (pads.size() % 2 != 0 || static_cast<int64_t>(pads.size()) > 2 * rank) {
    return concat("pads ", pads.size(), " values for a tensor of rank ", rank);
  }
  const std::vector<SymInt>& shape = args.value("self").shape;
  for (const DimPad& pad : dimPads(pads, rank)) {
    if (pad.before == 0 && pad.after == 0) continue;
    const SymInt& size = shape[static_cast<size_t>(pad.axis)];
    if (mode == PadMode::kConstant) {
      // The constant blocks take the other dims.
      for (size_t d = 0; d < shape.size(); ++d) {
        if (static_cast<int64_t>(d) != pad.axis && !shape[d].isStatic()) {
          return concat("constant padding of a tensor whose dim ", d, " depends on the inputs");
        }
      }
      continue;
    }
    if (!size.isStatic()) return concat("padding dim ", pad.axis, ", which depends on the inputs");
    if (pad.before < 0 || pad.after < 0) return "negative padding in a mode other than constant";
    if (mode == PadMode::kReflect && (pad.before >= size.opt || pad.after >= size.opt)) {
      return "reflection padding as large as the dim";
    }
    if (mode == PadMode::kCircular && (pad.before > size.opt || pad.after > size.opt)) {
      return "circular padding larger than the dim";
    }
  }
  return "";
}

void convertConstantPad(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0,
                padTensor(ctx, args, PadMode::kConstant, args.getIntList("pad"),
                          args.value("value").constant->toScalar()));
}

std::string checkConstantPad(const NodeArgs& args) {
  if (std::string reason = requireConstants(args, {"pad", "value"}); !reason.empty()) {
    return reason;
  }
  return checkPads(args, PadMode::kConstant, args.getIntList("pad"));
}

template <PadMode kMode>
void convertModePad(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, padTensor(ctx, args, kMode, args.getIntList("padding"), 0));
}

template <PadMode kMode>
std::string checkModePad(const NodeArgs& args) {
  if (std::string reason = requireConstants(args, {"padding"}); !reason.empty()) return reason;
  return checkPads(args, kMode, args.getIntList("padding"));
}

// aten::pad: the mode by name; a constant pad's value defaults to 0.
void convertPad(ConversionContext& ctx, const NodeArgs& args) {
  const PadMode mode = *padMode(args.value("mode").constant->toStringRef());
  const c10::Scalar value =
      args.isNone("value") ? c10::Scalar(0) : c10::Scalar(args.getDouble("value"));
  ctx.setOutput(args, 0, padTensor(ctx, args, mode, args.getIntList("pad"), value));
}

std::string checkPad(const NodeArgs& args) {
  if (std::string reason = requireConstants(args, {"pad", "mode", "value"}); !reason.empty()) {
    return reason;
  }
  const std::optional<PadMode> mode = padMode(args.value("mode").constant->toStringRef());
  if (!mode) return concat("pad mode '", args.value("mode").constant->toStringRef(), "'");
  if (*mode != PadMode::kConstant && !args.isNone("value")) {
    return "a pad value for a mode other than constant";
  }
  return checkPads(args, *mode, args.getIntList("pad"));
}

}  // namespace

void registerPaddingConverters(ConverterRegistry& registry) {
  registry.add({"aten::constant_pad_nd(Tensor self, SymInt[] pad, Scalar value=0) -> Tensor",
                convertConstantPad, checkConstantPad});
  registry.add(
      {"aten::pad(Tensor self, SymInt[] pad, str mode=\"constant\", float? value=None) "
       "-> Tensor",
       convertPad, checkPad});
  for (const char* rank : {"1", "2", "3"}) {
    const std::string size = std::to_string(2 * std::stoi(rank));
    registry.add({concat("aten::reflection_pad", rank, "d(Tensor self, SymInt[", size,
                         "] padding) -> Tensor"),
                  convertModePad<PadMode::kReflect>, checkModePad<PadMode::kReflect>});
    registry.add({concat("aten::replication_pad", rank, "d(Tensor self, SymInt[", size,
                         "] padding) -> Tensor"),
                  convertModePad<PadMode::kReplicate>, checkModePad<PadMode::kReplicate>});
  }
}

}  // namespace kiln

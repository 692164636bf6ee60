// dtype conversions: to.dtype, to.dtype_layout, to.other, to.prim_dtype, _to_copy, type_as.
// The target dtype is the one torch recorded for the output; a conversion that moves the tensor
// to another device or layout stays in PyTorch.
#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

void convertCast(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, castTo(ctx, ctx.tensor(args, "self"), outputDataType(args)));
}

// A device argument must be absent: the converter cannot tell whether it names the device the
// engine will run on, and an engine's outputs always live there.
std::string checkNoDeviceOrLayout(const NodeArgs& args) {
  if (args.has("device") && !args.isNone("device")) {
    return "names a device, which may differ from the engine's; device moves stay in PyTorch";
  }
  if (args.has("layout") && !args.isNone("layout") &&
      args.getInt("layout") != static_cast<int64_t>(c10::Layout::Strided)) {
    return "converts to a non-strided layout";
  }
  return "";
}

}  // namespace

void registerCastConverters(ConverterRegistry& registry) {
  registry.add({"aten::to.dtype(Tensor(a) self, ScalarType dtype, bool non_blocking=False, bool "
                "copy=False, MemoryFormat? memory_format=None) -> Tensor(a)",
                convertCast, nullptr});
  registry.add({"aten::to.dtype_layout(Tensor(a) self, *, ScalarType? dtype=None, Layout? "
                "layout=None, Device? device=None, bool? pin_memory=None, bool "
                "non_blocking=False, bool copy=False, MemoryFormat? memory_format=None) -> "
                "Tensor(a)",
                convertCast, checkNoDeviceOrLayout});
  registry.add({"aten::to.other(Tensor(a) self, Tensor other, bool non_blocking=False, bool "
                "copy=False, MemoryFormat? memory_format=None) -> Tensor(a)",
                convertCast, nullptr});
  registry.add({"aten::to.prim_dtype(Tensor(a) self, int? dtype=None, bool non_blocking=False, "
                "bool copy=False) -> Tensor(b|a)",
                convertCast, nullptr});
  registry.add({"aten::_to_copy(Tensor self, *, ScalarType? dtype=None, Layout? layout=None, "
                "Device? device=None, bool? pin_memory=None, bool non_blocking=False, "
                "MemoryFormat? memory_format=None) -> Tensor",
                convertCast, checkNoDeviceOrLayout});
  registry.add({"aten::type_as(Tensor self, Tensor other) -> Tensor", convertCast, nullptr});
}

}  // namespace kiln

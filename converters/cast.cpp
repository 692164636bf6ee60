// dtype conversions: the overloads of `to`, _to_copy, type_as, and the functional copy (src
// broadcast to self's shape and converted to self's dtype).
// The target dtype is the one torch recorded for the output; a conversion that moves the tensor
// to another device than the engine's, or to another layout, stays in PyTorch.
#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

void convertCast(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, castTo(ctx, ctx.tensor(args, "self"), outputDataType(args)));
}

std::string checkSameDeviceAndStrided(const NodeArgs& args) {
  if (args.has("device") && !args.isNone("device") && !namesGraphDevice(args)) {
    return "moves the tensor to another device than the engine's; device moves stay in PyTorch";
  }
  if (args.has("layout") && !args.isNone("layout") &&
      args.getInt("layout") != static_cast<int64_t>(c10::Layout::Strided)) {
    return "converts to a non-strided layout";
  }
  return "";
}

// copy(self, src) is what functionalization makes of self.copy_(src): self's values are
// replaced, only its shape and dtype remain.
void convertCopy(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* src = broadcastTo(ctx, ctx.tensor(args, "src"), args.value("self").shape);
  ctx.setOutput(args, 0, castTo(ctx, src, outputDataType(args)));
}

// Each of src's dims (right-aligned) equals self's, or is 1 where self's is static (a dim
// stretched to a dynamic size would need the size at run time).
std::string checkCopy(const NodeArgs& args) {
  const std::vector<SymInt>& self = args.value("self").shape;
  const std::vector<SymInt>& src = args.value("src").shape;
  if (src.size() > self.size()) return "src has more dims than self";
  const size_t offset = self.size() - src.size();
  for (size_t d = 0; d < src.size(); ++d) {
    const SymInt& to = self[offset + d];
    const SymInt& from = src[d];
    if (to.isStatic() && from.isStatic() && (from.opt == to.opt || from.opt == 1)) continue;
    if (!to.isStatic() && from.symbol == to.symbol) continue;
    return concat("src's dim ", d, " does not broadcast to self's at build time");
  }
  return "";
}

}  // namespace

void registerCastConverters(ConverterRegistry& registry) {
  registry.add(
      {"aten::to.dtype(Tensor(a) self, ScalarType dtype, bool non_blocking=False, bool "
       "copy=False, MemoryFormat? memory_format=None) -> Tensor(a)",
       convertCast, nullptr});
  registry.add(
      {"aten::to.dtype_layout(Tensor(a) self, *, ScalarType? dtype=None, Layout? "
       "layout=None, Device? device=None, bool? pin_memory=None, bool "
       "non_blocking=False, bool copy=False, MemoryFormat? memory_format=None) -> "
       "Tensor(a)",
       convertCast, checkSameDeviceAndStrided});
  registry.add(
      {"aten::to.device(Tensor(a) self, Device device, ScalarType dtype, bool "
       "non_blocking=False, bool copy=False, MemoryFormat? memory_format=None) -> "
       "Tensor(a)",
       convertCast, checkSameDeviceAndStrided});
  registry.add(
      {"aten::to.prim_Device(Tensor(a) self, Device? device, int? dtype=None, bool "
       "non_blocking=False, bool copy=False) -> Tensor(b|a)",
       convertCast, checkSameDeviceAndStrided});
  registry.add(
      {"aten::to.other(Tensor(a) self, Tensor other, bool non_blocking=False, bool "
       "copy=False, MemoryFormat? memory_format=None) -> Tensor(a)",
       convertCast, nullptr});
  registry.add(
      {"aten::to.prim_dtype(Tensor(a) self, int? dtype=None, bool non_blocking=False, "
       "bool copy=False) -> Tensor(b|a)",
       convertCast, nullptr});
  registry.add(
      {"aten::_to_copy(Tensor self, *, ScalarType? dtype=None, Layout? layout=None, "
       "Device? device=None, bool? pin_memory=None, bool non_blocking=False, "
       "MemoryFormat? memory_format=None) -> Tensor",
       convertCast, checkSameDeviceAndStrided});
  registry.add({"aten::type_as(Tensor self, Tensor other) -> Tensor", convertCast, nullptr});
  registry.add({"aten::copy(Tensor self, Tensor src, bool non_blocking=False) -> Tensor",
                convertCopy, checkCopy});
}

}  // namespace kiln

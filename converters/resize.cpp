// Resize family: the upsample ops torch.nn.functional.interpolate calls (antialias=False) ->
// Resize layers. The .vec overloads (what F.interpolate and torch.export give) take an output
// size or scale factors; the plain overloads (what tracing and decompositions give) take the
// output size and optional per-dim scales. Output sizes must be known at build time. Given scale
// factors set the output size (floor(in * scale)) and, as in torch, the source-coordinate ratio
// 1 / scale. The antialiased forms (_upsample_*_aa) have no converter and stay in PyTorch.
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

// One upsample op: its mode, spatial rank, whether it takes align_corners, and whether it is
// the .vec overload (output_size or scale_factors) or the plain one (output_size and scales).
struct Upsample {
  std::string schema;
  ResizeMode mode;
  size_t spatialRank;
  bool vec;
};

bool takesAlignCorners(ResizeMode mode) {
  return mode == ResizeMode::kLinear || mode == ResizeMode::kCubic;
}

// A float[]? argument known at build time (a constant list, or a list of constant numbers).
std::vector<double> floatList(const NodeArgs& args, const std::string& name) {
  const OpValue& v = args.value(name);
  if (v.constant && v.constant->isDoubleList()) return v.constant->toDoubleVector();
  KILN_CHECK(v.elements.has_value(), args.node().qualifiedName(), ": argument '", name,
             "' must be a list of floats known at build time, got ", toString(v.kind));
  std::vector<double> values;
  for (int element : *v.elements) {
    const OpValue& e = args.graph().value(element);
    KILN_CHECK(e.constant && (e.constant->isDouble() || e.constant->isInt()),
               args.node().qualifiedName(), ": argument '", name, "' element ", values.size(),
               " is not a number known at build time");
    values.push_back(e.constant->isDouble() ? e.constant->toDouble()
                                            : static_cast<double>(e.constant->toInt()));
  }
  return values;
}

// The resize a node asks for; throws (the capability check's reason) for what Kiln cannot run.
ResizeParams resizeParams(const NodeArgs& args, const Upsample& op) {
  const std::string name = args.node().qualifiedName();
  const std::string input = op.vec ? "input" : "self";
  const size_t rank = op.spatialRank;
  KILN_CHECK(args.rank(input) == static_cast<int64_t>(rank) + 2, name, ": takes an input (N, C, ",
             "spatial...) with ", rank, " spatial dims, got rank ", args.rank(input));
  requireFloatTensors(args, {input}, "resize");
  ResizeParams p;
  p.mode = op.mode;
  p.alignCorners = takesAlignCorners(op.mode) && args.getBool("align_corners");
  const bool sized = !op.vec || !args.isNone("output_size");
  if (sized) {
    p.outputSize = args.getIntList("output_size");
    KILN_CHECK(p.outputSize.size() == rank, name, ": output_size has ", p.outputSize.size(),
               " values for ", rank, " spatial dims");
  }
  if (op.vec) {
    KILN_CHECK(sized != !args.isNone("scale_factors"), name,
               ": takes exactly one of output_size and scale_factors");
    if (!sized) {
      p.scales = floatList(args, "scale_factors");
      KILN_CHECK(p.scales.size() == rank, name, ": scale_factors has ", p.scales.size(),
                 " values for ", rank, " spatial dims");
      const std::vector<SymInt>& shape = args.value(input).shape;
      for (size_t d = 0; d < rank; ++d) {
        const SymInt& in = shape[2 + d];
        KILN_CHECK(in.isStatic(), name, ": spatial dim ", d, " of the input is dynamic; scale ",
                   "factors give a static output size only for a static input size");
        KILN_CHECK(p.scales[d] > 0.0, name, ": scale factors must be positive, got ", p.scales[d]);
        // torch's compute_output_size: the product in double, truncated.
        p.outputSize.push_back(static_cast<int64_t>(static_cast<double>(in.max) * p.scales[d]));
      }
    }
  } else {
    static const char* const kScaleNames[3][3] = {
        {"scales", "", ""}, {"scales_h", "scales_w", ""}, {"scales_d", "scales_h", "scales_w"}};
    bool anyScale = false;
    std::vector<double> scales;
    for (size_t d = 0; d < rank; ++d) {
      const std::optional<double> scale = args.getOptionalDouble(kScaleNames[rank - 1][d]);
      anyScale = anyScale || scale.has_value();
      // torch ignores a scale that is not positive, as if none were given.
      scales.push_back(scale && *scale > 0.0 ? *scale : 0.0);
    }
    if (anyScale) p.scales = scales;
  }
  for (int64_t size : p.outputSize) {
    KILN_CHECK(size >= 1, name, ": output sizes must be positive, got ", toString(p.outputSize));
  }
  // torch's CPU kernels copy a dim whose size does not change (and nearest's doubled dims)
  // whatever scale was given; its CUDA kernels apply the scale. Where the two differ (a scale
  // that is not out / in), there is no one result to match: such a node stays in PyTorch.
  for (size_t d = 0; d < p.scales.size(); ++d) {
    if (p.scales[d] <= 0.0) continue;
    const SymInt& in = args.value(input).shape[2 + d];
    KILN_CHECK(in.isStatic(), name, ": spatial dim ", d, " of the input is dynamic and a scale ",
               "is given, which sets the coordinates by the input size");
    const int64_t out = p.outputSize[d];
    const bool copied = out == in.max || (p.mode == ResizeMode::kNearest && out == 2 * in.max);
    KILN_CHECK(!copied || p.scales[d] * static_cast<double>(in.max) == static_cast<double>(out),
               name, ": scale ", p.scales[d], " with input size ", in.max, " and output size ", out,
               " on spatial dim ", d, " gives different results in torch's CPU and CUDA kernels");
  }
  return p;
}

ConverterEntry upsampleEntry(const Upsample& op) {
  auto convert = [op](ConversionContext& ctx, const NodeArgs& args) {
    const ResizeParams p = resizeParams(args, op);
    Layer* layer = ctx.network().addResize(ctx.tensor(args, op.vec ? "input" : "self"), p);
    ctx.nameLayer(layer);
    ctx.setOutput(args, 0, layer->output(0));
  };
  auto check = [op](const NodeArgs& args) {
    resizeParams(args, op);
    return std::string();
  };
  return {op.schema, convert, check};
}

}  // namespace

void registerResizeConverters(ConverterRegistry& registry) {
  const ResizeMode nearest = ResizeMode::kNearest;
  const ResizeMode exact = ResizeMode::kNearestExact;
  const ResizeMode linear = ResizeMode::kLinear;
  const ResizeMode cubic = ResizeMode::kCubic;
  const Upsample ops[] = {
      {"aten::upsample_nearest1d.vec(Tensor input, SymInt[]? output_size, float[]? "
       "scale_factors) -> Tensor",
       nearest, 1, true},
      {"aten::upsample_nearest2d.vec(Tensor input, SymInt[]? output_size, float[]? "
       "scale_factors) -> Tensor",
       nearest, 2, true},
      {"aten::upsample_nearest3d.vec(Tensor input, SymInt[]? output_size, float[]? "
       "scale_factors) -> Tensor",
       nearest, 3, true},
      {"aten::_upsample_nearest_exact1d.vec(Tensor input, SymInt[]? output_size, float[]? "
       "scale_factors) -> Tensor",
       exact, 1, true},
      {"aten::_upsample_nearest_exact2d.vec(Tensor input, SymInt[]? output_size, float[]? "
       "scale_factors) -> Tensor",
       exact, 2, true},
      {"aten::_upsample_nearest_exact3d.vec(Tensor input, SymInt[]? output_size, float[]? "
       "scale_factors) -> Tensor",
       exact, 3, true},
      {"aten::upsample_linear1d.vec(Tensor input, SymInt[]? output_size, bool align_corners, "
       "float[]? scale_factors) -> Tensor",
       linear, 1, true},
      {"aten::upsample_bilinear2d.vec(Tensor input, SymInt[]? output_size, bool align_corners, "
       "float[]? scale_factors) -> Tensor",
       linear, 2, true},
      {"aten::upsample_trilinear3d.vec(Tensor input, SymInt[]? output_size, bool align_corners, "
       "float[]? scale_factors) -> Tensor",
       linear, 3, true},
      {"aten::upsample_bicubic2d.vec(Tensor input, SymInt[]? output_size, bool align_corners, "
       "float[]? scale_factors) -> Tensor",
       cubic, 2, true},
      {"aten::upsample_nearest1d(Tensor self, SymInt[1] output_size, float? scales=None) -> "
       "Tensor",
       nearest, 1, false},
      {"aten::upsample_nearest2d(Tensor self, SymInt[2] output_size, float? scales_h=None, "
       "float? scales_w=None) -> Tensor",
       nearest, 2, false},
      {"aten::upsample_nearest3d(Tensor self, SymInt[3] output_size, float? scales_d=None, "
       "float? scales_h=None, float? scales_w=None) -> Tensor",
       nearest, 3, false},
      {"aten::_upsample_nearest_exact1d(Tensor self, SymInt[1] output_size, float? "
       "scales=None) -> Tensor",
       exact, 1, false},
      {"aten::_upsample_nearest_exact2d(Tensor self, SymInt[2] output_size, float? "
       "scales_h=None, float? scales_w=None) -> Tensor",
       exact, 2, false},
      {"aten::_upsample_nearest_exact3d(Tensor self, SymInt[3] output_size, float? "
       "scales_d=None, float? scales_h=None, float? scales_w=None) -> Tensor",
       exact, 3, false},
      {"aten::upsample_linear1d(Tensor self, SymInt[1] output_size, bool align_corners, float? "
       "scales=None) -> Tensor",
       linear, 1, false},
      {"aten::upsample_bilinear2d(Tensor self, SymInt[2] output_size, bool align_corners, "
       "float? scales_h=None, float? scales_w=None) -> Tensor",
       linear, 2, false},
      {"aten::upsample_trilinear3d(Tensor self, SymInt[3] output_size, bool align_corners, "
       "float? scales_d=None, float? scales_h=None, float? scales_w=None) -> Tensor",
       linear, 3, false},
      {"aten::upsample_bicubic2d(Tensor self, SymInt[2] output_size, bool align_corners, float? "
       "scales_h=None, float? scales_w=None) -> Tensor",
       cubic, 2, false},
  };
  for (const Upsample& op : ops) registry.add(upsampleEntry(op));
}

}  // namespace kiln

// Convolution family: aten::conv1d/2d/3d (TorchScript, also with padding="same"/"valid"),
// aten::conv_transpose1d/2d/3d (TorchScript), aten::_convolution (traced TorchScript) and
// aten::convolution (torch.export), transposed or not -> Convolution / Deconvolution layers.
// Weights and bias must be build-time constants: the builder folds and fuses around them and
// the kernels' tactics are chosen for fixed filters.
#include <algorithm>
#include <string>
#include <vector>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

// Everything a convolution node says, whatever its op.
struct ConvolutionGeometry {
  bool transposed = false;
  size_t spatialRank = 0;
  bool unbatched = false;  // torch's (C, spatial...) input
  Dims weightDims;
  Dims stride;
  Dims prePadding;
  Dims postPadding;
  Dims dilation;
  Dims outputPadding;
  int64_t groups = 1;
};

// A per-spatial-dim argument; torch repeats a single value for every spatial dim.
Dims perSpatialDim(const NodeArgs& args, const std::string& name, size_t rank) {
  std::vector<int64_t> values = args.getIntList(name);
  if (values.size() == 1 && rank > 1) values.assign(rank, values[0]);
  KILN_CHECK(values.size() == rank, args.node().qualifiedName(), ": '", name, "' has ",
             values.size(), " values for a convolution with ", rank, " spatial dims");
  return values;
}

// Reads and validates the node's arguments; throws Error (the capability check's reason) for
// anything Kiln cannot convert faithfully.
ConvolutionGeometry readGeometry(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  ConvolutionGeometry g;
  KILN_CHECK(args.isConstant("weight"), op, ": the weight is computed at run time; Kiln ",
             "converts convolutions with constant weights (parameters) only");
  KILN_CHECK(args.isNone("bias") || args.isConstant("bias"), op,
             ": the bias is computed at run time; Kiln needs a constant bias");
  requireFloatTensors(args, {"input", "weight", "bias"}, "convolution");
  g.weightDims = toDims(args.value("weight").shape);
  const int64_t weightRank = static_cast<int64_t>(g.weightDims.size());
  KILN_CHECK(weightRank >= 3 && weightRank <= 5, op, ": a weight of rank ", weightRank,
             " is not a 1, 2 or 3-d convolution filter");
  g.spatialRank = static_cast<size_t>(weightRank - 2);
  const int64_t inputRank = args.rank("input");
  KILN_CHECK(inputRank == weightRank || inputRank == weightRank - 1, op, ": an input of rank ",
             inputRank, " does not fit a ", g.spatialRank, "-d convolution");
  g.unbatched = inputRank == weightRank - 1;

  if (args.has("transposed")) g.transposed = args.getBool("transposed");
  if (op.rfind("aten::conv_transpose", 0) == 0) g.transposed = true;
  g.stride = perSpatialDim(args, "stride", g.spatialRank);
  g.dilation = perSpatialDim(args, "dilation", g.spatialRank);
  g.groups = args.getInt("groups");
  g.outputPadding = g.transposed && args.has("output_padding")
                        ? perSpatialDim(args, "output_padding", g.spatialRank)
                        : Dims(g.spatialRank, 0);

  const OpValue& padding = args.value("padding");
  if (padding.constant && padding.constant->isString()) {
    const std::string mode = padding.constant->toStringRef();
    KILN_CHECK(mode == "valid" || mode == "same", op, ": padding='", mode,
               "' is neither 'valid' nor 'same'");
    g.prePadding.assign(g.spatialRank, 0);
    g.postPadding.assign(g.spatialRank, 0);
    if (mode == "same") {
      for (size_t d = 0; d < g.spatialRank; ++d) {
        KILN_CHECK(g.stride[d] == 1, op, ": padding='same' needs stride 1");
        // torch pads the odd extra element at the end.
        const int64_t total = g.dilation[d] * (g.weightDims[d + 2] - 1);
        g.prePadding[d] = total / 2;
        g.postPadding[d] = total - total / 2;
      }
    }
  } else {
    g.prePadding = perSpatialDim(args, "padding", g.spatialRank);
    g.postPadding = g.prePadding;
  }

  KILN_CHECK(g.groups >= 1, op, ": groups must be positive, got ", g.groups);
  for (size_t d = 0; d < g.spatialRank; ++d) {
    KILN_CHECK(
        g.stride[d] >= 1 && g.dilation[d] >= 1 && g.prePadding[d] >= 0 && g.outputPadding[d] >= 0,
        op, ": stride and dilation must be positive and padding non-negative");
    KILN_CHECK(!g.transposed || g.outputPadding[d] < std::max(g.stride[d], g.dilation[d]), op,
               ": output_padding must be smaller than stride or dilation");
  }
  const SymInt& channels = args.value("input").shape.at(g.unbatched ? 0 : 1);
  const int64_t expectedChannels = g.transposed ? g.weightDims[0] : g.weightDims[1] * g.groups;
  KILN_CHECK(channels.isStatic(), op, ": the input's channel dim is dynamic; Kiln needs it fixed");
  KILN_CHECK(channels.opt == expectedChannels, op, ": the input has ", channels.opt,
             " channels where the weight expects ", expectedChannels);
  KILN_CHECK(g.weightDims[0] % g.groups == 0, op, ": ", g.weightDims[0],
             " filters do not split into ", g.groups, " groups");
  if (!args.isNone("bias")) {
    const int64_t outChannels = g.transposed ? g.weightDims[1] * g.groups : g.weightDims[0];
    const Dims biasDims = toDims(args.value("bias").shape);
    KILN_CHECK(biasDims == Dims{outChannels}, op, ": the bias has shape ", toString(biasDims),
               " where (", outChannels, ") is expected");
  }
  return g;
}

std::string checkConvolution(const NodeArgs& args) {
  readGeometry(args);
  return "";
}

void convertConvolution(ConversionContext& ctx, const NodeArgs& args) {
  const ConvolutionGeometry g = readGeometry(args);
  Tensor* x = ctx.tensor(args, "input");
  if (g.unbatched) x = unsqueeze(ctx, x, 0);
  Tensor* weight = ctx.tensor(args, "weight");
  Tensor* bias = args.isNone("bias") ? nullptr : ctx.tensor(args, "bias");
  const Dims kernel(g.weightDims.begin() + 2, g.weightDims.end());
  Layer* layer = nullptr;
  if (g.transposed) {
    DeconvolutionParams p;
    p.outChannels = g.weightDims[1] * g.groups;
    p.kernel = kernel;
    p.stride = g.stride;
    p.prePadding = g.prePadding;
    p.postPadding = g.postPadding;
    p.outputPadding = g.outputPadding;
    p.dilation = g.dilation;
    p.groups = g.groups;
    layer = ctx.network().addDeconvolution(x, weight, bias, p);
  } else {
    ConvolutionParams p;
    p.outChannels = g.weightDims[0];
    p.kernel = kernel;
    p.stride = g.stride;
    p.prePadding = g.prePadding;
    p.postPadding = g.postPadding;
    p.dilation = g.dilation;
    p.groups = g.groups;
    layer = ctx.network().addConvolution(x, weight, bias, p);
  }
  ctx.nameLayer(layer);
  Tensor* out = layer->output(0);
  if (g.unbatched) out = squeezeDims(ctx, out, {0});
  ctx.setOutput(args, 0, out);
}

void add(ConverterRegistry& registry, const char* schema) {
  registry.add({schema, convertConvolution, checkConvolution});
}

}  // namespace

void registerConvolutionConverters(ConverterRegistry& registry) {
  add(registry,
      "aten::conv1d(Tensor input, Tensor weight, Tensor? bias=None, SymInt[1] stride=[1], "
      "SymInt[1] padding=[0], SymInt[1] dilation=[1], SymInt groups=1) -> Tensor");
  add(registry,
      "aten::conv2d(Tensor input, Tensor weight, Tensor? bias=None, SymInt[2] stride=[1, 1], "
      "SymInt[2] padding=[0, 0], SymInt[2] dilation=[1, 1], SymInt groups=1) -> Tensor");
  add(registry,
      "aten::conv3d(Tensor input, Tensor weight, Tensor? bias=None, SymInt[3] stride=[1, 1, 1], "
      "SymInt[3] padding=[0, 0, 0], SymInt[3] dilation=[1, 1, 1], SymInt groups=1) -> Tensor");
  add(registry,
      "aten::conv1d.padding(Tensor input, Tensor weight, Tensor? bias=None, SymInt[1] "
      "stride=[1], str padding=\"valid\", SymInt[1] dilation=[1], SymInt groups=1) -> Tensor");
  add(registry,
      "aten::conv2d.padding(Tensor input, Tensor weight, Tensor? bias=None, SymInt[2] "
      "stride=[1, 1], str padding=\"valid\", SymInt[2] dilation=[1, 1], SymInt groups=1) -> "
      "Tensor");
  add(registry,
      "aten::conv3d.padding(Tensor input, Tensor weight, Tensor? bias=None, SymInt[3] "
      "stride=[1, 1, 1], str padding=\"valid\", SymInt[3] dilation=[1, 1, 1], SymInt groups=1) "
      "-> Tensor");
  add(registry,
      "aten::conv_transpose1d(Tensor input, Tensor weight, Tensor? bias=None, SymInt[1] "
      "stride=[1], SymInt[1] padding=[0], SymInt[1] output_padding=[0], SymInt groups=1, "
      "SymInt[1] dilation=[1]) -> Tensor");
  add(registry,
      "aten::conv_transpose2d.input(Tensor input, Tensor weight, Tensor? bias=None, SymInt[2] "
      "stride=[1, 1], SymInt[2] padding=[0, 0], SymInt[2] output_padding=[0, 0], SymInt "
      "groups=1, SymInt[2] dilation=[1, 1]) -> Tensor");
  add(registry,
      "aten::conv_transpose3d.input(Tensor input, Tensor weight, Tensor? bias=None, SymInt[3] "
      "stride=[1, 1, 1], SymInt[3] padding=[0, 0, 0], SymInt[3] output_padding=[0, 0, 0], "
      "SymInt groups=1, SymInt[3] dilation=[1, 1, 1]) -> Tensor");
  add(registry,
      "aten::_convolution(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] "
      "padding, SymInt[] dilation, bool transposed, SymInt[] output_padding, SymInt groups, "
      "bool benchmark, bool deterministic, bool cudnn_enabled, bool allow_tf32) -> Tensor");
  add(registry,
      "aten::convolution(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] "
      "padding, SymInt[] dilation, bool transposed, SymInt[] output_padding, SymInt groups) -> "
      "Tensor");
}

}  // namespace kiln

// Pooling family: max_pool1d/2d/3d (and the *_with_indices forms torch.export produces, when
// only the values are read), avg_pool1d/2d/3d, adaptive_avg_pool1d/2d/3d (and the _adaptive
// forms), adaptive_max_pool1d/2d (values only) -> Pooling layers. Inputs are (N, C, spatial...)
// or torch's unbatched (C, spatial...).
#include <string>
#include <vector>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

// A per-spatial-dim argument; torch repeats a single value for every spatial dim.
Dims perSpatialDim(const NodeArgs& args, const std::string& name, size_t rank) {
  std::vector<int64_t> values = args.getIntList(name);
  if (values.size() == 1 && rank > 1) values.assign(rank, values[0]);
  KILN_CHECK(values.size() == rank, args.node().qualifiedName(), ": '", name, "' has ",
             values.size(), " values for pooling over ", rank, " spatial dims");
  return values;
}

// True for torch's unbatched input (C, spatial...); throws for a rank that fits neither form.
bool isUnbatched(const NodeArgs& args, size_t spatialRank) {
  const int64_t rank = args.rank("self");
  const int64_t batched = static_cast<int64_t>(spatialRank) + 2;
  KILN_CHECK(rank == batched || rank == batched - 1, args.node().qualifiedName(),
             ": an input of rank ", rank, " does not fit pooling over ", spatialRank,
             " spatial dims");
  requireFloatTensors(args, {"self"}, "pooling");
  return rank == batched - 1;
}

void requireValuesOnly(const NodeArgs& args) {
  KILN_CHECK(!args.outputUsed(1), args.node().qualifiedName(),
             ": the indices output is used; Kiln computes the pooled values only");
}

void addPooling(ConversionContext& ctx, const NodeArgs& args, const PoolingParams& params,
                bool unbatched) {
  Tensor* x = ctx.tensor(args, "self");
  if (unbatched) x = unsqueeze(ctx, x, 0);
  Layer* layer = ctx.network().addPooling(x, params);
  ctx.nameLayer(layer);
  Tensor* out = layer->output(0);
  if (unbatched) out = squeezeDims(ctx, out, {0});
  ctx.setOutput(args, 0, out);
}

// ---- fixed windows ---------------------------------------------------------------------------

// The pooling parameters of a max_pool* or avg_pool* node with `spatialRank` spatial dims;
// throws for arguments torch would reject or Kiln cannot run.
PoolingParams windowParams(const NodeArgs& args, PoolingType type, size_t spatialRank) {
  const std::string op = args.node().qualifiedName();
  PoolingParams p;
  p.type = type;
  p.kernel = perSpatialDim(args, "kernel_size", spatialRank);
  p.stride =
      args.getIntList("stride").empty() ? p.kernel : perSpatialDim(args, "stride", spatialRank);
  p.prePadding = perSpatialDim(args, "padding", spatialRank);
  p.postPadding = p.prePadding;
  p.dilation = type == PoolingType::kMax ? perSpatialDim(args, "dilation", spatialRank)
                                         : Dims(spatialRank, 1);
  p.ceilMode = args.getBool("ceil_mode");
  if (type == PoolingType::kAverage) {
    p.countIncludePad = args.getBool("count_include_pad");
    KILN_CHECK(!args.has("divisor_override") || args.isNone("divisor_override"), op,
               ": divisor_override is not supported by Kiln's average pooling");
  }
  for (size_t d = 0; d < spatialRank; ++d) {
    KILN_CHECK(p.kernel[d] >= 1 && p.stride[d] >= 1 && p.dilation[d] >= 1, op,
               ": kernel size, stride and dilation must be positive");
    KILN_CHECK(p.prePadding[d] >= 0 && p.prePadding[d] <= p.kernel[d] / 2, op,
               ": padding must be at most half the kernel size (torch rejects it otherwise)");
  }
  return p;
}

template <PoolingType Type, size_t SpatialRank>
std::string checkWindow(const NodeArgs& args) {
  isUnbatched(args, SpatialRank);
  windowParams(args, Type, SpatialRank);
  if (args.node().outputs.size() > 1) requireValuesOnly(args);
  return "";
}

template <PoolingType Type, size_t SpatialRank>
void convertWindow(ConversionContext& ctx, const NodeArgs& args) {
  addPooling(ctx, args, windowParams(args, Type, SpatialRank), isUnbatched(args, SpatialRank));
}

// ---- adaptive --------------------------------------------------------------------------------

PoolingParams adaptiveParams(const NodeArgs& args, PoolingType type, size_t spatialRank) {
  PoolingParams p;
  p.type = type;
  p.adaptive = true;
  p.outputSize = perSpatialDim(args, "output_size", spatialRank);
  for (int64_t size : p.outputSize) {
    KILN_CHECK(size >= 1, args.node().qualifiedName(), ": output sizes must be positive");
  }
  return p;
}

template <PoolingType Type, size_t SpatialRank>
std::string checkAdaptive(const NodeArgs& args) {
  isUnbatched(args, SpatialRank);
  adaptiveParams(args, Type, SpatialRank);
  if (args.node().outputs.size() > 1) requireValuesOnly(args);
  return "";
}

template <PoolingType Type, size_t SpatialRank>
void convertAdaptive(ConversionContext& ctx, const NodeArgs& args) {
  addPooling(ctx, args, adaptiveParams(args, Type, SpatialRank), isUnbatched(args, SpatialRank));
}

template <PoolingType Type, size_t SpatialRank>
void addWindow(ConverterRegistry& registry, const char* schema) {
  registry.add({schema, convertWindow<Type, SpatialRank>, checkWindow<Type, SpatialRank>});
}

template <PoolingType Type, size_t SpatialRank>
void addAdaptive(ConverterRegistry& registry, const char* schema) {
  registry.add({schema, convertAdaptive<Type, SpatialRank>, checkAdaptive<Type, SpatialRank>});
}

constexpr PoolingType kMax = PoolingType::kMax;
constexpr PoolingType kAverage = PoolingType::kAverage;

}  // namespace

void registerPoolingConverters(ConverterRegistry& registry) {
  addWindow<kMax, 1>(registry,
                     "aten::max_pool1d(Tensor self, int[1] kernel_size, int[1] stride=[], int[1] "
                     "padding=[0], int[1] dilation=[1], bool ceil_mode=False) -> Tensor");
  addWindow<kMax, 2>(registry,
                     "aten::max_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], int[2] "
                     "padding=0, int[2] dilation=1, bool ceil_mode=False) -> Tensor");
  addWindow<kMax, 3>(registry,
                     "aten::max_pool3d(Tensor self, int[3] kernel_size, int[3] stride=[], int[3] "
                     "padding=0, int[3] dilation=1, bool ceil_mode=False) -> Tensor");
  addWindow<kMax, 1>(registry,
                     "aten::max_pool1d_with_indices(Tensor self, int[1] kernel_size, int[1] "
                     "stride=[], int[1] padding=[0], int[1] dilation=[1], bool ceil_mode=False) "
                     "-> (Tensor, Tensor)");
  addWindow<kMax, 2>(registry,
                     "aten::max_pool2d_with_indices(Tensor self, int[2] kernel_size, int[2] "
                     "stride=[], int[2] padding=0, int[2] dilation=1, bool ceil_mode=False) -> "
                     "(Tensor, Tensor)");
  addWindow<kMax, 3>(registry,
                     "aten::max_pool3d_with_indices(Tensor self, int[3] kernel_size, int[3] "
                     "stride=[], int[3] padding=0, int[3] dilation=1, bool ceil_mode=False) -> "
                     "(Tensor, Tensor)");
  addWindow<kAverage, 1>(registry,
                         "aten::avg_pool1d(Tensor self, int[1] kernel_size, int[1] stride=[], "
                         "int[1] padding=[0], bool ceil_mode=False, bool count_include_pad=True) "
                         "-> Tensor");
  addWindow<kAverage, 2>(registry,
                         "aten::avg_pool2d(Tensor self, int[2] kernel_size, int[2] stride=[], "
                         "int[2] padding=0, bool ceil_mode=False, bool count_include_pad=True, "
                         "int? divisor_override=None) -> Tensor");
  addWindow<kAverage, 3>(registry,
                         "aten::avg_pool3d(Tensor self, int[3] kernel_size, int[3] stride=[], "
                         "int[3] padding=0, bool ceil_mode=False, bool count_include_pad=True, "
                         "int? divisor_override=None) -> Tensor");
  addAdaptive<kAverage, 1>(registry,
                           "aten::adaptive_avg_pool1d(Tensor self, int[1] output_size) -> Tensor");
  addAdaptive<kAverage, 2>(
      registry, "aten::adaptive_avg_pool2d(Tensor self, SymInt[2] output_size) -> Tensor");
  addAdaptive<kAverage, 2>(
      registry, "aten::_adaptive_avg_pool2d(Tensor self, SymInt[2] output_size) -> Tensor");
  addAdaptive<kAverage, 3>(
      registry, "aten::adaptive_avg_pool3d(Tensor self, SymInt[3] output_size) -> Tensor");
  addAdaptive<kAverage, 3>(
      registry, "aten::_adaptive_avg_pool3d(Tensor self, SymInt[3] output_size) -> Tensor");
  addAdaptive<kMax, 1>(registry,
                       "aten::adaptive_max_pool1d(Tensor self, int[1] output_size) -> "
                       "(Tensor, Tensor)");
  addAdaptive<kMax, 2>(registry,
                       "aten::adaptive_max_pool2d(Tensor self, int[2] output_size) -> "
                       "(Tensor, Tensor)");
}

}  // namespace kiln

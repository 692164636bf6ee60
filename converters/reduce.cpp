// Reductions: sum, mean, prod (with their dtype argument), amax/amin, max/min over everything,
// the values of max.dim/min.dim, and any/all -> Reduce layers. The input is cast to the result
// dtype first, as torch accumulates in it (sum of bool or int32 counts in int64).
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "converters/conversion.h"
#include "converters/families.h"
#include "converters/helpers.h"
#include "converters/registry.h"

namespace kiln {

namespace {

// Which dims a node reduces; the schema's argument decides how it is read.
enum class DimArgument : uint8_t {
  kAll,             // no dim argument: every dim
  kOne,             // `int dim`
  kListAllIfEmpty,  // `int[1]? dim` / `int[1] dim=[]`: None or [] means every dim
};

struct ReduceSpec {
  ReduceOp op;
  DimArgument dims;
  bool toBool = false;  // any/all: computed on bool (max is "any", min is "all")
};

// The normalized axes (empty: every axis) and keepdim of a node; throws for dims torch rejects.
std::pair<Dims, bool> readAxes(const NodeArgs& args, DimArgument kind) {
  const int64_t rank = args.rank("self");
  std::vector<int64_t> dims;
  if (kind == DimArgument::kOne) {
    dims = {args.getInt("dim")};
  } else if (kind == DimArgument::kListAllIfEmpty && !args.isNone("dim")) {
    dims = args.getIntList("dim");
  }
  const bool keepDim = kind == DimArgument::kAll ? false : args.getBool("keepdim");
  Dims axes;
  std::set<int64_t> seen;
  for (int64_t dim : dims) {
    const int64_t axis = normalizeDim(dim, rank);
    KILN_CHECK(seen.insert(axis).second, args.node().qualifiedName(), ": dim ", dim,
               " appears twice");
    // A rank-0 tensor reduces over its one implicit dim: nothing to name.
    if (rank > 0) axes.push_back(axis);
  }
  return {axes, keepDim};
}

// The dtype torch reduces in: the result's, or bool for any/all.
DataType computeType(const NodeArgs& args, const ReduceSpec& spec) {
  return spec.toBool ? DataType::kBool : outputDataType(args, 0);
}

std::string checkReduce(const NodeArgs& args, const ReduceSpec& spec) {
  readAxes(args, spec.dims);
  const DataType type = computeType(args, spec);
  KILN_CHECK(isFloatingPoint(type) || isIntegral(type), args.node().qualifiedName(),
             ": Kiln's reduce kernels compute floating-point, integer and bool tensors, not ",
             toString(type));
  KILN_CHECK(spec.op != ReduceOp::kAvg || isFloatingPoint(type), args.node().qualifiedName(),
             ": mean of ", toString(type), " values is an error in torch");
  if (args.node().outputs.size() > 1) {
    KILN_CHECK(!args.outputUsed(1), args.node().qualifiedName(),
               ": the indices output is used; Kiln computes the reduced values only");
  }
  return "";
}

void convertReduce(ConversionContext& ctx, const NodeArgs& args, const ReduceSpec& spec) {
  auto [axes, keepDim] = readAxes(args, spec.dims);
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), computeType(args, spec));
  ReduceParams p;
  p.op = spec.op;
  p.axes = axes;
  p.keepDims = keepDim;
  Layer* layer = ctx.network().addReduce(x, p);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

void add(ConverterRegistry& registry, const char* schema, ReduceSpec spec) {
  registry.add(
      {schema,
       [spec](ConversionContext& ctx, const NodeArgs& args) { convertReduce(ctx, args, spec); },
       [spec](const NodeArgs& args) { return checkReduce(args, spec); }});
}

}  // namespace

void registerReduceConverters(ConverterRegistry& registry) {
  using D = DimArgument;
  add(registry,
      "aten::sum.dim_IntList(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? "
      "dtype=None) -> Tensor",
      {ReduceOp::kSum, D::kListAllIfEmpty});
  add(registry, "aten::sum(Tensor self, *, ScalarType? dtype=None) -> Tensor",
      {ReduceOp::kSum, D::kAll});
  add(registry,
      "aten::mean.dim(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? dtype=None) "
      "-> Tensor",
      {ReduceOp::kAvg, D::kListAllIfEmpty});
  add(registry, "aten::mean(Tensor self, *, ScalarType? dtype=None) -> Tensor",
      {ReduceOp::kAvg, D::kAll});
  add(registry,
      "aten::prod.dim_int(Tensor self, int dim, bool keepdim=False, *, ScalarType? dtype=None) "
      "-> Tensor",
      {ReduceOp::kProd, D::kOne});
  add(registry, "aten::prod(Tensor self, *, ScalarType? dtype=None) -> Tensor",
      {ReduceOp::kProd, D::kAll});
  add(registry, "aten::amax(Tensor self, int[1] dim=[], bool keepdim=False) -> Tensor",
      {ReduceOp::kMax, D::kListAllIfEmpty});
  add(registry, "aten::amin(Tensor self, int[1] dim=[], bool keepdim=False) -> Tensor",
      {ReduceOp::kMin, D::kListAllIfEmpty});
  add(registry,
      "aten::max.dim(Tensor self, int dim, bool keepdim=False) -> (Tensor values, Tensor "
      "indices)",
      {ReduceOp::kMax, D::kOne});
  add(registry,
      "aten::min.dim(Tensor self, int dim, bool keepdim=False) -> (Tensor values, Tensor "
      "indices)",
      {ReduceOp::kMin, D::kOne});
  add(registry, "aten::max(Tensor self) -> Tensor", {ReduceOp::kMax, D::kAll});
  add(registry, "aten::min(Tensor self) -> Tensor", {ReduceOp::kMin, D::kAll});
  add(registry, "aten::any.dim(Tensor self, int dim, bool keepdim=False) -> Tensor",
      {ReduceOp::kMax, D::kOne, true});
  add(registry, "aten::any.dims(Tensor self, int[]? dim=None, bool keepdim=False) -> Tensor",
      {ReduceOp::kMax, D::kListAllIfEmpty, true});
  add(registry, "aten::any(Tensor self) -> Tensor", {ReduceOp::kMax, D::kAll, true});
  add(registry, "aten::all.dim(Tensor self, int dim, bool keepdim=False) -> Tensor",
      {ReduceOp::kMin, D::kOne, true});
  add(registry, "aten::all(Tensor self) -> Tensor", {ReduceOp::kMin, D::kAll, true});
}

}  // namespace kiln

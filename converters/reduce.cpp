// Reductions: sum, mean, prod (with their dtype argument), amax/amin, max/min over everything,
// the values of max.dim/min.dim, and any/all -> Reduce layers. The input is cast to the result
// dtype first, as torch accumulates in it (sum of bool or int32 counts in int64).
//
// Composed of Reduce, Elementwise, Unary and Activation layers: var/std (and var_mean/std_mean)
// with any correction, logsumexp (max-subtracted), vector norms (linalg_vector_norm, norm) and
// argmax/argmin (the first index of the extreme, or of the first NaN, as torch).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
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

// `dims` normalized for a tensor of `rank`; throws for a dim given twice. A rank-0 tensor
// reduces over its one implicit dim: nothing to name.
Dims normalizedAxes(const NodeArgs& args, const std::vector<int64_t>& dims, int64_t rank) {
  Dims axes;
  std::set<int64_t> seen;
  for (int64_t dim : dims) {
    const int64_t axis = normalizeDim(dim, rank);
    KILN_CHECK(seen.insert(axis).second, args.node().qualifiedName(), ": dim ", dim,
               " appears twice");
    if (rank > 0) axes.push_back(axis);
  }
  return axes;
}

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
  return {normalizedAxes(args, dims, rank), keepDim};
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

// ---- helpers of the composed reductions ------------------------------------------------------

// Every axis of a tensor of `rank`.
Dims allAxes(int64_t rank) {
  Dims axes;
  for (int64_t axis = 0; axis < rank; ++axis) axes.push_back(axis);
  return axes;
}

// The normalized, distinct axes of the argument `name` (an int list): None, an empty list or an
// absent argument mean every axis.
Dims axesOf(const NodeArgs& args, const std::string& name) {
  const int64_t rank = args.rank("self");
  if (!args.has(name) || args.isNone(name)) return allAxes(rank);
  const std::vector<int64_t> dims = args.getIntList(name);
  if (dims.empty()) return allAxes(rank);
  return normalizedAxes(args, dims, rank);
}

bool keepDimOf(const NodeArgs& args) { return args.has("keepdim") && args.getBool("keepdim"); }

// The number of elements each output reduces over; throws when a reduced dim is dynamic.
int64_t reducedCount(const NodeArgs& args, const Dims& axes) {
  int64_t count = 1;
  for (int64_t axis : axes) {
    const SymInt& size = args.value("self").shape[static_cast<size_t>(axis)];
    KILN_CHECK(size.isStatic(), args.node().qualifiedName(), ": reduced dim ", axis,
               " is dynamic; Kiln needs its size");
    count *= size.opt;
  }
  return count;
}

Tensor* reduce(ConversionContext& ctx, Tensor* x, ReduceOp op, const Dims& axes, bool keepDim) {
  ReduceParams p;
  p.op = op;
  p.axes = axes;
  p.keepDims = keepDim;
  if (x->rank() == 0) return x;  // a rank-0 tensor reduces over its one element
  Layer* layer = ctx.network().addReduce(x, p);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// A keepdim result with the reduced axes removed unless keepDim.
Tensor* dropAxes(ConversionContext& ctx, Tensor* x, const Dims& axes, bool keepDim) {
  if (keepDim || axes.empty()) return x;
  return squeezeDims(ctx, x, std::vector<int64_t>(axes.begin(), axes.end()));
}

// The floating-point type the composed reductions compute in: float32 (torch's CPU kernels
// accumulate float16 and bfloat16 in it as well).
constexpr DataType kComputeType = DataType::kFloat32;

// ---- var, std, var_mean, std_mean -------------------------------------------------------------

struct MomentSpec {
  bool sqrt = false;      // std rather than var
  bool withMean = false;  // var_mean / std_mean: the mean is output 1
};

// `correction` (None means 1), or `unbiased` (1 or 0); overloads with neither default to 1.
double correctionOf(const NodeArgs& args) {
  if (args.has("correction")) return args.getOptionalDouble("correction").value_or(1.0);
  if (args.has("unbiased")) return args.getBool("unbiased") ? 1.0 : 0.0;
  return 1.0;
}

std::string checkMoments(const NodeArgs& args) {
  requireFloatTensors(args, {"self"}, "reduce");
  reducedCount(args, axesOf(args, "dim"));
  correctionOf(args);
  keepDimOf(args);
  return "";
}

// var = sum((x - mean)^2) / max(0, N - correction): two passes, as torch, so no cancellation;
// N - correction <= 0 divides by zero (NaN or inf, as torch).
void convertMoments(ConversionContext& ctx, const NodeArgs& args, MomentSpec spec) {
  const Dims axes = axesOf(args, "dim");
  const bool keepDim = keepDimOf(args);
  const double divisor =
      std::max(0.0, static_cast<double>(reducedCount(args, axes)) - correctionOf(args));
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), kComputeType);
  Tensor* mean = reduce(ctx, x, ReduceOp::kAvg, axes, true);
  Tensor* deviation = addElementwise(ctx, x, mean, ElementwiseOp::kSub, kComputeType);
  Tensor* squares = addElementwise(ctx, deviation, deviation, ElementwiseOp::kProd, kComputeType);
  Tensor* result =
      addElementwise(ctx, reduce(ctx, squares, ReduceOp::kSum, axes, keepDim),
                     ctx.scalar(divisor, kComputeType), ElementwiseOp::kDiv, kComputeType);
  if (spec.sqrt) result = addUnary(ctx, result, UnaryOp::kSqrt);
  ctx.setOutput(args, 0, castTo(ctx, result, outputDataType(args, 0)));
  if (spec.withMean) {
    ctx.setOutput(args, 1,
                  castTo(ctx, dropAxes(ctx, mean, axes, keepDim), outputDataType(args, 1)));
  }
}

// ---- logsumexp -------------------------------------------------------------------------------

std::string checkLogSumExp(const NodeArgs& args) {
  const c10::ScalarType type = args.dtype("self");
  KILN_CHECK(isComputedFloatType(type) || (c10::isIntegralType(type, false)),
             args.node().qualifiedName(), ": input of type ", c10::toString(type));
  std::string reason = requireFloatOutput(args);
  if (!reason.empty()) return reason;
  KILN_CHECK(!args.getIntList("dim").empty(), args.node().qualifiedName(),
             ": an empty dim list is an error in torch");
  axesOf(args, "dim");
  return "";
}

// m + log(sum(exp(x - m))) with m the max clamped to the finite range: an infinite max (all
// -inf, or some +inf) then gives -inf or +inf, as torch, instead of inf - inf = NaN.
void convertLogSumExp(ConversionContext& ctx, const NodeArgs& args) {
  const Dims axes = axesOf(args, "dim");
  const bool keepDim = keepDimOf(args);
  Tensor* x = castTo(ctx, ctx.tensor(args, "self"), kComputeType);
  const double finite = std::numeric_limits<float>::max();
  Tensor* shift = addActivation(ctx, reduce(ctx, x, ReduceOp::kMax, axes, true),
                                ActivationType::kClip, -finite, finite);
  Tensor* exps = addUnary(ctx, addElementwise(ctx, x, shift, ElementwiseOp::kSub, kComputeType),
                          UnaryOp::kExp);
  Tensor* logSum = addUnary(ctx, reduce(ctx, exps, ReduceOp::kSum, axes, true), UnaryOp::kLog);
  Tensor* result = addElementwise(ctx, logSum, shift, ElementwiseOp::kSum, kComputeType);
  ctx.setOutput(args, 0, castTo(ctx, dropAxes(ctx, result, axes, keepDim), outputDataType(args)));
}

// ---- vector norms ----------------------------------------------------------------------------

// linalg_vector_norm names the order `ord`, norm `p` (None means 2).
double orderOf(const NodeArgs& args) {
  if (args.has("ord")) return args.getDouble("ord");
  return args.getOptionalDouble("p").value_or(2.0);
}

std::string checkVectorNorm(const NodeArgs& args) {
  requireFloatTensors(args, {"self"}, "reduce");
  std::string reason = requireFloatOutput(args);
  if (!reason.empty()) return reason;
  const Dims axes = axesOf(args, "dim");
  if (std::isinf(orderOf(args)) || orderOf(args) < 0) {
    // max/min of an empty set is an error in torch.
    for (int64_t axis : axes) {
      const SymInt& size = args.value("self").shape[static_cast<size_t>(axis)];
      KILN_CHECK(size.min > 0, args.node().qualifiedName(), ": reduced dim ", axis,
                 " may be empty");
    }
  }
  return "";
}

// ord 2: sqrt(sum(x^2)); 1: sum(|x|); inf / -inf: max / min of |x|; 0: the count of non-zeros;
// any other p: sum(|x|^p)^(1/p).
void convertVectorNorm(ConversionContext& ctx, const NodeArgs& args) {
  const Dims axes = axesOf(args, "dim");
  const bool keepDim = keepDimOf(args);
  const double order = orderOf(args);
  const DataType type = kComputeType;
  // The dtype argument casts the input before the norm (torch's semantics).
  Tensor* x = castTo(ctx, castTo(ctx, ctx.tensor(args, "self"), outputDataType(args)), type);
  Tensor* magnitude = addUnary(ctx, x, UnaryOp::kAbs);
  Tensor* result = nullptr;
  if (order == 2.0) {
    Tensor* squares = addElementwise(ctx, x, x, ElementwiseOp::kProd, type);
    result = addUnary(ctx, reduce(ctx, squares, ReduceOp::kSum, axes, keepDim), UnaryOp::kSqrt);
  } else if (order == 1.0) {
    result = reduce(ctx, magnitude, ReduceOp::kSum, axes, keepDim);
  } else if (std::isinf(order)) {
    result = reduce(ctx, magnitude, order > 0 ? ReduceOp::kMax : ReduceOp::kMin, axes, keepDim);
  } else if (order == 0.0) {
    Tensor* zero =
        addElementwise(ctx, magnitude, ctx.scalar(0.0, type), ElementwiseOp::kEqual, type);
    Tensor* nonZero = castTo(ctx, addUnary(ctx, zero, UnaryOp::kNot), type);
    result = reduce(ctx, nonZero, ReduceOp::kSum, axes, keepDim);
  } else {
    Tensor* powers =
        addElementwise(ctx, magnitude, ctx.scalar(order, type), ElementwiseOp::kPow, type);
    result = addElementwise(ctx, reduce(ctx, powers, ReduceOp::kSum, axes, keepDim),
                            ctx.scalar(1.0 / order, type), ElementwiseOp::kPow, type);
  }
  ctx.setOutput(args, 0, castTo(ctx, result, outputDataType(args)));
}

// ---- argmax, argmin --------------------------------------------------------------------------

std::string checkArgExtreme(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  const c10::ScalarType type = args.dtype("self");
  KILN_CHECK(isComputedFloatType(type) || c10::isIntegralType(type, false), op, ": input of type ",
             c10::toString(type));
  const std::vector<SymInt>& shape = args.value("self").shape;
  const std::optional<int64_t> dim = args.getOptionalInt("dim");
  std::vector<SymInt> reduced = shape;
  if (dim && !shape.empty())
    reduced = {shape[static_cast<size_t>(normalizeDim(*dim, shape.size()))]};
  for (const SymInt& size : reduced) {
    KILN_CHECK(size.isStatic() && size.opt > 0, op,
               ": the reduced dims must be static and non-empty");
  }
  keepDimOf(args);
  return "";
}

// The first index along `axis` where x holds its extreme, or its first NaN:
//   hit   = x == extreme (and no NaN in the slice), or isnan(x)
//   index = min over the slice of (hit ? i : n), as i * hit + n * (1 - hit) in int64.
void convertArgExtreme(ConversionContext& ctx, const NodeArgs& args, ReduceOp extreme) {
  Tensor* x = ctx.tensor(args, "self");
  const int64_t inputRank = x->rank();
  const std::optional<int64_t> dim = args.getOptionalInt("dim");
  const bool keepDim = keepDimOf(args);
  if (!dim || inputRank == 0) x = reshape(ctx, x, {-1});
  const int64_t axis = dim && inputRank > 0 ? normalizeDim(*dim, inputRank) : 0;
  const DataType type = x->dtype();
  const int64_t n = x->dims()[static_cast<size_t>(axis)];
  Tensor* hit =
      addElementwise(ctx, x, reduce(ctx, x, extreme, {axis}, true), ElementwiseOp::kEqual, type);
  if (isFloatingPoint(type)) {
    Tensor* nan =
        addUnary(ctx, addElementwise(ctx, x, x, ElementwiseOp::kEqual, type), UnaryOp::kNot);
    Tensor* noNanInSlice =
        addUnary(ctx, reduce(ctx, nan, ReduceOp::kMax, {axis}, true), UnaryOp::kNot);
    hit = addElementwise(
        ctx, addElementwise(ctx, hit, noNanInSlice, ElementwiseOp::kAnd, DataType::kBool), nan,
        ElementwiseOp::kOr, DataType::kBool);
  }
  std::vector<int64_t> iotaShape(static_cast<size_t>(x->rank()), 1);
  iotaShape[static_cast<size_t>(axis)] = n;
  Tensor* iota = ctx.constant(at::arange(n, at::kLong).reshape(iotaShape));
  const DataType index = DataType::kInt64;
  Tensor* taken = castTo(ctx, hit, index);
  Tensor* missed = addElementwise(ctx, ctx.scalar(1.0, index), taken, ElementwiseOp::kSub, index);
  Tensor* candidates =
      addElementwise(ctx, addElementwise(ctx, iota, taken, ElementwiseOp::kProd, index),
                     addElementwise(ctx, missed, ctx.scalar(static_cast<double>(n), index),
                                    ElementwiseOp::kProd, index),
                     ElementwiseOp::kSum, index);
  Tensor* first = reduce(ctx, candidates, ReduceOp::kMin, {axis}, true);
  if (dim && inputRank > 0) {
    ctx.setOutput(args, 0, dropAxes(ctx, first, {axis}, keepDim));
  } else {
    // Over every element: keepdim gives all-ones dims of the input's rank, else a scalar.
    ctx.setOutput(args, 0,
                  reshape(ctx, first, Dims(static_cast<size_t>(keepDim ? inputRank : 0), 1)));
  }
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

  struct Moments {
    const char* schema;
    MomentSpec spec;
  };
  const Moments moments[] = {
      {"aten::var(Tensor self, bool unbiased=True) -> Tensor", {false, false}},
      {"aten::var.dim(Tensor self, int[1]? dim, bool unbiased=True, bool keepdim=False) -> Tensor",
       {false, false}},
      {"aten::var.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool "
       "keepdim=False) -> Tensor",
       {false, false}},
      {"aten::std(Tensor self, bool unbiased=True) -> Tensor", {true, false}},
      {"aten::std.dim(Tensor self, int[1]? dim, bool unbiased=True, bool keepdim=False) -> Tensor",
       {true, false}},
      {"aten::std.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool "
       "keepdim=False) -> Tensor",
       {true, false}},
      {"aten::var_mean(Tensor self, bool unbiased=True) -> (Tensor, Tensor)", {false, true}},
      {"aten::var_mean.dim(Tensor self, int[1]? dim, bool unbiased=True, bool keepdim=False) -> "
       "(Tensor, Tensor)",
       {false, true}},
      {"aten::var_mean.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool "
       "keepdim=False) -> (Tensor, Tensor)",
       {false, true}},
      {"aten::std_mean(Tensor self, bool unbiased=True) -> (Tensor, Tensor)", {true, true}},
      {"aten::std_mean.dim(Tensor self, int[1]? dim, bool unbiased=True, bool keepdim=False) -> "
       "(Tensor, Tensor)",
       {true, true}},
      {"aten::std_mean.correction(Tensor self, int[1]? dim=None, *, Scalar? correction=None, bool "
       "keepdim=False) -> (Tensor, Tensor)",
       {true, true}},
  };
  for (const Moments& m : moments) {
    const MomentSpec spec = m.spec;
    registry.add(
        {m.schema,
         [spec](ConversionContext& ctx, const NodeArgs& args) { convertMoments(ctx, args, spec); },
         checkMoments});
  }
  registry.add({"aten::logsumexp(Tensor self, int[1] dim, bool keepdim=False) -> Tensor",
                convertLogSumExp, checkLogSumExp});
  registry.add(
      {"aten::linalg_vector_norm(Tensor self, Scalar ord=2, int[1]? dim=None, bool "
       "keepdim=False, *, ScalarType? dtype=None) -> Tensor",
       convertVectorNorm, checkVectorNorm});
  registry.add(
      {"aten::norm.Scalar(Tensor self, Scalar p=2) -> Tensor", convertVectorNorm, checkVectorNorm});
  registry.add(
      {"aten::norm.ScalarOpt_dim(Tensor self, Scalar? p, int[1] dim, bool "
       "keepdim=False) -> Tensor",
       convertVectorNorm, checkVectorNorm});
  registry.add({"aten::argmax(Tensor self, int? dim=None, bool keepdim=False) -> Tensor",
                [](ConversionContext& ctx, const NodeArgs& args) {
                  convertArgExtreme(ctx, args, ReduceOp::kMax);
                },
                checkArgExtreme});
  registry.add({"aten::argmin(Tensor self, int? dim=None, bool keepdim=False) -> Tensor",
                [](ConversionContext& ctx, const NodeArgs& args) {
                  convertArgExtreme(ctx, args, ReduceOp::kMin);
                },
                checkArgExtreme});
}

}  // namespace kiln

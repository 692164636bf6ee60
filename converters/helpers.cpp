#include "converters/helpers.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace kiln {

// ---- dims --------------------------------------------------------------------------------------

Dims toDims(const std::vector<SymInt>& shape) {
  Dims dims;
  dims.reserve(shape.size());
  for (const SymInt& size : shape) dims.push_back(size.isStatic() ? size.opt : kDynamic);
  return dims;
}

int64_t normalizeDim(int64_t dim, int64_t rank) {
  const int64_t wrapped = std::max<int64_t>(rank, 1);
  KILN_CHECK(dim >= -wrapped && dim < wrapped, "dim ", dim, " is out of range for a rank-", rank,
             " tensor (expected [", -wrapped, ", ", wrapped - 1, "])");
  return dim < 0 ? dim + wrapped : dim;
}

std::optional<Dims> shuffleReshapeDims(const std::vector<SymInt>& from,
                                       const std::vector<SymInt>& to) {
  Dims dims;
  bool inferred = false;
  for (size_t j = 0; j < to.size(); ++j) {
    const SymInt& size = to[j];
    if (j < from.size() && !size.isStatic() && from[j].symbol == size.symbol) {
      dims.push_back(0);
    } else if (size.isStatic()) {
      // 0 would mean "copy"; an empty tensor is not something to build an engine for.
      if (size.opt <= 0) return std::nullopt;
      dims.push_back(size.opt);
    } else if (!inferred) {
      dims.push_back(-1);
      inferred = true;
    } else {
      return std::nullopt;
    }
  }
  return dims;
}

// ---- dtypes ------------------------------------------------------------------------------------

bool isWrappedScalarConstant(const OpValue& value) {
  return value.constant && value.constant->isTensor() && value.constant->toTensor().dim() == 0 &&
         value.constant->toTensor().scalar_type() == c10::ScalarType::Double;
}

DataType outputDataType(const NodeArgs& args, size_t i) { return toDataType(args.output(i).dtype); }

namespace {

// torch's combine_categories (aten/src/ATen/native/TypeProperties.cpp): a lower-priority operand
// only matters when it is of a higher category.
c10::ScalarType combineCategories(c10::ScalarType higher, c10::ScalarType lower) {
  if (c10::isFloatingType(higher)) return higher;
  if (higher == c10::ScalarType::Bool || c10::isFloatingType(lower)) {
    if (higher == c10::ScalarType::Undefined) return lower;
    if (lower == c10::ScalarType::Undefined) return higher;
    return c10::promoteTypes(higher, lower);
  }
  return higher != c10::ScalarType::Undefined ? higher : lower;
}

c10::ScalarType promoteSkipUndefined(c10::ScalarType a, c10::ScalarType b) {
  if (a == c10::ScalarType::Undefined) return b;
  if (b == c10::ScalarType::Undefined) return a;
  return c10::promoteTypes(a, b);
}

}  // namespace

c10::ScalarType resultScalarType(const NodeArgs& args, const std::vector<std::string>& names) {
  c10::ScalarType dimResult = c10::ScalarType::Undefined;
  c10::ScalarType zeroResult = c10::ScalarType::Undefined;
  c10::ScalarType wrappedResult = c10::ScalarType::Undefined;
  for (const std::string& name : names) {
    if (args.isNone(name)) continue;
    const OpValue& v = args.value(name);
    if (isWrappedScalarConstant(v)) {
      wrappedResult = promoteSkipUndefined(wrappedResult, c10::ScalarType::Float);
    } else if (v.isTensor()) {
      if (v.shape.empty()) {
        zeroResult = promoteSkipUndefined(zeroResult, v.dtype);
      } else {
        dimResult = promoteSkipUndefined(dimResult, v.dtype);
      }
    } else if (v.constant && v.constant->isDouble()) {
      wrappedResult = promoteSkipUndefined(wrappedResult, c10::ScalarType::Float);
    } else if (v.constant && v.constant->isBool()) {
      wrappedResult = promoteSkipUndefined(wrappedResult, c10::ScalarType::Bool);
    } else if ((v.constant && v.constant->isInt()) || v.shapeInt) {
      wrappedResult = promoteSkipUndefined(wrappedResult, c10::ScalarType::Long);
    } else {
      throw Error(concat(args.node().qualifiedName(), ": argument '", name,
                         "' is neither a tensor nor a number"));
    }
  }
  return combineCategories(dimResult, combineCategories(zeroResult, wrappedResult));
}

DataType resultDataType(const NodeArgs& args, const std::vector<std::string>& names) {
  return toDataType(resultScalarType(args, names));
}

bool namesGraphDevice(const NodeArgs& args) {
  if (!args.isConstant("device")) return false;
  const c10::IValue& constant = *args.value("device").constant;
  const c10::Device named =
      constant.isString() ? c10::Device(constant.toStringRef()) : constant.toDevice();
  const c10::Device& engine = args.graph().device();
  return named.type() == engine.type() &&
         (!named.has_index() || !engine.has_index() || named.index() == engine.index());
}

Tensor* castTo(ConversionContext& ctx, Tensor* x, DataType dtype) {
  if (x->dtype() == dtype) return x;
  Layer* layer = ctx.network().addCast(x, dtype);
  ctx.nameLayer(layer, "cast");
  return layer->output(0);
}

// ---- shuffles ----------------------------------------------------------------------------------

Tensor* reshape(ConversionContext& ctx, Tensor* x, const Dims& dims) {
  ShuffleParams params;
  params.hasReshape = true;
  params.reshapeDims = dims;
  Layer* layer = ctx.network().addShuffle(x, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

Tensor* permute(ConversionContext& ctx, Tensor* x, const Dims& permutation) {
  ShuffleParams params;
  params.firstPermutation = permutation;
  Layer* layer = ctx.network().addShuffle(x, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

namespace {

// A reshape that keeps the order of x's dims and only inserts or removes size-1 dims: output
// dim j is input dim source[j], or a new size-1 dim where source[j] is -1. Input dims that no
// output dim names must have size 1.
Tensor* rearrangeUnitDims(ConversionContext& ctx, Tensor* x, const std::vector<int64_t>& source) {
  const Dims& in = x->dims();
  Dims dims;
  int inferred = 0;
  for (size_t j = 0; j < source.size(); ++j) {
    const int64_t i = source[j];
    if (i < 0) {
      dims.push_back(1);
    } else if (i == static_cast<int64_t>(j)) {
      dims.push_back(0);
    } else if (in[static_cast<size_t>(i)] != kDynamic) {
      dims.push_back(in[static_cast<size_t>(i)]);
    } else {
      dims.push_back(-1);
      ++inferred;
    }
  }
  if (inferred <= 1) return reshape(ctx, x, dims);

  // Several dynamic dims move: transpose the kept dims to the front (in order), reshape so that
  // they are copied in place and the new size-1 dims follow, then transpose into position.
  ShuffleParams params;
  std::vector<int64_t> kept;
  for (int64_t i : source) {
    if (i >= 0) kept.push_back(i);
  }
  params.firstPermutation = kept;
  for (int64_t i = 0; i < x->rank(); ++i) {
    if (std::find(kept.begin(), kept.end(), i) == kept.end()) params.firstPermutation.push_back(i);
  }
  params.hasReshape = true;
  params.reshapeDims.assign(kept.size(), 0);
  int64_t newDim = static_cast<int64_t>(kept.size());
  int64_t keptDim = 0;
  for (int64_t i : source) {
    if (i < 0) {
      params.reshapeDims.push_back(1);
      params.secondPermutation.push_back(newDim++);
    } else {
      params.secondPermutation.push_back(keptDim++);
    }
  }
  Layer* layer = ctx.network().addShuffle(x, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

}  // namespace

Tensor* unsqueeze(ConversionContext& ctx, Tensor* x, int64_t dim) {
  KILN_CHECK(dim >= 0 && dim <= x->rank(), "unsqueeze dim ", dim, " is out of range for rank ",
             x->rank());
  std::vector<int64_t> source;
  for (int64_t i = 0; i < x->rank(); ++i) {
    if (i == dim) source.push_back(-1);
    source.push_back(i);
  }
  if (dim == x->rank()) source.push_back(-1);
  return rearrangeUnitDims(ctx, x, source);
}

Tensor* squeezeDims(ConversionContext& ctx, Tensor* x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> source;
  for (int64_t i = 0; i < x->rank(); ++i) {
    if (std::find(dims.begin(), dims.end(), i) == dims.end()) {
      source.push_back(i);
    } else {
      KILN_CHECK(x->dims()[static_cast<size_t>(i)] == 1, "squeezing dim ", i, " of ",
                 toString(x->dims()), ", which is not of size 1");
    }
  }
  return rearrangeUnitDims(ctx, x, source);
}

Tensor* padRankTo(ConversionContext& ctx, Tensor* x, int64_t rank) {
  if (x->rank() >= rank) return x;
  std::vector<int64_t> source(static_cast<size_t>(rank - x->rank()), -1);
  for (int64_t i = 0; i < x->rank(); ++i) source.push_back(i);
  return rearrangeUnitDims(ctx, x, source);
}

std::pair<Tensor*, Tensor*> alignRanks(ConversionContext& ctx, Tensor* a, Tensor* b) {
  const int64_t rank = std::max(a->rank(), b->rank());
  return {padRankTo(ctx, a, rank), padRankTo(ctx, b, rank)};
}

namespace {

// The tensor whose dim `axis` is the dynamic size `size` at run time; throws when the engine
// has none (the capability check, requireDimSource, rules that out).
std::pair<Tensor*, int64_t> dimSourceOf(ConversionContext& ctx, const SymInt& size) {
  std::optional<std::pair<Tensor*, int64_t>> source = ctx.dimSource(size.symbol);
  KILN_CHECK(source.has_value(), "no tensor of this engine has a dim of size ", size.symbol);
  return *source;
}

}  // namespace

Tensor* broadcastTo(ConversionContext& ctx, Tensor* x, const std::vector<SymInt>& target) {
  x = padRankTo(ctx, x, static_cast<int64_t>(target.size()));
  for (size_t d = 0; d < target.size(); ++d) {
    if (x->dims()[d] != 1 || (target[d].isStatic() && target[d].opt == 1)) continue;
    SliceParams params;
    params.axes = {static_cast<int64_t>(d)};
    params.starts = {0};
    params.steps = {0};
    Layer* layer = nullptr;
    if (target[d].isStatic()) {
      params.ends = {target[d].opt};
      layer = ctx.network().addSlice(x, params);
    } else {
      auto [reference, dim] = dimSourceOf(ctx, target[d]);
      params.ends = {0};
      params.endReferences = {dim};
      layer = ctx.network().addSlice(x, reference, params);
    }
    ctx.nameLayer(layer);
    x = layer->output(0);
  }
  return x;
}

Tensor* sliceToDynamicEnd(ConversionContext& ctx, Tensor* x, int64_t axis, int64_t start,
                          int64_t step, const SymInt& end) {
  auto [reference, dim] = dimSourceOf(ctx, end);
  SliceParams params;
  params.axes = {axis};
  params.starts = {start};
  params.ends = {0};
  params.steps = {step};
  params.endReferences = {dim};
  Layer* layer = ctx.network().addSlice(x, reference, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// ---- layers ------------------------------------------------------------------------------------

Tensor* addElementwise(ConversionContext& ctx, Tensor* a, Tensor* b, ElementwiseOp op,
                       DataType computeType) {
  auto [left, right] = alignRanks(ctx, castTo(ctx, a, computeType), castTo(ctx, b, computeType));
  Layer* layer = ctx.network().addElementwise(left, right, op);
  ctx.nameLayer(layer);
  return layer->output(0);
}

Tensor* addUnary(ConversionContext& ctx, Tensor* x, UnaryOp op) {
  Layer* layer = ctx.network().addUnary(x, op);
  ctx.nameLayer(layer);
  return layer->output(0);
}

Tensor* addActivation(ConversionContext& ctx, Tensor* x, ActivationType type, double alpha,
                      double beta) {
  ActivationParams params;
  params.type = type;
  params.alpha = alpha;
  params.beta = beta;
  Layer* layer = ctx.network().addActivation(x, params);
  ctx.nameLayer(layer);
  return layer->output(0);
}

Tensor* operandTensor(ConversionContext& ctx, const NodeArgs& args, const std::string& name,
                      DataType dtype) {
  const OpValue& v = args.value(name);
  if (isWrappedScalarConstant(v)) return ctx.scalar(v.constant->toTensor().item<double>(), dtype);
  if (v.isTensor()) return castTo(ctx, ctx.tensor(v.id), dtype);
  return ctx.scalar(args.getDouble(name), dtype);
}

// ---- capability checks -------------------------------------------------------------------------

std::string requireStaticShapes(const NodeArgs& args, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (args.isNone(name)) continue;
    const OpValue& v = args.value(name);
    if (!v.isTensor()) continue;
    for (const SymInt& size : v.shape) {
      if (!size.isStatic()) {
        return concat("argument '", name, "' has a dynamic dim (", size.symbol,
                      "); this converter needs static shapes");
      }
    }
  }
  return "";
}

std::string requireDimSource(const NodeArgs& args, const SymInt& size) {
  if (size.isStatic() || args.graph().symbolSource(size.symbol)) return "";
  return concat("the size ", size.symbol, " is not a dim of any input of the graph");
}

std::string requireConstants(const NodeArgs& args, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (!args.isConstant(name)) {
      return concat("argument '", name, "' must be known at build time");
    }
  }
  return "";
}

std::string inPlaceReason(const NodeArgs& args) {
  const OpGraph& graph = args.graph();
  const OpValue& self = args.value("self");
  if (self.constant) return "mutates a constant in place";
  if (graph.isGraphOutput(self.id)) return "mutates a graph output in place";
  for (int input : graph.inputs()) {
    if (input == self.id) return "mutates a graph input in place, which the caller would see";
  }
  for (int user : graph.users(self.id)) {
    if (user > args.node().id) {
      return concat("mutates '", self.name, "' in place and ", graph.node(user).qualifiedName(),
                    " reads it afterwards");
    }
  }
  return "";
}

CheckFn inPlaceCheck(CheckFn check) {
  return [check = std::move(check)](const NodeArgs& args) {
    std::string reason = inPlaceReason(args);
    if (reason.empty() && check) reason = check(args);
    return reason;
  };
}

bool isComputedFloatType(c10::ScalarType type) {
  return type == c10::ScalarType::Float || type == c10::ScalarType::Half ||
         type == c10::ScalarType::BFloat16;
}

void requireFloatTensors(const NodeArgs& args, const std::vector<std::string>& names,
                         const std::string& kernels, bool sameType) {
  const std::string op = args.node().qualifiedName();
  const std::string* first = nullptr;
  for (const std::string& name : names) {
    if (args.isNone(name)) continue;
    const OpValue& value = args.value(name);
    KILN_CHECK(value.isTensor() || (value.constant && value.constant->isTensor()), op,
               ": argument '", name, "' is not a tensor");
    const c10::ScalarType type = args.dtype(name);
    KILN_CHECK(isComputedFloatType(type), op, ": argument '", name, "' is ", c10::toString(type),
               "; Kiln's ", kernels, " kernels compute float32, float16 and bfloat16");
    if (first == nullptr) {
      first = &name;
    } else if (sameType) {
      KILN_CHECK(args.dtype(*first) == type, op, ": arguments '", *first, "' (",
                 c10::toString(args.dtype(*first)), ") and '", name, "' (", c10::toString(type),
                 ") differ in dtype");
    }
  }
}

std::string requireFloatOutput(const NodeArgs& args, size_t i) {
  const c10::ScalarType type = args.output(i).dtype;
  if (c10::isFloatingType(type)) return "";
  return concat("computes in ", c10::toString(type), "; this converter supports floating-point ",
                "results only");
}

}  // namespace kiln

// Matrix products: aten::mm, aten::bmm, aten::matmul (every rank torch accepts), aten::linear
// (TorchScript, and torch.export when Kiln keeps it whole) and aten::addmm (what torch.export
// makes of linear: bias + input @ weight.T, with beta and alpha) -> MatMul / FullyConnected
// layers. (aten::t and the permutes around them belong to the shape family.)
//
// Also baddbmm, addbmm, mv, addmv, dot, outer/ger, and einsum, which is lowered to Reduce (labels
// only one operand has and the output lacks), Shuffle and batched MatMul layers, one operand
// pair at a time from the left.
#include <algorithm>
#include <map>
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

void requireFloatOperands(const NodeArgs& args, const std::vector<std::string>& names) {
  requireFloatTensors(args, names, "matrix");
}

void requireRank(const NodeArgs& args, const std::string& name, int64_t rank) {
  KILN_CHECK(args.rank(name) == rank, args.node().qualifiedName(), ": argument '", name,
             "' has rank ", args.rank(name), " where ", rank, " is expected");
}

Tensor* matmul(ConversionContext& ctx, Tensor* a, Tensor* b) {
  Layer* layer = ctx.network().addMatMul(a, b);
  ctx.nameLayer(layer);
  return layer->output(0);
}

// ---- mm, bmm ---------------------------------------------------------------------------------

std::string checkMm(const NodeArgs& args) {
  requireFloatOperands(args, {"self", "mat2"});
  requireRank(args, "self", 2);
  requireRank(args, "mat2", 2);
  return "";
}

std::string checkBmm(const NodeArgs& args) {
  requireFloatOperands(args, {"self", "mat2"});
  requireRank(args, "self", 3);
  requireRank(args, "mat2", 3);
  return "";
}

void convertMmOrBmm(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, matmul(ctx, ctx.tensor(args, "self"), ctx.tensor(args, "mat2")));
}

// ---- matmul ----------------------------------------------------------------------------------

std::string checkMatmul(const NodeArgs& args) {
  requireFloatOperands(args, {"self", "other"});
  KILN_CHECK(args.rank("self") >= 1 && args.rank("other") >= 1, "aten::matmul of a rank-0 ",
             "tensor is an error in torch");
  return "";
}

// torch.matmul: 1-d operands get a unit dim (prepended for the left, appended for the right)
// that is removed from the result; higher ranks broadcast their batch dims.
void convertMatmul(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* a = ctx.tensor(args, "self");
  Tensor* b = ctx.tensor(args, "other");
  const int64_t aRank = a->rank();
  const int64_t bRank = b->rank();
  if (aRank == 1 && bRank == 1) {
    Tensor* product = matmul(ctx, unsqueeze(ctx, a, 0), unsqueeze(ctx, b, 1));
    ctx.setOutput(args, 0, squeezeDims(ctx, product, {0, 1}));
    return;
  }
  if (bRank == 1) {
    // (..., M, K) x (K, 1) -> (..., M, 1) -> (..., M)
    Tensor* product = matmul(ctx, a, unsqueeze(ctx, b, 1));
    ctx.setOutput(args, 0, squeezeDims(ctx, product, {aRank - 1}));
    return;
  }
  if (aRank == 1) {
    // (1, K) x (..., K, N) -> (..., 1, N) -> (..., N)
    Tensor* product = matmul(ctx, unsqueeze(ctx, a, 0), b);
    ctx.setOutput(args, 0, squeezeDims(ctx, product, {bRank - 2}));
    return;
  }
  auto [left, right] = alignRanks(ctx, a, b);
  ctx.setOutput(args, 0, matmul(ctx, left, right));
}

// ---- linear ----------------------------------------------------------------------------------

std::string checkLinear(const NodeArgs& args) {
  requireFloatOperands(args, {"input", "weight", "bias"});
  KILN_CHECK(args.rank("input") >= 1, "aten::linear needs an input of rank >= 1");
  requireRank(args, "weight", 2);
  if (!args.isNone("bias")) {
    requireRank(args, "bias", 1);
    const SymInt& features = args.value("weight").shape[0];
    const SymInt& biasSize = args.value("bias").shape[0];
    KILN_CHECK(features.isStatic() && biasSize.isStatic() && features.opt == biasSize.opt,
               "aten::linear: the bias must have one value per output feature");
  }
  return "";
}

void convertLinear(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* bias = args.isNone("bias") ? nullptr : ctx.tensor(args, "bias");
  Layer* layer =
      ctx.network().addFullyConnected(ctx.tensor(args, "input"), ctx.tensor(args, "weight"), bias);
  ctx.nameLayer(layer);
  ctx.setOutput(args, 0, layer->output(0));
}

// ---- addmm -----------------------------------------------------------------------------------

std::string checkAddmm(const NodeArgs& args) {
  requireFloatOperands(args, {"self", "mat1", "mat2"});
  requireRank(args, "mat1", 2);
  requireRank(args, "mat2", 2);
  KILN_CHECK(args.rank("self") <= 2, "aten::addmm: self of rank ", args.rank("self"),
             " does not broadcast to a matrix");
  args.getDouble("beta");
  args.getDouble("alpha");
  return "";
}

// beta * self + alpha * product; with beta == 0, self is ignored (even NaN), as in torch.
Tensor* addScaled(ConversionContext& ctx, const NodeArgs& args, Tensor* product) {
  const double beta = args.getDouble("beta");
  const double alpha = args.getDouble("alpha");
  const DataType type = product->dtype();
  if (alpha != 1.0) {
    product = addElementwise(ctx, product, ctx.scalar(alpha, type), ElementwiseOp::kProd, type);
  }
  if (beta != 0.0) {
    Tensor* self = ctx.tensor(args, "self");
    if (beta != 1.0) {
      self = addElementwise(ctx, self, ctx.scalar(beta, type), ElementwiseOp::kProd, type);
    }
    product = addElementwise(ctx, self, product, ElementwiseOp::kSum, type);
  }
  return product;
}

void convertAddmm(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(
      args, 0,
      addScaled(ctx, args, matmul(ctx, ctx.tensor(args, "mat1"), ctx.tensor(args, "mat2"))));
}

// ---- baddbmm, addbmm -------------------------------------------------------------------------

std::string checkAddBatched(const NodeArgs& args, int64_t maxSelfRank) {
  const std::string op = args.node().qualifiedName();
  requireFloatOperands(args, {"self", "batch1", "batch2"});
  requireRank(args, "batch1", 3);
  requireRank(args, "batch2", 3);
  KILN_CHECK(args.rank("self") <= maxSelfRank, op, ": self of rank ", args.rank("self"),
             " does not broadcast to the product");
  args.getDouble("beta");
  args.getDouble("alpha");
  return "";
}

// beta * self + alpha * (batch1 @ batch2)
void convertBaddbmm(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* product = matmul(ctx, ctx.tensor(args, "batch1"), ctx.tensor(args, "batch2"));
  ctx.setOutput(args, 0, addScaled(ctx, args, product));
}

std::string checkAddbmm(const NodeArgs& args) {
  checkAddBatched(args, 2);
  KILN_CHECK(args.value("batch2").shape[2].isStatic(), args.node().qualifiedName(),
             ": batch2's last dim is dynamic");
  return "";
}

// beta * self + alpha * sum_b(batch1[b] @ batch2[b]): the sum over b is one product over the
// merged (b, k) dims: (N, B*K) @ (B*K, P).
void convertAddbmm(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* left = reshape(ctx, permute(ctx, ctx.tensor(args, "batch1"), {1, 0, 2}), {0, -1});
  Tensor* right = reshape(ctx, ctx.tensor(args, "batch2"), {-1, args.value("batch2").shape[2].opt});
  ctx.setOutput(args, 0, addScaled(ctx, args, matmul(ctx, left, right)));
}

// ---- mv, addmv, dot, outer -------------------------------------------------------------------

std::string checkMv(const NodeArgs& args) {
  const std::string mat = args.has("mat") ? "mat" : "self";
  requireFloatOperands(args, {mat, "vec"});
  requireRank(args, mat, 2);
  requireRank(args, "vec", 1);
  if (args.has("mat")) {
    requireFloatOperands(args, {"self", "mat"});
    KILN_CHECK(args.rank("self") <= 1, "aten::addmv: self of rank ", args.rank("self"),
               " does not broadcast to a vector");
    args.getDouble("beta");
    args.getDouble("alpha");
  }
  return "";
}

// (N, M) @ (M, 1) -> (N)
Tensor* matrixVector(ConversionContext& ctx, Tensor* mat, Tensor* vec) {
  return squeezeDims(ctx, matmul(ctx, mat, unsqueeze(ctx, vec, 1)), {1});
}

void convertMv(ConversionContext& ctx, const NodeArgs& args) {
  ctx.setOutput(args, 0, matrixVector(ctx, ctx.tensor(args, "self"), ctx.tensor(args, "vec")));
}

void convertAddmv(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* product = matrixVector(ctx, ctx.tensor(args, "mat"), ctx.tensor(args, "vec"));
  ctx.setOutput(args, 0, addScaled(ctx, args, product));
}

std::string checkDot(const NodeArgs& args) {
  requireFloatOperands(args, {"self", "tensor"});
  requireRank(args, "self", 1);
  requireRank(args, "tensor", 1);
  return "";
}

// (1, K) @ (K, 1) -> a scalar
void convertDot(ConversionContext& ctx, const NodeArgs& args) {
  Tensor* product = matmul(ctx, unsqueeze(ctx, ctx.tensor(args, "self"), 0),
                           unsqueeze(ctx, ctx.tensor(args, "tensor"), 1));
  ctx.setOutput(args, 0, squeezeDims(ctx, product, {0, 1}));
}

std::string checkOuter(const NodeArgs& args) {
  requireRank(args, "self", 1);
  requireRank(args, "vec2", 1);
  if (args.output().dtype == c10::ScalarType::Bool) return "outer of bool tensors";
  return "";
}

// torch computes outer as self[:, None] * vec2[None, :]: the exact products, in any dtype.
void convertOuter(ConversionContext& ctx, const NodeArgs& args) {
  const DataType type = outputDataType(args);
  Tensor* column = unsqueeze(ctx, castTo(ctx, ctx.tensor(args, "self"), type), 1);
  Tensor* row = castTo(ctx, ctx.tensor(args, "vec2"), type);
  ctx.setOutput(args, 0, addElementwise(ctx, column, row, ElementwiseOp::kProd, type));
}

// ---- einsum ----------------------------------------------------------------------------------

// Labels: 'A'-'Z' are 0-25 and 'a'-'z' 26-51 (the order of torch's implicit output); the dims an
// ellipsis stands for are kEllipsisLabel, kEllipsisLabel + 1, ..., right-aligned across operands.
constexpr int kEllipsisLabel = 52;
using Labels = std::vector<int>;

struct EinsumEquation {
  std::vector<Labels> operands;
  Labels output;
};

// One term's labels, with kEllipsisLabel - 1 where its "..." stands.
Labels parseTerm(const std::string& term, const std::string& equation) {
  Labels labels;
  bool ellipsis = false;
  for (size_t i = 0; i < term.size(); ++i) {
    const char c = term[i];
    if (c == '.') {
      KILN_CHECK(!ellipsis && term.compare(i, 3, "...") == 0,
                 "aten::einsum: malformed ellipsis in '", equation, "'");
      ellipsis = true;
      labels.push_back(kEllipsisLabel - 1);
      i += 2;
    } else if (c >= 'A' && c <= 'Z') {
      labels.push_back(c - 'A');
    } else if (c >= 'a' && c <= 'z') {
      labels.push_back(26 + (c - 'a'));
    } else {
      KILN_CHECK(c == ' ', "aten::einsum: invalid subscript '", c, "' in '", equation, "'");
    }
  }
  return labels;
}

// The term with its ellipsis replaced by the labels of its `count` (right-aligned) dims out of
// `total`.
Labels expandEllipsis(const Labels& term, int64_t count, int64_t total) {
  Labels labels;
  for (int label : term) {
    if (label != kEllipsisLabel - 1) {
      labels.push_back(label);
      continue;
    }
    for (int64_t i = total - count; i < total; ++i) {
      labels.push_back(kEllipsisLabel + static_cast<int>(i));
    }
  }
  return labels;
}

EinsumEquation parseEinsum(const std::string& equation, const std::vector<int64_t>& ranks) {
  const size_t arrow = equation.find("->");
  const std::string lhs = equation.substr(0, arrow);
  std::vector<Labels> terms;
  size_t start = 0;
  while (true) {
    const size_t comma = lhs.find(',', start);
    terms.push_back(parseTerm(lhs.substr(start, comma - start), equation));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  KILN_CHECK(terms.size() == ranks.size(), "aten::einsum: '", equation, "' has ", terms.size(),
             " operand terms for ", ranks.size(), " operands");
  const int ellipsisMarker = kEllipsisLabel - 1;
  std::vector<int64_t> ellipsisDims(terms.size(), 0);
  int64_t maxEllipsisDims = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    const bool hasEllipsis =
        std::find(terms[i].begin(), terms[i].end(), ellipsisMarker) != terms[i].end();
    const int64_t letters = static_cast<int64_t>(terms[i].size()) - (hasEllipsis ? 1 : 0);
    KILN_CHECK(hasEllipsis ? ranks[i] >= letters : ranks[i] == letters, "aten::einsum: term ", i,
               " of '", equation, "' does not match an operand of rank ", ranks[i]);
    if (hasEllipsis) ellipsisDims[i] = ranks[i] - letters;
    maxEllipsisDims = std::max(maxEllipsisDims, ellipsisDims[i]);
  }
  EinsumEquation result;
  std::map<int, int> uses;
  for (size_t i = 0; i < terms.size(); ++i) {
    Labels labels = expandEllipsis(terms[i], ellipsisDims[i], maxEllipsisDims);
    std::set<int> seen;
    for (int label : labels) {
      KILN_CHECK(seen.insert(label).second, "aten::einsum: a label repeated within one operand ",
                 "(a diagonal) in '", equation, "'");
      ++uses[label];
    }
    result.operands.push_back(std::move(labels));
  }
  if (arrow != std::string::npos) {
    result.output = expandEllipsis(parseTerm(equation.substr(arrow + 2), equation), maxEllipsisDims,
                                   maxEllipsisDims);
  } else {
    // Implicit output: the ellipsis dims, then the labels used once, in label order.
    for (const auto& [label, count] : uses) {
      if (label >= kEllipsisLabel) result.output.push_back(label);
    }
    for (const auto& [label, count] : uses) {
      if (label < kEllipsisLabel && count == 1) result.output.push_back(label);
    }
  }
  std::set<int> seen;
  for (int label : result.output) {
    KILN_CHECK(seen.insert(label).second && uses.count(label),
               "aten::einsum: output subscripts of '", equation,
               "' repeat or name a label no operand has");
  }
  return result;
}

const std::string& einsumEquation(const NodeArgs& args) {
  const OpValue& equation = args.value("equation");
  KILN_CHECK(equation.constant && equation.constant->isString(),
             "aten::einsum: the equation must be a constant string");
  return equation.constant->toStringRef();
}

// The size of every label: one static size (broadcast from 1 where operands differ), or -1 for
// the one label that may be dynamic (of one symbol, never broadcast).
std::map<int, int64_t> einsumLabelSizes(const EinsumEquation& eq,
                                        const std::vector<const std::vector<SymInt>*>& shapes) {
  std::map<int, int64_t> sizes;
  std::map<int, std::string> symbols;
  for (size_t i = 0; i < eq.operands.size(); ++i) {
    for (size_t d = 0; d < eq.operands[i].size(); ++d) {
      const int label = eq.operands[i][d];
      const SymInt& size = (*shapes[i])[d];
      if (!size.isStatic()) {
        KILN_CHECK(!symbols.count(label) || symbols[label] == size.symbol,
                   "aten::einsum: a label has two dynamic sizes");
        KILN_CHECK(!sizes.count(label) || sizes[label] == -1,
                   "aten::einsum: a dynamic dim would broadcast against a static one");
        symbols[label] = size.symbol;
        sizes[label] = -1;
        continue;
      }
      KILN_CHECK(!symbols.count(label), "aten::einsum: a dynamic dim would broadcast against a ",
                 "static one");
      auto [it, inserted] = sizes.emplace(label, size.opt);
      if (inserted || it->second == size.opt || size.opt == 1) continue;
      KILN_CHECK(it->second == 1, "aten::einsum: sizes ", it->second, " and ", size.opt,
                 " of one label do not broadcast");
      it->second = size.opt;
    }
  }
  KILN_CHECK(symbols.size() <= 1, "aten::einsum: more than one dynamic label");
  return sizes;
}

std::vector<const std::vector<SymInt>*> einsumShapes(const NodeArgs& args) {
  const OpValue& list = args.value("tensors");
  KILN_CHECK(list.elements.has_value(), "aten::einsum: the operands are not a list of tensors");
  std::vector<const std::vector<SymInt>*> shapes;
  for (int id : *list.elements) shapes.push_back(&args.graph().value(id).shape);
  return shapes;
}

std::string checkEinsum(const NodeArgs& args) {
  const std::string op = args.node().qualifiedName();
  // A contraction path (torch passes one when opt_einsum is installed) only orders the
  // products: the operands are combined left to right whatever it says.
  const OpValue& list = args.value("tensors");
  KILN_CHECK(list.elements.has_value() && !list.elements->empty(), op,
             ": the operands are not a list of tensors");
  std::vector<int64_t> ranks;
  c10::ScalarType type = c10::ScalarType::Undefined;
  for (int id : *list.elements) {
    const OpValue& value = args.graph().value(id);
    KILN_CHECK(value.isTensor() || (value.constant && value.constant->isTensor()), op,
               ": an operand is not a tensor");
    KILN_CHECK(isComputedFloatType(value.dtype), op, ": an operand is ", c10::toString(value.dtype),
               "; Kiln's matrix kernels compute float32, float16 "
               "and bfloat16");
    KILN_CHECK(type == c10::ScalarType::Undefined || type == value.dtype, op,
               ": operands of different dtypes");
    type = value.dtype;
    ranks.push_back(static_cast<int64_t>(value.shape.size()));
  }
  einsumLabelSizes(parseEinsum(einsumEquation(args), ranks), einsumShapes(args));
  return "";
}

struct EinsumOperand {
  Tensor* tensor;
  Labels labels;
};

bool contains(const Labels& labels, int label) {
  return std::find(labels.begin(), labels.end(), label) != labels.end();
}

// x permuted so that its labels read `order`; no layer when they already do.
Tensor* permuteTo(ConversionContext& ctx, const EinsumOperand& x, const Labels& order) {
  Dims permutation;
  for (int label : order) {
    permutation.push_back(std::find(x.labels.begin(), x.labels.end(), label) - x.labels.begin());
  }
  bool identity = true;
  for (size_t i = 0; i < permutation.size(); ++i) identity &= permutation[i] == int64_t(i);
  return identity ? x.tensor : permute(ctx, x.tensor, permutation);
}

class EinsumLowering {
 public:
  EinsumLowering(ConversionContext& ctx, std::map<int, int64_t> sizes)
      : ctx_(ctx), sizes_(std::move(sizes)) {}

  // The operand with the dims of its labels that are not `needed` summed away.
  EinsumOperand sumUnneeded(EinsumOperand x, const std::set<int>& needed) {
    ReduceParams p;
    p.op = ReduceOp::kSum;
    Labels kept;
    for (size_t d = 0; d < x.labels.size(); ++d) {
      if (needed.count(x.labels[d])) {
        kept.push_back(x.labels[d]);
      } else {
        p.axes.push_back(static_cast<int64_t>(d));
      }
    }
    if (p.axes.empty()) return x;
    Layer* layer = ctx_.network().addReduce(x.tensor, p);
    ctx_.nameLayer(layer);
    return {layer->output(0), kept};
  }

  // The product of a and b, keeping the shared labels in `keep` as batch dims and summing the
  // other shared ones: a -> (batch, left, shared) and b -> (batch, shared, right) as rank-3
  // tensors (an operand already in (batch, shared, left/right) order is read transposed), one
  // batched MatMul, reshaped to (batch..., left..., right...).
  EinsumOperand contract(const EinsumOperand& a, const EinsumOperand& b,
                         const std::set<int>& keep) {
    Labels batch, left, shared, right;
    for (int label : a.labels) {
      if (!contains(b.labels, label)) {
        left.push_back(label);
      } else if (keep.count(label)) {
        batch.push_back(label);
      } else {
        shared.push_back(label);
      }
    }
    for (int label : b.labels) {
      if (!contains(a.labels, label)) right.push_back(label);
    }
    MatMulParams p;
    Tensor* aMatrix = arrange(a, {batch, left, shared}, {batch, shared, left}, p.transposeA);
    Tensor* bMatrix = arrange(b, {batch, shared, right}, {batch, right, shared}, p.transposeB);
    Layer* layer = ctx_.network().addMatMul(aMatrix, bMatrix, p);
    ctx_.nameLayer(layer);
    Labels labels = batch;
    labels.insert(labels.end(), left.begin(), left.end());
    labels.insert(labels.end(), right.begin(), right.end());
    Dims dims;
    for (int label : labels) dims.push_back(sizes_.at(label));
    return {reshape(ctx_, layer->output(0), dims), labels};
  }

  // x broadcast along the labels where it has size 1 and the equation a larger size.
  EinsumOperand broadcast(EinsumOperand x) {
    std::vector<SymInt> target;
    bool stretches = false;
    for (size_t d = 0; d < x.labels.size(); ++d) {
      const int64_t size = sizes_.at(x.labels[d]);
      const int64_t own = x.tensor->dims()[d];
      stretches |= own == 1 && size > 1;
      target.push_back(size < 0 ? SymInt{-1, -1, -1, "dynamic"}
                                : SymInt::of(own == 1 ? size : own));
    }
    if (stretches) x.tensor = broadcastTo(ctx_, x.tensor, target);
    return x;
  }

 private:
  // x as a rank-3 tensor of the label groups `plain` (or `transposed`, read with the transpose
  // flag, when x's dims are already in that order and not in the plain one).
  Tensor* arrange(const EinsumOperand& x, const std::vector<Labels>& plain,
                  const std::vector<Labels>& transposed, bool& transpose) {
    auto flatten = [](const std::vector<Labels>& groups) {
      Labels order;
      for (const Labels& group : groups) order.insert(order.end(), group.begin(), group.end());
      return order;
    };
    const Labels plainOrder = flatten(plain);
    transpose = x.labels != plainOrder && x.labels == flatten(transposed);
    const std::vector<Labels>& groups = transpose ? transposed : plain;
    Tensor* arranged = permuteTo(ctx_, x, flatten(groups));
    Dims dims;
    for (const Labels& group : groups) {
      int64_t size = 1;
      for (int label : group) {
        const int64_t labelSize = sizes_.at(label);
        size = labelSize < 0 || size < 0 ? -1 : size * labelSize;
      }
      dims.push_back(size);
    }
    return reshape(ctx_, arranged, dims);
  }

  ConversionContext& ctx_;
  std::map<int, int64_t> sizes_;
};

void convertEinsum(ConversionContext& ctx, const NodeArgs& args) {
  const std::vector<Tensor*> tensors = ctx.tensorList(args, "tensors");
  std::vector<int64_t> ranks;
  for (Tensor* t : tensors) ranks.push_back(t->rank());
  const EinsumEquation eq = parseEinsum(einsumEquation(args), ranks);
  EinsumLowering lowering(ctx, einsumLabelSizes(eq, einsumShapes(args)));
  const std::set<int> output(eq.output.begin(), eq.output.end());
  // The labels the output or the operands from i on need.
  auto neededFrom = [&](size_t i) {
    std::set<int> needed = output;
    for (size_t j = i; j < eq.operands.size(); ++j) {
      needed.insert(eq.operands[j].begin(), eq.operands[j].end());
    }
    return needed;
  };
  std::vector<EinsumOperand> operands;
  for (size_t i = 0; i < tensors.size(); ++i) {
    operands.push_back(lowering.broadcast({tensors[i], eq.operands[i]}));
  }
  EinsumOperand result = lowering.sumUnneeded(operands[0], neededFrom(1));
  for (size_t i = 1; i < operands.size(); ++i) {
    std::set<int> needed = neededFrom(i + 1);
    std::set<int> forNext = needed;
    forNext.insert(result.labels.begin(), result.labels.end());
    EinsumOperand next = lowering.sumUnneeded(operands[i], forNext);
    std::set<int> withNext = needed;
    withNext.insert(next.labels.begin(), next.labels.end());
    result = lowering.sumUnneeded(result, withNext);
    result = lowering.contract(result, next, needed);
  }
  ctx.setOutput(args, 0, permuteTo(ctx, result, eq.output));
}

}  // namespace

void registerMatmulConverters(ConverterRegistry& registry) {
  registry.add({"aten::mm(Tensor self, Tensor mat2) -> Tensor", convertMmOrBmm, checkMm});
  registry.add({"aten::bmm(Tensor self, Tensor mat2) -> Tensor", convertMmOrBmm, checkBmm});
  registry.add({"aten::matmul(Tensor self, Tensor other) -> Tensor", convertMatmul, checkMatmul});
  registry.add({"aten::linear(Tensor input, Tensor weight, Tensor? bias=None) -> Tensor",
                convertLinear, checkLinear});
  registry.add(
      {"aten::addmm(Tensor self, Tensor mat1, Tensor mat2, *, Scalar beta=1, "
       "Scalar alpha=1) -> Tensor",
       convertAddmm, checkAddmm});
  registry.add(
      {"aten::baddbmm(Tensor self, Tensor batch1, Tensor batch2, *, Scalar beta=1, Scalar "
       "alpha=1) -> Tensor",
       convertBaddbmm, [](const NodeArgs& args) { return checkAddBatched(args, 3); }});
  registry.add(
      {"aten::addbmm(Tensor self, Tensor batch1, Tensor batch2, *, Scalar beta=1, Scalar "
       "alpha=1) -> Tensor",
       convertAddbmm, checkAddbmm});
  registry.add({"aten::mv(Tensor self, Tensor vec) -> Tensor", convertMv, checkMv});
  registry.add(
      {"aten::addmv(Tensor self, Tensor mat, Tensor vec, *, Scalar beta=1, Scalar alpha=1) -> "
       "Tensor",
       convertAddmv, checkMv});
  registry.add({"aten::dot(Tensor self, Tensor tensor) -> Tensor", convertDot, checkDot});
  registry.add({"aten::outer(Tensor self, Tensor vec2) -> Tensor", convertOuter, checkOuter});
  registry.add({"aten::ger(Tensor self, Tensor vec2) -> Tensor", convertOuter, checkOuter});
  registry.add({"aten::einsum(str equation, Tensor[] tensors, *, int[]? path=None) -> Tensor",
                convertEinsum, checkEinsum});
}

}  // namespace kiln

// Matrix products: aten::mm, aten::bmm, aten::matmul (every rank torch accepts), aten::linear
// (TorchScript, and torch.export when Kiln keeps it whole) and aten::addmm (what torch.export
// makes of linear: bias + input @ weight.T, with beta and alpha) -> MatMul / FullyConnected
// layers. (aten::t and the permutes around them belong to the shape family.)
#include <string>
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

// beta * self + alpha * (mat1 @ mat2); with beta == 0, self is ignored (even NaN), as in torch.
void convertAddmm(ConversionContext& ctx, const NodeArgs& args) {
  const double beta = args.getDouble("beta");
  const double alpha = args.getDouble("alpha");
  Tensor* product = matmul(ctx, ctx.tensor(args, "mat1"), ctx.tensor(args, "mat2"));
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
  ctx.setOutput(args, 0, product);
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
}

}  // namespace kiln

// Division remainders: fmod (the sign of the dividend, C's fmod) and remainder (the sign of the
// divisor, Python's %), in their Tensor and Scalar overloads and in-place variants, built from
// elementwise and unary layers. Integers are exact (the Div layer truncates, FloorDiv floors);
// floating-point types compute in float32 and round once to the result type.
#include "converters/families.h"
#include "converters/helpers.h"

namespace kiln {
namespace {

// Floating-point fmod(a, b) = sign(a) * (|a| mod |b|). The quotient |a| / |b| is rounded, so
// the remainder is brought back into [0, |b|) by one correction step each way; infinities and
// NaNs come out as torch's: fmod(inf, b) and fmod(a, 0) are NaN, fmod(a, inf) is a.
Tensor* floatFmod(ConversionContext& ctx, Tensor* a, Tensor* b, DataType type) {
  Tensor* absA = addUnary(ctx, a, UnaryOp::kAbs);
  Tensor* absB = addUnary(ctx, b, UnaryOp::kAbs);
  Tensor* quotient = addElementwise(ctx, absA, absB, ElementwiseOp::kFloorDiv, type);
  Tensor* product = addElementwise(ctx, quotient, absB, ElementwiseOp::kProd, type);
  Tensor* m = addElementwise(ctx, absA, product, ElementwiseOp::kSub, type);
  Tensor* zero = ctx.scalar(0.0, type);
  Tensor* negative = addElementwise(ctx, m, zero, ElementwiseOp::kLess, type);
  m = addElementwise(
      ctx, m, addElementwise(ctx, absB, castTo(ctx, negative, type), ElementwiseOp::kProd, type),
      ElementwiseOp::kSum, type);
  Tensor* tooLarge =
      addUnary(ctx, addElementwise(ctx, m, absB, ElementwiseOp::kLess, type), UnaryOp::kNot);
  m = addElementwise(
      ctx, m, addElementwise(ctx, absB, castTo(ctx, tooLarge, type), ElementwiseOp::kProd, type),
      ElementwiseOp::kSub, type);
  return addElementwise(ctx, addUnary(ctx, a, UnaryOp::kSign), m, ElementwiseOp::kProd, type);
}

// a - op(a, b) * b, with op the truncating (fmod) or flooring (remainder) integer division.
Tensor* integerRemainder(ConversionContext& ctx, Tensor* a, Tensor* b, ElementwiseOp division,
                         DataType type) {
  Tensor* quotient = addElementwise(ctx, a, b, division, type);
  Tensor* product = addElementwise(ctx, quotient, b, ElementwiseOp::kProd, type);
  return addElementwise(ctx, a, product, ElementwiseOp::kSub, type);
}

// Floating-point remainder from fmod as torch computes it: a nonzero result whose sign differs
// from the divisor's moves by one divisor.
Tensor* floatRemainder(ConversionContext& ctx, Tensor* a, Tensor* b, DataType type) {
  Tensor* r = floatFmod(ctx, a, b, type);
  Tensor* zero = ctx.scalar(0.0, type);
  Tensor* nonzero =
      addUnary(ctx, addElementwise(ctx, r, zero, ElementwiseOp::kEqual, type), UnaryOp::kNot);
  Tensor* signsDiffer =
      addElementwise(ctx, addElementwise(ctx, r, zero, ElementwiseOp::kLess, type),
                     addElementwise(ctx, b, zero, ElementwiseOp::kLess, type), ElementwiseOp::kXor,
                     DataType::kBool);
  Tensor* shift = addElementwise(ctx, nonzero, signsDiffer, ElementwiseOp::kAnd, DataType::kBool);
  return addElementwise(
      ctx, r, addElementwise(ctx, b, castTo(ctx, shift, type), ElementwiseOp::kProd, type),
      ElementwiseOp::kSum, type);
}

bool isFloat(c10::ScalarType type) { return c10::isFloatingType(type); }

// The type the layers compute in: float32 for every floating-point result, else the result's.
DataType computeType(const NodeArgs& args) {
  return isFloat(args.output().dtype) ? DataType::kFloat32 : outputDataType(args);
}

ConvertFn convertRemainder(bool truncating) {
  return [truncating](ConversionContext& ctx, const NodeArgs& args) {
    const DataType type = computeType(args);
    Tensor* a = operandTensor(ctx, args, "self", type);
    Tensor* b = operandTensor(ctx, args, "other", type);
    Tensor* result = nullptr;
    if (type == DataType::kFloat32) {
      result = truncating ? floatFmod(ctx, a, b, type) : floatRemainder(ctx, a, b, type);
    } else {
      result = integerRemainder(ctx, a, b,
                                truncating ? ElementwiseOp::kDiv : ElementwiseOp::kFloorDiv, type);
    }
    ctx.setOutput(args, 0, result);
  };
}

std::string checkRemainder(const NodeArgs& args) {
  const c10::ScalarType type = args.output().dtype;
  if (isComputedFloatType(type) || type == c10::ScalarType::Int || type == c10::ScalarType::Long) {
    return "";
  }
  return concat("remainder of ", c10::toString(type),
                " values (supported: float32, float16, bfloat16, int32, int64)");
}

}  // namespace

void registerRemainderConverters(ConverterRegistry& registry) {
  const ConvertFn fmod = convertRemainder(true);
  const ConvertFn remainder = convertRemainder(false);
  registry.add({"aten::fmod.Tensor(Tensor self, Tensor other) -> Tensor", fmod, checkRemainder});
  registry.add({"aten::fmod.Scalar(Tensor self, Scalar other) -> Tensor", fmod, checkRemainder});
  registry.add({"aten::fmod_.Tensor(Tensor(a!) self, Tensor other) -> Tensor(a!)", fmod,
                inPlaceCheck(checkRemainder)});
  registry.add({"aten::fmod_.Scalar(Tensor(a!) self, Scalar other) -> Tensor(a!)", fmod,
                inPlaceCheck(checkRemainder)});
  registry.add(
      {"aten::remainder.Tensor(Tensor self, Tensor other) -> Tensor", remainder, checkRemainder});
  registry.add(
      {"aten::remainder.Scalar(Tensor self, Scalar other) -> Tensor", remainder, checkRemainder});
  registry.add({"aten::remainder.Scalar_Tensor(Scalar self, Tensor other) -> Tensor", remainder,
                checkRemainder});
  registry.add({"aten::remainder_.Tensor(Tensor(a!) self, Tensor other) -> Tensor(a!)", remainder,
                inPlaceCheck(checkRemainder)});
  registry.add({"aten::remainder_.Scalar(Tensor(a!) self, Scalar other) -> Tensor(a!)", remainder,
                inPlaceCheck(checkRemainder)});
}

}  // namespace kiln

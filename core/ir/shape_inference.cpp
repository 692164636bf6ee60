#include "core/ir/shape_inference.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <type_traits>

namespace kiln {
namespace {

using Inputs = std::vector<const TensorType*>;

bool isKnown(int64_t dim) { return dim >= 0; }

void checkInputCount(const Inputs& inputs, size_t least, size_t most, const char* expected) {
  KILN_CHECK(inputs.size() >= least && inputs.size() <= most, "expected inputs ", expected,
             ", but ", inputs.size(), " were given");
}

const TensorType& requiredInput(const Inputs& inputs, size_t index, const char* name) {
  KILN_CHECK(index < inputs.size() && inputs[index] != nullptr, "input ", index, " (", name,
             ") is required but missing");
  return *inputs[index];
}

const TensorType* optionalInput(const Inputs& inputs, size_t index) {
  return index < inputs.size() ? inputs[index] : nullptr;
}

void checkSameType(const TensorType& x, const TensorType& other, const char* xName,
                   const char* otherName) {
  KILN_CHECK(x.dtype == other.dtype, "dtype mismatch: ", otherName, " is ", toString(other.dtype),
             " but ", xName, " is ", toString(x.dtype), "; cast them to one type first");
}

// Maps a possibly negative axis into [0, rank).
int64_t normalizeAxis(int64_t axis, size_t rank, const char* what) {
  const auto signedRank = static_cast<int64_t>(rank);
  KILN_CHECK(axis >= -signedRank && axis < signedRank, what, " ", axis,
             " is out of range for a tensor of rank ", rank, " (valid: ", -signedRank, " to ",
             signedRank - 1, ")");
  return axis < 0 ? axis + signedRank : axis;
}

// Two dims that must be equal: a known dim refines a dynamic one; two known dims must agree.
int64_t mergeEqualDims(int64_t a, int64_t b, const std::string& what) {
  if (!isKnown(a)) return b;
  if (!isKnown(b)) return a;
  KILN_CHECK(a == b, what, ": ", a, " vs ", b);
  return a;
}

// numpy broadcasting of two shapes (right-aligned, a size-1 dim stretches). A dynamic dim
// against 1 stays dynamic; against a known size n it becomes n (it can only be 1 or n).
Dims broadcastDims(const Dims& a, const Dims& b, const char* what) {
  const size_t rank = std::max(a.size(), b.size());
  Dims out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    KILN_CHECK(da == db || da == 1 || db == 1 || !isKnown(da) || !isKnown(db), "cannot broadcast ",
               what, " ", toString(a), " and ", toString(b), ": output dim ", i, " is ", da,
               " in one and ", db, " in the other (dims must be equal, or one of them 1)");
    out[i] = da == 1 || (!isKnown(da) && db != 1) ? db : da;
  }
  return out;
}

// A per-spatial-dim parameter; empty means `fill` for every spatial dim.
Dims perSpatialDim(const Dims& values, size_t rank, int64_t fill, const char* name) {
  if (values.empty()) return Dims(rank, fill);
  KILN_CHECK(values.size() == rank, name, " ", toString(values), " has ", values.size(),
             " values, but the window has ", rank, " spatial dims");
  return values;
}

void checkAllAtLeast(const Dims& values, int64_t least, const char* name) {
  for (int64_t value : values) {
    KILN_CHECK(value >= least, name, " ", toString(values), " must be >= ", least);
  }
}

// The geometry shared by convolution, deconvolution and fixed-window pooling.
struct Window {
  Dims kernel;
  Dims stride;
  Dims prePadding;
  Dims postPadding;
  Dims dilation;
};

template <typename Params>
Window windowOf(const Params& p) {
  const size_t rank = p.kernel.size();
  KILN_CHECK(rank >= 1 && rank <= 3, "the kernel ", toString(p.kernel),
             " must have 1, 2 or 3 spatial dims");
  Window window{p.kernel, perSpatialDim(p.stride, rank, 1, "stride"),
                perSpatialDim(p.prePadding, rank, 0, "prePadding"),
                perSpatialDim(p.postPadding, rank, 0, "postPadding"),
                perSpatialDim(p.dilation, rank, 1, "dilation")};
  checkAllAtLeast(window.kernel, 1, "kernel");
  checkAllAtLeast(window.stride, 1, "stride");
  checkAllAtLeast(window.prePadding, 0, "prePadding");
  checkAllAtLeast(window.postPadding, 0, "postPadding");
  checkAllAtLeast(window.dilation, 1, "dilation");
  return window;
}

void checkSpatialInput(const TensorType& x, size_t spatialRank, const char* layout) {
  KILN_CHECK(x.dims.size() == spatialRank + 2, "mismatched ranks: the input ", toString(x.dims),
             " has rank ", x.dims.size(), ", but a window of ", spatialRank,
             " spatial dims needs rank ", spatialRank + 2, " ", layout);
}

// Output size of a sliding window along one spatial dim (convolution and pooling).
int64_t windowedSize(int64_t in, const Window& w, size_t d, bool ceilMode) {
  if (!isKnown(in)) return kDynamic;
  const int64_t padded = in + w.prePadding[d] + w.postPadding[d];
  const int64_t dilatedKernel = w.dilation[d] * (w.kernel[d] - 1) + 1;
  KILN_CHECK(padded >= dilatedKernel, "spatial dim ", d, " of the input is ", in, " (", padded,
             " padded), smaller than the dilated kernel ", dilatedKernel);
  const int64_t span = padded - dilatedKernel;
  const int64_t stride = w.stride[d];
  int64_t out = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1;
  // As torch: in ceil mode the last window must start inside the input or the left padding.
  if (ceilMode && (out - 1) * stride >= in + w.prePadding[d]) --out;
  return out;
}

std::vector<TensorType> inferConvolution(const ConvolutionParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 2, 4, "[x, weight, bias, residual]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  const TensorType& weight = requiredInput(inputs, 1, "weight");
  const TensorType* bias = optionalInput(inputs, 2);
  const Window w = windowOf(p);
  const size_t rank = w.kernel.size();
  KILN_CHECK(isConvolutionActivation(p.activation), "a convolution's fused activation is none, ",
             "relu, relu6, silu or hardswish, not ", toString(p.activation));
  KILN_CHECK(isConvolutionActivation(p.inputActivation), "a convolution's input activation is ",
             "none, relu, relu6, silu or hardswish, not ", toString(p.inputActivation));
  KILN_CHECK(p.groups >= 1, "groups ", p.groups, " must be >= 1");
  KILN_CHECK(p.outChannels >= 1 && p.outChannels % p.groups == 0, "outChannels ", p.outChannels,
             " must be positive and divisible by groups ", p.groups);
  checkSpatialInput(x, rank, "(N, C, spatial...)");
  KILN_CHECK(weight.dims.size() == rank + 2, "mismatched ranks: the weight ", toString(weight.dims),
             " has rank ", weight.dims.size(), ", but a kernel of ", rank,
             " spatial dims needs (K, C/groups, kernel...) of rank ", rank + 2);
  checkSameType(x, weight, "x", "weight");
  const int64_t channels = x.dims[1];
  KILN_CHECK(!isKnown(channels) || channels % p.groups == 0, "the input's ", channels,
             " channels are not divisible by groups ", p.groups);
  mergeEqualDims(weight.dims[0], p.outChannels,
                 "the weight's dim 0 (output channels) differs from outChannels");
  if (isKnown(channels) && isKnown(weight.dims[1])) {
    KILN_CHECK(weight.dims[1] * p.groups == channels, "channel mismatch: the input has ", channels,
               " channels, but the weight ", toString(weight.dims), " with groups ", p.groups,
               " expects ", weight.dims[1] * p.groups);
  }
  for (size_t d = 0; d < rank; ++d) {
    mergeEqualDims(
        weight.dims[2 + d], w.kernel[d],
        concat("the weight's spatial dim ", d, " differs from the kernel ", toString(w.kernel)));
  }
  if (bias != nullptr) {
    checkSameType(x, *bias, "x", "bias");
    KILN_CHECK(bias->dims.size() == 1, "the bias must have rank 1, got ", toString(bias->dims));
    mergeEqualDims(bias->dims[0], p.outChannels, "the bias size differs from outChannels");
  }
  Dims out = {x.dims[0], p.outChannels};
  for (size_t d = 0; d < rank; ++d) out.push_back(windowedSize(x.dims[2 + d], w, d, false));
  if (const TensorType* residual = optionalInput(inputs, 3)) {
    checkSameType(x, *residual, "x", "residual");
    KILN_CHECK(residual->dims.size() == out.size(), "the residual ", toString(residual->dims),
               " must have the output's rank ", out.size());
    for (size_t d = 0; d < out.size(); ++d) {
      out[d] = mergeEqualDims(out[d], residual->dims[d],
                              concat("the residual's dim ", d, " differs from the output's"));
    }
  }
  return {{x.dtype, out}};
}

std::vector<TensorType> inferDeconvolution(const DeconvolutionParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 2, 3, "[x, weight, bias]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  const TensorType& weight = requiredInput(inputs, 1, "weight");
  const TensorType* bias = optionalInput(inputs, 2);
  const Window w = windowOf(p);
  const size_t rank = w.kernel.size();
  const Dims outputPadding = perSpatialDim(p.outputPadding, rank, 0, "outputPadding");
  checkAllAtLeast(outputPadding, 0, "outputPadding");
  for (size_t d = 0; d < rank; ++d) {
    KILN_CHECK(outputPadding[d] < std::max(w.stride[d], w.dilation[d]), "outputPadding ",
               toString(outputPadding), " must be smaller than the stride or the dilation in ",
               "each spatial dim");
  }
  KILN_CHECK(p.groups >= 1, "groups ", p.groups, " must be >= 1");
  KILN_CHECK(p.outChannels >= 1 && p.outChannels % p.groups == 0, "outChannels ", p.outChannels,
             " must be positive and divisible by groups ", p.groups);
  checkSpatialInput(x, rank, "(N, C, spatial...)");
  KILN_CHECK(weight.dims.size() == rank + 2, "mismatched ranks: the weight ", toString(weight.dims),
             " has rank ", weight.dims.size(), ", but a kernel of ", rank,
             " spatial dims needs (C, K/groups, kernel...) of rank ", rank + 2);
  checkSameType(x, weight, "x", "weight");
  const int64_t channels = x.dims[1];
  KILN_CHECK(!isKnown(channels) || channels % p.groups == 0, "the input's ", channels,
             " channels are not divisible by groups ", p.groups);
  if (isKnown(channels) && isKnown(weight.dims[0])) {
    KILN_CHECK(weight.dims[0] == channels, "channel mismatch: the input has ", channels,
               " channels, but the weight ", toString(weight.dims), " expects ", weight.dims[0],
               " (its dim 0)");
  }
  if (isKnown(weight.dims[1])) {
    KILN_CHECK(weight.dims[1] * p.groups == p.outChannels, "the weight ", toString(weight.dims),
               " with groups ", p.groups, " gives ", weight.dims[1] * p.groups,
               " output channels, but outChannels is ", p.outChannels);
  }
  for (size_t d = 0; d < rank; ++d) {
    mergeEqualDims(
        weight.dims[2 + d], w.kernel[d],
        concat("the weight's spatial dim ", d, " differs from the kernel ", toString(w.kernel)));
  }
  if (bias != nullptr) {
    checkSameType(x, *bias, "x", "bias");
    KILN_CHECK(bias->dims.size() == 1, "the bias must have rank 1, got ", toString(bias->dims));
    mergeEqualDims(bias->dims[0], p.outChannels, "the bias size differs from outChannels");
  }
  Dims out = {x.dims[0], p.outChannels};
  for (size_t d = 0; d < rank; ++d) {
    const int64_t in = x.dims[2 + d];
    if (!isKnown(in)) {
      out.push_back(kDynamic);
      continue;
    }
    const int64_t size = (in - 1) * w.stride[d] - w.prePadding[d] - w.postPadding[d] +
                         w.dilation[d] * (w.kernel[d] - 1) + outputPadding[d] + 1;
    KILN_CHECK(size >= 1, "spatial dim ", d, " of the output would be ", size, " (input ", in,
               "); reduce the padding");
    out.push_back(size);
  }
  return {{x.dtype, out}};
}

std::vector<TensorType> inferMatMul(const MatMulParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 2, 2, "[a, b]");
  const TensorType& a = requiredInput(inputs, 0, "a");
  const TensorType& b = requiredInput(inputs, 1, "b");
  for (const TensorType* operand : {&a, &b}) {
    KILN_CHECK(operand->dims.size() >= 2, "matmul needs inputs of rank >= 2, got ",
               operand == &a ? "a" : "b", " ", toString(operand->dims), " of rank ",
               operand->dims.size(), "; reshape a vector to a (1, K) or (K, 1) matrix first");
  }
  checkSameType(a, b, "a", "b");
  const size_t ra = a.dims.size();
  const size_t rb = b.dims.size();
  const int64_t m = p.transposeA ? a.dims[ra - 1] : a.dims[ra - 2];
  const int64_t ka = p.transposeA ? a.dims[ra - 2] : a.dims[ra - 1];
  const int64_t kb = p.transposeB ? b.dims[rb - 1] : b.dims[rb - 2];
  const int64_t n = p.transposeB ? b.dims[rb - 2] : b.dims[rb - 1];
  mergeEqualDims(
      ka, kb,
      concat("the inner dims of a ", toString(a.dims), p.transposeA ? " (transposed)" : "",
             " and b ", toString(b.dims), p.transposeB ? " (transposed)" : "", " differ"));
  Dims out = broadcastDims(Dims(a.dims.begin(), a.dims.end() - 2),
                           Dims(b.dims.begin(), b.dims.end() - 2), "the batch dims");
  out.push_back(m);
  out.push_back(n);
  return {{a.dtype, out}};
}

std::vector<TensorType> inferFullyConnected(const Inputs& inputs) {
  checkInputCount(inputs, 2, 4, "[x, weight, bias, residual]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  const TensorType& weight = requiredInput(inputs, 1, "weight");
  const TensorType* bias = optionalInput(inputs, 2);
  KILN_CHECK(!x.dims.empty(), "the input x must have rank >= 1 (..., K), got a scalar");
  KILN_CHECK(weight.dims.size() == 2, "mismatched ranks: the weight must be (N, K), got ",
             toString(weight.dims));
  checkSameType(x, weight, "x", "weight");
  mergeEqualDims(x.dims.back(), weight.dims[1],
                 concat("the input features of x ", toString(x.dims),
                        " (last dim) and of the "
                        "weight ",
                        toString(weight.dims), " (dim 1) differ"));
  if (bias != nullptr) {
    checkSameType(x, *bias, "x", "bias");
    KILN_CHECK(bias->dims.size() == 1, "the bias must have rank 1, got ", toString(bias->dims));
    mergeEqualDims(bias->dims[0], weight.dims[0],
                   "the bias size differs from the weight's output features (dim 0)");
  }
  Dims out(x.dims.begin(), x.dims.end() - 1);
  out.push_back(weight.dims[0]);
  if (const TensorType* residual = optionalInput(inputs, 3)) {
    checkSameType(x, *residual, "x", "residual");
    KILN_CHECK(residual->dims.size() == out.size(), "the residual ", toString(residual->dims),
               " must have the output's dims ", toString(out));
    for (size_t d = 0; d < out.size(); ++d) {
      out[d] = mergeEqualDims(out[d], residual->dims[d],
                              concat("the residual ", toString(residual->dims), "'s dim ", d,
                                     " differs from the output's ", toString(out)));
    }
  }
  return {{x.dtype, out}};
}

std::vector<TensorType> inferSqueezeExcitation(const SqueezeExcitationParams& p,
                                               const Inputs& inputs) {
  checkInputCount(inputs, 5, 5, "[x, w1, b1, w2, b2]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  const TensorType& w1 = requiredInput(inputs, 1, "w1");
  const TensorType& w2 = requiredInput(inputs, 3, "w2");
  KILN_CHECK(x.dims.size() >= 3,
             "squeeze-and-excitation needs x (N, spatial..., C) of rank >= 3, got ",
             toString(x.dims));
  KILN_CHECK(isFloatingPoint(x.dtype), "squeeze-and-excitation needs a floating-point x, got ",
             toString(x.dtype));
  KILN_CHECK(w1.dims.size() == 2 && w2.dims.size() == 2,
             "the weights must be (R, C) and (K, R), got ", toString(w1.dims), " and ",
             toString(w2.dims));
  checkSameType(x, w1, "x", "w1");
  checkSameType(x, w2, "x", "w2");
  mergeEqualDims(x.dims.back(), w1.dims[1],
                 concat("the channels of x ", toString(x.dims), " and the input features of w1 ",
                        toString(w1.dims), " differ"));
  mergeEqualDims(w1.dims[0], w2.dims[1],
                 concat("the hidden features of w1 ", toString(w1.dims), " and of w2 ",
                        toString(w2.dims), " differ"));
  for (size_t i : {size_t{2}, size_t{4}}) {
    const TensorType* bias = optionalInput(inputs, i);
    if (bias == nullptr) continue;
    const TensorType& weight = i == 2 ? w1 : w2;
    checkSameType(x, *bias, "x", "bias");
    KILN_CHECK(bias->dims.size() == 1, "a bias must have rank 1, got ", toString(bias->dims));
    mergeEqualDims(bias->dims[0], weight.dims[0],
                   concat("the bias ", toString(bias->dims), " differs from the weight ",
                          toString(weight.dims), "'s output features"));
  }
  Dims out = {x.dims[0]};
  if (p.keepDims) out.insert(out.end(), x.dims.size() - 2, 1);
  out.push_back(w2.dims[0]);
  return {{x.dtype, out}};
}

bool isComparison(ElementwiseOp op) {
  return op == ElementwiseOp::kEqual || op == ElementwiseOp::kLess || op == ElementwiseOp::kGreater;
}

std::vector<TensorType> inferElementwise(const ElementwiseParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 2, 2, "[a, b]");
  const TensorType& a = requiredInput(inputs, 0, "a");
  const TensorType& b = requiredInput(inputs, 1, "b");
  checkSameType(a, b, "a", "b");
  return {{isComparison(p.op) ? DataType::kBool : a.dtype,
           broadcastDims(a.dims, b.dims, "the inputs")}};
}

std::vector<TensorType> inferSameAsInput(const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  return {requiredInput(inputs, 0, "x")};
}

std::vector<TensorType> inferPooling(const PoolingParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  KILN_CHECK(x.dims.size() >= 3, "pooling needs an input (N, C, spatial...) of rank >= 3, got ",
             toString(x.dims));
  Dims out = {x.dims[0], x.dims[1]};
  if (p.adaptive) {
    KILN_CHECK(p.outputSize.size() == x.dims.size() - 2, "mismatched ranks: adaptive pooling's ",
               "outputSize ", toString(p.outputSize), " has ", p.outputSize.size(),
               " dims, but the input ", toString(x.dims), " has ", x.dims.size() - 2,
               " spatial dims");
    checkAllAtLeast(p.outputSize, 1, "outputSize");
    out.insert(out.end(), p.outputSize.begin(), p.outputSize.end());
    return {{x.dtype, out}};
  }
  const Window w = windowOf(p);
  checkSpatialInput(x, w.kernel.size(), "(N, C, spatial...)");
  for (size_t d = 0; d < w.kernel.size(); ++d) {
    out.push_back(windowedSize(x.dims[2 + d], w, d, p.ceilMode));
  }
  return {{x.dtype, out}};
}

// Normalized, distinct axes; what names the parameter in errors.
std::vector<bool> axisMask(const Dims& axes, size_t rank, const char* what) {
  std::vector<bool> mask(rank, false);
  for (int64_t axis : axes) {
    const int64_t normalized = normalizeAxis(axis, rank, what);
    KILN_CHECK(!mask[normalized], what, " ", axis, " is listed twice in ", toString(axes),
               " (rank ", rank, ")");
    mask[normalized] = true;
  }
  return mask;
}

std::vector<TensorType> inferReduce(const ReduceParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  std::vector<bool> reduced = axisMask(p.axes, x.dims.size(), "reduce axis");
  if (p.axes.empty()) reduced.assign(x.dims.size(), true);
  Dims out;
  for (size_t d = 0; d < x.dims.size(); ++d) {
    if (!reduced[d]) {
      out.push_back(x.dims[d]);
    } else if (p.keepDims) {
      out.push_back(1);
    }
  }
  return {{x.dtype, out}};
}

std::vector<TensorType> inferSoftmax(const SoftmaxParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  KILN_CHECK(isFloatingPoint(x.dtype), "softmax needs a floating-point input, got ",
             toString(x.dtype), "; cast it first");
  // As torch, a scalar takes axis 0 or -1.
  if (x.dims.empty()) {
    KILN_CHECK(p.axis == 0 || p.axis == -1, "softmax axis ", p.axis,
               " is out of range for a tensor of rank 0 (valid: -1 or 0)");
  } else {
    normalizeAxis(p.axis, x.dims.size(), "softmax axis");
  }
  return {x};
}

void checkLayerNormOperand(const TensorType& x, const TensorType& operand, const char* name,
                           const Dims& expected) {
  checkSameType(x, operand, "x", name);
  KILN_CHECK(operand.dims.size() == expected.size(), "mismatched ranks: ", name, " ",
             toString(operand.dims), " must be shaped like the normalized dims ",
             toString(expected));
  for (size_t d = 0; d < expected.size(); ++d) {
    mergeEqualDims(operand.dims[d], expected[d],
                   concat(name, " ", toString(operand.dims), " does not match the normalized dims ",
                          toString(expected), " at dim ", d));
  }
}

std::vector<TensorType> inferNormalization(const NormalizationParams& p, const Inputs& inputs) {
  static const char* const kNames[] = {"x", "scale", "bias", "mean", "var"};
  const TensorType& x = requiredInput(inputs, 0, "x");
  KILN_CHECK(isFloatingPoint(x.dtype), "normalization needs a floating-point input, got ",
             toString(x.dtype));
  KILN_CHECK(p.epsilon >= 0, "epsilon ", p.epsilon, " must be >= 0");
  if (p.type == NormalizationType::kBatch) {
    checkInputCount(inputs, 5, 5, "[x, scale, bias, mean, var]");
    KILN_CHECK(x.dims.size() >= 2,
               "batch normalization needs an input (N, C, ...) of rank >= 2, "
               "got ",
               toString(x.dims));
    requiredInput(inputs, 3, "mean");
    requiredInput(inputs, 4, "var");
    const auto axis =
        static_cast<size_t>(normalizeAxis(p.axis, x.dims.size(), "batch normalization axis"));
    for (size_t i = 1; i < 5; ++i) {
      if (inputs[i] == nullptr) continue;
      const TensorType& operand = *inputs[i];
      checkSameType(x, operand, "x", kNames[i]);
      KILN_CHECK(operand.dims.size() == 1, "mismatched ranks: ", kNames[i], " ",
                 toString(operand.dims), " must have rank 1 (one value per channel)");
      mergeEqualDims(
          operand.dims[0], x.dims[axis],
          concat("channel mismatch: ", kNames[i], " ", toString(operand.dims), " and the input ",
                 toString(x.dims), " (dim ", axis, ") differ in channels"));
    }
    return {x};
  }
  checkInputCount(inputs, 1, 5, "[x, scale, bias, residual]");
  for (size_t i = 4; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i] == nullptr, "layer normalization takes [x, scale, bias, residual]; ",
               kNames[i], " must be null");
  }
  if (const TensorType* residual = optionalInput(inputs, 3)) {
    checkSameType(x, *residual, "x", "residual");
    KILN_CHECK(residual->dims.size() == x.dims.size(), "the residual ", toString(residual->dims),
               " must have x's rank ", x.dims.size());
    for (size_t d = 0; d < x.dims.size(); ++d) {
      mergeEqualDims(x.dims[d], residual->dims[d],
                     concat("the residual's dim ", d, " differs from x's"));
    }
  }
  const int64_t axis = normalizeAxis(p.axis, x.dims.size(), "layer normalization axis");
  const Dims normalized(x.dims.begin() + axis, x.dims.end());
  for (size_t i = 1; i < 3 && i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) continue;
    checkLayerNormOperand(x, *inputs[i], kNames[i], normalized);
  }
  return {x};
}

Dims permute(const Dims& dims, const Dims& permutation, const char* name) {
  KILN_CHECK(permutation.size() == dims.size(), "mismatched ranks: ", name, " ",
             toString(permutation), " has ", permutation.size(), " entries, but the tensor ",
             toString(dims), " has rank ", dims.size());
  std::vector<bool> seen(dims.size(), false);
  Dims out(dims.size());
  for (size_t i = 0; i < permutation.size(); ++i) {
    const int64_t from = permutation[i];
    KILN_CHECK(from >= 0 && from < static_cast<int64_t>(dims.size()) && !seen[from], name, " ",
               toString(permutation), " is not a permutation of 0..", dims.size() - 1);
    seen[from] = true;
    out[i] = dims[from];
  }
  return out;
}

Dims reshape(const Dims& in, const Dims& spec) {
  Dims out(spec.size());
  int64_t inferredIndex = -1;
  // Dims copied by a 0 appear on both sides and cancel out of the element-count balance, so
  // that [-1, 3, 4] reshaped to [0, -1] still infers 12.
  std::vector<bool> copied(in.size(), false);
  int64_t specifiedVolume = 1;
  for (size_t i = 0; i < spec.size(); ++i) {
    const int64_t value = spec[i];
    if (value > 0) {
      out[i] = value;
      specifiedVolume *= value;
    } else if (value == 0) {
      KILN_CHECK(i < in.size(), "reshape dims ", toString(spec), " copy dim ", i,
                 " (a 0), but the input ", toString(in), " has rank ", in.size());
      out[i] = in[i];
      copied[i] = true;
    } else {
      KILN_CHECK(value == -1, "reshape dims ", toString(spec), " hold ", value,
                 "; use a positive size, 0 (copy) or -1 (infer)");
      KILN_CHECK(inferredIndex < 0, "reshape dims ", toString(spec), " have more than one -1");
      inferredIndex = static_cast<int64_t>(i);
    }
  }
  bool inputKnown = true;
  int64_t inputVolume = 1;
  for (size_t d = 0; d < in.size(); ++d) {
    if (copied[d]) continue;
    if (isKnown(in[d])) {
      inputVolume *= in[d];
    } else {
      inputKnown = false;
    }
  }
  if (inferredIndex >= 0) {
    if (!inputKnown) {
      out[inferredIndex] = kDynamic;
    } else {
      KILN_CHECK(specifiedVolume != 0, "cannot infer the -1 in reshape dims ", toString(spec),
                 ": the other dims hold 0 elements");
      KILN_CHECK(inputVolume % specifiedVolume == 0, "cannot reshape ", toString(in), " to ",
                 toString(spec), ": the element count does not divide evenly");
      out[inferredIndex] = inputVolume / specifiedVolume;
    }
  } else if (inputKnown) {
    KILN_CHECK(inputVolume == specifiedVolume, "cannot reshape ", toString(in), " to ",
               toString(spec), ": the element counts differ");
  }
  return out;
}

// Reshape dims with the entries that reshapeReferences names taken from the reference's dims.
// Such a size unknown at build time (or 0) leaves it, and the inferred one, to be known at run
// time: the volumes are checked then.
Dims referencedReshape(const Dims& in, const ShuffleParams& p, const Dims& reference) {
  KILN_CHECK(p.reshapeReferences.size() == p.reshapeDims.size(), "reshape references ",
             toString(p.reshapeReferences), " need one entry per reshape dim ",
             toString(p.reshapeDims));
  Dims spec = p.reshapeDims;
  std::vector<size_t> unresolved;
  for (size_t i = 0; i < spec.size(); ++i) {
    const int64_t r = p.reshapeReferences[i];
    if (r < 0) continue;
    KILN_CHECK(r < static_cast<int64_t>(reference.size()), "reshape reference dim ", r,
               " is outside the reference's dims ", toString(reference));
    const int64_t size = reference[static_cast<size_t>(r)];
    if (isKnown(size) && size > 0) {
      spec[i] = size;
    } else {
      spec[i] = 1;
      unresolved.push_back(i);
    }
  }
  if (unresolved.empty()) return reshape(in, spec);
  Dims out(spec.size());
  for (size_t i = 0; i < spec.size(); ++i) {
    out[i] = spec[i] > 0 ? spec[i] : spec[i] == 0 && i < in.size() ? in[i] : kDynamic;
  }
  for (size_t i : unresolved) {
    const int64_t size = reference[static_cast<size_t>(p.reshapeReferences[i])];
    KILN_CHECK(!isKnown(size) || std::find(spec.begin(), spec.end(), -1) == spec.end(),
               "cannot infer the -1 in reshape dims ", toString(p.reshapeDims),
               " with an empty reference dim");
    out[i] = size;
  }
  return out;
}

std::vector<TensorType> inferShuffle(const ShuffleParams& p, const Inputs& inputs) {
  const bool referenced = std::any_of(p.reshapeReferences.begin(), p.reshapeReferences.end(),
                                      [](int64_t d) { return d >= 0; });
  checkInputCount(inputs, referenced ? 2 : 1, referenced ? 2 : 1,
                  referenced ? "[x, reference]" : "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  Dims dims = x.dims;
  if (!p.firstPermutation.empty()) dims = permute(dims, p.firstPermutation, "firstPermutation");
  if (p.hasReshape) {
    dims = referenced ? referencedReshape(dims, p, requiredInput(inputs, 1, "reference").dims)
                      : reshape(dims, p.reshapeDims);
  }
  if (!p.secondPermutation.empty()) dims = permute(dims, p.secondPermutation, "secondPermutation");
  return {{x.dtype, dims}};
}

std::vector<TensorType> inferConcat(const ConcatParams& p, const Inputs& inputs) {
  KILN_CHECK(!inputs.empty(), "concat needs at least one input");
  const TensorType& first = requiredInput(inputs, 0, "x0");
  KILN_CHECK(!first.dims.empty(), "concat inputs must have rank >= 1, got a scalar");
  const int64_t axis = normalizeAxis(p.axis, first.dims.size(), "concat axis");
  Dims out = first.dims;
  for (size_t i = 1; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i] != nullptr, "concat input ", i, " is missing");
    const TensorType& x = *inputs[i];
    KILN_CHECK(x.dtype == first.dtype, "dtype mismatch: concat input ", i, " is ",
               toString(x.dtype), " but input 0 is ", toString(first.dtype));
    KILN_CHECK(x.dims.size() == out.size(), "mismatched ranks: concat input ", i, " ",
               toString(x.dims), " has rank ", x.dims.size(), ", but input 0 ",
               toString(first.dims), " has rank ", first.dims.size());
    for (size_t d = 0; d < out.size(); ++d) {
      if (static_cast<int64_t>(d) == axis) {
        out[d] = isKnown(out[d]) && isKnown(x.dims[d]) ? out[d] + x.dims[d] : kDynamic;
      } else {
        out[d] =
            mergeEqualDims(out[d], x.dims[d],
                           concat("concat inputs may differ only along axis ", axis, ", but input ",
                                  i, " ", toString(x.dims), " differs from the others at dim ", d));
      }
    }
  }
  return {{first.dtype, out}};
}

std::vector<TensorType> inferSlice(const SliceParams& p, const Inputs& inputs) {
  checkSliceParams(p);
  const bool referenced =
      std::any_of(p.endReferences.begin(), p.endReferences.end(), [](int64_t d) { return d >= 0; });
  checkInputCount(inputs, referenced ? 2 : 1, referenced ? 2 : 1,
                  referenced ? "[x, reference]" : "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  axisMask(p.axes, x.dims.size(), "slice axis");
  Dims out = x.dims;
  for (size_t i = 0; i < p.axes.size(); ++i) {
    const int64_t axis = normalizeAxis(p.axes[i], x.dims.size(), "slice axis");
    const int64_t dim = x.dims[axis];
    int64_t end = p.ends[i];
    if (!p.endReferences.empty() && p.endReferences[i] >= 0) {
      const Dims& reference = requiredInput(inputs, 1, "reference").dims;
      const int64_t d = p.endReferences[i];
      KILN_CHECK(d < static_cast<int64_t>(reference.size()), "slice end reference dim ", d,
                 " is outside the reference's dims ", toString(reference));
      if (!isKnown(reference[d])) {
        out[axis] = kDynamic;
        continue;
      }
      end += reference[d];
    }
    if (!isKnown(dim)) continue;
    out[axis] = sliceLength(p.starts[i], end, p.steps.empty() ? 1 : p.steps[i], dim);
  }
  return {{x.dtype, out}};
}

std::vector<TensorType> inferGather(const GatherParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 2, 2, "[data, indices]");
  const TensorType& data = requiredInput(inputs, 0, "data");
  const TensorType& indices = requiredInput(inputs, 1, "indices");
  KILN_CHECK(indices.dtype == DataType::kInt32 || indices.dtype == DataType::kInt64,
             "dtype mismatch: gather indices must be int32 or int64, got ",
             toString(indices.dtype));
  KILN_CHECK(!data.dims.empty(), "gather needs data of rank >= 1, got a scalar");
  const int64_t axis = normalizeAxis(p.axis, data.dims.size(), "gather axis");
  if (p.mode == GatherMode::kElement) {
    KILN_CHECK(indices.dims.size() == data.dims.size(), "an element gather takes indices of the ",
               "data's rank ", data.dims.size(), ", got ", toString(indices.dims));
    Dims out = indices.dims;
    for (size_t d = 0; d < out.size(); ++d) {
      if (static_cast<int64_t>(d) == axis) continue;
      KILN_CHECK(
          !isKnown(data.dims[d]) || !isKnown(indices.dims[d]) || data.dims[d] == indices.dims[d],
          "an element gather along axis ", axis, " takes indices ", toString(indices.dims),
          " with the dims of the data ", toString(data.dims), " except along the axis");
      if (!isKnown(out[d])) out[d] = data.dims[d];
    }
    return {{data.dtype, out}};
  }
  Dims out(data.dims.begin(), data.dims.begin() + axis);
  out.insert(out.end(), indices.dims.begin(), indices.dims.end());
  out.insert(out.end(), data.dims.begin() + axis + 1, data.dims.end());
  return {{data.dtype, out}};
}

std::vector<TensorType> inferConstant(const ConstantParams& p, const Inputs& inputs) {
  KILN_CHECK(inputs.empty(), "a constant takes no inputs, got ", inputs.size());
  const Weights& weights = p.weights;
  KILN_CHECK(isStatic(weights.dims), "constant weights need static dims, got ",
             toString(weights.dims));
  const size_t bytes = static_cast<size_t>(volume(weights.dims)) * elementSize(weights.dtype);
  const size_t held = weights.bytes ? weights.bytes->size() : 0;
  KILN_CHECK(held == bytes, "constant weights ", toString(weights.dtype), " ",
             toString(weights.dims), " need ", bytes, " bytes, but hold ", held);
  return {{weights.dtype, weights.dims}};
}

std::vector<TensorType> inferCast(const CastParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  return {{p.toType, requiredInput(inputs, 0, "x").dims}};
}

std::vector<TensorType> inferResize(const ResizeParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  KILN_CHECK(isFloatingPoint(x.dtype), "resize needs a floating-point input, got ",
             toString(x.dtype), "; cast it first");
  const size_t spatial = p.outputSize.size();
  KILN_CHECK(spatial >= 1 && spatial <= 3, "resize takes 1 to 3 spatial dims, got outputSize ",
             toString(p.outputSize));
  KILN_CHECK(x.dims.size() == spatial + 2, "mismatched ranks: resize's outputSize ",
             toString(p.outputSize), " has ", spatial, " dims, but the input ", toString(x.dims),
             p.channelsLast ? " is not (N, spatial..., C)" : " is not (N, C, spatial...)",
             " with that many spatial dims");
  checkAllAtLeast(p.outputSize, 1, "outputSize");
  KILN_CHECK(p.scales.empty() || p.scales.size() == spatial, "resize takes no scales or one per ",
             "spatial dim, got ", p.scales.size(), " for ", spatial, " spatial dims");
  for (double scale : p.scales) {
    KILN_CHECK(scale >= 0.0, "resize scales must not be negative (0 = none), got ", scale);
  }
  KILN_CHECK(p.mode != ResizeMode::kCubic || spatial == 2,
             "cubic resize takes 2 spatial dims (bicubic), got ", spatial);
  Dims out = {x.dims[0]};
  if (!p.channelsLast) out.push_back(x.dims[1]);
  out.insert(out.end(), p.outputSize.begin(), p.outputSize.end());
  if (p.channelsLast) out.push_back(x.dims.back());
  return {{x.dtype, out}};
}

std::vector<TensorType> inferCumulative(const CumulativeParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 1, 1, "[x]");
  const TensorType& x = requiredInput(inputs, 0, "x");
  KILN_CHECK(x.dtype == DataType::kInt32 || x.dtype == DataType::kInt64 || isFloatingPoint(x.dtype),
             "cumulative sums and products take int32, int64, float32, float16 or bfloat16, got ",
             toString(x.dtype), "; cast the input first");
  // As torch, a scalar takes axis 0 or -1.
  normalizeAxis(p.axis, std::max<size_t>(x.dims.size(), 1), "cumulative axis");
  return {x};
}

// The (N, H, L, E) operand an attention input holds, directly or through its view; a view must
// stay inside its tensor.
Dims attentionOperandDims(const Dims& view, const TensorType& tensor, const char* name) {
  if (view.empty()) {
    KILN_CHECK(tensor.dims.size() == 4, "attention takes q, k and v of rank 4 (N, heads, length, ",
               "embedding), got ", name, " ", toString(tensor.dims));
    return tensor.dims;
  }
  if (isAttentionRowView(view)) {
    const AttentionOperand operand = attentionOperand(view, tensor.dims);
    const int64_t width = tensor.dims[2];
    KILN_CHECK(view[0] >= 1 && view[1] >= 1 && view[2] >= 0 && isKnown(width) &&
                   view[2] + view[0] * view[1] <= width,
               "the ", name, " row view ", toString(view), " does not fit in the rows of its ",
               "tensor ", toString(tensor.dims));
    return operand.dims;
  }
  KILN_CHECK(isStatic(tensor.dims), "the ", name, " view needs a tensor of static dims, got ",
             toString(tensor.dims));
  const AttentionOperand operand = attentionOperand(view, tensor.dims);
  int64_t last = operand.offset + operand.dims[3] - 1;
  const int64_t strides[] = {operand.batchStride, operand.headStride, operand.rowStride};
  for (size_t d = 0; d < 3; ++d) {
    KILN_CHECK(operand.dims[d] >= 1 && strides[d] >= 0, "the ", name, " view ", toString(view),
               " has an empty dim or a negative stride");
    last += (operand.dims[d] - 1) * strides[d];
  }
  KILN_CHECK(operand.offset >= 0 && last < volume(tensor.dims), "the ", name, " view ",
             toString(view), " reaches past its tensor ", toString(tensor.dims));
  return operand.dims;
}

std::vector<TensorType> inferAttention(const AttentionParams& p, const Inputs& inputs) {
  checkInputCount(inputs, 3, 4, "[q, k, v, mask]");
  const TensorType& qTensor = requiredInput(inputs, 0, "q");
  const TensorType& kTensor = requiredInput(inputs, 1, "k");
  const TensorType& vTensor = requiredInput(inputs, 2, "v");
  KILN_CHECK(qTensor.dtype == DataType::kFloat32 || qTensor.dtype == DataType::kFloat16 ||
                 qTensor.dtype == DataType::kBFloat16,
             "attention computes float32, float16 or bfloat16, not ", toString(qTensor.dtype));
  checkSameType(qTensor, kTensor, "q", "k");
  checkSameType(qTensor, vTensor, "q", "v");
  const Dims q = attentionOperandDims(p.queryView, qTensor, "q");
  const Dims k = attentionOperandDims(p.keyView, kTensor, "k");
  const Dims v = attentionOperandDims(p.valueView, vTensor, "v");
  const int64_t batch = mergeEqualDims(q[0], k[0], "q and k differ in batch");
  mergeEqualDims(k[0], v[0], "k and v differ in batch");
  const int64_t kvHeads = mergeEqualDims(k[1], v[1], "k and v differ in heads");
  KILN_CHECK(!isKnown(q[1]) || !isKnown(kvHeads) || (kvHeads > 0 && q[1] % kvHeads == 0),
             "the key/value head count ", kvHeads, " must divide the query head count ", q[1]);
  mergeEqualDims(q[3], k[3], "q and k differ in embedding size");
  const int64_t keys = mergeEqualDims(k[2], v[2], "k and v differ in length");
  const Dims out = {batch, q[1], q[2], v[3]};
  if (const TensorType* mask = optionalInput(inputs, 3)) {
    KILN_CHECK(mask->dtype == DataType::kBool || mask->dtype == qTensor.dtype ||
                   mask->dtype == DataType::kFloat32,
               "the attention mask must be bool, float32 or the type of q, not ",
               toString(mask->dtype));
    KILN_CHECK(mask->dims.size() <= 4, "the attention mask ", toString(mask->dims),
               " has rank > 4");
    KILN_CHECK(!mask->dims.empty() &&
                   (!isKnown(mask->dims.back()) || !isKnown(keys) || mask->dims.back() == keys),
               "the attention mask ", toString(mask->dims), " must have the key count ", keys,
               " as its last dim");
    const Dims scores = {batch, q[1], q[2], keys};
    const Dims broadcast = broadcastDims(scores, mask->dims, "the scores and the mask");
    for (size_t d = 0; d < 4; ++d) {
      KILN_CHECK(!isKnown(scores[d]) || !isKnown(broadcast[d]) || scores[d] == broadcast[d],
                 "the attention mask ", toString(mask->dims), " does not broadcast to the ",
                 "scores (N, H, L, S) = ", toString(scores));
    }
  }
  if (p.outputView.empty()) return {{qTensor.dtype, out}};
  if (isAttentionRowView(p.outputView)) {
    const Dims& view = p.outputView;
    KILN_CHECK(view[2] == 0 && view[0] >= 1 && view[1] >= 1 &&
                   (!isKnown(out[1]) || view[0] == out[1]) &&
                   (!isKnown(out[3]) || view[1] == out[3]),
               "the output row view ", toString(view), " must start at column 0 with the ",
               "attention's heads and value size ", out[1], " x ", out[3]);
    return {{qTensor.dtype, {out[0], out[2], view[0] * view[1]}}};
  }
  const TensorType written{qTensor.dtype, p.outputDims};
  const Dims viewed = attentionOperandDims(p.outputView, written, "output");
  KILN_CHECK(volume(viewed) == volume(p.outputDims), "the output view ", toString(p.outputView),
             " does not cover its tensor ", toString(p.outputDims));
  for (size_t d = 0; d < 4; ++d) {
    mergeEqualDims(viewed[d], out[d],
                   concat("the output view's dim ", d, " differs from the attention's result"));
  }
  return {written};
}

// Checks that a pointwise program is well formed (each operand a register before it, each
// register of the type its instruction gives) and returns one output per listed register, of
// the broadcast of every input's dims.
std::vector<TensorType> inferPointwise(const PointwiseParams& p, const Inputs& inputs) {
  KILN_CHECK(!p.program.empty() && !p.outputs.empty(),
             "a pointwise program needs instructions and at least one output");
  Dims out;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorType& input = requiredInput(inputs, i, "x");
    out = broadcastDims(out, input.dims, "the pointwise inputs");
  }
  const auto registers = static_cast<int64_t>(p.program.size());
  for (int64_t r = 0; r < registers; ++r) {
    const PointwiseInstruction& instruction = p.program[r];
    auto operand = [&](int64_t index) -> DataType {
      KILN_CHECK(index >= 0 && index < r, "pointwise instruction ", r, " reads register ", index,
                 ", which is not computed before it");
      return p.program[index].type;
    };
    switch (instruction.opcode) {
      case PointwiseOpcode::kInput:
        KILN_CHECK(instruction.a >= 0 && instruction.a < static_cast<int64_t>(inputs.size()),
                   "pointwise instruction ", r, " loads input ", instruction.a, " of ",
                   inputs.size());
        KILN_CHECK(inputs[instruction.a]->dtype == instruction.type, "pointwise instruction ", r,
                   " loads input ", instruction.a, " as ", toString(instruction.type),
                   ", but it is ", toString(inputs[instruction.a]->dtype));
        break;
      case PointwiseOpcode::kElementwise: {
        const DataType a = operand(instruction.a);
        KILN_CHECK(a == operand(instruction.b), "pointwise instruction ", r,
                   " combines registers of different types");
        const DataType expected = isComparison(instruction.elementwise) ? DataType::kBool : a;
        KILN_CHECK(instruction.type == expected, "pointwise instruction ", r, " gives ",
                   toString(instruction.type), ", but ", toString(instruction.elementwise), " of ",
                   toString(a), " gives ", toString(expected));
        break;
      }
      case PointwiseOpcode::kUnary:
      case PointwiseOpcode::kActivation:
        KILN_CHECK(instruction.type == operand(instruction.a), "pointwise instruction ", r,
                   " changes the type of its operand");
        break;
      case PointwiseOpcode::kCast:
        operand(instruction.a);
        break;
    }
  }
  std::vector<TensorType> outputs;
  for (int64_t index : p.outputs) {
    KILN_CHECK(index >= 0 && index < registers, "pointwise output register ", index,
               " is not in the program of ", registers, " instructions");
    outputs.push_back({p.program[index].type, out});
  }
  return outputs;
}

// A channels-last layer's output types, inferred from its channels-first form: the operands at
// `permuted` and the first output move their channel dim, nothing else changes.
template <typename P, typename Infer>
std::vector<TensorType> inferChannelsLast(P p, const Inputs& inputs,
                                          std::initializer_list<size_t> permuted, Infer infer) {
  p.channelsLast = false;
  std::vector<TensorType> channelsFirst;
  channelsFirst.reserve(permuted.size());
  Inputs firstInputs = inputs;
  for (size_t i : permuted) {
    if (i >= inputs.size() || inputs[i] == nullptr || inputs[i]->dims.size() < 3) continue;
    TensorType type = *inputs[i];
    type.dims = permuteDims(type.dims, toChannelsFirstPermutation(type.dims.size()));
    channelsFirst.push_back(type);
    firstInputs[i] = &channelsFirst.back();
  }
  std::vector<TensorType> outputs = infer(p, firstInputs);
  Dims& out = outputs.at(0).dims;
  out = permuteDims(out, toChannelsLastPermutation(out.size()));
  return outputs;
}

}  // namespace

std::vector<TensorType> inferOutputTypes(const LayerParams& params, const Inputs& inputs) {
  return std::visit(
      [&](const auto& p) -> std::vector<TensorType> {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConvolutionParams>) {
          if (p.channelsLast) return inferChannelsLast(p, inputs, {0, 1, 3}, inferConvolution);
          return inferConvolution(p, inputs);
        } else if constexpr (std::is_same_v<P, DeconvolutionParams>) {
          return inferDeconvolution(p, inputs);
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          return inferMatMul(p, inputs);
        } else if constexpr (std::is_same_v<P, FullyConnectedParams>) {
          return inferFullyConnected(inputs);
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          return inferElementwise(p, inputs);
        } else if constexpr (std::is_same_v<P, UnaryParams> ||
                             std::is_same_v<P, ActivationParams>) {
          return inferSameAsInput(inputs);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          if (p.channelsLast) return inferChannelsLast(p, inputs, {0}, inferPooling);
          return inferPooling(p, inputs);
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          return inferReduce(p, inputs);
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          return inferSoftmax(p, inputs);
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          return inferNormalization(p, inputs);
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          return inferShuffle(p, inputs);
        } else if constexpr (std::is_same_v<P, ConcatParams>) {
          return inferConcat(p, inputs);
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          return inferSlice(p, inputs);
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          return inferGather(p, inputs);
        } else if constexpr (std::is_same_v<P, ConstantParams>) {
          return inferConstant(p, inputs);
        } else if constexpr (std::is_same_v<P, CastParams>) {
          return inferCast(p, inputs);
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          return inferAttention(p, inputs);
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          return inferResize(p, inputs);
        } else if constexpr (std::is_same_v<P, CumulativeParams>) {
          return inferCumulative(p, inputs);
        } else if constexpr (std::is_same_v<P, SqueezeExcitationParams>) {
          return inferSqueezeExcitation(p, inputs);
        } else {
          static_assert(std::is_same_v<P, PointwiseParams>,
                        "every layer kind needs shape inference");
          return inferPointwise(p, inputs);
        }
      },
      params);
}

}  // namespace kiln

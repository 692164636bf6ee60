// The layer kinds of Kiln's Network and their parameters.
//
// A layer is its parameters (one struct per kind, held in the LayerParams variant) plus its
// input and output tensors. Weights are not parameters: they are tensors produced by Constant
// layers, so that folding and fusion passes treat every operand alike.
//
// Every params struct lists its fields once in `fields(visitor)`: serialization, equality and
// printing all go through it, so adding a field is one edit.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/ir/types.h"

namespace kiln {

// What a convolution or a fully connected layer applies to its result last; set by the builder's
// epilogue fusions. The GELUs are torch's: approximate="none" (erf) and "tanh"; a fully connected
// layer takes those and ReLU. A convolution takes the rest: ReLU6 (a clip to [0, 6]), SiLU and hard
// swish, which the builder fuses into depthwise convolutions only, run in Kiln's own kernels.
enum class FusedActivation : uint8_t {
  kNone,
  kRelu,
  kGeluErf,
  kGeluTanh,
  kRelu6,
  kSilu,
  kHardSwish
};
// Whether a convolution may carry the activation.
bool isConvolutionActivation(FusedActivation activation);
const char* toString(FusedActivation activation);

// Inputs: [x (N, C, spatial...), weight (K, C/groups, kernel...), bias (K) or null, residual
// (the output's dims and type) or null]. out = activation(conv(inputActivation(x), weight) + bias
// + residual), the padding zero after inputActivation as before it.
// Spatial rank (1, 2 or 3) is kernel.size(); every per-dim vector has that length. Converters
// give no residual and no activation: the builder fuses them from the layers that follow.
// channelsLast (set by the builder's layout pass) moves every channel dim last: x (N,
// spatial..., C), weight (K, kernel..., C/groups), residual and out (N, spatial..., K).
struct ConvolutionParams {
  int64_t outChannels = 0;
  Dims kernel;
  Dims stride;
  Dims prePadding;
  Dims postPadding;
  Dims dilation;
  int64_t groups = 1;
  FusedActivation activation = FusedActivation::kNone;
  // Applied to each element of x as it is read (the activation that produced x, fused by the
  // builder into the depthwise convolution that reads it, so x is not written and read again).
  FusedActivation inputActivation = FusedActivation::kNone;
  bool channelsLast = false;
  template <typename V>
  void fields(V&& v) {
    v("outChannels", outChannels), v("kernel", kernel), v("stride", stride),
        v("prePadding", prePadding), v("postPadding", postPadding), v("dilation", dilation),
        v("groups", groups), v("activation", activation), v("inputActivation", inputActivation),
        v("channelsLast", channelsLast);
  }
};

// Transposed convolution. Inputs: [x (N, C, spatial...), weight (C, K/groups, kernel...), bias (K)
// or null]; out = (in - 1) * stride - prePadding - postPadding + dilation * (kernel - 1)
// + outputPadding + 1, as torch.nn.ConvTranspose.
struct DeconvolutionParams {
  int64_t outChannels = 0;
  Dims kernel;
  Dims stride;
  Dims prePadding;
  Dims postPadding;
  Dims outputPadding;
  Dims dilation;
  int64_t groups = 1;
  template <typename V>
  void fields(V&& v) {
    v("outChannels", outChannels), v("kernel", kernel), v("stride", stride),
        v("prePadding", prePadding), v("postPadding", postPadding),
        v("outputPadding", outputPadding), v("dilation", dilation), v("groups", groups);
  }
};

// Inputs: [a (..., M, K), b (..., K, N)], both of rank >= 2; leading (batch) dims broadcast.
// A transpose flag swaps that operand's last two dims before the product.
struct MatMulParams {
  bool transposeA = false;
  bool transposeB = false;
  template <typename V>
  void fields(V&& v) {
    v("transposeA", transposeA), v("transposeB", transposeB);
  }
};

// torch.nn.functional.linear: inputs [x (..., K), weight (N, K), bias (N) or null, residual (the
// output's dims and type) or null] -> (..., N); out = activation(x @ weight^T + bias + residual).
// Converters give no residual and no activation: the builder fuses them from the layers that
// follow.
struct FullyConnectedParams {
  FusedActivation activation = FusedActivation::kNone;
  template <typename V>
  void fields(V&& v) {
    v("activation", activation);
  }
};

enum class ElementwiseOp : uint8_t {
  kSum,
  kSub,
  kProd,
  kDiv,
  kPow,
  kMax,
  kMin,
  kFloorDiv,
  kEqual,
  kLess,
  kGreater,
  kAnd,
  kOr,
  kXor,
};
const char* toString(ElementwiseOp op);

// Inputs [a, b], broadcast numpy-style (right-aligned, size-1 dims stretch). The output type is
// the inputs' type (which must match), or kBool for comparisons.
struct ElementwiseParams {
  ElementwiseOp op = ElementwiseOp::kSum;
  template <typename V>
  void fields(V&& v) {
    v("op", op);
  }
};

enum class UnaryOp : uint8_t {
  kExp,
  kLog,
  kSqrt,
  kRsqrt,
  kRecip,
  kAbs,
  kNeg,
  kSin,
  kCos,
  kTan,
  kErf,
  kFloor,
  kCeil,
  kRound,
  kSign,
  kNot,
};
const char* toString(UnaryOp op);

struct UnaryParams {
  UnaryOp op = UnaryOp::kExp;
  template <typename V>
  void fields(V&& v) {
    v("op", op);
  }
};

enum class ActivationType : uint8_t {
  kRelu,
  kSigmoid,
  kTanh,
  kLeakyRelu,  // alpha = negative slope
  kElu,        // alpha
  kSelu,
  kSoftplus,     // alpha = beta, beta = threshold (torch's names)
  kClip,         // alpha = min, beta = max (hardtanh, relu6, clamp)
  kHardSigmoid,  // torch's: relu6(x + 3) / 6
  kHardSwish,
  kGeluErf,
  kGeluTanh,
  kSilu,
  kMish,
};
const char* toString(ActivationType type);

struct ActivationParams {
  ActivationType type = ActivationType::kRelu;
  double alpha = 0.0;
  double beta = 0.0;
  template <typename V>
  void fields(V&& v) {
    v("type", type), v("alpha", alpha), v("beta", beta);
  }
};
// The fused activation a convolution can apply that computes what an Activation layer of these
// params computes, if any (ReLU6 is a clip to [0, 6]).
std::optional<FusedActivation> convolutionActivationOf(const ActivationParams& params);
// The Activation layer's params that compute a fused activation (ReLU6: a clip to [0, 6]); the
// default params (ReLU) for none.
ActivationParams activationParamsOf(FusedActivation activation);

enum class PoolingType : uint8_t { kMax, kAverage };
const char* toString(PoolingType type);

// Input (N, C, spatial...). Fixed pooling uses kernel/stride/padding/dilation (spatial rank =
// kernel.size()); adaptive pooling uses outputSize only, with torch's start/end index rule.
// channelsLast (set by the builder's layout pass): input and output are (N, spatial..., C).
struct PoolingParams {
  PoolingType type = PoolingType::kMax;
  bool adaptive = false;
  Dims outputSize;
  Dims kernel;
  Dims stride;
  Dims prePadding;
  Dims postPadding;
  Dims dilation;
  bool ceilMode = false;
  bool countIncludePad = true;  // average pooling: divide by the padded window size
  bool channelsLast = false;
  template <typename V>
  void fields(V&& v) {
    v("type", type), v("adaptive", adaptive), v("outputSize", outputSize), v("kernel", kernel),
        v("stride", stride), v("prePadding", prePadding), v("postPadding", postPadding),
        v("dilation", dilation), v("ceilMode", ceilMode), v("countIncludePad", countIncludePad),
        v("channelsLast", channelsLast);
  }
};

enum class ReduceOp : uint8_t { kSum, kProd, kMax, kMin, kAvg };
const char* toString(ReduceOp op);

// Axes may be negative (counted from the end); an empty axes list reduces every axis.
struct ReduceParams {
  ReduceOp op = ReduceOp::kSum;
  Dims axes;
  bool keepDims = false;
  template <typename V>
  void fields(V&& v) {
    v("op", op), v("axes", axes), v("keepDims", keepDims);
  }
};

struct SoftmaxParams {
  int64_t axis = -1;
  bool log = false;  // log_softmax
  template <typename V>
  void fields(V&& v) {
    v("axis", axis), v("log", log);
  }
};

enum class NormalizationType : uint8_t { kBatch, kLayer };
const char* toString(NormalizationType type);

// kBatch (inference): inputs [x (N, C, ...), scale (C), bias (C), mean (C), var (C)]; scale and
//   bias may be null. y = (x - mean) / sqrt(var + epsilon) * scale + bias, C the dim at `axis`
//   (1 from the converters; the last dim once the builder's layout pass runs it channels-last).
// kLayer: inputs [x, scale, bias, residual] with scale/bias (may be null) shaped like x's dims
//   from `axis` on; statistics over the dims from `axis` to the end. A residual (null unless the
//   builder fused an add into the norm) has x's dims and type: the norm is of x + residual, the
//   sum rounded to x's type first, as the unfused add stores it.
struct NormalizationParams {
  NormalizationType type = NormalizationType::kBatch;
  double epsilon = 1e-5;
  int64_t axis = 1;
  template <typename V>
  void fields(V&& v) {
    v("type", type), v("epsilon", epsilon), v("axis", axis);
  }
};

// TensorRT's shuffle: an optional first transpose, an optional reshape, an optional second
// transpose. Reshape dims: a positive size, 0 = copy the dim at this index of the (transposed)
// input, -1 = infer from the volume (at most one). An empty permutation means none.
// Inputs [x, reference]: reshapeReferences (empty, or one entry per reshape dim) may take a
// reshape dim from the optional reference tensor instead: entry r >= 0 is the reference's dim r
// at run time (its reshapeDims entry is then unused), -1 keeps the reshapeDims entry. That
// expresses a target with more than one dynamic size that no input dim gives (GPT-2's
// (N * L, C) viewed back as (N, L, C)).
struct ShuffleParams {
  Dims firstPermutation;
  bool hasReshape = false;
  Dims reshapeDims;
  Dims secondPermutation;
  Dims reshapeReferences;
  template <typename V>
  void fields(V&& v) {
    v("firstPermutation", firstPermutation), v("hasReshape", hasReshape),
        v("reshapeDims", reshapeDims), v("secondPermutation", secondPermutation),
        v("reshapeReferences", reshapeReferences);
  }
};

// dims[permutation[i]] for each i; `dims` itself for an empty permutation.
Dims permuteDims(const Dims& dims, const Dims& permutation);
// The permutation that undoes `permutation`.
Dims invertPermutation(const Dims& permutation);
// Whether `permutation` keeps every dim in place (an empty one does).
bool isIdentityPermutation(const Dims& permutation);
// A shuffle's dims after its reshape and before its second transpose, from its output dims.
Dims shuffleReshapedDims(const ShuffleParams& p, const Dims& outputDims);
// The permutations between (N, C, spatial...) and (N, spatial..., C) for tensors of `rank`.
Dims toChannelsLastPermutation(size_t rank);
Dims toChannelsFirstPermutation(size_t rank);
// Whether a shuffle is one transpose and nothing else (no reshape, no second transpose).
bool isPureTranspose(const ShuffleParams& p);

struct ConcatParams {
  int64_t axis = 0;
  template <typename V>
  void fields(V&& v) {
    v("axis", axis);
  }
};

// torch slicing along the listed axes: starts/ends may be negative (from the end) and are
// clamped to the dim as Python does; kSliceEnd means "to the end". Steps are positive, or 0.
//
// Ends known only at run time: endReferences is empty or has one entry per axis; -1 keeps
// ends[i], d >= 0 makes the end reference.dims[d] + ends[i], where the reference is the layer's
// second input, read only for its dims (x[:, :y.size(1)], arange to a run-time end).
// A step of 0 repeats element `start` (in [0, dim), not counted from the end) end - start times,
// without clamping the end: a size-1 dim broadcast to a length, which a reference makes a
// run-time one (torch.expand to a size known only at run time).
constexpr int64_t kSliceEnd = std::numeric_limits<int64_t>::max();
struct SliceParams {
  Dims axes;
  Dims starts;
  Dims ends;
  Dims steps;
  Dims endReferences;
  template <typename V>
  void fields(V&& v) {
    v("axes", axes), v("starts", starts), v("ends", ends), v("steps", steps),
        v("endReferences", endReferences);
  }
};
// Throws unless there is one start, end, step (or no steps) and end reference (or none) per
// axis, and every step is >= 0.
void checkSliceParams(const SliceParams& p);
// Where a slice starts reading along an axis of `dim` elements: Python's clamp for a step >= 1;
// for a step of 0, `start` itself, checked to be within the dim.
int64_t sliceStart(int64_t start, int64_t step, int64_t dim);
// How many elements a slice takes along an axis of `dim` elements, its end already resolved.
int64_t sliceLength(int64_t start, int64_t end, int64_t step, int64_t dim);

// Inputs [data, indices (int32 or int64, negative indices count from the end)].
//   kAxis:    out = data.dims[:axis] + indices.dims + data.dims[axis+1:] (torch.index_select /
//             embedding generalized to any indices rank; a rank-0 index removes the axis, like
//             torch.select).
//   kElement: torch.gather: indices have data's rank and data's dims except along axis, out has
//             the indices' dims, and out[p] = data[p with p[axis] = indices[p]].
enum class GatherMode : uint8_t { kAxis, kElement };
const char* toString(GatherMode mode);
struct GatherParams {
  int64_t axis = 0;
  GatherMode mode = GatherMode::kAxis;
  template <typename V>
  void fields(V&& v) {
    v("axis", axis), v("mode", mode);
  }
};

// No inputs; one output holding the weights.
struct ConstantParams {
  Weights weights;
  template <typename V>
  void fields(V&& v) {
    v("weights", weights);
  }
};

struct CastParams {
  DataType toType = DataType::kFloat32;
  template <typename V>
  void fields(V&& v) {
    v("toType", toType);
  }
};

// Scaled dot-product attention, fused (the score matrix is never stored). Inputs: [q (N, H, L, E),
// k (N, Hkv, S, E), v (N, Hkv, S, Ev), mask or null], q, k and v of one floating-point type; Hkv
// divides H (query head h reads key/value head h / (H / Hkv)). The mask broadcasts to
// (N, H, L, S) (rank <= 4, right-aligned): bool (true = attend) or floating-point (added to the
// scaled scores). out (N, H, L, Ev) = softmax(scale * q k^T + mask) v, with the keys after each
// query excluded when causal (top-left aligned, as torch's is_causal); scores and softmax in
// float32. A query whose every key is excluded gives zeros.
//
// The builder may have an operand read through a view of another tensor's bytes (the transposes
// and selects that split heads), or the output written through one (the transpose that merges
// them), so that no copy materializes them. A view is {N, H, L, E, offset, batch stride, head
// stride, row stride} in elements of the tensor given as that input (or written as the output,
// whose dims are then outputDims); an empty view means the tensor is the operand, contiguous.
// A row view {H, E, column} holds for any dims, dynamic ones included: the tensor is (N, L, W),
// each row holding the heads side by side from `column` on, so the operand is (N, H, L, E) with
// strides (L * W, E, W) and offset `column` (BERT's q, k and v, read from their projection or
// from its block of the fused QKV projection). Written as the output, it makes the output
// (N, L, H * E) (column 0; outputDims unused).
struct AttentionParams {
  double scale = 1.0;
  bool causal = false;
  Dims queryView;
  Dims keyView;
  Dims valueView;
  Dims outputView;
  Dims outputDims;
  template <typename V>
  void fields(V&& v) {
    v("scale", scale), v("causal", causal), v("queryView", queryView), v("keyView", keyView),
        v("valueView", valueView), v("outputView", outputView), v("outputDims", outputDims);
  }
};

// An attention operand's view: its (N, H, L, E) dims, element offset and strides.
struct AttentionOperand {
  Dims dims;
  int64_t offset = 0;
  int64_t batchStride = 0;
  int64_t headStride = 0;
  int64_t rowStride = 0;
};
// The operand that `view` describes (see AttentionParams) over a tensor of `tensorDims`; an empty
// view is the tensor itself, contiguous (tensorDims of rank 4).
AttentionOperand attentionOperand(const Dims& view, const Dims& tensorDims);
// Values of a row view ({H, E, column}; see AttentionParams).
constexpr size_t kAttentionRowViewSize = 3;
inline bool isAttentionRowView(const Dims& view) { return view.size() == kAttentionRowViewSize; }

enum class ResizeMode : uint8_t {
  kNearest,       // torch's "nearest": floor(o * ratio)
  kNearestExact,  // torch's "nearest-exact": floor((o + 0.5) * ratio)
  kLinear,        // linear, bilinear or trilinear by the spatial rank
  kCubic,         // bicubic (2 spatial dims), A = -0.75, border taps clamped
};
const char* toString(ResizeMode mode);

// torch.nn.functional.interpolate (antialias=False): input (N, C, spatial...) with 1 to 3 spatial
// dims -> (N, C, outputSize...). `scales` is empty or has one entry per spatial dim: the scale
// factor torch was given for that dim (0 = none), which sets the source-coordinate ratio to
// 1 / scale instead of in / out (unless alignCorners). The rules are torch's CPU kernels',
// including their exact copies along a dim whose size does not change. With channelsLast the
// input is (N, spatial..., C) and the output (N, outputSize..., C).
struct ResizeParams {
  ResizeMode mode = ResizeMode::kNearest;
  Dims outputSize;
  std::vector<double> scales;
  bool alignCorners = false;
  bool channelsLast = false;
  template <typename V>
  void fields(V&& v) {
    v("mode", mode), v("outputSize", outputSize), v("scales", scales),
        v("alignCorners", alignCorners), v("channelsLast", channelsLast);
  }
};

enum class CumulativeOp : uint8_t { kSum, kProd };
const char* toString(CumulativeOp op);

// torch.cumsum / torch.cumprod along `axis` (may be negative). The output has the input's dims
// and type: int32, int64, float32, float16 or bfloat16 (the 16-bit floats accumulate in float32;
// integers wrap around as torch's do).
struct CumulativeParams {
  CumulativeOp op = CumulativeOp::kSum;
  int64_t axis = 0;
  template <typename V>
  void fields(V&& v) {
    v("op", op), v("axis", axis);
  }
};

// A chain of pointwise layers fused by the builder (core/builder/pointwise_fusion.cpp) into one
// layer: a program over registers, one register per instruction, each instruction reading
// registers before it. Inputs: the external tensors the program loads (any number, any dims that
// broadcast numpy-style to the output dims). Outputs: the registers listed in `outputs`, each of
// the output dims (the broadcast of every input's dims) and of its register's type.
//
// Every register has the type of the unfused layer it replaces: a kernel computes float formats
// in float32 and rounds a float16 or bfloat16 register to its type right after computing it, as
// the unfused layer stores it, so that fused and unfused results are the same numbers.
enum class PointwiseOpcode : uint8_t {
  kInput,        // register = layer input `a` (type: that input's type)
  kElementwise,  // register = elementwise(a, b), as an ElementwiseParams layer
  kUnary,        // register = unary(a), as a UnaryParams layer
  kActivation,   // register = activation(a; alpha, beta), as an ActivationParams layer
  kCast,         // register = a converted to `type`, as a CastParams layer
};
const char* toString(PointwiseOpcode opcode);

struct PointwiseInstruction {
  PointwiseOpcode opcode = PointwiseOpcode::kInput;
  DataType type = DataType::kFloat32;  // the register's type
  int64_t a = 0;                       // kInput: input index; otherwise the first operand register
  int64_t b = -1;                      // kElementwise: the second operand register
  ElementwiseOp elementwise = ElementwiseOp::kSum;
  UnaryOp unary = UnaryOp::kExp;
  ActivationType activation = ActivationType::kRelu;
  double alpha = 0.0;
  double beta = 0.0;
  template <typename V>
  void fields(V&& v) {
    v("opcode", opcode), v("type", type), v("a", a), v("b", b), v("elementwise", elementwise),
        v("unary", unary), v("activation", activation), v("alpha", alpha), v("beta", beta);
  }
};

// The CUDA kernel generated for a program at build time (empty for the CPU backend): its CUDA C++
// source, the GPU architecture it was compiled for ("sm_90a") and the CUBIN, so that loading a
// plan on that GPU needs no compiler.
struct PointwiseKernelCode {
  std::string source;
  std::string architecture;
  std::vector<uint8_t> binary;
  template <typename V>
  void fields(V&& v) {
    v("source", source), v("architecture", architecture), v("binary", binary);
  }
};

struct PointwiseParams {
  std::vector<PointwiseInstruction> program;
  Dims outputs;  // the registers written to the layer's outputs, in output order
  PointwiseKernelCode cudaKernel;
  template <typename V>
  void fields(V&& v) {
    v("program", program), v("outputs", outputs), v("cudaKernel", cudaKernel);
  }
};

// The squeeze of a squeeze-and-excitation block (EfficientNet, MobileNetV3, ReXNet, GhostNet,
// the MBConv blocks of MaxViT and CoAtNet) as one layer, set by the builder: the mean of x over
// every dim but the first and the last, then fully connected, the hidden activation, fully
// connected. Inputs: [x (N, spatial..., C), w1 (R, C), b1 (R) or null, w2 (K, R), b2 (K) or
// null] -> (N, 1..., K) (x's rank with the spatial dims 1) or, without keepDims, (N, K).
// out = w2 @ hidden(w1 @ mean(x) + b1) + b2, all in float32 until the output is stored; the
// gate (a sigmoid) and the scaling stay with the pointwise layer that multiplies x.
// The hidden activation is an Activation layer's (type, alpha, beta), or none.
struct SqueezeExcitationParams {
  bool hasHiddenActivation = false;
  ActivationType hiddenActivation = ActivationType::kRelu;
  double hiddenAlpha = 0.0;
  double hiddenBeta = 0.0;
  bool keepDims = true;
  template <typename V>
  void fields(V&& v) {
    v("hasHiddenActivation", hasHiddenActivation), v("hiddenActivation", hiddenActivation),
        v("hiddenAlpha", hiddenAlpha), v("hiddenBeta", hiddenBeta), v("keepDims", keepDims);
  }
};

// The order of the alternatives is part of the plan format: append new kinds at the end.
using LayerParams =
    std::variant<ConvolutionParams, DeconvolutionParams, MatMulParams, FullyConnectedParams,
                 ElementwiseParams, UnaryParams, ActivationParams, PoolingParams, ReduceParams,
                 SoftmaxParams, NormalizationParams, ShuffleParams, ConcatParams, SliceParams,
                 GatherParams, ConstantParams, CastParams, AttentionParams, ResizeParams,
                 CumulativeParams, PointwiseParams, SqueezeExcitationParams>;

enum class LayerKind : uint8_t {
  kConvolution,
  kDeconvolution,
  kMatMul,
  kFullyConnected,
  kElementwise,
  kUnary,
  kActivation,
  kPooling,
  kReduce,
  kSoftmax,
  kNormalization,
  kShuffle,
  kConcat,
  kSlice,
  kGather,
  kConstant,
  kCast,
  kAttention,
  kResize,
  kCumulative,
  kPointwise,
  kSqueezeExcitation,
};
inline LayerKind kindOf(const LayerParams& params) {
  return static_cast<LayerKind>(params.index());
}
const char* toString(LayerKind kind);

// One line describing a layer's parameters ("Convolution(outChannels=64, kernel=[3,3], ...)").
std::string describe(const LayerParams& params);

}  // namespace kiln

#include "core/ir/layers.h"

#include <algorithm>
#include <sstream>
#include <type_traits>

namespace kiln {

Dims permuteDims(const Dims& dims, const Dims& permutation) {
  if (permutation.empty()) return dims;
  Dims out;
  for (int64_t axis : permutation) out.push_back(dims.at(static_cast<size_t>(axis)));
  return out;
}

Dims invertPermutation(const Dims& permutation) {
  Dims inverted(permutation.size());
  for (size_t i = 0; i < permutation.size(); ++i) {
    inverted.at(static_cast<size_t>(permutation[i])) = static_cast<int64_t>(i);
  }
  return inverted;
}

Dims shuffleReshapedDims(const ShuffleParams& p, const Dims& outputDims) {
  if (p.secondPermutation.empty()) return outputDims;
  return permuteDims(outputDims, invertPermutation(p.secondPermutation));
}

Dims toChannelsLastPermutation(size_t rank) {
  Dims permutation = {0};
  for (size_t d = 2; d < rank; ++d) permutation.push_back(static_cast<int64_t>(d));
  permutation.push_back(1);
  return permutation;
}

Dims toChannelsFirstPermutation(size_t rank) {
  return invertPermutation(toChannelsLastPermutation(rank));
}

bool isIdentityPermutation(const Dims& permutation) {
  for (size_t i = 0; i < permutation.size(); ++i) {
    if (permutation[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

bool isPureTranspose(const ShuffleParams& p) {
  return !p.firstPermutation.empty() && !p.hasReshape && p.secondPermutation.empty();
}

AttentionOperand attentionOperand(const Dims& view, const Dims& tensorDims) {
  if (view.empty()) {
    KILN_CHECK(tensorDims.size() == 4, "an attention operand needs rank 4 (N, H, L, E), got ",
               toString(tensorDims));
    const Dims& d = tensorDims;
    return {d, 0, d[1] * d[2] * d[3], d[2] * d[3], d[3]};
  }
  if (isAttentionRowView(view)) {
    KILN_CHECK(tensorDims.size() == 3, "an attention row view reads a tensor of rank 3 (N, L, W), ",
               "got ", toString(tensorDims));
    const Dims& d = tensorDims;
    return {{d[0], view[0], d[1], view[1]}, view[2], d[1] * d[2], view[1], d[2]};
  }
  KILN_CHECK(view.size() == 8, "an attention view has 8 values (or 3, a row view), got ",
             toString(view));
  return {Dims(view.begin(), view.begin() + 4), view[4], view[5], view[6], view[7]};
}

const char* toString(FusedActivation activation) {
  switch (activation) {
    case FusedActivation::kNone:
      return "none";
    case FusedActivation::kRelu:
      return "relu";
    case FusedActivation::kGeluErf:
      return "gelu_erf";
    case FusedActivation::kGeluTanh:
      return "gelu_tanh";
    case FusedActivation::kRelu6:
      return "relu6";
    case FusedActivation::kSilu:
      return "silu";
    case FusedActivation::kHardSwish:
      return "hardswish";
  }
  return "unknown";
}

bool isConvolutionActivation(FusedActivation activation) {
  return activation != FusedActivation::kGeluErf && activation != FusedActivation::kGeluTanh;
}

std::optional<FusedActivation> convolutionActivationOf(const ActivationParams& params) {
  switch (params.type) {
    case ActivationType::kRelu:
      return FusedActivation::kRelu;
    case ActivationType::kClip:
      if (params.alpha == 0.0 && params.beta == 6.0) return FusedActivation::kRelu6;
      return std::nullopt;
    case ActivationType::kSilu:
      return FusedActivation::kSilu;
    case ActivationType::kHardSwish:
      return FusedActivation::kHardSwish;
    default:
      return std::nullopt;
  }
}

ActivationParams activationParamsOf(FusedActivation activation) {
  switch (activation) {
    case FusedActivation::kRelu:
    case FusedActivation::kNone:
      return {ActivationType::kRelu};
    case FusedActivation::kRelu6:
      return {ActivationType::kClip, 0.0, 6.0};
    case FusedActivation::kSilu:
      return {ActivationType::kSilu};
    case FusedActivation::kHardSwish:
      return {ActivationType::kHardSwish};
    case FusedActivation::kGeluErf:
      return {ActivationType::kGeluErf};
    case FusedActivation::kGeluTanh:
      return {ActivationType::kGeluTanh};
  }
  return {};
}

const char* toString(GatherMode mode) {
  switch (mode) {
    case GatherMode::kAxis:
      return "axis";
    case GatherMode::kElement:
      return "element";
  }
  return "unknown gather mode";
}

const char* toString(ResizeMode mode) {
  switch (mode) {
    case ResizeMode::kNearest:
      return "nearest";
    case ResizeMode::kNearestExact:
      return "nearest_exact";
    case ResizeMode::kLinear:
      return "linear";
    case ResizeMode::kCubic:
      return "cubic";
  }
  return "unknown resize mode";
}

const char* toString(CumulativeOp op) {
  switch (op) {
    case CumulativeOp::kSum:
      return "sum";
    case CumulativeOp::kProd:
      return "prod";
  }
  return "unknown cumulative op";
}

const char* toString(ElementwiseOp op) {
  switch (op) {
    case ElementwiseOp::kSum:
      return "sum";
    case ElementwiseOp::kSub:
      return "sub";
    case ElementwiseOp::kProd:
      return "prod";
    case ElementwiseOp::kDiv:
      return "div";
    case ElementwiseOp::kPow:
      return "pow";
    case ElementwiseOp::kMax:
      return "max";
    case ElementwiseOp::kMin:
      return "min";
    case ElementwiseOp::kFloorDiv:
      return "floor_div";
    case ElementwiseOp::kEqual:
      return "equal";
    case ElementwiseOp::kLess:
      return "less";
    case ElementwiseOp::kGreater:
      return "greater";
    case ElementwiseOp::kAnd:
      return "and";
    case ElementwiseOp::kOr:
      return "or";
    case ElementwiseOp::kXor:
      return "xor";
  }
  return "unknown elementwise op";
}

const char* toString(UnaryOp op) {
  switch (op) {
    case UnaryOp::kExp:
      return "exp";
    case UnaryOp::kLog:
      return "log";
    case UnaryOp::kSqrt:
      return "sqrt";
    case UnaryOp::kRsqrt:
      return "rsqrt";
    case UnaryOp::kRecip:
      return "recip";
    case UnaryOp::kAbs:
      return "abs";
    case UnaryOp::kNeg:
      return "neg";
    case UnaryOp::kSin:
      return "sin";
    case UnaryOp::kCos:
      return "cos";
    case UnaryOp::kTan:
      return "tan";
    case UnaryOp::kErf:
      return "erf";
    case UnaryOp::kFloor:
      return "floor";
    case UnaryOp::kCeil:
      return "ceil";
    case UnaryOp::kRound:
      return "round";
    case UnaryOp::kSign:
      return "sign";
    case UnaryOp::kNot:
      return "not";
  }
  return "unknown unary op";
}

const char* toString(ActivationType type) {
  switch (type) {
    case ActivationType::kRelu:
      return "relu";
    case ActivationType::kSigmoid:
      return "sigmoid";
    case ActivationType::kTanh:
      return "tanh";
    case ActivationType::kLeakyRelu:
      return "leaky_relu";
    case ActivationType::kElu:
      return "elu";
    case ActivationType::kSelu:
      return "selu";
    case ActivationType::kSoftplus:
      return "softplus";
    case ActivationType::kClip:
      return "clip";
    case ActivationType::kHardSigmoid:
      return "hard_sigmoid";
    case ActivationType::kHardSwish:
      return "hard_swish";
    case ActivationType::kGeluErf:
      return "gelu_erf";
    case ActivationType::kGeluTanh:
      return "gelu_tanh";
    case ActivationType::kSilu:
      return "silu";
    case ActivationType::kMish:
      return "mish";
  }
  return "unknown activation";
}

const char* toString(PoolingType type) {
  switch (type) {
    case PoolingType::kMax:
      return "max";
    case PoolingType::kAverage:
      return "average";
  }
  return "unknown pooling type";
}

const char* toString(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kProd:
      return "prod";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kAvg:
      return "avg";
  }
  return "unknown reduce op";
}

const char* toString(NormalizationType type) {
  switch (type) {
    case NormalizationType::kBatch:
      return "batch";
    case NormalizationType::kLayer:
      return "layer";
  }
  return "unknown normalization type";
}

const char* toString(PointwiseOpcode opcode) {
  switch (opcode) {
    case PointwiseOpcode::kInput:
      return "input";
    case PointwiseOpcode::kElementwise:
      return "elementwise";
    case PointwiseOpcode::kUnary:
      return "unary";
    case PointwiseOpcode::kActivation:
      return "activation";
    case PointwiseOpcode::kCast:
      return "cast";
  }
  return "unknown pointwise opcode";
}

const char* toString(LayerKind kind) {
  switch (kind) {
    case LayerKind::kConvolution:
      return "Convolution";
    case LayerKind::kDeconvolution:
      return "Deconvolution";
    case LayerKind::kMatMul:
      return "MatMul";
    case LayerKind::kFullyConnected:
      return "FullyConnected";
    case LayerKind::kElementwise:
      return "Elementwise";
    case LayerKind::kUnary:
      return "Unary";
    case LayerKind::kActivation:
      return "Activation";
    case LayerKind::kPooling:
      return "Pooling";
    case LayerKind::kReduce:
      return "Reduce";
    case LayerKind::kSoftmax:
      return "Softmax";
    case LayerKind::kNormalization:
      return "Normalization";
    case LayerKind::kShuffle:
      return "Shuffle";
    case LayerKind::kConcat:
      return "Concat";
    case LayerKind::kSlice:
      return "Slice";
    case LayerKind::kGather:
      return "Gather";
    case LayerKind::kConstant:
      return "Constant";
    case LayerKind::kCast:
      return "Cast";
    case LayerKind::kAttention:
      return "Attention";
    case LayerKind::kResize:
      return "Resize";
    case LayerKind::kCumulative:
      return "Cumulative";
    case LayerKind::kPointwise:
      return "Pointwise";
    case LayerKind::kSqueezeExcitation:
      return "SqueezeExcitation";
  }
  return "UnknownLayer";
}

namespace {

// Python's clamping of a slice bound into [0, dim].
int64_t clampSliceBound(int64_t bound, int64_t dim) {
  if (bound == kSliceEnd) return dim;
  if (bound < 0) bound += dim;
  return std::min(std::max<int64_t>(bound, 0), dim);
}

}  // namespace

void checkSliceParams(const SliceParams& p) {
  const size_t n = p.axes.size();
  KILN_CHECK(p.starts.size() == n && p.ends.size() == n &&
                 (p.steps.empty() || p.steps.size() == n) &&
                 (p.endReferences.empty() || p.endReferences.size() == n),
             "slice needs one start, end, step and end reference per axis: axes ", toString(p.axes),
             ", starts ", toString(p.starts), ", ends ", toString(p.ends), ", steps ",
             toString(p.steps), ", end references ", toString(p.endReferences));
  for (int64_t step : p.steps) KILN_CHECK(step >= 0, "slice step ", step, " must not be negative");
}

int64_t sliceStart(int64_t start, int64_t step, int64_t dim) {
  if (step != 0) return clampSliceBound(start, dim);
  KILN_CHECK(start >= 0 && start < dim, "a slice of step 0 repeats element ", start,
             ", which is outside the dim of ", dim);
  return start;
}

int64_t sliceLength(int64_t start, int64_t end, int64_t step, int64_t dim) {
  if (step == 0) {
    KILN_CHECK(end != kSliceEnd, "a slice of step 0 needs an end");
    sliceStart(start, step, dim);
    return std::max<int64_t>(end - start, 0);
  }
  const int64_t from = clampSliceBound(start, dim);
  const int64_t to = clampSliceBound(end, dim);
  return to > from ? (to - from + step - 1) / step : 0;
}

namespace {

// Writes "name=value" for each field a params struct lists, comma-separated.
class FieldPrinter {
 public:
  explicit FieldPrinter(std::ostringstream& out) : out_(out) {}

  template <typename T>
  void operator()(const char* name, const T& value) {
    if (!first_) out_ << ", ";
    first_ = false;
    out_ << name << "=";
    write(value);
  }

 private:
  void write(const Dims& dims) { out_ << toString(dims); }
  void write(const std::vector<double>& values) {
    out_ << "[";
    for (size_t i = 0; i < values.size(); ++i) out_ << (i > 0 ? ", " : "") << values[i];
    out_ << "]";
  }
  void write(bool value) { out_ << (value ? "true" : "false"); }
  void write(int64_t value) { out_ << value; }
  void write(double value) { out_ << value; }
  void write(DataType type) { out_ << toString(type); }
  void write(const Weights& weights) { out_ << toString(weights.dtype) << toString(weights.dims); }
  template <typename Enum, typename = std::enable_if_t<std::is_enum_v<Enum>>>
  void write(Enum value) {
    out_ << toString(value);
  }

  std::ostringstream& out_;
  bool first_ = true;
};

// "sub,mul,add,relu; 3 inputs": the program's operations in order, then its inputs and outputs.
void describeProgram(const PointwiseParams& p, std::ostringstream& out) {
  size_t inputs = 0;
  bool first = true;
  for (const PointwiseInstruction& instruction : p.program) {
    if (instruction.opcode == PointwiseOpcode::kInput) {
      ++inputs;
      continue;
    }
    out << (first ? "" : ",");
    first = false;
    switch (instruction.opcode) {
      case PointwiseOpcode::kElementwise:
        out << toString(instruction.elementwise);
        break;
      case PointwiseOpcode::kUnary:
        out << toString(instruction.unary);
        break;
      case PointwiseOpcode::kActivation:
        out << toString(instruction.activation);
        break;
      default:
        out << "cast_" << toString(instruction.type);
        break;
    }
  }
  out << "; " << inputs << (inputs == 1 ? " input" : " inputs");
  if (p.outputs.size() != 1) out << ", " << p.outputs.size() << " outputs";
  if (!p.cudaKernel.binary.empty()) out << "; cubin " << p.cudaKernel.architecture;
}

}  // namespace

std::string describe(const LayerParams& params) {
  std::ostringstream out;
  out << toString(kindOf(params)) << "(";
  std::visit(
      [&](const auto& typed) {
        if constexpr (std::is_same_v<std::decay_t<decltype(typed)>, PointwiseParams>) {
          describeProgram(typed, out);
        } else {
          // fields() hands out mutable references; a copy shares the weights, it does not copy
          // them.
          auto copy = typed;
          copy.fields(FieldPrinter(out));
        }
      },
      params);
  out << ")";
  return out.str();
}

}  // namespace kiln

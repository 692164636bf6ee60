// Drops attention masks that mask nothing: a bool mask that is true everywhere, or an additive
// mask that is zero everywhere. HF's BERT, called without an attention_mask, builds an all-ones
// mask of (batch, 1, seq, seq) that constant folding turns into such a constant; the fused kernel
// would read a mask element for every score of every head, in every layer.
//
// With a dynamic sequence length the mask is not a constant: it is computed at run time from
// arange(seq), as (i > c) | (i == c), then expanded. Such a mask is a function of one integer
// tensor and scalar constants, so it is evaluated at every value that tensor can hold (its
// range, proven back to constants); when it is true at all of them, it masks nothing either.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// The constant whose values `tensor` holds, repeated, reshaped or sliced; or cast between two
// floating-point types, which keeps zeros zero. Null when there is none.
const Weights* sourceConstant(const Tensor* tensor) {
  while (tensor->producer() != nullptr) {
    const Layer* layer = tensor->producer();
    switch (layer->kind()) {
      case LayerKind::kConstant:
        return &layer->paramsAs<ConstantParams>().weights;
      case LayerKind::kShuffle:
      case LayerKind::kSlice:
        break;
      case LayerKind::kCast:
        if (!isFloatingPoint(layer->input(0)->dtype()) || !isFloatingPoint(tensor->dtype())) {
          return nullptr;
        }
        break;
      default:
        return nullptr;
    }
    tensor = layer->input(0);
  }
  return nullptr;
}

// Whether every element of a bool mask is true, or every element of an additive one is zero.
bool masksNothing(const Weights& weights) {
  if (weights.data() == nullptr || weights.count() == 0) return false;
  const auto* bytes = static_cast<const uint8_t*>(weights.data());
  const auto count = static_cast<size_t>(weights.count());
  switch (weights.dtype) {
    case DataType::kBool:
      for (size_t i = 0; i < count; ++i) {
        if (bytes[i] == 0) return false;
      }
      return true;
    case DataType::kFloat32:
      for (size_t i = 0; i < count; ++i) {
        uint32_t bits;
        std::memcpy(&bits, bytes + 4 * i, 4);
        if ((bits & 0x7fffffffu) != 0) return false;  // +0 and -0 add nothing
      }
      return true;
    case DataType::kFloat16:
    case DataType::kBFloat16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        if ((bits & 0x7fffu) != 0) return false;
      }
      return true;
    default:
      return false;
  }
}

// ---- masks computed from one integer tensor ----------------------------------------------------

// A closed range holding every element of an integer tensor.
struct ValueRange {
  int64_t lo;
  int64_t hi;
};

// Values one mask may be evaluated at: enough for any sequence length.
constexpr int64_t kMaxEvaluatedValues = int64_t{1} << 20;

bool isInteger(DataType type) { return isIntegral(type) && type != DataType::kBool; }

std::optional<ValueRange> constantRange(const Weights& weights) {
  if (weights.data() == nullptr || weights.count() == 0) return std::nullopt;
  const auto count = static_cast<size_t>(weights.count());
  const auto* bytes = static_cast<const uint8_t*>(weights.data());
  auto element = [&](size_t i) -> int64_t {
    switch (weights.dtype) {
      case DataType::kInt64: {
        int64_t value;
        std::memcpy(&value, bytes + 8 * i, 8);
        return value;
      }
      case DataType::kInt32: {
        int32_t value;
        std::memcpy(&value, bytes + 4 * i, 4);
        return value;
      }
      case DataType::kInt8:
        return static_cast<int8_t>(bytes[i]);
      default:
        return bytes[i];
    }
  };
  ValueRange range{element(0), element(0)};
  for (size_t i = 1; i < count; ++i) {
    range.lo = std::min(range.lo, element(i));
    range.hi = std::max(range.hi, element(i));
  }
  return range;
}

// The range of an integer tensor's elements, proven back to constants through layers that only
// move elements (reshape, transpose, slice, expand) and sums, differences and products.
std::optional<ValueRange> valueRange(const Tensor* tensor) {
  const Layer* layer = tensor->producer();
  if (layer == nullptr || !isInteger(tensor->dtype())) return std::nullopt;
  switch (layer->kind()) {
    case LayerKind::kConstant:
      return constantRange(layer->paramsAs<ConstantParams>().weights);
    case LayerKind::kShuffle:
    case LayerKind::kSlice:
      return valueRange(layer->input(0));
    case LayerKind::kElementwise: {
      const auto a = valueRange(layer->input(0));
      const auto b = valueRange(layer->input(1));
      if (!a || !b) return std::nullopt;
      const auto op = layer->paramsAs<ElementwiseParams>().op;
      int64_t corners[4];
      bool overflow = false;
      if (op == ElementwiseOp::kSum) {
        overflow |= __builtin_add_overflow(a->lo, b->lo, &corners[0]);
        overflow |= __builtin_add_overflow(a->hi, b->hi, &corners[1]);
        if (overflow) return std::nullopt;
        return ValueRange{corners[0], corners[1]};
      }
      if (op == ElementwiseOp::kSub) {
        overflow |= __builtin_sub_overflow(a->lo, b->hi, &corners[0]);
        overflow |= __builtin_sub_overflow(a->hi, b->lo, &corners[1]);
        if (overflow) return std::nullopt;
        return ValueRange{corners[0], corners[1]};
      }
      if (op == ElementwiseOp::kProd) {
        overflow |= __builtin_mul_overflow(a->lo, b->lo, &corners[0]);
        overflow |= __builtin_mul_overflow(a->lo, b->hi, &corners[1]);
        overflow |= __builtin_mul_overflow(a->hi, b->lo, &corners[2]);
        overflow |= __builtin_mul_overflow(a->hi, b->hi, &corners[3]);
        if (overflow) return std::nullopt;
        return ValueRange{*std::min_element(corners, corners + 4),
                          *std::max_element(corners, corners + 4)};
      }
      return std::nullopt;
    }
    default:
      return std::nullopt;
  }
}

// The value of a one-element integer constant (any shape of volume 1).
std::optional<int64_t> scalarConstant(const Tensor* tensor) {
  const Weights* weights = constantWeights(tensor);
  if (weights == nullptr || !isInteger(tensor->dtype()) || weights->count() != 1) {
    return std::nullopt;
  }
  return constantRange(*weights)->lo;
}

// A bool tensor as an elementwise function of one integer tensor (the variable) and scalar
// constants: comparisons, and, or, xor and not.
class BoolFunction {
 public:
  // Null unless `mask` is such a function; layers that only move elements may follow it.
  static std::optional<BoolFunction> of(const Tensor* mask) {
    while (mask->producer() != nullptr && (mask->producer()->kind() == LayerKind::kShuffle ||
                                           mask->producer()->kind() == LayerKind::kSlice)) {
      mask = mask->producer()->input(0);
    }
    BoolFunction function;
    function.root_ = mask;
    if (!function.collect(mask, 0) || function.variable_ == nullptr) return std::nullopt;
    return function;
  }

  const Tensor* variable() const { return variable_; }

  bool at(int64_t value) const { return evaluate(root_, value); }

 private:
  static constexpr int kMaxDepth = 16;

  // Checks the expression's shape and finds its one variable.
  bool collect(const Tensor* tensor, int depth) {
    const Layer* layer = tensor->producer();
    if (depth > kMaxDepth || layer == nullptr || tensor->dtype() != DataType::kBool) return false;
    if (layer->kind() == LayerKind::kUnary) {
      return layer->paramsAs<UnaryParams>().op == UnaryOp::kNot &&
             collect(layer->input(0), depth + 1);
    }
    if (layer->kind() != LayerKind::kElementwise) return false;
    switch (layer->paramsAs<ElementwiseParams>().op) {
      case ElementwiseOp::kAnd:
      case ElementwiseOp::kOr:
      case ElementwiseOp::kXor:
        return collect(layer->input(0), depth + 1) && collect(layer->input(1), depth + 1);
      case ElementwiseOp::kEqual:
      case ElementwiseOp::kLess:
      case ElementwiseOp::kGreater:
        return operand(layer->input(0)) && operand(layer->input(1));
      default:
        return false;
    }
  }

  // A comparison's operand: a scalar constant, or the variable (the same tensor every time, so
  // that all comparisons see the same element).
  bool operand(const Tensor* tensor) {
    if (scalarConstant(tensor)) return true;
    if (!isInteger(tensor->dtype())) return false;
    if (variable_ == nullptr) variable_ = tensor;
    return tensor == variable_;
  }

  int64_t operandAt(const Tensor* tensor, int64_t value) const {
    return tensor == variable_ ? value : *scalarConstant(tensor);
  }

  bool evaluate(const Tensor* tensor, int64_t value) const {
    const Layer* layer = tensor->producer();
    if (layer->kind() == LayerKind::kUnary) return !evaluate(layer->input(0), value);
    const auto op = layer->paramsAs<ElementwiseParams>().op;
    if (op == ElementwiseOp::kEqual || op == ElementwiseOp::kLess ||
        op == ElementwiseOp::kGreater) {
      const int64_t a = operandAt(layer->input(0), value);
      const int64_t b = operandAt(layer->input(1), value);
      return op == ElementwiseOp::kEqual ? a == b : op == ElementwiseOp::kLess ? a < b : a > b;
    }
    const bool a = evaluate(layer->input(0), value);
    const bool b = evaluate(layer->input(1), value);
    return op == ElementwiseOp::kAnd ? a && b : op == ElementwiseOp::kOr ? a || b : a != b;
  }

  const Tensor* root_ = nullptr;
  const Tensor* variable_ = nullptr;
};

// Whether a bool mask computed from one integer tensor is true at every value it can hold.
bool provenAllTrue(const Tensor* mask) {
  if (mask->dtype() != DataType::kBool) return false;
  const auto function = BoolFunction::of(mask);
  if (!function) return false;
  const auto range = valueRange(function->variable());
  if (!range || range->hi - range->lo >= kMaxEvaluatedValues) return false;
  for (int64_t value = range->lo; value <= range->hi; ++value) {
    if (!function->at(value)) return false;
  }
  return true;
}

}  // namespace

void removeAttentionMasksThatMaskNothing(Network& network) {
  std::vector<Layer*> attentions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kAttention || layer->inputs().size() < 4) continue;
    const Tensor* mask = layer->input(3);
    if (mask == nullptr) continue;
    const Weights* constant = sourceConstant(mask);
    if ((constant != nullptr && masksNothing(*constant)) || provenAllTrue(mask)) {
      attentions.push_back(layer);
    }
  }
  for (Layer* attention : attentions) {
    Layer* unmasked = network.addLayer(
        attention->params(), {attention->input(0), attention->input(1), attention->input(2)});
    const std::string name = attention->name();
    const std::string outputName = attention->output(0)->name();
    network.replaceAllUsesWith(attention->output(0), unmasked->output(0));
    network.removeLayer(attention);
    unmasked->setName(name);
    unmasked->output(0)->setName(outputName);
  }
}

}  // namespace kiln

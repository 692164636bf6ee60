// Recognizes GELU's tanh approximation written out in elementwise layers, as HF's GPT-2 and other
// models compute it (NewGELUActivation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))), and
// replaces it by one Activation layer. The fully connected epilogue fusion then takes it into the
// GEMM before it (cuBLASLt's GELU epilogue is this approximation); written out it is eight layers
// and, after pointwise fusion, still one more pass over the MLP's widest tensor.
//
// The chain is recognized by what it computes rather than by its shape, so that any operand
// order or algebraic form is found: a subgraph of elementwise, tanh and sigmoid layers over one
// tensor x and one-element constants, ending in a product, is evaluated in double with its
// constants as stored, at 801 points spanning [-10, 10] (tanh is saturated beyond). It is
// replaced when it equals the approximation at every point within a few units of rounding of
// the tensor's type, which a formula with any other constant misses.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/builder/constant_values.h"
#include "core/builder/passes.h"

namespace kiln {
namespace {

constexpr size_t kMaxLayers = 16;

bool isCandidateLayer(const Layer& layer) {
  switch (layer.kind()) {
    case LayerKind::kElementwise:
      switch (layer.paramsAs<ElementwiseParams>().op) {
        case ElementwiseOp::kSum:
        case ElementwiseOp::kSub:
        case ElementwiseOp::kProd:
        case ElementwiseOp::kDiv:
        case ElementwiseOp::kPow:
          return true;
        default:
          return false;
      }
    case LayerKind::kActivation: {
      const ActivationType type = layer.paramsAs<ActivationParams>().type;
      return type == ActivationType::kTanh || type == ActivationType::kSigmoid;
    }
    default:
      return false;
  }
}

// A function of one tensor x built of candidate layers and scalar constants, ending at `root`.
class ScalarFunction {
 public:
  // The function `root` computes of one tensor, when it is one; else none.
  static std::optional<ScalarFunction> of(Tensor* root) {
    ScalarFunction function;
    if (!function.collect(root) || function.source_ == nullptr) return std::nullopt;
    return function;
  }

  Tensor* source() const { return source_; }
  const std::vector<const Layer*>& layers() const { return layers_; }

  double at(double x) const {
    std::map<const Tensor*, double> values;
    return evaluate(root(), x, values);
  }

 private:
  const Tensor* root() const { return layers_.front()->output(0); }

  // Walks the layers that `tensor` depends on; false when one is not a candidate, the leaves
  // are more than one tensor, or the subgraph grows past kMaxLayers.
  bool collect(Tensor* tensor) {
    if (scalarConstant(tensor)) return true;
    const Layer* layer = tensor->producer();
    if (layer == nullptr || !isCandidateLayer(*layer)) {
      if (source_ != nullptr && source_ != tensor) return false;
      source_ = tensor;
      return isFloatingPoint(tensor->dtype());
    }
    if (std::find(layers_.begin(), layers_.end(), layer) != layers_.end()) return true;
    if (layers_.size() == kMaxLayers) return false;
    layers_.push_back(layer);
    for (Tensor* input : layer->inputs()) {
      if (!collect(input)) return false;
    }
    return true;
  }

  double evaluate(const Tensor* tensor, double x, std::map<const Tensor*, double>& values) const {
    if (tensor == source_) return x;
    if (const std::optional<double> constant = scalarConstant(tensor)) return *constant;
    if (const auto found = values.find(tensor); found != values.end()) return found->second;
    const Layer& layer = *tensor->producer();
    double result = 0.0;
    if (layer.kind() == LayerKind::kActivation) {
      const double a = evaluate(layer.input(0), x, values);
      result = layer.paramsAs<ActivationParams>().type == ActivationType::kTanh
                   ? std::tanh(a)
                   : 1.0 / (1.0 + std::exp(-a));
    } else {
      const double a = evaluate(layer.input(0), x, values);
      const double b = evaluate(layer.input(1), x, values);
      switch (layer.paramsAs<ElementwiseParams>().op) {
        case ElementwiseOp::kSum:
          result = a + b;
          break;
        case ElementwiseOp::kSub:
          result = a - b;
          break;
        case ElementwiseOp::kProd:
          result = a * b;
          break;
        case ElementwiseOp::kDiv:
          result = a / b;
          break;
        default:
          result = std::pow(a, b);
          break;
      }
    }
    values[tensor] = result;
    return result;
  }

  Tensor* source_ = nullptr;
  std::vector<const Layer*> layers_;  // the root's layer first
};

double tanhGelu(double x) {
  constexpr double kSqrtTwoOverPi = 0.79788456080286535588;
  return 0.5 * x * (1.0 + std::tanh(kSqrtTwoOverPi * (x + 0.044715 * x * x * x)));
}

// Units of rounding of a float type, relative.
double roundingUnit(DataType type) {
  switch (type) {
    case DataType::kFloat16:
      return 0x1p-11;
    case DataType::kBFloat16:
      return 0x1p-8;
    default:
      return 0x1p-24;
  }
}

// Whether `function` is GELU's tanh approximation at every point sampled, within 4 units of
// rounding of `type` (of the result's magnitude, or of 1 near 0).
bool isTanhGelu(const ScalarFunction& function, DataType type) {
  const double tolerance = 4.0 * roundingUnit(type);
  for (int i = -400; i <= 400; ++i) {
    const double x = i / 40.0;
    const double expected = tanhGelu(x);
    const double actual = function.at(x);
    if (!(std::abs(actual - expected) <= tolerance * std::max(1.0, std::abs(expected)))) {
      return false;
    }
  }
  return true;
}

bool containsTanhOrSigmoid(const ScalarFunction& function) {
  return std::any_of(function.layers().begin(), function.layers().end(),
                     [](const Layer* layer) { return layer->kind() == LayerKind::kActivation; });
}

}  // namespace

void recognizeTanhGelu(Network& network) {
  std::vector<Layer*> products;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kElementwise &&
        layer->paramsAs<ElementwiseParams>().op == ElementwiseOp::kProd) {
      products.push_back(layer);
    }
  }
  for (Layer* product : products) {
    Tensor* out = product->output(0);
    const std::optional<ScalarFunction> function = ScalarFunction::of(out);
    if (!function || !containsTanhOrSigmoid(*function)) continue;
    Tensor* source = function->source();
    if (source->dims() != out->dims() || source->dtype() != out->dtype() ||
        !isTanhGelu(*function, out->dtype())) {
      continue;
    }
    // Layers of the chain that others read stay for them; eliminateDeadLayers takes the rest.
    Layer* gelu = network.addActivation(source, {ActivationType::kGeluTanh});
    const std::string name = concat(product->name(), ".gelu_tanh");
    const std::string outputName = out->name();
    network.replaceAllUsesWith(out, gelu->output(0));
    network.removeLayer(product);
    gelu->setName(name);
    gelu->output(0)->setName(outputName);
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

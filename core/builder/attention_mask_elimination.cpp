// Drops attention masks that mask nothing: a bool mask that is true everywhere, or an additive
// mask that is zero everywhere. HF's BERT, called without an attention_mask, builds an all-ones
// mask of (batch, 1, seq, seq) that constant folding turns into such a constant; the fused kernel
// would read a mask element for every score of every head, in every layer.
#include <cstdint>
#include <cstring>
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

}  // namespace

void removeAttentionMasksThatMaskNothing(Network& network) {
  std::vector<Layer*> attentions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kAttention || layer->inputs().size() < 4) continue;
    const Tensor* mask = layer->input(3);
    if (mask == nullptr) continue;
    const Weights* constant = sourceConstant(mask);
    if (constant != nullptr && masksNothing(*constant)) attentions.push_back(layer);
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

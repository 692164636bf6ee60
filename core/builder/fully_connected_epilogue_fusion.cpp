// Fuses what follows a fully connected layer into its epilogue: a residual add of a tensor of the
// output's dims (a transformer block's x + proj(h)), then a ReLU or GELU (the MLP's first
// Linear, also behind a reshape of the product), each when the layer's output has no other
// reader. The CUDA backend runs them in cuBLASLt's epilogue (the residual read as C with beta
// 1), so neither the GEMM's result nor the sum is stored and read back by another kernel.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "core/engine/memory_plan.h"

namespace kiln {
namespace {

// The other operand of a same-shape add that reads `out`, or null.
Tensor* residualOperand(const Layer& add, const Tensor* out) {
  if (add.kind() != LayerKind::kElementwise ||
      add.paramsAs<ElementwiseParams>().op != ElementwiseOp::kSum) {
    return nullptr;
  }
  Tensor* other = add.input(0) == out ? add.input(1) : add.input(0);
  if (other->dtype() != out->dtype() || other->dims() != out->dims()) return nullptr;
  return other;
}

// The epilogue activation computing what `layer` computes on a tensor of `dtype`, if any.
//
// The GPU has one GELU epilogue, cuBLASLt's tanh approximation. It differs from the exact (erf)
// GELU by at most 4.73e-4, at |x| = 2.70 (computed in double over [-10, 10] in steps of 1e-5).
// For x = 2.70 that is below half an fp16 ulp of the result 2.69 (9.8e-4), and far below
// bf16's (7.8e-3); for x = -2.70 the exact result is -0.0094 and the difference is the same
// 4.73e-4: small against the tensor's scale, not against that value. fp32 keeps its exact GELU
// as a separate layer.
std::optional<FusedActivation> epilogueActivation(const Layer& layer, DataType dtype) {
  if (layer.kind() != LayerKind::kActivation) return std::nullopt;
  switch (layer.paramsAs<ActivationParams>().type) {
    case ActivationType::kRelu:
      return FusedActivation::kRelu;
    case ActivationType::kGeluTanh:
      return FusedActivation::kGeluTanh;
    case ActivationType::kGeluErf:
      if (dtype == DataType::kFloat16 || dtype == DataType::kBFloat16) {
        return FusedActivation::kGeluErf;
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

// Replaces `fc` and `absorbed` (which reads fc's output) by one fully connected layer with the
// given params and residual, computing what `absorbed` computed.
Layer* replaceWithFused(Network& network, Layer* fc, Layer* absorbed,
                        const FullyConnectedParams& params, Tensor* residual) {
  std::vector<Tensor*> inputs = {fc->input(0), fc->input(1),
                                 fc->inputs().size() > 2 ? fc->input(2) : nullptr, residual};
  Layer* fused = network.addLayer(params, inputs);
  const std::string name = concat(fc->name(), " + ", absorbed->name());
  const std::string outputName = absorbed->output(0)->name();
  network.replaceAllUsesWith(absorbed->output(0), fused->output(0));
  network.removeLayer(absorbed);
  network.removeLayer(fc);
  fused->setName(name);
  fused->output(0)->setName(outputName);
  return fused;
}

// reshape -> activation, the activation the reshape's sole reader and one the epilogue takes
// (GPT-2's Conv1D views its (N*L, 4E) product as (N, L, 4E) before the GELU): an activation acts
// on each element alone, so it becomes activation -> reshape, and the fully connected layer
// before can take the activation. Returns whether it moved.
bool moveReshapeAfterActivation(Network& network, Layer* reshape, DataType dtype) {
  if (reshape->kind() != LayerKind::kShuffle ||
      !isReshapeOnly(reshape->paramsAs<ShuffleParams>())) {
    return false;
  }
  Layer* activation = network.soleReader(reshape->output(0));
  if (activation == nullptr || !epilogueActivation(*activation, dtype)) return false;
  Tensor* x = reshape->input(0);
  Layer* activated = network.addLayer(activation->params(), {x});
  // A reshape to run-time sizes keeps reading them from its reference.
  std::vector<Tensor*> reshapeInputs = reshape->inputs();
  std::replace(reshapeInputs.begin(), reshapeInputs.end(), x, activated->output(0));
  Layer* reshaped = network.addLayer(reshape->params(), reshapeInputs);
  const std::string activationName = activation->name();
  const std::string reshapeName = reshape->name();
  const std::string outputName = activation->output(0)->name();
  network.replaceAllUsesWith(activation->output(0), reshaped->output(0));
  network.removeLayer(activation);
  network.removeLayer(reshape);
  activated->setName(activationName);
  reshaped->setName(reshapeName);
  reshaped->output(0)->setName(outputName);
  return true;
}

}  // namespace

void fuseFullyConnectedEpilogues(Network& network) {
  std::vector<Layer*> layers;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() == LayerKind::kFullyConnected) layers.push_back(network.layer(i));
  }
  for (Layer* fc : layers) {
    while (true) {
      FullyConnectedParams params = fc->paramsAs<FullyConnectedParams>();
      // The activation is applied last: nothing after it can join the epilogue.
      if (params.activation != FusedActivation::kNone) break;
      Tensor* out = fc->output(0);
      Layer* reader = network.soleReader(out);
      if (reader == nullptr) break;
      Tensor* residual = fc->inputs().size() > 3 ? fc->input(3) : nullptr;
      if (residual == nullptr) {
        if (Tensor* other = residualOperand(*reader, out)) {
          fc = replaceWithFused(network, fc, reader, params, other);
          continue;
        }
      }
      const std::optional<FusedActivation> activation = epilogueActivation(*reader, out->dtype());
      if (!activation) {
        if (moveReshapeAfterActivation(network, reader, out->dtype())) continue;
        break;
      }
      params.activation = *activation;
      fc = replaceWithFused(network, fc, reader, params, residual);
    }
  }
}

}  // namespace kiln

// Runs matrix multiplies by a constant matrix as fully connected layers, taking a following add
// of a constant row as their bias. GPT-2's Conv1D and torch.export's linear (addmm of x, a
// transposed weight and a bias) arrive as such a MatMul and an add: as a fully connected layer
// the bias runs in the GEMM's epilogue instead of as a kernel of its own, and the epilogue
// fusions and sibling fusion that follow see the layer they know.
#include <string>
#include <utility>
#include <vector>

#include "core/builder/passes.h"
#include "kernels/cpu/data_movement.h"

namespace kiln {
namespace {

// The add that reads the product as its only reader, with a constant of (..., 1, N) dims of the
// product's type on the other side (one value per output column): that constant, else null.
const Weights* biasOfSoleAdd(const Network& network, const Tensor* product, Layer** add) {
  Layer* reader = network.soleReader(product);
  if (reader == nullptr || reader->kind() != LayerKind::kElementwise ||
      reader->paramsAs<ElementwiseParams>().op != ElementwiseOp::kSum) {
    return nullptr;
  }
  const Tensor* other = reader->input(0) == product ? reader->input(1) : reader->input(0);
  const Weights* bias = constantWeights(other);
  const Dims& dims = other->dims();
  if (bias == nullptr || other == product || other->dtype() != product->dtype() || dims.empty() ||
      dims.size() > product->dims().size() || dims.back() != product->dims().back() ||
      volume(dims) != dims.back()) {
    return nullptr;
  }
  *add = reader;
  return bias;
}

}  // namespace

void convertConstantMatMulsToFullyConnected(Network& network) {
  std::vector<Layer*> matmuls;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kMatMul || layer->paramsAs<MatMulParams>().transposeA) continue;
    const Weights* b = constantWeights(layer->input(1));
    if (b == nullptr || b->dims.size() != 2 || !b->bytes || layer->input(0)->rank() < 2 ||
        b->dtype != layer->input(0)->dtype() || !isFloatingPoint(b->dtype)) {
      continue;
    }
    matmuls.push_back(layer);
  }
  for (Layer* matmul : matmuls) {
    const Weights& b = *constantWeights(matmul->input(1));
    // Fully connected weights are (N, K): B as given when transposed, else B^T.
    Tensor* weight = matmul->input(1);
    if (!matmul->paramsAs<MatMulParams>().transposeB) {
      std::vector<uint8_t> bytes(b.bytes->size());
      cpu_kernels::transpose(b.data(), b.dims, {1, 0}, elementSize(b.dtype), bytes.data());
      weight =
          network
              .addConstant(Weights::fromBytes(b.dtype, {b.dims[1], b.dims[0]}, std::move(bytes)))
              ->output(0);
    }
    Layer* add = nullptr;
    const Weights* biasValues = biasOfSoleAdd(network, matmul->output(0), &add);
    Tensor* bias = nullptr;
    if (biasValues != nullptr) {
      Weights row = *biasValues;
      row.dims = {row.dims.back()};
      bias = network.addConstant(row)->output(0);
    }
    Layer* fc = network.addFullyConnected(matmul->input(0), weight, bias);
    Tensor* replaced = add != nullptr ? add->output(0) : matmul->output(0);
    const std::string name = matmul->name();
    const std::string outputName = replaced->name();
    network.replaceAllUsesWith(replaced, fc->output(0));
    if (add != nullptr) network.removeLayer(add);
    network.removeLayer(matmul);
    fc->setName(name);
    fc->output(0)->setName(outputName);
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

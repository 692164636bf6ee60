// Merges sibling GEMMs that read the same tensor into one wider GEMM: fully connected layers with
// constant weights (BERT's query, key and value projections), and matrix multiplies by a
// constant rank-2 B. One launch reads the input once instead of once per sibling, and a wider N
// keeps more of the GPU busy. The weights and biases are concatenated into new constants.
//
// The fused output (..., N1 + N2 + ...) holds each original output as a block of columns. An
// attention reads its operand through a view (AttentionParams), so an attention operand becomes
// a view of its column block: offset = block start, row stride = the fused width. Any other
// reader (and a network output) needs the block copied out by a Slice; the group is fused only
// when that still pays (see worthFusing). Runs after readAttentionOperandsThroughViews, so the
// operands' views are already final, and after the epilogue fusions, so that siblings with
// different fused activations or with a residual are told apart.
//
// 1x1 convolutions are not merged here: on the CUDA backend they already became fully connected
// layers (convertPointwiseConvolutionsToFullyConnected), and channels-first convolutions have no
// reader that takes a channel block as a view, so every block would be a copy.
#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// A GEMM that may merge with its siblings: its constant weight matrix, its bias, its output width.
struct Sibling {
  Layer* layer = nullptr;
  const Weights* weight = nullptr;
  const Weights* bias = nullptr;  // fully connected only; null when absent
  int64_t width = 0;              // output columns N
};

bool columnsAlongRows(const Layer& layer) {
  // Fully connected weights are (N, K); a matrix multiply's B is (K, N), or (N, K) transposed.
  return layer.kind() == LayerKind::kFullyConnected || layer.paramsAs<MatMulParams>().transposeB;
}

std::optional<Sibling> asSibling(Layer* layer) {
  Sibling s;
  s.layer = layer;
  if (layer->kind() == LayerKind::kFullyConnected) {
    if (layer->inputs().size() > 3 && layer->input(3) != nullptr) return std::nullopt;
    s.weight = constantWeights(layer->input(1));
    if (s.weight == nullptr) return std::nullopt;
    if (layer->inputs().size() > 2 && layer->input(2) != nullptr) {
      s.bias = constantWeights(layer->input(2));
      // The fused bias takes the weights' type; siblings without a bias get zeros.
      if (s.bias == nullptr || s.bias->dtype != s.weight->dtype || !s.bias->bytes) {
        return std::nullopt;
      }
    }
  } else if (layer->kind() == LayerKind::kMatMul) {
    s.weight = constantWeights(layer->input(1));
    if (s.weight == nullptr || s.weight->dims.size() != 2) return std::nullopt;
  } else {
    return std::nullopt;
  }
  if (s.weight->dims.size() != 2 || !s.weight->bytes) return std::nullopt;
  s.width = s.weight->dims[columnsAlongRows(*layer) ? 0 : 1];
  if (layer->output(0)->dims().back() != s.width) return std::nullopt;
  return s;
}

// Siblings that may share one GEMM: same kind and parameters (fused activation, transposes),
// same weight type and input width, same output type.
std::string groupKey(const Sibling& s) {
  const Dims& w = s.weight->dims;
  const int64_t inputWidth = columnsAlongRows(*s.layer) ? w[1] : w[0];
  return concat(describe(s.layer->params()), "|", toString(s.weight->dtype), "|", inputWidth, "|",
                toString(s.layer->output(0)->dtype()));
}

// The attention operand view `view` (see AttentionParams) of a contiguous tensor of rows of
// `width`, moved to column `start` of a tensor of rows of `fusedWidth`. A stride that is a
// multiple of the width steps whole rows and is scaled; the others must stay inside one row.
// A strided view needs static dims; a row view holds for any.
std::optional<Dims> viewInColumnBlock(const Dims& view, const Dims& tensorDims, int64_t width,
                                      int64_t start, int64_t fusedWidth) {
  if (isAttentionRowView(view)) {
    // Rows of the fused tensor are rows of the sibling's, wider: only the column moves.
    if (tensorDims.size() != 3 || tensorDims[2] != width) return std::nullopt;
    return Dims{view[0], view[1], view[2] + start};
  }
  if (!isStatic(tensorDims)) return std::nullopt;
  const AttentionOperand operand = attentionOperand(view, tensorDims);
  int64_t rowOffset = operand.offset / width;
  int64_t inRowLast = operand.offset % width + operand.dims[3] - 1;
  Dims strides = {operand.batchStride, operand.headStride, operand.rowStride};
  for (size_t d = 0; d < 3; ++d) {
    if (operand.dims[d] == 1) continue;
    if (strides[d] % width == 0) {
      strides[d] = strides[d] / width * fusedWidth;
    } else {
      inRowLast += strides[d] * (operand.dims[d] - 1);
    }
  }
  if (inRowLast >= width) return std::nullopt;
  const Dims& dims = operand.dims;
  return Dims{dims[0],
              dims[1],
              dims[2],
              dims[3],
              rowOffset * fusedWidth + start + operand.offset % width,
              strides[0],
              strides[1],
              strides[2]};
}

// Whether every reader of `output` is an attention that reads it as q, k or v only, and can
// read it as a view of column block `start` of the fused output.
bool readableAsViews(const Network& network, const Tensor* output, int64_t width, int64_t start,
                     int64_t fusedWidth) {
  if (network.isOutput(output)) return false;
  const std::vector<Layer*> readers = network.consumers(output);
  if (readers.empty()) return false;
  for (const Layer* reader : readers) {
    if (reader->kind() != LayerKind::kAttention) return false;
    if (reader->inputs().size() > 3 && reader->input(3) == output) return false;
    const auto& p = reader->paramsAs<AttentionParams>();
    const Dims* views[] = {&p.queryView, &p.keyView, &p.valueView};
    for (size_t i = 0; i < 3; ++i) {
      if (reader->input(i) != output) continue;
      if (views[i]->empty() && output->rank() != 4) return false;
      if (!viewInColumnBlock(*views[i], output->dims(), width, start, fusedWidth)) return false;
    }
  }
  return true;
}

// The fused GEMM reads the input (rows x K) once instead of once per sibling, and launches once;
// each block copied out by a Slice is written and read again (2 x rows x N_i) and launches too.
// Fuse when there are fewer copies than the launches saved and the copied traffic does not
// exceed the input traffic saved: both sides scale with the rows, so this holds for any batch.
bool worthFusing(const std::vector<Sibling>& siblings, const std::vector<bool>& copied,
                 int64_t inputWidth) {
  const int64_t saved = static_cast<int64_t>(siblings.size()) - 1;
  int64_t copies = 0;
  int64_t copiedColumns = 0;
  for (size_t i = 0; i < siblings.size(); ++i) {
    if (!copied[i]) continue;
    ++copies;
    copiedColumns += siblings[i].width;
  }
  return copies < static_cast<int64_t>(siblings.size()) && 2 * copiedColumns <= saved * inputWidth;
}

// Concatenates row-major matrices along rows (axis 0) or columns (axis 1).
Weights concatenate(const std::vector<const Weights*>& parts, int axis) {
  const size_t element = elementSize(parts[0]->dtype);
  const int64_t other = parts[0]->dims[1 - axis];
  int64_t total = 0;
  for (const Weights* part : parts) total += part->dims[axis];
  std::vector<uint8_t> bytes(static_cast<size_t>(total * other) * element);
  if (axis == 0) {
    size_t at = 0;
    for (const Weights* part : parts) {
      std::memcpy(bytes.data() + at, part->data(), part->bytes->size());
      at += part->bytes->size();
    }
    return Weights::fromBytes(parts[0]->dtype, {total, other}, std::move(bytes));
  }
  const size_t rowBytes = static_cast<size_t>(total) * element;
  size_t column = 0;
  for (const Weights* part : parts) {
    const size_t partRow = static_cast<size_t>(part->dims[1]) * element;
    const auto* source = static_cast<const uint8_t*>(part->data());
    for (int64_t r = 0; r < other; ++r) {
      std::memcpy(bytes.data() + static_cast<size_t>(r) * rowBytes + column,
                  source + static_cast<size_t>(r) * partRow, partRow);
    }
    column += partRow;
  }
  return Weights::fromBytes(parts[0]->dtype, {other, total}, std::move(bytes));
}

// The siblings' biases end to end; zeros for a sibling without one.
Weights concatenatedBias(const std::vector<Sibling>& siblings, DataType dtype) {
  const size_t element = elementSize(dtype);
  int64_t total = 0;
  for (const Sibling& s : siblings) total += s.width;
  std::vector<uint8_t> bytes(static_cast<size_t>(total) * element, 0);
  size_t at = 0;
  for (const Sibling& s : siblings) {
    if (s.bias != nullptr) std::memcpy(bytes.data() + at, s.bias->data(), s.bias->bytes->size());
    at += static_cast<size_t>(s.width) * element;
  }
  return Weights::fromBytes(dtype, {total}, std::move(bytes));
}

void fuse(Network& network, const std::vector<Sibling>& siblings, const std::vector<bool>& copied) {
  const Layer& first = *siblings[0].layer;
  std::vector<const Weights*> weights;
  std::string name;
  for (const Sibling& s : siblings) {
    weights.push_back(s.weight);
    name += (name.empty() ? "" : " | ") + s.layer->name();
  }
  Tensor* weight =
      network.addConstant(concatenate(weights, columnsAlongRows(first) ? 0 : 1))->output(0);
  std::vector<Tensor*> inputs = {first.input(0), weight};
  if (first.kind() == LayerKind::kFullyConnected) {
    const bool anyBias = std::any_of(siblings.begin(), siblings.end(),
                                     [](const Sibling& s) { return s.bias != nullptr; });
    inputs.push_back(
        anyBias
            ? network.addConstant(concatenatedBias(siblings, first.input(1)->dtype()))->output(0)
            : nullptr);
  }
  Layer* fused = network.addLayer(first.params(), inputs);
  fused->setName(concat("horizontal(", name, ")"));
  Tensor* wide = fused->output(0);
  const int64_t fusedWidth = wide->dims().back();
  wide->setName(concat(first.output(0)->name(), ".fused"));

  int64_t start = 0;
  for (size_t i = 0; i < siblings.size(); ++i) {
    Layer* layer = siblings[i].layer;
    Tensor* output = layer->output(0);
    const int64_t width = siblings[i].width;
    if (copied[i]) {
      SliceParams block;
      block.axes = {-1};
      block.starts = {start};
      block.ends = {start + width};
      block.steps = {1};
      Layer* slice = network.addSlice(wide, block);
      const std::string outputName = output->name();
      network.replaceAllUsesWith(output, slice->output(0));
      slice->setName(concat(layer->name(), ".columns"));
      slice->output(0)->setName(outputName);
    } else {
      for (Layer* reader : network.consumers(output)) {
        AttentionParams p = reader->paramsAs<AttentionParams>();
        std::vector<Tensor*> readerInputs = reader->inputs();
        Dims* views[] = {&p.queryView, &p.keyView, &p.valueView};
        for (size_t operand = 0; operand < 3; ++operand) {
          if (readerInputs[operand] != output) continue;
          *views[operand] =
              *viewInColumnBlock(*views[operand], output->dims(), width, start, fusedWidth);
          readerInputs[operand] = wide;
        }
        Layer* replacement = network.addLayer(p, readerInputs);
        const std::string readerName = reader->name();
        const std::string outputName = reader->output(0)->name();
        network.replaceAllUsesWith(reader->output(0), replacement->output(0));
        network.removeLayer(reader);
        replacement->setName(readerName);
        replacement->output(0)->setName(outputName);
      }
    }
    start += width;
  }
  for (const Sibling& s : siblings) network.removeLayer(s.layer);
}

}  // namespace

void fuseSiblingGemms(Network& network) {
  // Groups in the order of their first member, siblings in network order.
  std::vector<std::pair<std::pair<const Tensor*, std::string>, std::vector<Sibling>>> groups;
  std::map<std::pair<const Tensor*, std::string>, size_t> groupIndex;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    std::optional<Sibling> sibling = asSibling(network.layer(i));
    if (!sibling) continue;
    const auto key =
        std::make_pair(static_cast<const Tensor*>(sibling->layer->input(0)), groupKey(*sibling));
    auto [found, added] = groupIndex.emplace(key, groups.size());
    if (added) groups.push_back({key, {}});
    groups[found->second].second.push_back(*sibling);
  }
  for (auto& [key, siblings] : groups) {
    if (siblings.size() < 2) continue;
    const Dims& w = siblings[0].weight->dims;
    const int64_t inputWidth = columnsAlongRows(*siblings[0].layer) ? w[1] : w[0];
    int64_t fusedWidth = 0;
    for (const Sibling& s : siblings) fusedWidth += s.width;
    std::vector<bool> copied;
    int64_t start = 0;
    for (const Sibling& s : siblings) {
      copied.push_back(!readableAsViews(network, s.layer->output(0), s.width, start, fusedWidth));
      start += s.width;
    }
    if (worthFusing(siblings, copied, inputWidth)) fuse(network, siblings, copied);
  }
  eliminateDeadLayers(network);
}

}  // namespace kiln

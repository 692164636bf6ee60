#include "core/engine/cpu_backend.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <vector>

#include "core/engine/kernel_mapping.h"
#include "core/engine/layer_dims.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/convolution.h"
#include "kernels/cpu/cumulative.h"
#include "kernels/cpu/data_movement.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/normalization.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/reduce_softmax.h"
#include "kernels/cpu/resize.h"
#include "kernels/cpu/scalar_type.h"
#include "kernels/cpu/unary_activation.h"

namespace kiln {
namespace {

namespace ck = cpu_kernels;

using Inputs = std::vector<const TensorView*>;
using Outputs = std::vector<TensorView>;

bool isHalfPrecision(DataType type) {
  return type == DataType::kFloat16 || type == DataType::kBFloat16;
}

// The input at `index`, which the layer kind requires.
const TensorView& requiredInput(const Inputs& inputs, size_t index, const char* what) {
  KILN_CHECK(index < inputs.size() && inputs[index] != nullptr, "input ", index, " (", what,
             ") is missing");
  return *inputs[index];
}

// The input at `index` if the layer was given one (optional inputs are null or absent).
const TensorView* optionalInput(const Inputs& inputs, size_t index) {
  return index < inputs.size() ? inputs[index] : nullptr;
}

const float* floatData(const TensorView& view, const char* what) {
  KILN_CHECK(view.dtype == DataType::kFloat32, what, " must be a floating-point tensor for this ",
             "layer on the CPU backend, got ", toString(view.dtype), "; cast it to float32 first");
  return static_cast<const float*>(view.data);
}

const float* floatDataOrNull(const TensorView* view, const char* what) {
  return view ? floatData(*view, what) : nullptr;
}

float* floatOutput(const Outputs& outputs) {
  KILN_CHECK(!outputs.empty(), "the layer needs an output");
  KILN_CHECK(outputs[0].dtype == DataType::kFloat32,
             "the output must be a floating-point tensor for this layer on the CPU backend, got ",
             toString(outputs[0].dtype));
  return static_cast<float*>(outputs[0].data);
}

// The CPU backend is the reference, not the fast path: a channels-last layer runs as its
// channels-first form on transposed copies of the operands at `permuted` and of its output.
template <typename P, typename Run>
void runChannelsFirst(P p, const Inputs& in, const Outputs& out,
                      std::initializer_list<size_t> permuted, Run run) {
  p.channelsLast = false;
  std::vector<std::vector<uint8_t>> scratch;
  scratch.reserve(permuted.size() + 1);  // views point into it: no reallocation
  auto channelsFirstCopy = [&scratch](const TensorView& view) {
    const Dims permutation = toChannelsFirstPermutation(view.dims.size());
    const size_t size = elementSize(view.dtype);
    scratch.emplace_back(static_cast<size_t>(volume(view.dims)) * size);
    ck::transpose(view.data, view.dims, permutation, size, scratch.back().data());
    return TensorView{view.dtype, permuteDims(view.dims, permutation), scratch.back().data()};
  };
  std::vector<TensorView> views(in.size());
  Inputs firstInputs = in;
  for (size_t i : permuted) {
    if (i >= in.size() || in[i] == nullptr || in[i]->dims.size() < 3) continue;
    views[i] = channelsFirstCopy(*in[i]);
    firstInputs[i] = &views[i];
  }
  KILN_CHECK(!out.empty() && out[0].dims.size() >= 3, "a channels-last layer needs an output ",
             "(N, spatial..., C)");
  Outputs firstOutputs = out;
  TensorView& result = firstOutputs[0];
  result.dims = permuteDims(out[0].dims, toChannelsFirstPermutation(out[0].dims.size()));
  scratch.emplace_back(static_cast<size_t>(volume(result.dims)) * elementSize(result.dtype));
  result.data = scratch.back().data();
  run(p, firstInputs, firstOutputs);
  ck::transpose(result.data, result.dims, toChannelsLastPermutation(result.dims.size()),
                elementSize(result.dtype), out[0].data);
}

// The CPU kernel's parameters of a fused activation (ReLU6 is a clip to [0, 6]).
ck::ActivationParams fusedActivationParams(FusedActivation activation) {
  const ActivationParams params = activationParamsOf(activation);
  return {toActivation(params.type), params.alpha, params.beta};
}

void runConvolution(const ConvolutionParams& p, const Inputs& in, const Outputs& out) {
  if (p.channelsLast) {
    runChannelsFirst(p, in, out, {0, 1, 3}, runConvolution);
    return;
  }
  const TensorView& x = requiredInput(in, 0, "x");
  const TensorView& weight = requiredInput(in, 1, "weight");
  float* y = floatOutput(out);
  const float* input = floatData(x, "x");
  std::vector<float> activated;
  if (p.inputActivation != FusedActivation::kNone) {
    // Activated before the convolution pads it, so padding stays zero.
    activated.resize(static_cast<size_t>(volume(x.dims)));
    ck::activation(fusedActivationParams(p.inputActivation), input, activated.data(),
                   volume(x.dims));
    input = activated.data();
  }
  ck::convolution(convolutionGeometry<ck::ConvolutionParams>(p, x.dims, out[0].dims), input,
                  floatData(weight, "weight"), floatDataOrNull(optionalInput(in, 2), "bias"), y);
  const int64_t count = volume(out[0].dims);
  if (const float* residual = floatDataOrNull(optionalInput(in, 3), "residual")) {
    for (int64_t i = 0; i < count; ++i) y[i] += residual[i];
  }
  if (p.activation != FusedActivation::kNone) {
    ck::activation(fusedActivationParams(p.activation), y, y, count);
  }
}

void runAttention(const AttentionParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& q = requiredInput(in, 0, "q");
  const TensorView& k = requiredInput(in, 1, "k");
  const TensorView& v = requiredInput(in, 2, "v");
  const TensorView* mask = optionalInput(in, 3);
  AttentionOffsets offsets;
  auto a = attentionGeometry<ck::AttentionParams>(p, q.dims, k.dims, v.dims, out[0].dims,
                                                  mask ? &mask->dims : nullptr, &offsets);
  if (mask != nullptr) {
    a.mask =
        mask->dtype == DataType::kBool ? ck::AttentionMask::kBool : ck::AttentionMask::kAdditive;
    a.maskType = toKernelType(mask->dtype);
  }
  ck::attention(a, floatData(q, "q") + offsets.q, floatData(k, "k") + offsets.k,
                floatData(v, "v") + offsets.v, mask ? mask->data : nullptr,
                floatOutput(out) + offsets.out);
}

void runDeconvolution(const DeconvolutionParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  const TensorView& weight = requiredInput(in, 1, "weight");
  ck::deconvolution(convolutionGeometry<ck::ConvolutionParams>(p, x.dims, out[0].dims),
                    floatData(x, "x"), floatData(weight, "weight"),
                    floatDataOrNull(optionalInput(in, 2), "bias"), floatOutput(out));
}

void runMatMul(const MatMulParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& a = requiredInput(in, 0, "a");
  const TensorView& b = requiredInput(in, 1, "b");
  ck::matmul({a.dims, b.dims, p.transposeA, p.transposeB}, floatData(a, "a"), floatData(b, "b"),
             floatOutput(out));
}

void runFullyConnected(const FullyConnectedParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  const TensorView& weight = requiredInput(in, 1, "weight");
  KILN_CHECK(!x.dims.empty() && weight.dims.size() == 2, "fully connected needs x (..., K) and ",
             "weight (N, K)");
  ck::FullyConnectedParams shape;
  shape.inFeatures = x.dims.back();
  shape.outFeatures = weight.dims[0];
  shape.rows = shape.inFeatures > 0 ? volume(x.dims) / shape.inFeatures
                                    : volume(Dims(x.dims.begin(), x.dims.end() - 1));
  float* y = floatOutput(out);
  ck::fullyConnected(shape, floatData(x, "x"), floatData(weight, "weight"),
                     floatDataOrNull(optionalInput(in, 2), "bias"), y);
  const int64_t count = volume(out[0].dims);
  if (const float* residual = floatDataOrNull(optionalInput(in, 3), "residual")) {
    for (int64_t i = 0; i < count; ++i) y[i] += residual[i];
  }
  // Exact, erf GELU included: the CPU backend is the reference the GPU's epilogue is held to.
  if (p.activation != FusedActivation::kNone) {
    ck::activation({toActivation(p.activation)}, y, y, count);
  }
}

// The mean over x's spatial dims, then the two fully connected layers with the hidden activation
// between them, each step in float32 as the GPU's kernels keep it.
void runSqueezeExcitation(const SqueezeExcitationParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  const TensorView& w1 = requiredInput(in, 1, "w1");
  const TensorView& w2 = requiredInput(in, 3, "w2");
  KILN_CHECK(x.dims.size() >= 3 && w1.dims.size() == 2 && w2.dims.size() == 2,
             "squeeze-and-excitation needs x (N, spatial..., C), w1 (R, C) and w2 (K, R)");
  const int64_t batch = x.dims.front();
  const int64_t channels = x.dims.back();
  const int64_t plane = volume(Dims(x.dims.begin() + 1, x.dims.end() - 1));
  std::vector<float> mean(static_cast<size_t>(batch * channels));
  ck::reduce({kernels::ReduceFunction::kMean,
              ck::ScalarType::kFloat32,
              {batch, plane, channels},
              {false, true, false}},
             floatData(x, "x"), mean.data());
  const int64_t hiddenFeatures = w1.dims[0];
  std::vector<float> hidden(static_cast<size_t>(batch * hiddenFeatures));
  ck::fullyConnected({batch, channels, hiddenFeatures}, mean.data(), floatData(w1, "w1"),
                     floatDataOrNull(optionalInput(in, 2), "b1"), hidden.data());
  if (p.hasHiddenActivation) {
    ck::activation({toActivation(p.hiddenActivation), p.hiddenAlpha, p.hiddenBeta}, hidden.data(),
                   hidden.data(), static_cast<int64_t>(hidden.size()));
  }
  ck::fullyConnected({batch, hiddenFeatures, w2.dims[0]}, hidden.data(), floatData(w2, "w2"),
                     floatDataOrNull(optionalInput(in, 4), "b2"), floatOutput(out));
}

void runElementwise(const ElementwiseParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& a = requiredInput(in, 0, "a");
  const TensorView& b = requiredInput(in, 1, "b");
  KILN_CHECK(a.dtype == b.dtype, "elementwise inputs differ in type (", toString(a.dtype), " and ",
             toString(b.dtype), ")");
  const size_t rank = out[0].dims.size();
  KILN_CHECK(a.dims.size() <= rank && b.dims.size() <= rank,
             "elementwise inputs have a higher rank than the output");
  ck::BinaryParams binary;
  binary.op = toBinaryOp(p.op);
  binary.type = toKernelType(a.dtype);
  binary.aShape = alignToRank(a.dims, rank);
  binary.bShape = alignToRank(b.dims, rank);
  binary.outShape = out[0].dims;
  ck::binaryElementwise(binary, a.data, b.data, out[0].data);
}

void runUnary(const UnaryParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  ck::unary(toUnaryFunction(p.op), toKernelType(x.dtype), x.data, out[0].data, volume(x.dims));
}

void runActivation(const ActivationParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  const ck::ActivationParams activation{toActivation(p.type), p.alpha, p.beta};
  if (x.dtype != DataType::kFloat32) {
    ck::integerActivation(activation, toKernelType(x.dtype), x.data, out[0].data, volume(x.dims));
    return;
  }
  ck::activation(activation, floatData(x, "x"), floatOutput(out), volume(x.dims));
}

void runPooling(const PoolingParams& p, const Inputs& in, const Outputs& out) {
  if (p.channelsLast) {
    runChannelsFirst(p, in, out, {0}, runPooling);
    return;
  }
  const TensorView& x = requiredInput(in, 0, "x");
  KILN_CHECK(x.dims.size() >= 3, "pooling needs an input (N, C, spatial...), got ",
             toString(x.dims));
  const ck::PoolingMode mode =
      p.type == PoolingType::kMax ? ck::PoolingMode::kMax : ck::PoolingMode::kAverage;
  if (p.adaptive) {
    ck::AdaptivePoolingParams adaptive{mode, x.dims[0], x.dims[1], spatialDims(x.dims),
                                       spatialDims(out[0].dims)};
    ck::adaptivePooling(adaptive, floatData(x, "x"), floatOutput(out));
    return;
  }
  const size_t rank = p.kernel.size();
  KILN_CHECK(x.dims.size() == rank + 2, "input rank ", x.dims.size(),
             " does not match a window of ", rank, " spatial dims");
  ck::PoolingParams pooling;
  pooling.mode = mode;
  pooling.batch = x.dims[0];
  pooling.channels = x.dims[1];
  pooling.inSpatial = spatialDims(x.dims);
  pooling.outSpatial = spatialDims(out[0].dims);
  pooling.kernel = p.kernel;
  pooling.stride = orDefault(p.stride, rank, 1);
  pooling.prePadding = orDefault(p.prePadding, rank, 0);
  pooling.postPadding = orDefault(p.postPadding, rank, 0);
  pooling.dilation = orDefault(p.dilation, rank, 1);
  pooling.countIncludePad = p.countIncludePad;
  ck::pooling(pooling, floatData(x, "x"), floatOutput(out));
}

void runReduce(const ReduceParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  ck::ReduceParams reduce;
  reduce.function = toReduceFunction(p.op);
  reduce.type = toKernelType(x.dtype);
  reduce.inShape = x.dims;
  reduce.reduced.assign(x.dims.size(), p.axes.empty());
  for (int64_t axis : p.axes) reduce.reduced[normalizeAxis(axis, x.dims.size(), "axis")] = true;
  ck::reduce(reduce, x.data, out[0].data);
}

void runSoftmax(const SoftmaxParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  if (x.dims.empty()) {
    // Softmax of a scalar is 1 (log: 0), as torch gives.
    *floatOutput(out) = p.log ? 0.0f : 1.0f;
    return;
  }
  ck::softmax({x.dims, normalizeAxis(p.axis, x.dims.size(), "axis"), p.log}, floatData(x, "x"),
              floatOutput(out));
}

void runNormalization(const NormalizationParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  const float* scale = floatDataOrNull(optionalInput(in, 1), "scale");
  const float* bias = floatDataOrNull(optionalInput(in, 2), "bias");
  if (p.type == NormalizationType::kBatch) {
    KILN_CHECK(x.dims.size() >= 2, "batch norm needs an input (N, C, ...), got ", toString(x.dims));
    // (outer, channels, inner) around the channel axis: (N, C, H * W) or, channels-last,
    // (N * H * W, C, 1).
    const auto axis = static_cast<size_t>(normalizeAxis(p.axis, x.dims.size(), "axis"));
    ck::BatchNormParams batch;
    batch.batch = volume(Dims(x.dims.begin(), x.dims.begin() + axis));
    batch.channels = x.dims[axis];
    batch.spatial = volume(Dims(x.dims.begin() + axis + 1, x.dims.end()));
    batch.epsilon = p.epsilon;
    ck::batchNorm(batch, floatData(x, "x"), scale, bias,
                  floatData(requiredInput(in, 3, "mean"), "mean"),
                  floatData(requiredInput(in, 4, "var"), "var"), floatOutput(out));
    return;
  }
  const int64_t axis = normalizeAxis(p.axis, x.dims.size(), "axis");
  ck::LayerNormParams layer;
  layer.rows = volume(Dims(x.dims.begin(), x.dims.begin() + axis));
  layer.cols = volume(Dims(x.dims.begin() + axis, x.dims.end()));
  layer.epsilon = p.epsilon;
  const float* input = floatData(x, "x");
  std::vector<float> sum;
  if (const float* residual = floatDataOrNull(optionalInput(in, 3), "residual")) {
    sum.resize(static_cast<size_t>(volume(x.dims)));
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = input[i] + residual[i];
    input = sum.data();
  }
  ck::layerNorm(layer, input, scale, bias, floatOutput(out));
}

void runShuffle(const ShuffleParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  const size_t elementSize = kiln::elementSize(x.dtype);
  const bool first = !p.firstPermutation.empty();
  const bool second = !p.secondPermutation.empty();
  if (!first && !second) {
    // A reshape alone keeps the row-major bytes.
    std::memcpy(out[0].data, x.data, static_cast<size_t>(volume(x.dims)) * elementSize);
    return;
  }
  if (!second) {
    ck::transpose(x.data, x.dims, p.firstPermutation, elementSize, out[0].data);
    return;
  }
  const Dims reshaped = shuffleReshapedDims(p, out[0].dims);
  if (!first) {
    ck::transpose(x.data, reshaped, p.secondPermutation, elementSize, out[0].data);
    return;
  }
  std::vector<uint8_t> transposed(static_cast<size_t>(volume(x.dims)) * elementSize);
  ck::transpose(x.data, x.dims, p.firstPermutation, elementSize, transposed.data());
  ck::transpose(transposed.data(), reshaped, p.secondPermutation, elementSize, out[0].data);
}

void runConcat(const ConcatParams& p, const Inputs& in, const Outputs& out) {
  KILN_CHECK(!in.empty(), "concat needs at least one input");
  std::vector<const void*> data;
  std::vector<Dims> shapes;
  for (size_t i = 0; i < in.size(); ++i) {
    const TensorView& x = requiredInput(in, i, "x");
    data.push_back(x.data);
    shapes.push_back(x.dims);
  }
  const int64_t axis = normalizeAxis(p.axis, out[0].dims.size(), "axis");
  ck::concat(data, shapes, axis, elementSize(out[0].dtype), out[0].data);
}

void runSlice(const SliceParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  ck::slice(sliceGeometry<ck::SliceParams>(p, x.dims, out[0].dims), elementSize(x.dtype), x.data,
            out[0].data);
}

void runGather(const GatherParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& data = requiredInput(in, 0, "data");
  const TensorView& indices = requiredInput(in, 1, "indices");
  KILN_CHECK(indices.dtype == DataType::kInt32 || indices.dtype == DataType::kInt64,
             "gather indices must be int32 or int64, got ", toString(indices.dtype));
  auto gather = gatherGeometry<ck::GatherParams>(p, data.dims, indices.dims);
  gather.indexType = toKernelType(indices.dtype);
  ck::gather(gather, elementSize(data.dtype), data.data, indices.data, out[0].data);
}

void runConstant(const ConstantParams& p, const Outputs& out) {
  const size_t bytes = static_cast<size_t>(volume(out[0].dims)) * elementSize(out[0].dtype);
  KILN_CHECK(p.weights.bytes && p.weights.bytes->size() == bytes, "constant holds ",
             p.weights.bytes ? p.weights.bytes->size() : 0, " bytes, its output needs ", bytes);
  if (bytes > 0) std::memcpy(out[0].data, p.weights.data(), bytes);
}

void runCast(const CastParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  KILN_CHECK(out[0].dtype == p.toType, "cast output is ", toString(out[0].dtype), ", expected ",
             toString(p.toType));
  ck::cast(x.data, toKernelType(x.dtype), out[0].data, toKernelType(p.toType), volume(x.dims));
}

void runResize(const ResizeParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  auto resize = resizeGeometry<ck::ResizeParams>(p, x.dims, out[0].dims);
  resize.mode = toResizeMode(p.mode);
  ck::resize(resize, floatData(x, "x"), floatOutput(out));
}

void runCumulative(const CumulativeParams& p, const Inputs& in, const Outputs& out) {
  const TensorView& x = requiredInput(in, 0, "x");
  KILN_CHECK(out[0].dtype == x.dtype, "cumulative output is ", toString(out[0].dtype),
             ", its input ", toString(x.dtype));
  auto cumulative = cumulativeGeometry<ck::CumulativeParams>(p, x.dims);
  cumulative.function = toCumulativeFunction(p.op);
  cumulative.type = toKernelType(x.dtype);
  ck::cumulative(cumulative, x.data, out[0].data);
}

// Copies `from` (whose dims broadcast to `to`'s, right-aligned) into every element of `to`.
void broadcastCopy(const TensorView& from, const TensorView& to) {
  const size_t size = elementSize(from.dtype);
  const int64_t count = volume(to.dims);
  if (from.dims == to.dims) {
    if (count > 0) std::memcpy(to.data, from.data, static_cast<size_t>(count) * size);
    return;
  }
  const size_t rank = to.dims.size();
  const Dims aligned = alignToRank(from.dims, rank);
  Dims strides = ck::contiguousStrides(aligned);
  for (size_t d = 0; d < rank; ++d) {
    if (aligned[d] == 1) strides[d] = 0;
  }
  const auto* source = static_cast<const uint8_t*>(from.data);
  auto* target = static_cast<uint8_t*>(to.data);
  Dims index(rank, 0);
  for (int64_t e = 0; e < count; ++e) {
    int64_t offset = 0;
    for (size_t d = 0; d < rank; ++d) offset += index[d] * strides[d];
    std::memcpy(target + static_cast<size_t>(e) * size, source + offset * size, size);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < to.dims[d]) break;
      index[d] = 0;
    }
  }
}

// The layer an instruction of a pointwise program stands for.
LayerParams instructionLayer(const PointwiseInstruction& instruction) {
  switch (instruction.opcode) {
    case PointwiseOpcode::kElementwise:
      return ElementwiseParams{instruction.elementwise};
    case PointwiseOpcode::kUnary:
      return UnaryParams{instruction.unary};
    case PointwiseOpcode::kActivation:
      return ActivationParams{instruction.activation, instruction.alpha, instruction.beta};
    case PointwiseOpcode::kCast:
      return CastParams{instruction.type};
    case PointwiseOpcode::kInput:
      break;
  }
  throw Error(concat("pointwise ", toString(instruction.opcode), " is no layer"));
}

// The reference interpreter of a fused pointwise program: each instruction runs as the layer it
// replaced, on whole registers of the dims that layer had, so the CPU backend computes the very
// numbers of the unfused network (fp16 and bf16 registers rounded where the layers stored them).
void runPointwise(const PointwiseParams& p, const Inputs& in, const Outputs& out) {
  const size_t count = p.program.size();
  std::vector<size_t> lastUse(count, 0);
  for (size_t r = 0; r < count; ++r) {
    const PointwiseInstruction& instruction = p.program[r];
    if (instruction.opcode == PointwiseOpcode::kInput) continue;
    lastUse.at(static_cast<size_t>(instruction.a)) = r;
    if (instruction.opcode == PointwiseOpcode::kElementwise) {
      lastUse.at(static_cast<size_t>(instruction.b)) = r;
    }
  }
  for (int64_t output : p.outputs) lastUse.at(static_cast<size_t>(output)) = count;
  std::vector<TensorView> registers(count);
  std::vector<std::vector<uint8_t>> storage(count);
  for (size_t r = 0; r < count; ++r) {
    const PointwiseInstruction& instruction = p.program[r];
    if (instruction.opcode == PointwiseOpcode::kInput) {
      registers[r] = requiredInput(in, static_cast<size_t>(instruction.a), "x");
      continue;
    }
    const TensorView& a = registers.at(static_cast<size_t>(instruction.a));
    std::vector<const TensorView*> operands = {&a};
    Dims dims = a.dims;
    if (instruction.opcode == PointwiseOpcode::kElementwise) {
      const TensorView& b = registers.at(static_cast<size_t>(instruction.b));
      operands.push_back(&b);
      const size_t rank = std::max(a.dims.size(), b.dims.size());
      const Dims alignedA = alignToRank(a.dims, rank);
      const Dims alignedB = alignToRank(b.dims, rank);
      dims.resize(rank);
      for (size_t d = 0; d < rank; ++d) dims[d] = alignedA[d] == 1 ? alignedB[d] : alignedA[d];
    }
    storage[r].resize(static_cast<size_t>(volume(dims)) * elementSize(instruction.type));
    registers[r] = TensorView{instruction.type, dims, storage[r].data()};
    runLayerOnCpu(instructionLayer(instruction), operands, {registers[r]});
    // Registers read for the last time give their memory back (inputs own none).
    for (int64_t operand : {instruction.a, instruction.b}) {
      if (operand >= 0 && lastUse[static_cast<size_t>(operand)] == r) {
        std::vector<uint8_t>().swap(storage[static_cast<size_t>(operand)]);
      }
    }
  }
  KILN_CHECK(out.size() == p.outputs.size(), "the pointwise program has ", p.outputs.size(),
             " outputs, the layer ", out.size());
  for (size_t o = 0; o < out.size(); ++o) {
    broadcastCopy(registers.at(static_cast<size_t>(p.outputs[o])), out[o]);
  }
}

void dispatch(const LayerParams& params, const Inputs& in, const Outputs& out) {
  std::visit(
      [&](const auto& p) {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConvolutionParams>) {
          runConvolution(p, in, out);
        } else if constexpr (std::is_same_v<P, DeconvolutionParams>) {
          runDeconvolution(p, in, out);
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          runMatMul(p, in, out);
        } else if constexpr (std::is_same_v<P, FullyConnectedParams>) {
          runFullyConnected(p, in, out);
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          runElementwise(p, in, out);
        } else if constexpr (std::is_same_v<P, UnaryParams>) {
          runUnary(p, in, out);
        } else if constexpr (std::is_same_v<P, ActivationParams>) {
          runActivation(p, in, out);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          runPooling(p, in, out);
        } else if constexpr (std::is_same_v<P, ReduceParams>) {
          runReduce(p, in, out);
        } else if constexpr (std::is_same_v<P, SoftmaxParams>) {
          runSoftmax(p, in, out);
        } else if constexpr (std::is_same_v<P, NormalizationParams>) {
          runNormalization(p, in, out);
        } else if constexpr (std::is_same_v<P, ShuffleParams>) {
          runShuffle(p, in, out);
        } else if constexpr (std::is_same_v<P, ConcatParams>) {
          runConcat(p, in, out);
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          runSlice(p, in, out);
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          runGather(p, in, out);
        } else if constexpr (std::is_same_v<P, ConstantParams>) {
          runConstant(p, out);
        } else if constexpr (std::is_same_v<P, CastParams>) {
          runCast(p, in, out);
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          runAttention(p, in, out);
        } else if constexpr (std::is_same_v<P, ResizeParams>) {
          runResize(p, in, out);
        } else if constexpr (std::is_same_v<P, CumulativeParams>) {
          runCumulative(p, in, out);
        } else if constexpr (std::is_same_v<P, SqueezeExcitationParams>) {
          runSqueezeExcitation(p, in, out);
        } else {
          static_assert(std::is_same_v<P, PointwiseParams>, "every layer kind needs a CPU runner");
          runPointwise(p, in, out);
        }
      },
      params);
}

// Layers that compute (rather than move bytes or convert types) run on float32 only: fp16 and
// bf16 tensors take a detour through float32 scratch copies.
bool computesInFloat32(LayerKind kind) {
  switch (kind) {
    case LayerKind::kShuffle:
    case LayerKind::kConcat:
    case LayerKind::kSlice:
    case LayerKind::kGather:
    case LayerKind::kConstant:
    case LayerKind::kCast:
    case LayerKind::kPointwise:  // runs its instructions as layers, each widening on its own
      return false;
    default:
      return true;
  }
}

// Runs the layer on float32 copies of its fp16/bf16 inputs and writes its fp16/bf16 outputs
// back from float32 results.
void runInFloat32(const LayerParams& params, const Inputs& inputs, const Outputs& outputs) {
  std::vector<std::vector<float>> scratch;
  scratch.reserve(inputs.size() + outputs.size());
  std::vector<TensorView> widenedInputs(inputs.size());
  Inputs inputPointers(inputs.size(), nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) continue;
    widenedInputs[i] = *inputs[i];
    if (isHalfPrecision(inputs[i]->dtype)) {
      const int64_t count = volume(inputs[i]->dims);
      scratch.emplace_back(static_cast<size_t>(count));
      ck::cast(inputs[i]->data, toKernelType(inputs[i]->dtype), scratch.back().data(),
               ck::ScalarType::kFloat32, count);
      widenedInputs[i].dtype = DataType::kFloat32;
      widenedInputs[i].data = scratch.back().data();
    }
    inputPointers[i] = &widenedInputs[i];
  }
  Outputs widenedOutputs = outputs;
  for (TensorView& output : widenedOutputs) {
    if (!isHalfPrecision(output.dtype)) continue;
    scratch.emplace_back(static_cast<size_t>(volume(output.dims)));
    output.dtype = DataType::kFloat32;
    output.data = scratch.back().data();
  }
  dispatch(params, inputPointers, widenedOutputs);
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!isHalfPrecision(outputs[i].dtype)) continue;
    ck::cast(widenedOutputs[i].data, ck::ScalarType::kFloat32, outputs[i].data,
             toKernelType(outputs[i].dtype), volume(outputs[i].dims));
  }
}

}  // namespace

void runLayerOnCpu(const LayerParams& params, const std::vector<const TensorView*>& inputs,
                   const std::vector<TensorView>& outputs) {
  KILN_CHECK(!outputs.empty(), toString(kindOf(params)), " layer was given no output");
  bool anyHalf = false;
  for (const TensorView* input : inputs) anyHalf |= input && isHalfPrecision(input->dtype);
  for (const TensorView& output : outputs) anyHalf |= isHalfPrecision(output.dtype);
  try {
    if (anyHalf && computesInFloat32(kindOf(params))) {
      runInFloat32(params, inputs, outputs);
    } else {
      dispatch(params, inputs, outputs);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    // Kernels throw standard exceptions (kernels/ knows nothing of kiln::Error).
    throw Error(error.what());
  }
}

}  // namespace kiln

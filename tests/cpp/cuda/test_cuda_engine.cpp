// The CUDA backend end to end: every layer kind against the CPU backend in fp32, fp16 and bf16;
// CUDA graphs; the planned arena; one engine shared by many threads; device memory returned;
// plans refused on a GPU of another compute capability.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "core/builder/builder.h"
#include "core/engine/cuda/device.h"
#include "core/engine/execution_context.h"
#include "core/engine/memory_plan.h"
#include "core/engine/plan.h"
#include "core/ir/network.h"
#include "tests/cpp/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using cuda_test::DeviceBuffer;
using Bytes = std::vector<uint8_t>;

float toFloat(const uint8_t* data, DataType dtype, int64_t i) {
  switch (dtype) {
    case DataType::kFloat32:
      return reinterpret_cast<const float*>(data)[i];
    case DataType::kFloat16:
      return __half2float(reinterpret_cast<const __half*>(data)[i]);
    case DataType::kBFloat16:
      return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(data)[i]);
    case DataType::kInt32:
      return static_cast<float>(reinterpret_cast<const int32_t*>(data)[i]);
    case DataType::kInt64:
      return static_cast<float>(reinterpret_cast<const int64_t*>(data)[i]);
    case DataType::kBool:
    case DataType::kUInt8:
      return static_cast<float>(data[i]);
    case DataType::kInt8:
      return static_cast<float>(reinterpret_cast<const int8_t*>(data)[i]);
  }
  return 0.0f;
}

Bytes randomBytes(DataType dtype, int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  Bytes bytes(static_cast<size_t>(count) * elementSize(dtype));
  for (int64_t i = 0; i < count; ++i) {
    const float value = uniform(rng);
    switch (dtype) {
      case DataType::kFloat32:
        reinterpret_cast<float*>(bytes.data())[i] = value;
        break;
      case DataType::kFloat16:
        reinterpret_cast<__half*>(bytes.data())[i] = __float2half(value);
        break;
      case DataType::kBFloat16:
        reinterpret_cast<__nv_bfloat16*>(bytes.data())[i] = __float2bfloat16(value);
        break;
      default:
        ADD_FAILURE() << "randomBytes: unsupported type " << toString(dtype);
    }
  }
  return bytes;
}

// A constant of the network's float type: random fp32 values, cast when the type is narrower.
Tensor* weights(Network& network, DataType dtype, const Dims& dims, std::mt19937& rng,
                float scale = 0.5f) {
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<float> values(static_cast<size_t>(volume(dims)));
  for (float& v : values) v = uniform(rng);
  Tensor* t = network.addConstant(Weights::fromValues(DataType::kFloat32, dims, values))->output(0);
  return dtype == DataType::kFloat32 ? t : network.addCast(t, dtype)->output(0);
}

struct LayerCase {
  std::string name;
  std::vector<Dims> inputShapes;
  std::function<void(Network&, const std::vector<Tensor*>&, DataType, std::mt19937&)> build;
};

std::vector<LayerCase> layerCases() {
  std::vector<LayerCase> cases;
  auto add = [&](std::string name, std::vector<Dims> shapes, auto build) {
    cases.push_back({std::move(name), std::move(shapes), build});
  };
  add("conv2d_bias", {{2, 8, 17, 19}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    ConvolutionParams p;
    p.outChannels = 16;
    p.kernel = {3, 3};
    p.prePadding = {1, 1};
    p.postPadding = {1, 1};
    n.markOutput(
        n.addConvolution(x[0], weights(n, t, {16, 8, 3, 3}, rng), weights(n, t, {16}, rng), p)
            ->output(0));
  });
  add("conv2d_grouped_strided_dilated", {{2, 8, 20, 20}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        ConvolutionParams p;
        p.outChannels = 8;
        p.kernel = {3, 3};
        p.stride = {2, 2};
        p.dilation = {2, 2};
        p.prePadding = {2, 1};
        p.postPadding = {2, 1};
        p.groups = 4;
        n.markOutput(
            n.addConvolution(x[0], weights(n, t, {8, 2, 3, 3}, rng), nullptr, p)->output(0));
      });
  add("conv2d_depthwise", {{1, 16, 9, 9}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    ConvolutionParams p;
    p.outChannels = 16;
    p.kernel = {3, 3};
    p.prePadding = {1, 1};
    p.postPadding = {1, 1};
    p.groups = 16;
    n.markOutput(n.addConvolution(x[0], weights(n, t, {16, 1, 3, 3}, rng), nullptr, p)->output(0));
  });
  add("conv1d", {{3, 4, 31}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    ConvolutionParams p;
    p.outChannels = 6;
    p.kernel = {5};
    p.stride = {2};
    p.prePadding = {2};
    p.postPadding = {2};
    n.markOutput(n.addConvolution(x[0], weights(n, t, {6, 4, 5}, rng), weights(n, t, {6}, rng), p)
                     ->output(0));
  });
  add("deconv2d", {{2, 8, 7, 9}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    DeconvolutionParams p;
    p.outChannels = 4;
    p.kernel = {3, 3};
    p.stride = {2, 2};
    p.prePadding = {1, 1};
    p.postPadding = {1, 1};
    p.outputPadding = {1, 1};
    n.markOutput(
        n.addDeconvolution(x[0], weights(n, t, {8, 4, 3, 3}, rng), weights(n, t, {4}, rng), p)
            ->output(0));
  });
  add("matmul_batched_transposed", {{3, 2, 17, 24}, {1, 2, 33, 24}},
      [](Network& n, auto x, DataType, std::mt19937&) {
        MatMulParams p;
        p.transposeB = true;
        n.markOutput(n.addMatMul(x[0], x[1], p)->output(0));
      });
  add("matmul_2d_weight", {{5, 7, 40}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    n.markOutput(n.addMatMul(x[0], weights(n, t, {40, 24}, rng))->output(0));
  });
  add("fully_connected", {{4, 9, 64}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    n.markOutput(n.addFullyConnected(x[0], weights(n, t, {48, 64}, rng), weights(n, t, {48}, rng))
                     ->output(0));
  });
  add("elementwise_broadcast", {{4, 1, 6, 5}, {3, 1, 5}},
      [](Network& n, auto x, DataType, std::mt19937&) {
        Tensor* sum = n.addElementwise(x[0], x[1], ElementwiseOp::kSum)->output(0);
        Tensor* prod = n.addElementwise(sum, x[1], ElementwiseOp::kProd)->output(0);
        Tensor* max = n.addElementwise(prod, x[0], ElementwiseOp::kMax)->output(0);
        n.markOutput(n.addElementwise(max, x[0], ElementwiseOp::kSub)->output(0));
        n.markOutput(n.addElementwise(x[0], x[1], ElementwiseOp::kLess)->output(0));
      });
  add("unary_and_activations", {{3, 1000}}, [](Network& n, auto x, DataType, std::mt19937&) {
    n.markOutput(n.addUnary(x[0], UnaryOp::kExp)->output(0));
    n.markOutput(n.addUnary(x[0], UnaryOp::kAbs)->output(0));
    n.markOutput(n.addActivation(x[0], {ActivationType::kGeluErf})->output(0));
    n.markOutput(n.addActivation(x[0], {ActivationType::kGeluTanh})->output(0));
    n.markOutput(n.addActivation(x[0], {ActivationType::kSilu})->output(0));
    n.markOutput(n.addActivation(x[0], {ActivationType::kClip, -0.5, 0.75})->output(0));
    n.markOutput(n.addActivation(x[0], {ActivationType::kSigmoid})->output(0));
  });
  add("pooling", {{2, 5, 15, 14}}, [](Network& n, auto x, DataType, std::mt19937&) {
    PoolingParams max;
    max.kernel = {3, 3};
    max.stride = {2, 2};
    max.prePadding = {1, 1};
    max.postPadding = {1, 1};
    n.markOutput(n.addPooling(x[0], max)->output(0));
    PoolingParams avg = max;
    avg.type = PoolingType::kAverage;
    avg.countIncludePad = false;
    n.markOutput(n.addPooling(x[0], avg)->output(0));
    PoolingParams adaptive;
    adaptive.type = PoolingType::kAverage;
    adaptive.adaptive = true;
    adaptive.outputSize = {3, 4};
    n.markOutput(n.addPooling(x[0], adaptive)->output(0));
    adaptive.outputSize = {1, 1};
    n.markOutput(n.addPooling(x[0], adaptive)->output(0));
  });
  add("reduce", {{3, 7, 5, 33}}, [](Network& n, auto x, DataType, std::mt19937&) {
    n.markOutput(n.addReduce(x[0], {ReduceOp::kSum, {1}, false})->output(0));
    n.markOutput(n.addReduce(x[0], {ReduceOp::kMax, {2, 3}, true})->output(0));
    n.markOutput(n.addReduce(x[0], {ReduceOp::kAvg, {-1}, true})->output(0));
  });
  add("softmax", {{4, 3, 129}}, [](Network& n, auto x, DataType, std::mt19937&) {
    n.markOutput(n.addSoftmax(x[0], {-1, false})->output(0));
    n.markOutput(n.addSoftmax(x[0], {1, true})->output(0));
  });
  add("batch_norm", {{2, 6, 5, 7}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    NormalizationParams p;
    p.type = NormalizationType::kBatch;
    Tensor* var = n.addActivation(weights(n, t, {6}, rng), {ActivationType::kSigmoid})->output(0);
    n.markOutput(n.addNormalization(x[0], weights(n, t, {6}, rng), weights(n, t, {6}, rng),
                                    weights(n, t, {6}, rng), var, p)
                     ->output(0));
  });
  // Channels last (the layout pass's): 16 channels in vectors, 6 one at a time.
  add("batch_norm_channels_last", {{2, 5, 7, 16}, {3, 4, 6}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        NormalizationParams p;
        p.type = NormalizationType::kBatch;
        p.axis = -1;
        for (int64_t channels : {16, 6}) {
          Tensor* var = n.addActivation(weights(n, t, {channels}, rng), {ActivationType::kSigmoid})
                            ->output(0);
          n.markOutput(n.addNormalization(x[channels == 16 ? 0 : 1], weights(n, t, {channels}, rng),
                                          weights(n, t, {channels}, rng),
                                          weights(n, t, {channels}, rng), var, p)
                           ->output(0));
        }
      });
  add("layer_norm", {{3, 5, 768}}, [](Network& n, auto x, DataType t, std::mt19937& rng) {
    NormalizationParams p;
    p.type = NormalizationType::kLayer;
    p.axis = 2;
    n.markOutput(n.addNormalization(x[0], weights(n, t, {768}, rng), weights(n, t, {768}, rng),
                                    nullptr, nullptr, p)
                     ->output(0));
  });
  add("shuffle_concat_slice", {{2, 3, 4, 10}, {2, 5, 4, 10}},
      [](Network& n, auto x, DataType, std::mt19937&) {
        ShuffleParams reshapeTranspose;
        reshapeTranspose.firstPermutation = {0, 2, 1, 3};
        reshapeTranspose.hasReshape = true;
        reshapeTranspose.reshapeDims = {2, 4, 30};
        reshapeTranspose.secondPermutation = {0, 2, 1};
        n.markOutput(n.addShuffle(x[0], reshapeTranspose)->output(0));
        ShuffleParams nhwc;
        nhwc.firstPermutation = {0, 2, 3, 1};
        n.markOutput(n.addShuffle(x[1], nhwc)->output(0));
        Tensor* cat = n.addConcat({x[0], x[1]}, {1})->output(0);
        n.markOutput(cat);
        SliceParams slice;
        slice.axes = {1, 3};
        slice.starts = {1, -7};
        slice.ends = {kSliceEnd, 9};
        slice.steps = {3, 2};
        n.markOutput(n.addSlice(cat, slice)->output(0));
        // Ends read from another tensor's dims: x[1][:, :, 1:x[0].dims[2]] broadcast along a
        // size-1 dim to x[0].dims[0] (step 0).
        SliceParams toReference;
        toReference.axes = {2};
        toReference.starts = {1};
        toReference.ends = {0};
        toReference.steps = {1};
        toReference.endReferences = {2};
        Tensor* narrowed = n.addSlice(x[1], x[0], toReference)->output(0);
        n.markOutput(narrowed);
        SliceParams first;
        first.axes = {0};
        first.starts = {1};
        first.ends = {2};
        Tensor* row = n.addSlice(narrowed, first)->output(0);
        SliceParams broadcast;
        broadcast.axes = {0};
        broadcast.starts = {0};
        broadcast.ends = {0};
        broadcast.steps = {0};
        broadcast.endReferences = {0};
        n.markOutput(n.addSlice(row, x[0], broadcast)->output(0));
      });
  add("gather_and_cast", {{7, 16}}, [](Network& n, auto x, DataType, std::mt19937&) {
    Tensor* indices = n.addConstant(Weights::fromValues(DataType::kInt64, {2, 3},
                                                        std::vector<int64_t>{6, 0, 3, -1, 2, 2}))
                          ->output(0);
    n.markOutput(n.addGather(x[0], indices, {0})->output(0));
    Tensor* perElement =
        n.addConstant(Weights::fromValues(DataType::kInt64, {7, 3},
                                          std::vector<int64_t>{15, 0, -1, 3, 3, 8, 2,  -16, 9, 1, 1,
                                                               1,  0, 14, 7, 5, 6, 12, -2,  4, 11}))
            ->output(0);
    n.markOutput(n.addGather(x[0], perElement, {1, GatherMode::kElement})->output(0));
    n.markOutput(n.addCast(x[0], DataType::kFloat32)->output(0));
    n.markOutput(n.addCast(x[0], DataType::kInt32)->output(0));
  });
  // What the builder fuses, run fused on both backends: batch norm folded into a convolution
  // whose epilogue adds a residual and applies ReLU.
  add("conv_bn_residual_relu", {{2, 8, 9, 9}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        ConvolutionParams p;
        p.outChannels = 8;
        p.kernel = {3, 3};
        p.prePadding = {1, 1};
        p.postPadding = {1, 1};
        Tensor* conv =
            n.addConvolution(x[0], weights(n, t, {8, 8, 3, 3}, rng), nullptr, p)->output(0);
        NormalizationParams bn;
        Tensor* var = n.addUnary(weights(n, t, {8}, rng), UnaryOp::kAbs)->output(0);
        Tensor* normed = n.addNormalization(conv, weights(n, t, {8}, rng), weights(n, t, {8}, rng),
                                            weights(n, t, {8}, rng), var, bn)
                             ->output(0);
        Tensor* sum = n.addElementwise(normed, x[0], ElementwiseOp::kSum)->output(0);
        n.markOutput(n.addActivation(sum, {ActivationType::kRelu})->output(0));
      });
  // A convolutional trunk: in fp16 and bf16 the CUDA builder runs it channels-last (NHWC)
  // between one transpose at each edge, pooling included; the CPU reference stays NCHW.
  add("conv_pool_conv_trunk", {{2, 8, 9, 9}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        ConvolutionParams conv;
        conv.outChannels = 16;
        conv.kernel = {3, 3};
        conv.prePadding = {1, 1};
        conv.postPadding = {1, 1};
        Tensor* a = n.addActivation(n.addConvolution(x[0], weights(n, t, {16, 8, 3, 3}, rng),
                                                     weights(n, t, {16}, rng), conv)
                                        ->output(0),
                                    {ActivationType::kRelu})
                        ->output(0);
        PoolingParams maxPool;
        maxPool.kernel = {3, 3};
        maxPool.stride = {2, 2};
        maxPool.prePadding = {1, 1};
        maxPool.postPadding = {1, 1};
        Tensor* pooled = n.addPooling(a, maxPool)->output(0);
        Tensor* b =
            n.addConvolution(pooled, weights(n, t, {16, 16, 3, 3}, rng), nullptr, conv)->output(0);
        Tensor* sum = n.addElementwise(b, pooled, ElementwiseOp::kSum)->output(0);
        PoolingParams globalAverage;
        globalAverage.type = PoolingType::kAverage;
        globalAverage.adaptive = true;
        globalAverage.outputSize = {1, 1};
        n.markOutput(
            n.addPooling(n.addActivation(sum, {ActivationType::kRelu})->output(0), globalAverage)
                ->output(0));
        n.markOutput(a);
      });
  add("layer_norm_of_a_residual_add", {{3, 5, 96}, {3, 5, 96}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        NormalizationParams p;
        p.type = NormalizationType::kLayer;
        p.axis = -1;
        Tensor* sum = n.addElementwise(x[0], x[1], ElementwiseOp::kSum)->output(0);
        n.markOutput(n.addNormalization(sum, weights(n, t, {96}, rng), weights(n, t, {96}, rng),
                                        nullptr, nullptr, p)
                         ->output(0));
      });
  // A transformer block's fully connected layers, fused by the builder on both backends: the
  // residual add into the projection's epilogue (read as cuBLASLt's C), GELU into the MLP's
  // (erf GELU only in fp16 and bf16, where the GPU's tanh GELU stands in for it; fp32 keeps a
  // separate exact GELU), and a residual add followed by ReLU.
  add("fc_residual", {{3, 5, 96}, {3, 5, 64}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        Tensor* projected =
            n.addFullyConnected(x[0], weights(n, t, {64, 96}, rng, 0.2f), weights(n, t, {64}, rng))
                ->output(0);
        n.markOutput(n.addElementwise(x[1], projected, ElementwiseOp::kSum)->output(0));
      });
  add("fc_gelu_erf_gelu_tanh_residual_relu", {{3, 5, 96}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        auto fc = [&](Tensor* in, int64_t outFeatures, bool bias) {
          const int64_t inFeatures = in->dims().back();
          return n
              .addFullyConnected(in, weights(n, t, {outFeatures, inFeatures}, rng, 0.2f),
                                 bias ? weights(n, t, {outFeatures}, rng) : nullptr)
              ->output(0);
        };
        auto activation = [&](Tensor* in, ActivationType type) {
          return n.addActivation(in, {type})->output(0);
        };
        Tensor* erf = activation(fc(x[0], 128, true), ActivationType::kGeluErf);
        Tensor* tanh = activation(fc(erf, 96, true), ActivationType::kGeluTanh);
        Tensor* sum = n.addElementwise(fc(tanh, 96, false), x[0], ElementwiseOp::kSum)->output(0);
        n.markOutput(activation(sum, ActivationType::kRelu));
      });
  add("attention_grouped_masked_causal", {{2, 4, 9, 16}, {2, 2, 11, 16}, {2, 2, 11, 24}},
      [](Network& n, auto x, DataType, std::mt19937& rng) {
        std::vector<uint8_t> keep(9 * 11);
        for (uint8_t& k : keep) k = (rng() % 4) != 0;
        keep[0 * 11 + 0] = 0;  // query 0 sees key 0 only under causal: a fully masked row
        Tensor* mask =
            n.addConstant(Weights::fromValues(DataType::kBool, {9, 11}, keep))->output(0);
        AttentionParams causal;
        causal.scale = 0.3;
        causal.causal = true;
        n.markOutput(n.addAttention(x[0], x[1], x[2], mask, causal)->output(0));
        AttentionParams plain;
        plain.scale = 0.25;
        n.markOutput(n.addAttention(x[0], x[1], x[2], nullptr, plain)->output(0));
      });
  // BERT's self-attention: the query, key and value projections become one GEMM of width 3E
  // (horizontal fusion) that the attention reads in place, each operand a column block with a
  // row stride of 3E; the output projection takes the residual.
  add("bert_self_attention_fused_qkv", {{2, 24, 64}},
      [](Network& n, auto x, DataType t, std::mt19937& rng) {
        const int64_t batch = 2, length = 24, width = 64, heads = 4, headDim = 16;
        auto fc = [&](Tensor* in) {
          return n
              .addFullyConnected(in, weights(n, t, {width, width}, rng, 0.2f),
                                 weights(n, t, {width}, rng))
              ->output(0);
        };
        auto shuffle = [&](Tensor* in, Dims firstPermutation, Dims reshape) {
          ShuffleParams p;
          p.firstPermutation = std::move(firstPermutation);
          p.hasReshape = !reshape.empty();
          p.reshapeDims = std::move(reshape);
          return n.addShuffle(in, p)->output(0);
        };
        auto split = [&](Tensor* in) {
          return shuffle(shuffle(in, {}, {batch, length, heads, headDim}), {0, 2, 1, 3}, {});
        };
        AttentionParams p;
        p.scale = 0.25;
        Tensor* attended =
            n.addAttention(split(fc(x[0])), split(fc(x[0])), split(fc(x[0])), nullptr, p)
                ->output(0);
        Tensor* merged = shuffle(shuffle(attended, {0, 2, 1, 3}, {}), {}, {batch, length, width});
        n.markOutput(n.addElementwise(fc(merged), x[0], ElementwiseOp::kSum)->output(0));
      });
  // Reshapes alias their input's bytes (no copy) unless they are engine outputs.
  add("reshape_chain", {{4, 6, 10}}, [](Network& n, auto x, DataType, std::mt19937&) {
    auto reshape = [&](Tensor* t, Dims dims) {
      ShuffleParams p;
      p.hasReshape = true;
      p.reshapeDims = std::move(dims);
      return n.addShuffle(t, p)->output(0);
    };
    Tensor* a = n.addActivation(x[0], {ActivationType::kRelu})->output(0);
    Tensor* b = reshape(reshape(a, {24, 10}), {4, 60});
    ShuffleParams transpose;
    transpose.firstPermutation = {1, 0};
    Tensor* c = reshape(n.addShuffle(b, transpose)->output(0), {6, 10, 4});
    n.markOutput(
        n.addElementwise(reshape(c, {6, 40}), reshape(c, {6, 40}), ElementwiseOp::kSum)->output(0));
    n.markOutput(reshape(a, {240}));
    n.markOutput(n.addActivation(reshape(x[0], {24, 10}), {ActivationType::kSigmoid})->output(0));
  });
  return cases;
}

struct BuiltCase {
  std::shared_ptr<Engine> cpu;
  std::shared_ptr<Engine> cuda;
  std::vector<Bytes> inputs;
  std::vector<Dims> shapes;
};

BuiltCase buildCase(const LayerCase& c, DataType dtype) {
  BuiltCase built;
  for (Backend backend : {Backend::kCpu, Backend::kCuda}) {
    std::mt19937 rng(1234);
    Network network;
    std::vector<Tensor*> inputs;
    for (size_t i = 0; i < c.inputShapes.size(); ++i) {
      inputs.push_back(network.addInput("x" + std::to_string(i), dtype, c.inputShapes[i]));
    }
    c.build(network, inputs, dtype, rng);
    BuilderConfig config;
    config.backend = backend;
    (backend == Backend::kCpu ? built.cpu : built.cuda) = Builder::build(network, config);
  }
  std::mt19937 rng(99);
  for (const Dims& shape : c.inputShapes) {
    built.inputs.push_back(randomBytes(dtype, volume(shape), rng));
    built.shapes.push_back(shape);
  }
  return built;
}

std::vector<Bytes> runOnCpu(const Engine& engine, const BuiltCase& c) {
  auto context = engine.createExecutionContext();
  std::vector<Dims> outputDims = context->setInputShapes(c.shapes);
  std::vector<Bytes> outputs;
  std::vector<void*> outputPointers;
  outputPointers.reserve(outputDims.size());
  for (size_t o = 0; o < outputDims.size(); ++o) {
    outputs.emplace_back(static_cast<size_t>(volume(outputDims[o])) *
                         elementSize(engine.outputTensor(o).dtype));
  }
  for (Bytes& output : outputs) outputPointers.push_back(output.data());
  std::vector<const void*> inputPointers;
  for (const Bytes& input : c.inputs) inputPointers.push_back(input.data());
  context->execute(inputPointers, outputPointers);
  return outputs;
}

std::vector<Bytes> runOnGpu(ExecutionContext& context, const std::vector<Bytes>& inputs,
                            const std::vector<Dims>& shapes, cudaStream_t stream) {
  const Engine& engine = context.engine();
  std::vector<Dims> outputDims = context.setInputShapes(shapes);
  std::vector<DeviceBuffer> deviceInputs, deviceOutputs;
  std::vector<const void*> inputPointers;
  std::vector<void*> outputPointers;
  for (const Bytes& input : inputs) {
    deviceInputs.push_back(DeviceBuffer::from(input));
    inputPointers.push_back(deviceInputs.back().data());
  }
  for (size_t o = 0; o < outputDims.size(); ++o) {
    deviceOutputs.emplace_back(static_cast<size_t>(volume(outputDims[o])) *
                               elementSize(engine.outputTensor(o).dtype));
    outputPointers.push_back(deviceOutputs.back().data());
  }
  context.execute(inputPointers, outputPointers, stream);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<Bytes> outputs;
  for (size_t o = 0; o < outputDims.size(); ++o) {
    outputs.emplace_back(deviceOutputs[o].bytes());
    deviceOutputs[o].download(outputs.back().data(), outputs.back().size());
  }
  return outputs;
}

void expectClose(const Engine& engine, const std::vector<Bytes>& expected,
                 const std::vector<Bytes>& actual, double tolerance, const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t o = 0; o < expected.size(); ++o) {
    const DataType dtype = engine.outputTensor(o).dtype;
    const auto count = static_cast<int64_t>(expected[o].size() / elementSize(dtype));
    ASSERT_EQ(expected[o].size(), actual[o].size()) << what << " output " << o;
    double scale = 1e-6, worst = 0;
    int64_t worstAt = 0;
    for (int64_t i = 0; i < count; ++i) {
      scale =
          std::max(scale, std::fabs(static_cast<double>(toFloat(expected[o].data(), dtype, i))));
    }
    for (int64_t i = 0; i < count; ++i) {
      const double diff = std::fabs(static_cast<double>(toFloat(expected[o].data(), dtype, i)) -
                                    toFloat(actual[o].data(), dtype, i));
      if (!(diff <= worst)) {
        worst = diff;
        worstAt = i;
      }
    }
    EXPECT_LE(worst, tolerance * scale)
        << what << " output " << o << " (" << toString(dtype) << "): worst error at " << worstAt
        << ", expected " << toFloat(expected[o].data(), dtype, worstAt) << ", got "
        << toFloat(actual[o].data(), dtype, worstAt);
  }
}

class CudaLayers : public ::testing::TestWithParam<DataType> {};

TEST_P(CudaLayers, EveryLayerKindEqualsTheCpuBackend) {
  KILN_SKIP_WITHOUT_GPU();
  const DataType dtype = GetParam();
  const double tolerance =
      dtype == DataType::kFloat32 ? 1e-4 : (dtype == DataType::kFloat16 ? 2e-2 : 5e-2);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  for (const LayerCase& c : layerCases()) {
    SCOPED_TRACE(c.name);
    BuiltCase built = buildCase(c, dtype);
    const std::vector<Bytes> expected = runOnCpu(*built.cpu, built);
    for (bool graphs : {false, true}) {
      ExecutionSettings settings;
      settings.cudaGraphs = graphs;
      auto context = built.cuda->createExecutionContext(settings);
      // The first run chooses kernels (and captures a graph); the next ones replay.
      for (int run = 0; run < 3; ++run) {
        expectClose(*built.cuda, expected, runOnGpu(*context, built.inputs, built.shapes, stream),
                    tolerance,
                    c.name + (graphs ? " with graphs" : "") + " run " + std::to_string(run));
      }
    }
  }
  cudaStreamDestroy(stream);
}

INSTANTIATE_TEST_SUITE_P(Types, CudaLayers,
                         ::testing::Values(DataType::kFloat32, DataType::kFloat16,
                                           DataType::kBFloat16),
                         [](const auto& info) { return std::string(toString(info.param)); });

TEST(CudaEngine, HalfPrecisionTrunkRunsChannelsLastBetweenItsEdges) {
  KILN_SKIP_WITHOUT_GPU();
  for (const LayerCase& c : layerCases()) {
    if (c.name != "conv_pool_conv_trunk") continue;
    BuiltCase built = buildCase(c, DataType::kFloat16);
    size_t shuffles = 0, channelsLast = 0, channelsFirst = 0;
    for (const EngineLayer& layer : built.cuda->definition().layers) {
      shuffles += std::holds_alternative<ShuffleParams>(layer.params);
      if (const auto* conv = std::get_if<ConvolutionParams>(&layer.params)) {
        (conv->channelsLast ? channelsLast : channelsFirst) += 1;
      } else if (const auto* pool = std::get_if<PoolingParams>(&layer.params)) {
        (pool->channelsLast ? channelsLast : channelsFirst) += 1;
      }
    }
    EXPECT_EQ(channelsLast, 4u);  // both convolutions and both poolings
    EXPECT_EQ(channelsFirst, 0u);
    EXPECT_EQ(shuffles, 3u);  // the input's transpose and one before each output
    return;
  }
  FAIL() << "no conv_pool_conv_trunk case";
}

TEST(CudaEngine, FusedQkvProjectionIsOneGemmThatAttentionReadsInPlace) {
  KILN_SKIP_WITHOUT_GPU();
  for (const LayerCase& c : layerCases()) {
    if (c.name != "bert_self_attention_fused_qkv") continue;
    BuiltCase built = buildCase(c, DataType::kFloat16);
    const EngineDefinition& d = built.cuda->definition();
    size_t gemms = 0, copies = 0;
    const AttentionParams* attention = nullptr;
    for (const EngineLayer& layer : d.layers) {
      gemms += std::holds_alternative<FullyConnectedParams>(layer.params);
      copies += std::holds_alternative<ShuffleParams>(layer.params) ||
                std::holds_alternative<SliceParams>(layer.params);
      if (const auto* p = std::get_if<AttentionParams>(&layer.params)) attention = p;
    }
    EXPECT_EQ(gemms, 2u);  // q, k, v together; the output projection
    EXPECT_EQ(copies, 0u);
    ASSERT_NE(attention, nullptr);
    // Each operand reads its own 64-column block of the fused (2, 24, 192) output, in whatever
    // order the pass concatenated the projections.
    std::vector<int64_t> offsets;
    for (const Dims* view : {&attention->queryView, &attention->keyView, &attention->valueView}) {
      ASSERT_EQ(view->size(), 8u);
      offsets.push_back((*view)[4]);
      Dims rest = *view;
      rest[4] = 0;
      EXPECT_EQ(rest, (Dims{2, 4, 24, 16, 0, 24 * 192, 16, 192}));
    }
    std::sort(offsets.begin(), offsets.end());
    EXPECT_EQ(offsets, (std::vector<int64_t>{0, 64, 128}));

    // Profiling times every layer that launches on the GPU and computes what execute does.
    const std::vector<Bytes> expected = runOnCpu(*built.cpu, built);
    auto context = built.cuda->createExecutionContext();
    context->setInputShapes(built.shapes);
    DeviceBuffer input = DeviceBuffer::from(built.inputs[0]);
    DeviceBuffer output(expected[0].size());
    const std::vector<LayerTiming> timings =
        context->profileLayers({input.data()}, {output.data()}, 3);
    ASSERT_EQ(timings.size(), d.layers.size());
    for (size_t l = 0; l < d.layers.size(); ++l) {
      if (std::holds_alternative<ConstantParams>(d.layers[l].params)) continue;
      EXPECT_GT(timings[l].milliseconds, 0.0) << d.layers[l].name;
    }
    std::vector<Bytes> profiled = {Bytes(expected[0].size())};
    output.download(profiled[0].data(), profiled[0].size());
    expectClose(*built.cuda, expected, profiled, 2e-2, "profiled run");
    return;
  }
  FAIL() << "no bert_self_attention_fused_qkv case";
}

// A small conv net with a dynamic batch: two conv + relu, pool, fully connected. (The builder
// fuses each ReLU into its convolution; the second convolution's output can take the bytes of
// the first's, which the planned arena must show.)
std::shared_ptr<Engine> buildDynamicConvNet(Backend backend) {
  std::mt19937 rng(7);
  Network n;
  Tensor* x = n.addInput("x", DataType::kFloat32, {-1, 3, 32, 32});
  ConvolutionParams conv;
  conv.outChannels = 16;
  conv.kernel = {3, 3};
  conv.prePadding = {1, 1};
  conv.postPadding = {1, 1};
  Tensor* y = x;
  for (int64_t inChannels : {3, 16}) {
    y = n.addConvolution(y, weights(n, DataType::kFloat32, {16, inChannels, 3, 3}, rng),
                         weights(n, DataType::kFloat32, {16}, rng), conv)
            ->output(0);
    y = n.addActivation(y, {ActivationType::kRelu})->output(0);
  }
  PoolingParams pool;
  pool.type = PoolingType::kAverage;
  pool.adaptive = true;
  pool.outputSize = {1, 1};
  y = n.addPooling(y, pool)->output(0);
  ShuffleParams flatten;
  flatten.hasReshape = true;
  flatten.reshapeDims = {0, 16};
  y = n.addShuffle(y, flatten)->output(0);
  n.markOutput(n.addFullyConnected(y, weights(n, DataType::kFloat32, {10, 16}, rng),
                                   weights(n, DataType::kFloat32, {10}, rng))
                   ->output(0));
  BuilderConfig config;
  config.backend = backend;
  OptimizationProfile profile;
  profile.setRange("x", {{1, 3, 32, 32}, {4, 3, 32, 32}, {8, 3, 32, 32}});
  config.profiles = {profile};
  return Builder::build(n, config);
}

TEST(CudaEngine, DynamicBatchUsesOneGraphPerShapeAndOnePlannedArena) {
  KILN_SKIP_WITHOUT_GPU();
  auto cpu = buildDynamicConvNet(Backend::kCpu);
  auto cuda = buildDynamicConvNet(Backend::kCuda);
  auto context = cuda->createExecutionContext();
  std::mt19937 rng(3);
  for (int64_t batch : {1, 3, 8, 3, 1, 8}) {
    BuiltCase c;
    c.shapes = {{batch, 3, 32, 32}};
    c.inputs = {randomBytes(DataType::kFloat32, volume(c.shapes[0]), rng)};
    expectClose(*cuda, runOnCpu(*cpu, c), runOnGpu(*context, c.inputs, c.shapes, nullptr), 1e-4,
                "batch " + std::to_string(batch));
  }
  const EngineDefinition& definition = cuda->definition();
  const MemoryPlan plan = planMemory(definition, largestTensorBytes(definition));
  EXPECT_GT(plan.arenaBytes, 0);
  EXPECT_LT(plan.arenaBytes, plan.naiveBytes);
  // Batch 9 is outside the profile.
  EXPECT_THROW(context->setInputShapes({{9, 3, 32, 32}}), Error);
}

TEST(CudaEngine, ProfileNamesTheConvolutionAlgorithmAndMatchesExecute) {
  KILN_SKIP_WITHOUT_GPU();
  auto cpu = buildDynamicConvNet(Backend::kCpu);
  auto cuda = buildDynamicConvNet(Backend::kCuda);
  std::mt19937 rng(5);
  BuiltCase c;
  c.shapes = {{3, 3, 32, 32}};
  c.inputs = {randomBytes(DataType::kFloat32, volume(c.shapes[0]), rng)};
  const std::vector<Bytes> expected = runOnCpu(*cpu, c);
  auto context = cuda->createExecutionContext();
  context->setInputShapes(c.shapes);
  DeviceBuffer input = DeviceBuffer::from(c.inputs[0]);
  DeviceBuffer output(expected[0].size());
  const std::vector<LayerTiming> timings =
      context->profileLayers({input.data()}, {output.data()}, 2);
  const EngineDefinition& d = cuda->definition();
  ASSERT_EQ(timings.size(), d.layers.size());
  size_t convolutions = 0;
  for (size_t l = 0; l < d.layers.size(); ++l) {
    if (!std::holds_alternative<ConvolutionParams>(d.layers[l].params)) continue;
    // A legacy algorithm or a graph engine, whichever autotune chose (fp32: not depthwise).
    const std::string& tactic = timings[l].tactic;
    EXPECT_TRUE(tactic.rfind("cuDNN algorithm ", 0) == 0 || tactic.rfind("cuDNN engine ", 0) == 0)
        << tactic;
    EXPECT_GT(timings[l].milliseconds, 0.0);
    ++convolutions;
  }
  EXPECT_EQ(convolutions, 2u);
  std::vector<Bytes> profiled = {Bytes(expected[0].size())};
  output.download(profiled[0].data(), profiled[0].size());
  expectClose(*cuda, expected, profiled, 1e-4, "profiled run");
  // A run after profiling (which captures its CUDA graph) still computes the same.
  expectClose(*cuda, expected, runOnGpu(*context, c.inputs, c.shapes, nullptr), 1e-4, "after");
}

TEST(CudaEngine, SharedByEightThreadsWithTheirOwnStreams) {
  KILN_SKIP_WITHOUT_GPU();
  auto engine = buildDynamicConvNet(Backend::kCuda);
  std::mt19937 rng(5);
  const std::vector<Dims> shapes = {{4, 3, 32, 32}};
  const std::vector<Bytes> inputs = {randomBytes(DataType::kFloat32, volume(shapes[0]), rng)};
  std::vector<Bytes> reference;
  {
    auto context = engine->createExecutionContext();
    reference = runOnGpu(*context, inputs, shapes, nullptr);
  }
  std::vector<std::thread> threads;
  threads.reserve(8);
  std::vector<int> mismatches(8, 0);
  std::vector<std::string> errors(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      try {
        cudaStream_t stream = nullptr;
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        auto context = engine->createExecutionContext();
        for (int run = 0; run < 200; ++run) {
          if (runOnGpu(*context, inputs, shapes, stream) != reference) ++mismatches[t];
        }
        cudaStreamDestroy(stream);
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(mismatches[t], 0) << "thread " << t;
    EXPECT_EQ(errors[t], "") << "thread " << t;
  }
}

// Lazy module loading (CUDA's default) puts a library kernel's code in device memory the first
// time it runs, and autotuning may pick a kernel first in any cycle: that memory is the driver's,
// not Kiln's. So this test runs where every module loads up front: its own ctest entry
// (CMakeLists.txt) and scripts/gpu_check.sh set CUDA_MODULE_LOADING=EAGER.
TEST(CudaEngine, BuildRunFreeCyclesReturnDeviceMemory) {
  KILN_SKIP_WITHOUT_GPU();
  const char* loading = std::getenv("CUDA_MODULE_LOADING");
  if (loading == nullptr || std::string(loading) != "EAGER") {
    GTEST_SKIP() << "needs CUDA_MODULE_LOADING=EAGER (ctest runs it so as "
                    "CudaEngine.BuildRunFreeCyclesReturnDeviceMemory_EagerLoading)";
  }
  auto cycle = [] {
    auto engine = buildDynamicConvNet(Backend::kCuda);
    auto context = engine->createExecutionContext();
    std::mt19937 rng(11);
    const std::vector<Dims> shapes = {{2, 3, 32, 32}};
    runOnGpu(*context, {randomBytes(DataType::kFloat32, volume(shapes[0]), rng)}, shapes, nullptr);
  };
  // Libraries' one-time state (cuDNN, cuBLASLt, the graph memory pool) is allocated here.
  for (int i = 0; i < 3; ++i) cycle();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  size_t freeBefore = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&freeBefore, &total), cudaSuccess);
  // Which cycles changed the free memory, for the failure message: a leak shows in every cycle,
  // a one-time load (a library's module, first used) in one.
  std::string changes;
  size_t freeLast = freeBefore;
  for (int i = 0; i < 100; ++i) {
    cycle();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    size_t freeNow = 0;
    ASSERT_EQ(cudaMemGetInfo(&freeNow, &total), cudaSuccess);
    if (freeNow != freeLast) {
      changes +=
          " cycle " + std::to_string(i) + ": " +
          std::to_string((static_cast<int64_t>(freeNow) - static_cast<int64_t>(freeLast)) / 1024) +
          " KiB;";
    }
    freeLast = freeNow;
  }
  EXPECT_EQ(freeLast, freeBefore) << "free device memory changed in" << changes;
}

// Rows of an 8 x 4 table picked by three int64 indices, both engine inputs.
std::shared_ptr<Engine> buildRowLookup() {
  Network n;
  Tensor* table = n.addInput("table", DataType::kFloat32, {8, 4});
  Tensor* indices = n.addInput("indices", DataType::kInt64, {3});
  n.markOutput(n.addGather(table, indices, {0})->output(0));
  BuilderConfig config;
  config.backend = Backend::kCuda;
  return Builder::build(n, config);
}

// One row lookup's buffers: element e of the table holds e. pick() uploads the indices (and
// frees the last ones: only between runs the caller waited for); start() returns without waiting
// for the run.
struct RowLookupRun {
  DeviceBuffer table = DeviceBuffer::from(iota(32));
  DeviceBuffer indices;
  DeviceBuffer rows{3 * 4 * sizeof(float)};

  static std::vector<float> iota(int count, float first = 0.0f) {
    std::vector<float> values(static_cast<size_t>(count));
    for (float& value : values) value = first++;
    return values;
  }
  void pick(const std::vector<int64_t>& picked) { indices = DeviceBuffer::from(picked); }
  void start(ExecutionContext& context, cudaStream_t stream) const {
    context.execute({table.data(), indices.data()}, {rows.data()}, stream);
  }
  void start(ExecutionContext& context, const std::vector<int64_t>& picked, cudaStream_t stream) {
    pick(picked);
    start(context, stream);
  }
};

TEST(CudaEngine, OutOfRangeIndexIsReportedOnceByALaterRun) {
  KILN_SKIP_WITHOUT_GPU();
  auto engine = buildRowLookup();
  auto context = engine->createExecutionContext();
  context->setInputShapes({{8, 4}, {3}});
  RowLookupRun run;
  // Runs 1 and 3 are the first and a CUDA graph's replays: both paths report.
  for (const char* path : {"first run", "graph replay"}) {
    run.start(*context, {0, 10, 7}, nullptr);
    ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    try {
      run.start(*context, {0, 1, 2}, nullptr);
      ADD_FAILURE() << path << ": the bad index was not reported";
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("out-of-range index (10)"), std::string::npos) << message;
      EXPECT_NE(message.find("outputs are invalid"), std::string::npos) << message;
    }
    EXPECT_NO_THROW(run.start(*context, {0, 1, 2}, nullptr)) << path;
    ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    EXPECT_NO_THROW(run.start(*context, {4, 5, -2}, nullptr)) << path;
    ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    EXPECT_EQ(run.rows.download<float>(), RowLookupRun::iota(12, 16.0f)) << path;
  }
}

// Holds a stream until `released` is set, or for at most 20 s; says whether it timed out.
struct StreamGate {
  std::atomic<bool> released{false};
  std::atomic<bool> timedOut{false};

  static void CUDART_CB hold(void* gate) {
    auto* self = static_cast<StreamGate*>(gate);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!self->released.load()) {
      if (std::chrono::steady_clock::now() > deadline) {
        self->timedOut = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
};

// An engine whose runs report status (it gathers) must still queue run after run without
// waiting for the GPU, or the host's time per run adds to the GPU's.
TEST(CudaEngine, RunsDoNotWaitForEarlierRunsToFinish) {
  KILN_SKIP_WITHOUT_GPU();
  auto engine = buildRowLookup();
  auto context = engine->createExecutionContext();
  context->setInputShapes({{8, 4}, {3}});
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  RowLookupRun run;
  for (int warmUp = 0; warmUp < 2; ++warmUp) {
    run.start(*context, {0, 1, 2}, stream);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  }

  // Every buffer is in place before the gate closes: no allocation or copy waits on it.
  std::vector<RowLookupRun> runs(4);
  for (RowLookupRun& queued : runs) queued.pick({5, 6, 7});
  StreamGate gate;
  ASSERT_EQ(cudaLaunchHostFunc(stream, StreamGate::hold, &gate), cudaSuccess);
  for (RowLookupRun& queued : runs) queued.start(*context, stream);
  EXPECT_EQ(cudaStreamQuery(stream), cudaErrorNotReady);
  gate.released = true;
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_FALSE(gate.timedOut) << "a run waited for the one before it";
  for (RowLookupRun& queued : runs) {
    EXPECT_EQ(queued.rows.download<float>(), RowLookupRun::iota(12, 20.0f));
  }
  cudaStreamDestroy(stream);
}

TEST(CudaEngine, PlanFromAnotherComputeCapabilityIsRefused) {
  KILN_SKIP_WITHOUT_GPU();
  auto engine = buildDynamicConvNet(Backend::kCuda);
  const std::vector<uint8_t> plan = engine->serialize();
  EXPECT_EQ(engine->target().backend, Backend::kCuda);
  EXPECT_GT(engine->target().computeCapabilityMajor, 0);
  EXPECT_NE(engine->target().cudnnVersion, 0);
  EXPECT_NO_THROW(Engine::deserialize(plan.data(), plan.size()));

  CudaDeviceInfo other = currentCudaDevice();
  other.name = "NVIDIA A100-SXM4-80GB";
  other.computeCapabilityMajor = 8;
  other.computeCapabilityMinor = 0;
  overrideCudaDeviceForTesting(other);
  try {
    Engine::deserialize(plan.data(), plan.size());
    ADD_FAILURE() << "a plan for another compute capability was accepted";
  } catch (const PlanError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("rebuild the engine"), std::string::npos) << message;
    EXPECT_NE(message.find("compute capability 8.0"), std::string::npos) << message;
  }
  EXPECT_NO_THROW(Engine::deserialize(plan.data(), plan.size(), /*allowOtherGpu=*/true));
  overrideCudaDeviceForTesting(std::nullopt);
}

}  // namespace
}  // namespace kiln

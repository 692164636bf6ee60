// sinkLayoutTransposes across layer norms, fully connected layers, pointwise layers with constant
// operands and reductions: a ConvNeXt block and a LayerNorm2d run channels-last with a transpose
// only at the network's edges, and the transposes that cannot move stay. Each test compares the
// network's outputs before and after the pass.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/builder/builder.h"
#include "core/builder/passes.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"
#include "tests/cpp/network_evaluator.h"

namespace kiln {
namespace {

Tensor* transpose(Network& network, Tensor* x, Dims permutation) {
  ShuffleParams p;
  p.firstPermutation = std::move(permutation);
  return network.addShuffle(x, p)->output(0);
}

// A constant of `dims` with ramp values, in `type`.
Tensor* constant(Network& network, const Dims& dims, float start, float step,
                 DataType type = DataType::kFloat32) {
  return rampConstant(network, dims, start, step, type);
}

Tensor* layerNorm(Network& network, Tensor* x, int64_t axis, Tensor* scale, Tensor* bias,
                  Tensor* residual = nullptr) {
  NormalizationParams p;
  p.type = NormalizationType::kLayer;
  p.axis = axis;
  p.epsilon = 1e-6;
  return network.addLayer(p, {x, scale, bias, residual})->output(0);
}

Tensor* linear(Network& network, Tensor* x, int64_t outFeatures, float seed) {
  const int64_t inFeatures = x->dims().back();
  const DataType type = x->dtype();
  return network
      .addLayer(FullyConnectedParams{},
                {x, constant(network, {outFeatures, inFeatures}, -0.2f * seed, 0.031f, type),
                 constant(network, {outFeatures}, 0.1f * seed, -0.017f, type)})
      ->output(0);
}

// torchvision's CNBlock in fp16: depthwise 3x3 conv -> permute to NHWC -> layer norm over C ->
// linear (C -> 4C) -> GELU -> linear (4C -> C) -> permute back -> layer scale (C, 1, 1) ->
// + the block's input.
Tensor* convNextBlock(Network& network, Tensor* x, float seed) {
  const int64_t channels = x->dims()[1];
  const DataType half = DataType::kFloat16;
  ConvolutionParams depthwise;
  depthwise.outChannels = channels;
  depthwise.groups = channels;
  depthwise.kernel = {3, 3};
  depthwise.prePadding = {1, 1};
  depthwise.postPadding = {1, 1};
  Tensor* conv =
      network
          .addLayer(depthwise,
                    {x, constant(network, {channels, 1, 3, 3}, -0.3f * seed, 0.05f, half),
                     constant(network, {channels}, 0.1f, 0.02f, half)})
          ->output(0);
  Tensor* nhwc = transpose(network, conv, {0, 2, 3, 1});
  Tensor* normed = layerNorm(network, nhwc, -1, constant(network, {channels}, 0.8f, 0.03f, half),
                             constant(network, {channels}, -0.1f, 0.02f, half));
  Tensor* hidden = linear(network, normed, 4 * channels, seed);
  Tensor* activated = network.addActivation(hidden, {ActivationType::kGeluErf})->output(0);
  Tensor* projected = linear(network, activated, channels, seed + 1.0f);
  Tensor* nchw = transpose(network, projected, {0, 3, 1, 2});
  Tensor* scaled = network
                       .addElementwise(constant(network, {channels, 1, 1}, 0.5f, 0.1f, half), nchw,
                                       ElementwiseOp::kProd)
                       ->output(0);
  return network.addElementwise(scaled, x, ElementwiseOp::kSum)->output(0);
}

// timm's LayerNorm2d: permute to NHWC, layer norm over C, permute back.
Tensor* layerNorm2d(Network& network, Tensor* x) {
  const int64_t channels = x->dims()[1];
  Tensor* nhwc = transpose(network, x, {0, 2, 3, 1});
  Tensor* normed =
      layerNorm(network, nhwc, 3, constant(network, {channels}, 1.1f, -0.04f, x->dtype()),
                constant(network, {channels}, 0.2f, 0.01f, x->dtype()));
  return transpose(network, normed, {0, 3, 1, 2});
}

// A half-precision k x k convolution of x (channels-first) to `outChannels`, padded to keep the
// size, in `groups` groups, with a bias.
Tensor* halfConv(Network& network, Tensor* x, int64_t outChannels, int64_t k, float seed,
                 int64_t groups = 1) {
  const DataType half = DataType::kFloat16;
  ConvolutionParams p;
  p.outChannels = outChannels;
  p.groups = groups;
  p.kernel = {k, k};
  p.prePadding = {k / 2, k / 2};
  p.postPadding = {k / 2, k / 2};
  const int64_t perGroup = x->dims()[1] / groups;
  return network
      .addLayer(p, {x, constant(network, {outChannels, perGroup, k, k}, -0.1f * seed, 0.017f, half),
                    constant(network, {outChannels}, 0.05f * seed, -0.02f, half)})
      ->output(0);
}

// An inference batch norm over channel dim 1, its operands in x's type.
Tensor* batchNorm(Network& network, Tensor* x, float seed, int64_t axis = 1) {
  const int64_t channels = x->dims()[static_cast<size_t>(axis < 0 ? axis + x->rank() : axis)];
  const DataType type = x->dtype();
  NormalizationParams p;
  p.type = NormalizationType::kBatch;
  p.axis = axis;
  return network
      .addNormalization(x, constant(network, {channels}, 0.8f, 0.05f * seed, type),
                        constant(network, {channels}, -0.1f * seed, 0.03f, type),
                        constant(network, {channels}, 0.2f, -0.04f * seed, type),
                        constant(network, {channels}, 0.5f, 0.1f, type), p)
      ->output(0);
}

Tensor* relu(Network& network, Tensor* x) {
  return network.addActivation(x, {ActivationType::kRelu})->output(0);
}

Tensor* concatenate(Network& network, const std::vector<Tensor*>& xs, int64_t axis) {
  ConcatParams p;
  p.axis = axis;
  return network.addConcat(xs, p)->output(0);
}

Tensor* slice(Network& network, Tensor* x, int64_t axis, int64_t start, int64_t end,
              int64_t step = 1) {
  SliceParams p;
  p.axes = {axis};
  p.starts = {start};
  p.ends = {end};
  p.steps = {step};
  return network.addSlice(x, p)->output(0);
}

// The builder's layout passes, in its order, after the constant folding that precedes them.
void runLayoutPasses(Network& network) {
  foldConstants(network);
  convertConvolutionsToChannelsLast(network);
  sinkLayoutTransposes(network);
  convertPointwiseConvolutionsToFullyConnected(network);
  foldConstants(network);
  eliminateDeadLayers(network);
}

// Whether `shuffle` is at an edge of the network: its input is a network input (maybe through
// casts), or its output is an output (maybe through casts).
bool atAnEdge(const Network& network, const Layer* shuffle) {
  const Tensor* in = shuffle->input(0);
  while (in->producer() != nullptr && in->producer()->kind() == LayerKind::kCast) {
    in = in->producer()->input(0);
  }
  if (in->isNetworkInput()) return true;
  const Tensor* out = shuffle->output(0);
  while (!network.isOutput(out)) {
    const Layer* reader = network.soleReader(out);
    if (reader == nullptr || reader->kind() != LayerKind::kCast) return false;
    out = reader->output(0);
  }
  return true;
}

// Checks that the network's shuffles are `expected` transposes, each at an edge.
void expectTransposesAtTheEdgesOnly(const Network& network, size_t expected) {
  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), expected);
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kShuffle) continue;
    EXPECT_TRUE(isPureTranspose(layer->paramsAs<ShuffleParams>())) << layer->name();
    EXPECT_TRUE(atAnEdge(network, layer)) << layer->name() << " is inside the network";
  }
}

// Two ConvNeXt blocks, a downsampling LayerNorm2d + 2x2 stride-2 conv, and a LayerNorm2d at the
// end (timm's convnext_atto stage and head, with torchvision's blocks).
TEST(BuilderLayoutTransposeSinkingBlocks, ConvNextBlocksRunChannelsLastBetweenTheEdges) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 8, 5, 4});
  Tensor* h = network.addCast(x, DataType::kFloat16)->output(0);
  h = convNextBlock(network, h, 1.0f);
  h = convNextBlock(network, h, 2.0f);
  ConvolutionParams downsample;
  downsample.outChannels = 4;
  downsample.kernel = {2, 2};
  downsample.stride = {2, 2};
  h = network
          .addLayer(downsample,
                    {layerNorm2d(network, h),
                     constant(network, {4, 8, 2, 2}, -0.2f, 0.03f, DataType::kFloat16), nullptr})
          ->output(0);
  Tensor* out = network.addCast(layerNorm2d(network, h), DataType::kFloat32)->output(0);
  out->setName("out");
  network.markOutput(out);
  const std::vector<std::vector<float>> inputs = {ramp(2 * 8 * 5 * 4, -1.0f, 0.17f, 13)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  runLayoutPasses(network);

  // One transpose into NHWC after the input's cast, one back before the output.
  expectTransposesAtTheEdgesOnly(network, 2);
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kConvolution) {
      EXPECT_TRUE(layer->paramsAs<ConvolutionParams>().channelsLast) << layer->name();
    } else if (layer->kind() == LayerKind::kNormalization) {
      // Over the channels, last.
      EXPECT_EQ(layer->input(0)->dims().back(), layer->input(1)->dims().back()) << layer->name();
    }
  }
  EXPECT_EQ(network.output(0)->name(), "out");
  EXPECT_EQ(network.output(0)->dims(), (Dims{2, 4, 2, 2}));
  network.validate();
  // The same float32 arithmetic on the same fp16 values: only the layout changed.
  expectNear(evaluate(network, inputs), before, 0.0f);
}

// timm's convnext_atto block (conv_mlp): LayerNorm2d and 1x1 convolutions instead of the
// permutes and linear layers. Its 1x1 convolutions then run as GEMMs.
TEST(BuilderLayoutTransposeSinkingBlocks, ConvMlpBlockRunsItsOneByOneConvolutionsAsGemms) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 6, 4, 4});
  Tensor* h = network.addCast(x, DataType::kFloat16)->output(0);
  ConvolutionParams depthwise;
  depthwise.outChannels = 6;
  depthwise.groups = 6;
  depthwise.kernel = {3, 3};
  depthwise.prePadding = {1, 1};
  depthwise.postPadding = {1, 1};
  Tensor* conv =
      network
          .addLayer(depthwise,
                    {h, constant(network, {6, 1, 3, 3}, -0.3f, 0.05f, DataType::kFloat16), nullptr})
          ->output(0);
  ConvolutionParams pointwise;
  pointwise.kernel = {1, 1};
  pointwise.outChannels = 12;
  Tensor* normed = layerNorm2d(network, conv);
  Tensor* up =
      network
          .addLayer(pointwise,
                    {normed, constant(network, {12, 6, 1, 1}, -0.3f, 0.05f, DataType::kFloat16),
                     constant(network, {12}, 0.1f, 0.01f, DataType::kFloat16)})
          ->output(0);
  Tensor* activated = network.addActivation(up, {ActivationType::kGeluErf})->output(0);
  pointwise.outChannels = 6;
  Tensor* down =
      network
          .addLayer(pointwise,
                    {activated, constant(network, {6, 12, 1, 1}, 0.2f, -0.03f, DataType::kFloat16),
                     nullptr})
          ->output(0);
  Tensor* scaled =
      network
          .addElementwise(down, constant(network, {1, 6, 1, 1}, 0.4f, 0.1f, DataType::kFloat16),
                          ElementwiseOp::kProd)
          ->output(0);
  Tensor* sum = network.addElementwise(h, scaled, ElementwiseOp::kSum)->output(0);
  // The next stage's downsampling.
  ConvolutionParams downsample;
  downsample.outChannels = 4;
  downsample.kernel = {2, 2};
  downsample.stride = {2, 2};
  Tensor* next =
      network
          .addLayer(
              downsample,
              {sum, constant(network, {4, 6, 2, 2}, -0.2f, 0.03f, DataType::kFloat16), nullptr})
          ->output(0);
  network.markOutput(network.addCast(next, DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(6 * 4 * 4, -0.9f, 0.15f, 13)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  runLayoutPasses(network);

  expectTransposesAtTheEdgesOnly(network, 2);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 2u);
  EXPECT_EQ(countLayers(network, LayerKind::kConvolution), 2u);  // depthwise, downsampling
  network.validate();
  // A 1x1 convolution and a GEMM sum the same products in another order.
  expectNear(evaluate(network, inputs), before, 2e-3f);
}

// ---- CNNs that split and concatenate channels ---------------------------------------------
//
// Each block is half precision between a cast of its float32 input and a cast of its output.
// Checked twice: the layout passes on the network (transposes at its edges only, the same
// outputs), and the engine that the builder makes of it for the CPU backend (the same two
// transposes among its layers, outputs equal to the unoptimized network's).

size_t transposes(const Network& network) {
  size_t count = 0;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    count +=
        layer->kind() == LayerKind::kShuffle && isPureTranspose(layer->paramsAs<ShuffleParams>());
  }
  return count;
}

// The transposes that the channels-last conversion leaves before they sink: two a convolution
// (its weights' are folded).
size_t transposesBeforeSinking(const Network& network) {
  std::unique_ptr<Network> converted = network.clone();
  foldConstants(*converted);
  convertConvolutionsToChannelsLast(*converted);
  foldConstants(*converted);
  eliminateDeadLayers(*converted);
  return transposes(*converted);
}

// The layers of a built engine that move elements: shuffles with a permutation.
size_t engineTransposes(const Engine& engine) {
  size_t count = 0;
  for (const EngineLayer& layer : engine.definition().layers) {
    const auto* shuffle = std::get_if<ShuffleParams>(&layer.params);
    count += shuffle != nullptr &&
             (!shuffle->firstPermutation.empty() || !shuffle->secondPermutation.empty());
  }
  return count;
}

// Builds `network` (one input, one float32 output) for the CPU backend, checks that the engine
// keeps `expected` transposes and computes what the network does, then runs the layout passes
// on the network itself and checks the same.
void expectChannelsLastBetweenTheEdges(Network& network, size_t expected, float tolerance) {
  const Dims inputDims = network.input(0)->dims();
  const std::vector<std::vector<float>> inputs = {
      ramp(static_cast<size_t>(volume(inputDims)), -1.0f, 0.17f, 13)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  std::shared_ptr<Engine> engine = Builder::build(network, {});
  EXPECT_EQ(engineTransposes(*engine), expected);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({inputDims});
  std::vector<float> out(before.at(0).size());
  context->execute({inputs[0].data()}, {out.data()});
  expectNear({out}, before, tolerance);

  runLayoutPasses(network);
  expectTransposesAtTheEdgesOnly(network, expected);
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kConvolution) {
      EXPECT_TRUE(layer->paramsAs<ConvolutionParams>().channelsLast) << layer->name();
    }
  }
  network.validate();
  expectNear(evaluate(network, inputs), before, tolerance);
}

// `count` layers of `kind` (whose Params have channelsLast), each channels-last.
template <typename Params>
void expectChannelsLastLayers(const Network& network, LayerKind kind, size_t count) {
  EXPECT_EQ(countLayers(network, kind), count);
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() == kind) {
      EXPECT_TRUE(layer->paramsAs<Params>().channelsLast) << layer->name();
    }
  }
}

// A 2x2 average pooling of stride 2, no padding.
Tensor* averagePool2x2(Network& network, Tensor* x) {
  PoolingParams average;
  average.type = PoolingType::kAverage;
  average.kernel = {2, 2};
  average.stride = {2, 2};
  average.prePadding = {0, 0};
  average.postPadding = {0, 0};
  return network.addPooling(x, average)->output(0);
}

Tensor* leakyRelu(Network& network, Tensor* x) {
  return network.addActivation(x, {ActivationType::kLeakyRelu, 0.1})->output(0);
}

// A CSP stage (timm's CrossStage): a convolution, its channels split in halves, one half through
// a residual block and a transition convolution, the halves concatenated, a convolution over
// both. Each convolution but the last is followed by a leaky ReLU, which no convolution fuses.
TEST(BuilderLayoutTransposeSinkingBlocks, CspStageSplitsAndConcatenatesChannelsLast) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 6, 6});
  Tensor* h = leakyRelu(
      network, halfConv(network, network.addCast(x, DataType::kFloat16)->output(0), 8, 3, 1.0f));
  Tensor* kept = slice(network, h, -3, 0, 4);
  Tensor* blocks = slice(network, h, 1, 4, 8);
  Tensor* inner = leakyRelu(network, halfConv(network, blocks, 4, 1, 2.0f));
  inner = leakyRelu(network, halfConv(network, inner, 4, 3, 3.0f));
  blocks = network.addElementwise(inner, blocks, ElementwiseOp::kSum)->output(0);
  blocks = leakyRelu(network, halfConv(network, blocks, 4, 1, 4.0f));
  Tensor* merged = concatenate(network, {kept, blocks}, 1);
  Tensor* out = halfConv(network, merged, 8, 1, 5.0f);
  network.markOutput(network.addCast(out, DataType::kFloat32)->output(0));
  EXPECT_EQ(transposesBeforeSinking(network), 10u);

  expectChannelsLastBetweenTheEdges(network, 2, 2e-3f);

  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kConcat) {
      EXPECT_EQ(layer->paramsAs<ConcatParams>().axis, 3);
    } else if (layer->kind() == LayerKind::kSlice) {
      EXPECT_EQ(layer->paramsAs<SliceParams>().axes, (Dims{3}));
    }
  }
}

// A dense block of two layers and its transition (torchvision's DenseNet): each layer
// concatenates the block's features so far, then a batch norm and a ReLU that no convolution
// folds come before its convolution; every feature is read by each later concatenation.
TEST(BuilderLayoutTransposeSinkingBlocks, DenseBlockConcatenatesAndNormalizesChannelsLast) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 6, 6});
  Tensor* x0 = halfConv(network, network.addCast(x, DataType::kFloat16)->output(0), 4, 3, 1.0f);
  Tensor* x1 = halfConv(network, relu(network, batchNorm(network, x0, 1.0f)), 3, 3, 2.0f);
  Tensor* x2 =
      halfConv(network, relu(network, batchNorm(network, concatenate(network, {x0, x1}, 1), 2.0f)),
               3, 3, 3.0f);
  Tensor* features = concatenate(network, {x0, x1, x2}, 1);
  Tensor* transition =
      halfConv(network, relu(network, batchNorm(network, features, 3.0f)), 5, 1, 4.0f);
  Tensor* pooled = averagePool2x2(network, transition);
  network.markOutput(network.addCast(pooled, DataType::kFloat32)->output(0));
  EXPECT_EQ(transposesBeforeSinking(network), 8u);

  expectChannelsLastBetweenTheEdges(network, 2, 2e-3f);

  size_t norms = 0;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kNormalization) {
      EXPECT_EQ(layer->paramsAs<NormalizationParams>().axis, 3) << layer->name();
      ++norms;
    } else if (layer->kind() == LayerKind::kConcat) {
      EXPECT_EQ(layer->paramsAs<ConcatParams>().axis, 3) << layer->name();
    }
  }
  EXPECT_EQ(norms, 3u);
}

// GhostNet's bottleneck: two ghost modules (a primary 1x1 convolution, a cheap depthwise one over
// its output, both concatenated and sliced to the module's channels), and the residual add.
Tensor* ghostModule(Network& network, Tensor* x, int64_t outChannels, bool activated, float seed) {
  const int64_t primaryChannels = (outChannels + 1) / 2;
  Tensor* primary = halfConv(network, x, primaryChannels, 1, seed);
  if (activated) primary = relu(network, primary);
  Tensor* cheap = halfConv(network, primary, primaryChannels, 3, seed + 0.5f, primaryChannels);
  if (activated) cheap = relu(network, cheap);
  return slice(network, concatenate(network, {primary, cheap}, 1), 1, 0, outChannels);
}

TEST(BuilderLayoutTransposeSinkingBlocks, GhostBottleneckConcatenatesAndSlicesChannelsLast) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 6, 6});
  Tensor* stem = relu(
      network, halfConv(network, network.addCast(x, DataType::kFloat16)->output(0), 10, 3, 1.0f));
  // 6 + 6 channels kept whole, then 5 + 5, and 6 + 6 cut to 11 after the residual add.
  Tensor* ghost = ghostModule(network, stem, 12, true, 2.0f);
  ghost = ghostModule(network, ghost, 10, false, 3.0f);
  Tensor* sum = network.addElementwise(ghost, stem, ElementwiseOp::kSum)->output(0);
  Tensor* cut = ghostModule(network, sum, 11, true, 4.0f);
  network.markOutput(network.addCast(cut, DataType::kFloat32)->output(0));
  EXPECT_EQ(transposesBeforeSinking(network), 14u);

  expectChannelsLastBetweenTheEdges(network, 2, 2e-3f);

  EXPECT_EQ(countLayers(network, LayerKind::kSlice), 3u);
  EXPECT_EQ(countLayers(network, LayerKind::kConcat), 3u);
}

// PoolFormer's block as its converter gives it: a group norm of one group (a layer norm over
// every dim but the batch, then a per-channel affine), pool(x) - x, a layer scale and the residual
// add; then the norm again, an MLP of 1x1 convolutions and a second residual add. The convolution
// before the block has two readers (the norm and the residual), and the pool's input two (the
// pool and the subtraction): the transposes move through both diamonds.
Tensor* poolFormerBlock(Network& network, Tensor* x, float seed) {
  const int64_t channels = x->dims()[1];
  const DataType half = DataType::kFloat16;
  const auto groupNorm = [&](Tensor* in) {
    Tensor* normed = layerNorm(network, in, 1, nullptr, nullptr);
    Tensor* scaled =
        network
            .addElementwise(normed, constant(network, {channels, 1, 1}, 0.7f, 0.05f, half),
                            ElementwiseOp::kProd)
            ->output(0);
    return network
        .addElementwise(scaled, constant(network, {channels, 1, 1}, -0.1f, 0.03f, half),
                        ElementwiseOp::kSum)
        ->output(0);
  };
  const auto layerScale = [&](Tensor* in, Tensor* residual) {
    Tensor* scaled = network
                         .addElementwise(in, constant(network, {channels, 1, 1}, 0.5f, 0.02f, half),
                                         ElementwiseOp::kProd)
                         ->output(0);
    return network.addElementwise(scaled, residual, ElementwiseOp::kSum)->output(0);
  };
  Tensor* normed = groupNorm(x);
  PoolingParams pool;
  pool.type = PoolingType::kAverage;
  pool.kernel = {3, 3};
  pool.stride = {1, 1};
  pool.prePadding = pool.postPadding = {1, 1};
  pool.countIncludePad = false;
  Tensor* pooled = network.addPooling(normed, pool)->output(0);
  Tensor* mixed = network.addElementwise(pooled, normed, ElementwiseOp::kSub)->output(0);
  Tensor* h = layerScale(mixed, x);
  Tensor* hidden = network
                       .addActivation(halfConv(network, groupNorm(h), 2 * channels, 1, seed),
                                      {ActivationType::kGeluErf})
                       ->output(0);
  return layerScale(halfConv(network, hidden, channels, 1, seed + 1.0f), h);
}

TEST(BuilderLayoutTransposeSinkingBlocks, PoolFormerBlocksRunChannelsLastBetweenTheEdges) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 8, 8});
  Tensor* h = halfConv(network, network.addCast(x, DataType::kFloat16)->output(0), 6, 3, 1.0f);
  h = poolFormerBlock(network, h, 2.0f);
  h = poolFormerBlock(network, h, 3.0f);
  network.markOutput(network.addCast(h, DataType::kFloat32)->output(0));

  // The engine fuses the affine, the layer scale and the residual add: fewer fp16 roundings.
  expectChannelsLastBetweenTheEdges(network, 2, 1e-2f);

  expectChannelsLastLayers<PoolingParams>(network, LayerKind::kPooling, 2);
}

// HRNet's exchange of two resolutions: the high branch pooled and convolved to the low one, the
// low one convolved and upsampled (nearest and bilinear) back, each added to the other branch,
// then a ReLU and a convolution. The resizes run channels-last and no transpose is left between
// the convolutions.
TEST(BuilderLayoutTransposeSinkingBlocks, UpsampledBranchesJoinChannelsLast) {
  for (ResizeMode mode : {ResizeMode::kNearest, ResizeMode::kLinear}) {
    SCOPED_TRACE(toString(mode));
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 8, 8});
    Tensor* high = halfConv(network, network.addCast(x, DataType::kFloat16)->output(0), 6, 3, 1.0f);
    Tensor* low = halfConv(network, averagePool2x2(network, high), 6, 3, 2.0f);
    ResizeParams upsample;
    upsample.mode = mode;
    upsample.outputSize = {8, 8};
    Tensor* upsampled = network.addResize(halfConv(network, low, 6, 1, 3.0f), upsample)->output(0);
    Tensor* joined = network.addElementwise(high, upsampled, ElementwiseOp::kSum)->output(0);
    Tensor* out = halfConv(
        network, network.addActivation(joined, {ActivationType::kRelu})->output(0), 4, 3, 4.0f);
    network.markOutput(network.addCast(out, DataType::kFloat32)->output(0));

    expectChannelsLastBetweenTheEdges(network, 2, 1e-2f);

    expectChannelsLastLayers<ResizeParams>(network, LayerKind::kResize, 1);
  }
}

// ConvNeXt-V2's block with its global response norm in NCHW (timm's conv_mlp form): a 1x1
// convolution, GELU, the L2 norm over H and W (x * x, a sum keeping dims, a square root), divided
// by its mean over the channels, x * that scaled and shifted per channel plus x, a 1x1
// convolution. The transpose moves through the norm's reductions and the square that reads its
// input twice.
TEST(BuilderLayoutTransposeSinkingBlocks, GlobalResponseNormRunsChannelsLastBetweenTheEdges) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 4, 5, 5});
  Tensor* h = halfConv(network, network.addCast(x, DataType::kFloat16)->output(0), 8, 1, 1.0f);
  h = network.addActivation(h, {ActivationType::kGeluErf})->output(0);
  const auto reduce = [&](Tensor* in, ReduceOp op, Dims axes) {
    ReduceParams p;
    p.op = op;
    p.axes = std::move(axes);
    p.keepDims = true;
    return network.addReduce(in, p)->output(0);
  };
  Tensor* squares = network.addElementwise(h, h, ElementwiseOp::kProd)->output(0);
  Tensor* norm =
      network.addUnary(reduce(squares, ReduceOp::kSum, {2, 3}), UnaryOp::kSqrt)->output(0);
  Tensor* meanNorm = network
                         .addElementwise(reduce(norm, ReduceOp::kAvg, {1}),
                                         constant(network, {}, 1e-3f, 0.0f, DataType::kFloat16),
                                         ElementwiseOp::kSum)
                         ->output(0);
  Tensor* response = network.addElementwise(norm, meanNorm, ElementwiseOp::kDiv)->output(0);
  Tensor* scaled = network.addElementwise(h, response, ElementwiseOp::kProd)->output(0);
  scaled =
      network
          .addElementwise(scaled, constant(network, {1, 8, 1, 1}, 0.5f, 0.1f, DataType::kFloat16),
                          ElementwiseOp::kProd)
          ->output(0);
  scaled =
      network
          .addElementwise(scaled, constant(network, {1, 8, 1, 1}, -0.2f, 0.05f, DataType::kFloat16),
                          ElementwiseOp::kSum)
          ->output(0);
  Tensor* grn = network.addElementwise(scaled, h, ElementwiseOp::kSum)->output(0);
  h = halfConv(network, grn, 4, 1, 2.0f);
  network.markOutput(network.addCast(h, DataType::kFloat32)->output(0));

  expectChannelsLastBetweenTheEdges(network, 2, 1e-2f);

  EXPECT_EQ(countLayers(network, LayerKind::kReduce), 2u);
}

// ---- each rewrite on its own ---------------------------------------------------------------

struct Case {
  Network network;
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<float>> before;
  void prepare() {
    for (size_t i = 0; i < network.numInputs(); ++i) {
      const auto count = static_cast<size_t>(volume(network.input(i)->dims()));
      inputs.push_back(ramp(count, -1.0f + 0.3f * static_cast<float>(i), 0.11f, 13));
    }
    before = evaluate(network, inputs);
  }
  void sinkAndCompare() {
    sinkLayoutTransposes(network);
    network.validate();
    expectNear(evaluate(network, inputs), before, 0.0f);
  }
};

// Each layer that a transpose can cross, between a transpose and its inverse: none is left. A
// transpose that would meet no inverse (or merge, or shrink) stays where it is.
TEST(BuilderLayoutTransposeSinkingRewrites, LayerNormKeepingItsNormalizedDimsMoves) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  // Batch and rows swapped; the normalized last dim stays.
  Tensor* normed = layerNorm(c.network, transpose(c.network, x, {1, 0, 2, 3}), -1,
                             constant(c.network, {5}, 0.5f, 0.1f), nullptr);
  Tensor* relu = c.network.addActivation(normed, {ActivationType::kRelu})->output(0);
  c.network.markOutput(transpose(c.network, relu, {1, 0, 2, 3}));
  // Without the transpose back: moving would gain nothing.
  c.network.markOutput(layerNorm(c.network, transpose(c.network, x, {1, 0, 2, 3}), -1,
                                 constant(c.network, {5}, 0.5f, 0.1f), nullptr));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(c.network.output(0)->producer()->kind(), LayerKind::kActivation);
  EXPECT_EQ(c.network.output(0)->producer()->input(0)->producer()->input(0), x);
  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);
  EXPECT_EQ(c.network.output(1)->producer()->input(0)->producer()->kind(), LayerKind::kShuffle);
}

TEST(BuilderLayoutTransposeSinkingRewrites, LayerNormReorderingItsNormalizedDimsPermutesItsAffine) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  // Over (H, W) of a tensor whose H and W are swapped: the same elements, the scale and bias
  // transposed alike.
  Tensor* normed =
      layerNorm(c.network, transpose(c.network, x, {0, 1, 3, 2}), 2,
                constant(c.network, {5, 4}, 0.5f, 0.1f), constant(c.network, {5, 4}, -0.3f, 0.07f));
  c.network.markOutput(transpose(c.network, normed, {0, 1, 3, 2}));
  c.prepare();

  c.sinkAndCompare();

  const Layer* norm = c.network.output(0)->producer();
  ASSERT_EQ(norm->kind(), LayerKind::kNormalization);
  EXPECT_EQ(norm->input(0), x);
  EXPECT_EQ(norm->input(1)->dims(), (Dims{4, 5}));
}

TEST(BuilderLayoutTransposeSinkingRewrites, LayerNormWithAFusedResidualTransposedAlikeMoves) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* r = c.network.addInput("r", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* normed =
      layerNorm(c.network, transpose(c.network, x, {0, 2, 1, 3}), 3, nullptr,
                constant(c.network, {5}, 0.2f, 0.1f), transpose(c.network, r, {0, 2, 1, 3}));
  c.network.markOutput(normed);
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);
}

TEST(BuilderLayoutTransposeSinkingRewrites, TransposeThatMovesTheNormalizedDimStays) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  // A norm over the last dim of NHWC is a norm over C of NCHW: no layer norm over trailing dims.
  Tensor* normed = layerNorm(c.network, transpose(c.network, x, {0, 2, 3, 1}), -1,
                             constant(c.network, {3}, 0.5f, 0.1f), nullptr);
  c.network.markOutput(normed);
  // Reordering the normalized dims with an affine that is no constant.
  Tensor* scale = c.network.addInput("scale", DataType::kFloat32, {5, 4});
  c.network.markOutput(
      layerNorm(c.network, transpose(c.network, x, {0, 1, 3, 2}), 2, scale, nullptr));
  // A residual transposed otherwise.
  Tensor* square = c.network.addInput("square", DataType::kFloat32, {3, 3, 4, 4});
  c.network.markOutput(layerNorm(c.network, transpose(c.network, square, {1, 0, 2, 3}), -1, nullptr,
                                 nullptr, transpose(c.network, square, {0, 1, 3, 2})));
  c.prepare();

  c.sinkAndCompare();

  for (size_t o = 0; o < c.network.numOutputs(); ++o) {
    const Layer* norm = c.network.output(o)->producer();
    ASSERT_EQ(norm->kind(), LayerKind::kNormalization) << o;
    EXPECT_EQ(norm->input(0)->producer()->kind(), LayerKind::kShuffle) << o;
  }
}

TEST(BuilderLayoutTransposeSinkingRewrites, FullyConnectedMovesWhenTheLastDimStaysLast) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* kept = linear(c.network, transpose(c.network, x, {0, 2, 1, 3}), 6, 1.0f);
  c.network.markOutput(transpose(c.network, kept, {0, 2, 1, 3}));
  Tensor* square = c.network.addInput("square", DataType::kFloat32, {2, 3, 5, 5});
  Tensor* moved = linear(c.network, transpose(c.network, square, {0, 1, 3, 2}), 5, 2.0f);
  c.network.markOutput(transpose(c.network, moved, {0, 1, 3, 2}));
  c.prepare();

  c.sinkAndCompare();

  // The first reads x, and no transpose is left; the second still reads a transpose.
  const Layer* first = c.network.output(0)->producer();
  ASSERT_EQ(first->kind(), LayerKind::kFullyConnected);
  EXPECT_EQ(first->input(0), x);
  EXPECT_EQ(c.network.output(0)->dims(), (Dims{2, 3, 4, 6}));
  const Layer* second = c.network.output(1)->producer()->input(0)->producer();
  ASSERT_EQ(second->kind(), LayerKind::kFullyConnected);
  EXPECT_EQ(second->input(0)->producer()->kind(), LayerKind::kShuffle);
  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 2u);
}

TEST(BuilderLayoutTransposeSinkingRewrites, ConstantOperandsArePermutedAtBuildTime) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* t = transpose(c.network, x, {0, 3, 1, 2});  // (2, 5, 3, 4)
  // A per-channel scale (5, 1, 1), then a full-size constant first, then a scalar.
  Tensor* y =
      c.network.addElementwise(t, constant(c.network, {5, 1, 1}, 0.5f, 0.2f), ElementwiseOp::kProd)
          ->output(0);
  y = c.network
          .addElementwise(constant(c.network, {2, 5, 3, 4}, -1.0f, 0.3f), y, ElementwiseOp::kSub)
          ->output(0);
  y = c.network.addElementwise(y, constant(c.network, {1}, 2.0f, 0.0f), ElementwiseOp::kMax)
          ->output(0);
  c.network.markOutput(transpose(c.network, y, {0, 2, 3, 1}));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 0u);
  const Layer* scale = c.network.output(0)->producer()->input(0)->producer()->input(1)->producer();
  ASSERT_EQ(scale->kind(), LayerKind::kElementwise);
  EXPECT_EQ(scale->input(0), x);
  EXPECT_EQ(scale->input(1)->dims(), (Dims{1, 1, 1, 5}));
}

// The block input that a channels-last convolution reads transposed, and that the residual add
// reads as it is: the add reads that transpose, and the transpose after the block cancels the
// next block's.
TEST(BuilderLayoutTransposeSinkingRewrites, AResidualReadsTheTransposeItsBlockAlreadyMakes) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* nhwc = transpose(c.network, x, {0, 2, 3, 1});
  // A layer no transpose crosses, as a channels-last convolution.
  Tensor* branch = c.network.addSoftmax(nhwc, {})->output(0);
  Tensor* sum =
      c.network.addElementwise(transpose(c.network, branch, {0, 3, 1, 2}), x, ElementwiseOp::kSum)
          ->output(0);
  c.network.markOutput(
      c.network.addUnary(transpose(c.network, sum, {0, 2, 3, 1}), UnaryOp::kAbs)->output(0));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);  // x's, read twice
  const Layer* add = c.network.output(0)->producer()->input(0)->producer();
  ASSERT_EQ(add->kind(), LayerKind::kElementwise);
  EXPECT_EQ(add->input(1), nhwc);
}

TEST(BuilderLayoutTransposeSinkingRewrites, OperandsTransposedAlikeMayBroadcast) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 3});
  Tensor* s = c.network.addInput("s", DataType::kFloat32, {2, 1, 1, 3});
  // A squeeze-and-excitation scale of NHWC tensors, both transposed to NCHW.
  Tensor* gate =
      c.network.addActivation(transpose(c.network, s, {0, 3, 1, 2}), {ActivationType::kSigmoid})
          ->output(0);
  c.network.markOutput(
      c.network.addElementwise(transpose(c.network, x, {0, 3, 1, 2}), gate, ElementwiseOp::kProd)
          ->output(0));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);
}

TEST(BuilderLayoutTransposeSinkingRewrites, OperandsThatAreNoConstantAndNotTransposedStay) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* full = c.network.addInput("full", DataType::kFloat32, {2, 5, 3, 4});
  Tensor* broadcast = c.network.addInput("broadcast", DataType::kFloat32, {5, 1, 1});
  // Moving would take a transpose of the other operand at run time.
  c.network.markOutput(
      c.network.addElementwise(transpose(c.network, x, {0, 3, 1, 2}), full, ElementwiseOp::kSum)
          ->output(0));
  c.network.markOutput(
      c.network
          .addElementwise(transpose(c.network, x, {0, 3, 1, 2}), broadcast, ElementwiseOp::kProd)
          ->output(0));
  // Transposed otherwise.
  c.network.markOutput(c.network
                           .addElementwise(transpose(c.network, x, {0, 3, 1, 2}),
                                           transpose(c.network, full, {0, 1, 2, 3}),
                                           ElementwiseOp::kSum)
                           ->output(0));
  // A constant of a higher rank than the transposed tensor.
  Tensor* low = c.network.addInput("low", DataType::kFloat32, {4, 5});
  c.network.markOutput(c.network
                           .addElementwise(transpose(c.network, low, {1, 0}),
                                           constant(c.network, {2, 5, 4}, 0.1f, 0.2f),
                                           ElementwiseOp::kSum)
                           ->output(0));
  c.prepare();

  c.sinkAndCompare();

  for (size_t o = 0; o < c.network.numOutputs(); ++o) {
    EXPECT_EQ(c.network.output(o)->producer()->kind(), LayerKind::kElementwise) << o;
  }
}

TEST(BuilderLayoutTransposeSinkingRewrites, ReductionsReduceTheSameDimsOfTheUntransposedTensor) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 3});  // NHWC
  ReduceParams globalMean;
  globalMean.op = ReduceOp::kAvg;
  globalMean.axes = {2, -1};
  // A global mean over H and W of NCHW: (N, C), no transpose left.
  c.network.markOutput(
      c.network.addReduce(transpose(c.network, x, {0, 3, 1, 2}), globalMean)->output(0));
  // Kept dims: (N, C, 1, 1), transposed after.
  globalMean.keepDims = true;
  c.network.markOutput(
      c.network.addReduce(transpose(c.network, x, {0, 3, 1, 2}), globalMean)->output(0));
  // Over C only, of (N, C, W, H): (N, W, H) from x's (N, H, W).
  ReduceParams overChannels;
  overChannels.op = ReduceOp::kMax;
  overChannels.axes = {1};
  c.network.markOutput(
      c.network.addReduce(transpose(c.network, x, {0, 3, 2, 1}), overChannels)->output(0));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(c.network.output(0)->producer()->kind(), LayerKind::kReduce);
  EXPECT_EQ(c.network.output(0)->producer()->paramsAs<ReduceParams>().axes, (Dims{1, 2}));
  EXPECT_EQ(c.network.output(1)->producer()->kind(), LayerKind::kShuffle);
  const Layer* last = c.network.output(2)->producer();
  ASSERT_EQ(last->kind(), LayerKind::kShuffle);
  EXPECT_EQ(last->paramsAs<ShuffleParams>().firstPermutation, (Dims{0, 2, 1}));
}

TEST(BuilderLayoutTransposeSinkingRewrites, TransposesWithAnotherReaderStay) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* t = transpose(c.network, x, {1, 0, 2, 3});
  c.network.markOutput(layerNorm(c.network, t, -1, nullptr, nullptr));
  c.network.markOutput(linear(c.network, t, 4, 1.0f));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);
  EXPECT_EQ(c.network.output(0)->producer()->kind(), LayerKind::kNormalization);
  EXPECT_EQ(c.network.output(1)->producer()->kind(), LayerKind::kFullyConnected);
}

TEST(BuilderLayoutTransposeSinkingRewrites, AMovedTransposeTakesAnUnusedName) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 3, 4});
  Tensor* y = c.network.addInput("y", DataType::kFloat32, {2, 3, 4});
  // Two transposes alike merge into one after the add.
  Layer* add = c.network.addElementwise(transpose(c.network, x, {1, 0, 2}),
                                        transpose(c.network, y, {1, 0, 2}), ElementwiseOp::kSum);
  add->setName("add");
  c.network.markOutput(add->output(0));
  // A layer that has the name the moved transpose would take.
  Layer* other = c.network.addUnary(x, UnaryOp::kAbs);
  other->setName("add.moved");
  c.network.markOutput(other->output(0));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(c.network.output(0)->producer()->name(), "add.moved_2");
}

// concat(T(x), T(y), c) -> T(concat(x, y, c')): along the permuted axis (given negative here),
// the constant permuted at build time; the transposes merge into one after the concat, which
// then cancels the transpose back.
TEST(BuilderLayoutTransposeSinkingRewrites, ConcatOfTransposesAlikeRunsAlongThePermutedAxis) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 3});  // NHWC
  Tensor* y = c.network.addInput("y", DataType::kFloat32, {2, 4, 5, 2});
  Tensor* merged = concatenate(
      c.network,
      {transpose(c.network, x, {0, 3, 1, 2}), constant(c.network, {2, 1, 4, 5}, 0.3f, -0.1f),
       transpose(c.network, y, {0, 3, 1, 2})},
      -3);
  c.network.markOutput(transpose(c.network, relu(c.network, merged), {0, 2, 3, 1}));
  // Without a transpose back, two transposes still merge into one.
  c.network.markOutput(concatenate(
      c.network, {transpose(c.network, x, {0, 3, 1, 2}), transpose(c.network, y, {0, 3, 1, 2})},
      1));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);
  const Layer* first = c.network.output(0)->producer()->input(0)->producer();
  ASSERT_EQ(first->kind(), LayerKind::kConcat);
  EXPECT_EQ(first->paramsAs<ConcatParams>().axis, 3);
  EXPECT_EQ(first->input(0), x);
  EXPECT_EQ(first->input(1)->dims(), (Dims{2, 4, 5, 1}));
  EXPECT_EQ(first->input(2), y);
  const Layer* second = c.network.output(1)->producer();
  ASSERT_EQ(second->kind(), LayerKind::kShuffle);
  EXPECT_EQ(second->input(0)->producer()->kind(), LayerKind::kConcat);
}

// DenseNet's features: each is read by every later concatenation. A concat whose output is
// transposed back reads the untransposed features; the transposes stay for a reader that
// still needs them and go with the last one.
TEST(BuilderLayoutTransposeSinkingRewrites, ConcatsReadTransposesThatOtherLayersReadToo) {
  Case c;
  Tensor* a = c.network.addInput("a", DataType::kFloat32, {2, 3, 4, 2});
  Tensor* b = c.network.addInput("b", DataType::kFloat32, {2, 3, 4, 3});
  Tensor* x0 = transpose(c.network, a, {0, 3, 1, 2});
  Tensor* x1 = transpose(c.network, b, {0, 3, 1, 2});
  Tensor* first = batchNorm(c.network, concatenate(c.network, {x0, x1}, 1), 1.0f);
  c.network.markOutput(transpose(c.network, relu(c.network, first), {0, 2, 3, 1}));
  Tensor* second = concatenate(c.network, {x1, x0, x1}, 1);
  c.network.markOutput(transpose(c.network, second, {0, 2, 3, 1}));
  // Read as it is: x0's transpose stays for it.
  c.network.markOutput(c.network.addUnary(x0, UnaryOp::kAbs)->output(0));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 1u);
  const Layer* norm = c.network.output(0)->producer()->input(0)->producer();
  ASSERT_EQ(norm->kind(), LayerKind::kNormalization);
  EXPECT_EQ(norm->paramsAs<NormalizationParams>().axis, 3);
  EXPECT_EQ(norm->input(0)->producer()->input(0), a);
  const Layer* again = c.network.output(1)->producer();
  ASSERT_EQ(again->kind(), LayerKind::kConcat);
  EXPECT_EQ(again->input(0), b);
  EXPECT_EQ(again->input(1), a);
}

TEST(BuilderLayoutTransposeSinkingRewrites, ConcatOperandsThatWouldNeedATransposeStay) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 3});
  Tensor* plain = c.network.addInput("plain", DataType::kFloat32, {2, 2, 4, 5});
  Tensor* other = c.network.addInput("other", DataType::kFloat32, {2, 4, 2, 5});
  // An operand neither transposed nor constant, and one transposed otherwise.
  c.network.markOutput(transpose(
      c.network, concatenate(c.network, {transpose(c.network, x, {0, 3, 1, 2}), plain}, 1),
      {0, 2, 3, 1}));
  c.network.markOutput(transpose(
      c.network,
      concatenate(
          c.network,
          {transpose(c.network, x, {0, 3, 1, 2}), transpose(c.network, other, {0, 2, 1, 3})}, 1),
      {0, 2, 3, 1}));
  c.prepare();

  c.sinkAndCompare();

  for (size_t o = 0; o < c.network.numOutputs(); ++o) {
    EXPECT_EQ(c.network.output(o)->producer()->input(0)->producer()->kind(), LayerKind::kConcat)
        << o;
  }
}

// Channel splits, a strided slice and a slice whose end is another tensor's dim, each along the
// permuted axis, between a transpose and its inverse: none is left.
TEST(BuilderLayoutTransposeSinkingRewrites, SlicesRunAlongThePermutedAxis) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 6});  // NHWC
  Tensor* reference = c.network.addInput("reference", DataType::kFloat32, {1, 4});
  Tensor* nchw = transpose(c.network, x, {0, 3, 1, 2});
  c.network.markOutput(transpose(c.network, slice(c.network, nchw, 1, 0, 2), {0, 2, 3, 1}));
  c.network.markOutput(
      transpose(c.network, relu(c.network, slice(c.network, nchw, -3, 2, 6)), {0, 2, 3, 1}));
  c.network.markOutput(transpose(c.network, slice(c.network, nchw, 2, 1, 4, 2), {0, 2, 3, 1}));
  SliceParams upTo;
  upTo.axes = {1};
  upTo.starts = {1};
  upTo.ends = {0};
  upTo.endReferences = {1};  // reference's dim 1: 4
  c.network.markOutput(
      transpose(c.network, c.network.addSlice(nchw, reference, upTo)->output(0), {0, 2, 3, 1}));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 0u);
  const Dims axes[] = {{3}, {3}, {1}, {3}};
  for (size_t o = 0; o < c.network.numOutputs(); ++o) {
    const Layer* layer = c.network.output(o)->producer();
    if (layer->kind() == LayerKind::kActivation) layer = layer->input(0)->producer();
    ASSERT_EQ(layer->kind(), LayerKind::kSlice) << o;
    EXPECT_EQ(layer->input(0), x) << o;
    EXPECT_EQ(layer->paramsAs<SliceParams>().axes, axes[o]) << o;
  }
  EXPECT_EQ(c.network.output(3)->dims(), (Dims{2, 4, 5, 3}));
}

// A slice that shrinks moves alone: the transpose after it is smaller. One that keeps every
// element, or repeats some (a step of 0), moves only to meet a transpose back.
TEST(BuilderLayoutTransposeSinkingRewrites, ASliceThatShrinksTakesTheTransposeAfterIt) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 6});
  c.network.markOutput(slice(c.network, transpose(c.network, x, {0, 3, 1, 2}), 1, 1, 3));
  c.network.markOutput(slice(c.network, transpose(c.network, x, {0, 3, 1, 2}), 1, 0, 6));
  Tensor* single = c.network.addInput("single", DataType::kFloat32, {2, 4, 5, 1});
  c.network.markOutput(
      transpose(c.network, slice(c.network, transpose(c.network, single, {0, 3, 1, 2}), 1, 0, 3, 0),
                {0, 2, 3, 1}));
  c.prepare();

  c.sinkAndCompare();

  const Layer* shrunk = c.network.output(0)->producer();
  ASSERT_EQ(shrunk->kind(), LayerKind::kShuffle);
  EXPECT_EQ(shrunk->input(0)->producer()->kind(), LayerKind::kSlice);
  EXPECT_EQ(shrunk->input(0)->producer()->input(0), x);
  for (size_t o = 1; o < 3; ++o) {
    const Layer* whole = c.network.output(o)->producer();
    if (o == 2) whole = whole->input(0)->producer();
    ASSERT_EQ(whole->kind(), LayerKind::kSlice) << o;
    EXPECT_EQ(whole->input(0)->producer()->kind(), LayerKind::kShuffle) << o;
  }
}

// bn(T(x)) -> T(bn(x)) over the channel dim moved by T, the per-channel operands as they are.
TEST(BuilderLayoutTransposeSinkingRewrites, BatchNormRunsOverThePermutedChannelDim) {
  Case c;
  Tensor* x = c.network.addInput("x", DataType::kFloat32, {2, 4, 5, 3});  // NHWC
  Tensor* normed = batchNorm(c.network, transpose(c.network, x, {0, 3, 1, 2}), 1.0f);
  c.network.markOutput(transpose(c.network, relu(c.network, normed), {0, 2, 3, 1}));
  // Counted from the end.
  Tensor* alsoNormed = batchNorm(c.network, transpose(c.network, x, {0, 3, 1, 2}), 2.0f, -3);
  c.network.markOutput(transpose(c.network, alsoNormed, {0, 2, 3, 1}));
  c.prepare();

  c.sinkAndCompare();

  EXPECT_EQ(countLayers(c.network, LayerKind::kShuffle), 0u);
  for (size_t o = 0; o < 2; ++o) {
    const Layer* norm = c.network.output(o)->producer();
    if (norm->kind() == LayerKind::kActivation) norm = norm->input(0)->producer();
    ASSERT_EQ(norm->kind(), LayerKind::kNormalization) << o;
    EXPECT_EQ(norm->input(0), x) << o;
    EXPECT_EQ(norm->paramsAs<NormalizationParams>().axis, 3) << o;
  }
}

}  // namespace
}  // namespace kiln

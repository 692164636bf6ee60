// sinkLayoutTransposes across layer norms, fully connected layers, pointwise layers with constant
// operands and reductions: a ConvNeXt block and a LayerNorm2d run channels-last with a transpose
// only at the network's edges, and the transposes that cannot move stay. Each test compares the
// network's outputs before and after the pass.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/builder/passes.h"
#include "core/ir/network.h"
#include "tests/cpp/network_evaluator.h"

namespace kiln {
namespace {

std::vector<float> ramp(size_t count, float start, float step) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = start + step * static_cast<float>(i % 13);
  return values;
}

void expectEqualOutputs(const std::vector<std::vector<float>>& actual,
                        const std::vector<std::vector<float>>& expected, float tolerance = 0.0f) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t o = 0; o < actual.size(); ++o) {
    ASSERT_EQ(actual[o].size(), expected[o].size());
    for (size_t i = 0; i < actual[o].size(); ++i) {
      EXPECT_NEAR(actual[o][i], expected[o][i], tolerance) << "output " << o << " element " << i;
    }
  }
}

Tensor* transpose(Network& network, Tensor* x, Dims permutation) {
  ShuffleParams p;
  p.firstPermutation = std::move(permutation);
  return network.addShuffle(x, p)->output(0);
}

// A constant of `dims` with ramp values, in `type`.
Tensor* constant(Network& network, const Dims& dims, float start, float step,
                 DataType type = DataType::kFloat32) {
  const auto count = static_cast<size_t>(volume(dims));
  Tensor* values =
      network.addConstant(Weights::fromValues(DataType::kFloat32, dims, ramp(count, start, step)))
          ->output(0);
  return type == DataType::kFloat32 ? values : network.addCast(values, type)->output(0);
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
  const std::vector<std::vector<float>> inputs = {ramp(2 * 8 * 5 * 4, -1.0f, 0.17f)};
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
  expectEqualOutputs(evaluate(network, inputs), before);
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
  const std::vector<std::vector<float>> inputs = {ramp(6 * 4 * 4, -0.9f, 0.15f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  runLayoutPasses(network);

  expectTransposesAtTheEdgesOnly(network, 2);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 2u);
  EXPECT_EQ(countLayers(network, LayerKind::kConvolution), 2u);  // depthwise, downsampling
  network.validate();
  // A 1x1 convolution and a GEMM sum the same products in another order.
  expectEqualOutputs(evaluate(network, inputs), before, 2e-3f);
}

// ---- each rewrite on its own ---------------------------------------------------------------

struct Case {
  Network network;
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<float>> before;
  void prepare() {
    for (size_t i = 0; i < network.numInputs(); ++i) {
      const auto count = static_cast<size_t>(volume(network.input(i)->dims()));
      inputs.push_back(ramp(count, -1.0f + 0.3f * static_cast<float>(i), 0.11f));
    }
    before = evaluate(network, inputs);
  }
  void sinkAndCompare() {
    sinkLayoutTransposes(network);
    network.validate();
    expectEqualOutputs(evaluate(network, inputs), before);
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

}  // namespace
}  // namespace kiln

// The builder's passes, each on a small network before and after, and the builder's checks of
// optimization profiles.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/builder/builder.h"
#include "core/builder/passes.h"
#include "core/engine/cpu_backend.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"
#include "tests/cpp/network_evaluator.h"

#ifdef KILN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kiln {
namespace {

Weights floatWeights(Dims dims, const std::vector<float>& values) {
  return Weights::fromValues(DataType::kFloat32, std::move(dims), values);
}

TEST(BuilderDeadLayerElimination, RemovesLayersThatReachNoOutput) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3});
  Tensor* used = network.addActivation(x, {ActivationType::kRelu})->output(0);
  Tensor* dead = network.addActivation(x, {ActivationType::kSigmoid})->output(0);
  network.addUnary(dead, UnaryOp::kExp);
  network.addConstant(floatWeights({3}, {1, 2, 3}));
  Tensor* bias = network.addConstant(floatWeights({3}, {0.5f, -1, 2}))->output(0);
  network.markOutput(network.addElementwise(used, bias, ElementwiseOp::kSum)->output(0));
  const std::vector<std::vector<float>> inputs = {{-1, 2, -3, 4, -5, 6}};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);
  ASSERT_EQ(network.numLayers(), 6u);

  eliminateDeadLayers(network);

  EXPECT_EQ(network.numLayers(), 3u);  // relu, the bias constant, the sum
  EXPECT_EQ(countLayers(network, LayerKind::kUnary), 0u);
  EXPECT_EQ(evaluate(network, inputs), before);
  EXPECT_EQ(before[0], (std::vector<float>{0.5f, 1, 2, 4.5f, -1, 8}));
}

TEST(BuilderDeadLayerElimination, KeepsEverythingLive) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {4});
  Tensor* a = network.addActivation(x, {ActivationType::kRelu})->output(0);
  network.markOutput(a);
  network.markOutput(network.addUnary(a, UnaryOp::kNeg)->output(0));
  eliminateDeadLayers(network);
  EXPECT_EQ(network.numLayers(), 2u);
}

TEST(BuilderConstantFolding, FoldsChainsOfConstantLayersIntoOneConstant) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3});
  Tensor* a = network.addConstant(floatWeights({3}, {1, 2, 3}))->output(0);
  Tensor* b = network.addConstant(floatWeights({3}, {4, 5, 6}))->output(0);
  Tensor* sum = network.addElementwise(a, b, ElementwiseOp::kSum)->output(0);
  Tensor* scaled = network.addElementwise(sum, a, ElementwiseOp::kProd)->output(0);
  Tensor* negated = network.addUnary(scaled, UnaryOp::kNeg)->output(0);
  network.markOutput(network.addElementwise(x, negated, ElementwiseOp::kSum)->output(0));
  const std::vector<std::vector<float>> inputs = {{1, 1, 1, 2, 2, 2}};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);
  ASSERT_EQ(network.numLayers(), 6u);

  foldConstants(network);

  EXPECT_EQ(network.numLayers(), 2u);  // the folded constant and the sum with x
  EXPECT_EQ(countLayers(network, LayerKind::kConstant), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 1u);
  EXPECT_EQ(evaluate(network, inputs), before);
  EXPECT_EQ(before[0], (std::vector<float>{-4, -13, -26, -3, -12, -25}));
}

TEST(BuilderConstantFolding, AFoldedOutputKeepsItsName) {
  Network network;
  network.addInput("x", DataType::kFloat32, {1});
  Tensor* a = network.addConstant(floatWeights({2}, {1, 2}))->output(0);
  Layer* twice = network.addElementwise(a, a, ElementwiseOp::kSum);
  twice->output(0)->setName("twice");
  network.markOutput(twice->output(0));

  foldConstants(network);

  ASSERT_EQ(network.numLayers(), 1u);
  EXPECT_EQ(network.layer(0)->kind(), LayerKind::kConstant);
  EXPECT_EQ(network.output(0)->name(), "twice");
  EXPECT_EQ(evaluate(network, {{0}})[0], (std::vector<float>{2, 4}));
}

TEST(BuilderConstantFolding, LeavesLargeResultsAndNonConstantLayersAlone) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1});
  const int64_t large = (int64_t{4} << 20) + 1;
  Tensor* big =
      network.addConstant(floatWeights({large}, std::vector<float>(large, 1.0f)))->output(0);
  Tensor* one = network.addConstant(floatWeights({1}, {1.0f}))->output(0);
  Tensor* bigger = network.addElementwise(big, one, ElementwiseOp::kSum)->output(0);
  network.markOutput(network.addElementwise(bigger, x, ElementwiseOp::kProd)->output(0));
  ASSERT_EQ(network.numLayers(), 4u);

  foldConstants(network);

  EXPECT_EQ(network.numLayers(), 4u);
  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 2u);
}

// A large weight's layout transpose (HRNet's last 3x3 convolution, 1024 x 512 x 3 x 3, to NHWC)
// folds when nothing else reads the weight: the folded weight takes its place. With another
// reader both would be kept, so it stays a layer.
TEST(BuilderConstantFolding, FoldsALargeTransposeThatReplacesItsWeight) {
  for (bool sharedWeight : {false, true}) {
    SCOPED_TRACE(sharedWeight ? "shared weight" : "weight read once");
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {1});
    const Dims dims = {1024, 512, 3, 3};
    std::vector<float> values(static_cast<size_t>(volume(dims)));
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 251);
    Tensor* weight = network.addConstant(floatWeights(dims, values))->output(0);
    ShuffleParams nhwc;
    nhwc.firstPermutation = {0, 2, 3, 1};
    Tensor* transposed = network.addShuffle(weight, nhwc)->output(0);
    ReduceParams sum;
    sum.op = ReduceOp::kSum;
    Tensor* total = network.addReduce(transposed, sum)->output(0);
    if (sharedWeight) {
      Tensor* other = network.addReduce(weight, sum)->output(0);
      total = network.addElementwise(total, other, ElementwiseOp::kSum)->output(0);
    }
    network.markOutput(network.addElementwise(total, x, ElementwiseOp::kProd)->output(0));

    foldConstants(network);

    EXPECT_EQ(countLayers(network, LayerKind::kShuffle), sharedWeight ? 1u : 0u);
  }
}

TEST(BuilderConstantFolding, BuiltEngineHasTheFoldedLayersOnly) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3});
  Tensor* w = network.addConstant(floatWeights({3}, {1, 4, 9}))->output(0);
  Tensor* root = network.addUnary(w, UnaryOp::kSqrt)->output(0);
  network.markOutput(network.addElementwise(x, root, ElementwiseOp::kProd)->output(0));
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  EXPECT_EQ(engine->definition().layers.size(), 2u);
  // The inspector tells how many layers the builder started from.
  EXPECT_EQ(engine->definition().networkLayers, 3u);
  const std::string text = engine->inspect();
  EXPECT_NE(text.find("Kiln engine: 2 layer(s) (the network had 3)"), std::string::npos) << text;
  EXPECT_NE(text.find("activation arena: 0 B at the profiles' largest shapes (0 B without reuse)"),
            std::string::npos)
      << text;
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{3}});
  const std::vector<float> in = {2, 2, 2};
  std::vector<float> out(3);
  context->execute({in.data()}, {out.data()});
  EXPECT_EQ(out, (std::vector<float>{2, 4, 6}));
}

// ---- batch-norm folding and convolution epilogues ---------------------------------------

Tensor* conv3x3(Network& network, Tensor* x, int64_t inChannels, int64_t outChannels, bool withBias,
                float seed) {
  ConvolutionParams p;
  p.outChannels = outChannels;
  p.kernel = {3, 3};
  p.prePadding = {1, 1};
  p.postPadding = {1, 1};
  const auto weights = static_cast<size_t>(outChannels * inChannels * 9);
  Tensor* w = network
                  .addConstant(floatWeights({outChannels, inChannels, 3, 3},
                                            ramp(weights, -0.3f * seed, 0.04f)))
                  ->output(0);
  Tensor* b =
      withBias ? network
                     .addConstant(floatWeights({outChannels}, ramp(static_cast<size_t>(outChannels),
                                                                   0.1f * seed, -0.05f)))
                     ->output(0)
               : nullptr;
  return network.addConvolution(x, w, b, p)->output(0);
}

Tensor* batchNorm(Network& network, Tensor* x, int64_t channels) {
  const auto c = static_cast<size_t>(channels);
  Tensor* scale = network.addConstant(floatWeights({channels}, ramp(c, 0.5f, 0.3f)))->output(0);
  Tensor* shift = network.addConstant(floatWeights({channels}, ramp(c, -0.2f, 0.1f)))->output(0);
  Tensor* mean = network.addConstant(floatWeights({channels}, ramp(c, 0.3f, -0.2f)))->output(0);
  Tensor* var = network.addConstant(floatWeights({channels}, ramp(c, 0.4f, 0.25f)))->output(0);
  NormalizationParams p;
  p.epsilon = 1e-3;
  return network.addNormalization(x, scale, shift, mean, var, p)->output(0);
}

TEST(BuilderBatchNormFolding, FoldsIntoTheConvolutionWithAndWithoutBias) {
  for (bool withBias : {true, false}) {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 6, 5});
    Tensor* y = batchNorm(network, conv3x3(network, x, 3, 4, withBias, 1.0f), 4);
    y->setName("normalized");
    network.markOutput(y);
    const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 6 * 5, -1.0f, 0.13f)};
    const std::vector<std::vector<float>> before = evaluate(network, inputs);

    foldBatchNormIntoConvolution(network);

    EXPECT_EQ(countLayers(network, LayerKind::kNormalization), 0u);
    EXPECT_EQ(countLayers(network, LayerKind::kConvolution), 1u);
    EXPECT_EQ(countLayers(network, LayerKind::kConstant), 2u);  // folded weight and bias
    EXPECT_EQ(network.output(0)->name(), "normalized");
    expectNear(evaluate(network, inputs), before, 1e-4f);
  }
}

TEST(BuilderBatchNormFolding, LeavesANormWhoseConvolutionHasAnotherReader) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 2, 4, 4});
  Tensor* conv = conv3x3(network, x, 2, 3, true, 1.0f);
  network.markOutput(batchNorm(network, conv, 3));
  network.markOutput(network.addActivation(conv, {ActivationType::kRelu})->output(0));

  foldBatchNormIntoConvolution(network);

  EXPECT_EQ(countLayers(network, LayerKind::kNormalization), 1u);
}

// x -> conv_a -> bn -> relu -> conv_b -> (+ shortcut conv_c(x)) -> relu: a ResNet block's shape.
std::unique_ptr<Network> residualBlock() {
  auto network = std::make_unique<Network>();
  Tensor* x = network->addInput("x", DataType::kFloat32, {2, 3, 5, 5});
  Tensor* a = network
                  ->addActivation(batchNorm(*network, conv3x3(*network, x, 3, 4, false, 1.0f), 4),
                                  {ActivationType::kRelu})
                  ->output(0);
  Tensor* b = conv3x3(*network, a, 4, 4, true, 2.0f);
  Tensor* shortcut = conv3x3(*network, x, 3, 4, true, 3.0f);
  Tensor* sum = network->addElementwise(b, shortcut, ElementwiseOp::kSum)->output(0);
  Tensor* out = network->addActivation(sum, {ActivationType::kRelu})->output(0);
  out->setName("block_out");
  network->markOutput(out);
  return network;
}

TEST(BuilderConvolutionEpilogueFusion, FusesResidualAddAndReluIntoTheConvolution) {
  std::unique_ptr<Network> network = residualBlock();
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 5 * 5, -1.0f, 0.11f)};
  const std::vector<std::vector<float>> before = evaluate(*network, inputs);

  foldBatchNormIntoConvolution(*network);
  fuseConvolutionEpilogues(*network);

  EXPECT_EQ(countLayers(*network, LayerKind::kConvolution), 3u);
  EXPECT_EQ(countLayers(*network, LayerKind::kNormalization), 0u);
  EXPECT_EQ(countLayers(*network, LayerKind::kElementwise), 0u);
  EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 0u);
  const Layer* last = network->output(0)->producer();
  ASSERT_EQ(last->kind(), LayerKind::kConvolution);
  EXPECT_EQ(last->paramsAs<ConvolutionParams>().activation, FusedActivation::kRelu);
  ASSERT_EQ(last->inputs().size(), 4u);
  EXPECT_NE(last->input(3), nullptr);  // the shortcut
  EXPECT_EQ(network->output(0)->name(), "block_out");
  network->validate();
  expectNear(evaluate(*network, inputs), before, 1e-4f);
}

TEST(BuilderConvolutionEpilogueFusion, LeavesOutputsWithOtherReadersAndBroadcastAddsAlone) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 2, 4, 4});
  Tensor* read_twice = conv3x3(network, x, 2, 2, true, 1.0f);
  network.markOutput(network.addActivation(read_twice, {ActivationType::kRelu})->output(0));
  network.markOutput(read_twice);
  Tensor* channelShift = network.addConstant(floatWeights({1, 2, 1, 1}, {0.5f, -0.5f}))->output(0);
  Tensor* broadcast =
      network
          .addElementwise(conv3x3(network, x, 2, 2, true, 2.0f), channelShift, ElementwiseOp::kSum)
          ->output(0);
  network.markOutput(broadcast);

  fuseConvolutionEpilogues(network);

  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 1u);
}

TEST(BuilderConvolutionEpilogueFusion, BuiltEngineRunsTheFusedBlock) {
  std::unique_ptr<Network> network = residualBlock();
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 5 * 5, -1.0f, 0.11f)};
  const std::vector<std::vector<float>> expected = evaluate(*network, inputs);
  std::shared_ptr<Engine> engine = Builder::build(*network, {});
  size_t computing = 0;
  for (const EngineLayer& layer : engine->definition().layers) {
    computing += std::holds_alternative<ConstantParams>(layer.params) ? 0 : 1;
  }
  EXPECT_EQ(computing, 3u);  // three convolutions, everything else fused
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{2, 3, 5, 5}});
  std::vector<float> out(2 * 4 * 5 * 5);
  context->execute({inputs[0].data()}, {out.data()});
  expectNear({out}, expected, 1e-4f);
}

// x (inChannels) -> 3x3 convolution of `groups` groups to 4 channels with a bias -> activation:
// depthwise when groups == inChannels (with a channel multiplier when inChannels < 4).
std::unique_ptr<Network> depthwiseThenActivation(int64_t groups, ActivationParams activation,
                                                 int64_t inChannels = 4) {
  auto network = std::make_unique<Network>();
  constexpr int64_t kChannels = 4;
  Tensor* x = network->addInput("x", DataType::kFloat32, {2, inChannels, 5, 6});
  ConvolutionParams p;
  p.outChannels = kChannels;
  p.groups = groups;
  p.kernel = {3, 3};
  p.prePadding = {1, 1};
  p.postPadding = {1, 1};
  const int64_t perGroup = inChannels / groups;
  Tensor* w = network
                  ->addConstant(floatWeights(
                      {kChannels, perGroup, 3, 3},
                      ramp(static_cast<size_t>(kChannels * perGroup * 9), -1.2f, 0.07f)))
                  ->output(0);
  Tensor* b =
      network->addConstant(floatWeights({kChannels}, {0.5f, -0.25f, 1.5f, -2.0f}))->output(0);
  Tensor* y = network->addConvolution(x, w, b, p)->output(0);
  network->markOutput(network->addActivation(y, activation)->output(0));
  return network;
}

TEST(BuilderConvolutionEpilogueFusion, FusesRelu6SiluAndHardSwishIntoDepthwiseConvolutions) {
  const std::vector<std::vector<float>> inputs = {ramp(2 * 4 * 5 * 6, -4.0f, 0.07f)};
  const std::pair<ActivationParams, FusedActivation> cases[] = {
      {{ActivationType::kClip, 0.0, 6.0}, FusedActivation::kRelu6},
      {{ActivationType::kSilu}, FusedActivation::kSilu},
      {{ActivationType::kHardSwish}, FusedActivation::kHardSwish},
      {{ActivationType::kRelu}, FusedActivation::kRelu}};
  for (const auto& [activation, fused] : cases) {
    std::unique_ptr<Network> network = depthwiseThenActivation(4, activation);
    const std::vector<std::vector<float>> before = evaluate(*network, inputs);
    fuseConvolutionEpilogues(*network);
    EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 0u) << toString(fused);
    const Layer* conv = network->output(0)->producer();
    ASSERT_EQ(conv->kind(), LayerKind::kConvolution);
    EXPECT_EQ(conv->paramsAs<ConvolutionParams>().activation, fused);
    network->validate();
    expectNear(evaluate(*network, inputs), before, 1e-5f);
  }
}

// A depthwise convolution with a channel multiplier (2 channels to 4, 2 groups) takes them too.
TEST(BuilderConvolutionEpilogueFusion, FusesSiluIntoDepthwiseConvolutionsWithAMultiplier) {
  const std::vector<std::vector<float>> inputs = {ramp(2 * 2 * 5 * 6, -4.0f, 0.13f)};
  std::unique_ptr<Network> network = depthwiseThenActivation(2, {ActivationType::kSilu}, 2);
  const std::vector<std::vector<float>> before = evaluate(*network, inputs);
  fuseConvolutionEpilogues(*network);
  EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 0u);
  const Layer* conv = network->output(0)->producer();
  ASSERT_EQ(conv->kind(), LayerKind::kConvolution);
  EXPECT_EQ(conv->paramsAs<ConvolutionParams>().activation, FusedActivation::kSilu);
  network->validate();
  expectNear(evaluate(*network, inputs), before, 1e-5f);
}

// A grouped or full 3x3 convolution, which cannot become a GEMM, takes them too: its epilogue pass
// applies them.
TEST(BuilderConvolutionEpilogueFusion, FusesThemIntoConvolutionsThatCannotBecomeGemms) {
  const std::vector<std::vector<float>> inputs = {ramp(2 * 4 * 5 * 6, -4.0f, 0.07f)};
  for (const auto& [groups, activation] :
       {std::pair<int64_t, ActivationParams>{2, {ActivationType::kSilu}},
        {1, {ActivationType::kHardSwish}}}) {
    std::unique_ptr<Network> network = depthwiseThenActivation(groups, activation);
    const std::vector<std::vector<float>> before = evaluate(*network, inputs);
    fuseConvolutionEpilogues(*network);
    EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 0u)
        << "groups " << groups << ", " << toString(activation.type);
    network->validate();
    expectNear(evaluate(*network, inputs), before, 1e-5f);
  }
}

// A SiLU stem before a depthwise convolution (EfficientNet's first block) is left to the
// depthwise convolution, which applies it as it reads its input.
TEST(BuilderConvolutionEpilogueFusion, LeavesAnActivationBeforeADepthwiseConvolutionToIt) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 4, 5, 6});
  Tensor* stem = conv3x3(network, x, 4, 4, true, 1.0f);
  Tensor* activated = network.addActivation(stem, {ActivationType::kSilu})->output(0);
  ConvolutionParams p;
  p.outChannels = 4;
  p.groups = 4;
  p.kernel = {3, 3};
  p.prePadding = {1, 1};
  p.postPadding = {1, 1};
  Tensor* w = network.addConstant(floatWeights({4, 1, 3, 3}, ramp(36, -0.6f, 0.09f)))->output(0);
  network.markOutput(network.addConvolution(activated, w, nullptr, p)->output(0));
  fuseConvolutionEpilogues(network);
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u);
  EXPECT_EQ(stem->producer()->paramsAs<ConvolutionParams>().activation, FusedActivation::kNone);
}

// A 1x1 convolution keeps them for the pointwise fusion (it may become a GEMM, whose epilogue
// cannot apply them), and a clip other than [0, 6] or a sigmoid is no fused activation.
TEST(BuilderConvolutionEpilogueFusion, LeavesOtherActivationsOfOtherConvolutionsAlone) {
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 4, 5, 6});
    ConvolutionParams p;
    p.outChannels = 4;
    p.kernel = {1, 1};
    Tensor* w = network.addConstant(floatWeights({4, 4, 1, 1}, ramp(16, -0.5f, 0.07f)))->output(0);
    Tensor* y = network.addConvolution(x, w, nullptr, p)->output(0);
    network.markOutput(network.addActivation(y, {ActivationType::kSilu})->output(0));
    fuseConvolutionEpilogues(network);
    EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u) << "a 1x1 convolution";
  }
  for (const ActivationParams& activation : {ActivationParams{ActivationType::kClip, 0.0, 5.0},
                                             ActivationParams{ActivationType::kSigmoid}}) {
    std::unique_ptr<Network> network = depthwiseThenActivation(4, activation);
    fuseConvolutionEpilogues(*network);
    EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 1u) << toString(activation.type);
  }
}

TEST(BuilderLayerNormResidualFusion, FusesTheAddIntoTheNorm) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 8});
  Tensor* h = network.addInput("h", DataType::kFloat32, {2, 3, 8});
  Tensor* scale = network.addConstant(floatWeights({8}, ramp(8, 0.5f, 0.2f)))->output(0);
  Tensor* shift = network.addConstant(floatWeights({8}, ramp(8, -0.3f, 0.1f)))->output(0);
  Tensor* sum = network.addElementwise(h, x, ElementwiseOp::kSum)->output(0);
  NormalizationParams p;
  p.type = NormalizationType::kLayer;
  p.axis = -1;
  Tensor* y = network.addNormalization(sum, scale, shift, nullptr, nullptr, p)->output(0);
  y->setName("normed");
  network.markOutput(y);
  const std::vector<std::vector<float>> inputs = {ramp(48, -1.0f, 0.13f), ramp(48, 0.7f, -0.09f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  fuseResidualIntoLayerNorm(network);

  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 0u);
  ASSERT_EQ(countLayers(network, LayerKind::kNormalization), 1u);
  const Layer* norm = network.output(0)->producer();
  ASSERT_EQ(norm->inputs().size(), 4u);
  EXPECT_EQ(norm->input(0), h);
  EXPECT_EQ(norm->input(3), x);
  EXPECT_EQ(network.output(0)->name(), "normed");
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

TEST(BuilderLayerNormResidualFusion, LeavesASumThatIsReadElsewhereOrBroadcast) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 8});
  Tensor* row = network.addInput("row", DataType::kFloat32, {1, 8});
  NormalizationParams p;
  p.type = NormalizationType::kLayer;
  p.axis = -1;
  Tensor* kept = network.addElementwise(x, x, ElementwiseOp::kSum)->output(0);
  network.markOutput(
      network.addNormalization(kept, nullptr, nullptr, nullptr, nullptr, p)->output(0));
  network.markOutput(kept);
  Tensor* broadcast = network.addElementwise(x, row, ElementwiseOp::kSum)->output(0);
  network.markOutput(
      network.addNormalization(broadcast, nullptr, nullptr, nullptr, nullptr, p)->output(0));

  fuseResidualIntoLayerNorm(network);

  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 2u);
}

Tensor* shuffle(Network& network, Tensor* x, Dims firstPermutation, Dims reshapeDims = {}) {
  ShuffleParams p;
  p.firstPermutation = std::move(firstPermutation);
  p.hasReshape = !reshapeDims.empty();
  p.reshapeDims = std::move(reshapeDims);
  return network.addShuffle(x, p)->output(0);
}

// BERT's head split and merge: (N, L, H * E) -> view (N, L, H, E) -> permute -> attention ->
// permute -> view (N, L, H * E).
TEST(BuilderAttentionViews, HeadSplitAndMergeBecomeStrides) {
  Network network;
  Tensor* qIn = network.addInput("q", DataType::kFloat32, {2, 5, 32});
  Tensor* kvIn = network.addInput("kv", DataType::kFloat32, {2, 7, 32});
  auto heads = [&](Tensor* x, int64_t length) {
    return shuffle(network, shuffle(network, x, {}, {2, length, 4, 8}), {0, 2, 1, 3});
  };
  AttentionParams p;
  p.scale = 0.35;
  Tensor* attended =
      network.addAttention(heads(qIn, 5), heads(kvIn, 7), heads(kvIn, 7), nullptr, p)->output(0);
  Tensor* merged = shuffle(network, shuffle(network, attended, {0, 2, 1, 3}), {}, {2, 5, 32});
  merged->setName("merged");
  network.markOutput(merged);
  const std::vector<std::vector<float>> inputs = {ramp(2 * 5 * 32, -1.0f, 0.07f),
                                                  ramp(2 * 7 * 32, 0.8f, -0.05f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  readAttentionOperandsThroughViews(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 0u);
  const Layer* attention = network.output(0)->producer();
  ASSERT_EQ(attention->kind(), LayerKind::kAttention);
  const auto& params = attention->paramsAs<AttentionParams>();
  // q[n, h, l, e] = qIn[n, l, h * 8 + e]; the output is written as (N, L, H * E).
  EXPECT_EQ(params.queryView, (Dims{2, 4, 5, 8, 0, 160, 8, 32}));
  EXPECT_EQ(params.outputView, (Dims{2, 4, 5, 8, 0, 160, 8, 32}));
  EXPECT_EQ(params.outputDims, (Dims{2, 5, 32}));
  EXPECT_EQ(attention->input(0), qIn);
  EXPECT_EQ(network.output(0)->name(), "merged");
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// Marks as an output a causal attention (scale 0.5) of q, k and v = operand(0), (1) and (2).
void markCausalAttention(Network& network, const std::function<Tensor*(int64_t)>& operand) {
  AttentionParams p;
  p.scale = 0.5;
  p.causal = true;
  Tensor* q = operand(0);
  Tensor* k = operand(1);
  Tensor* v = operand(2);
  network.markOutput(network.addAttention(q, k, v, nullptr, p)->output(0));
}

// MultiheadAttention's (L, N, 3, E) projection: permute, select q, k and v, view and transpose
// to (N * H, L, E), view (N, H, L, E).
TEST(BuilderAttentionViews, SelectsOfAPackedProjectionBecomeOffsets) {
  Network network;
  Tensor* qkv = network.addInput("qkv", DataType::kFloat32, {6, 2, 3, 16});
  Tensor* packed = shuffle(network, qkv, {2, 0, 1, 3});  // (3, L, N, E)
  auto operand = [&](int64_t index) {
    Tensor* position =
        network.addConstant(Weights::fromValues(DataType::kInt64, {}, std::vector<int64_t>{index}))
            ->output(0);
    Tensor* selected = network.addGather(packed, position, {0})->output(0);  // (L, N, E)
    Tensor* split = shuffle(network, selected, {}, {6, 2 * 4, 4});           // (L, N * H, hd)
    return shuffle(network, shuffle(network, split, {1, 0, 2}), {}, {2, 4, 6, 4});
  };
  markCausalAttention(network, operand);
  const std::vector<std::vector<float>> inputs = {ramp(6 * 2 * 3 * 16, -0.9f, 0.06f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  readAttentionOperandsThroughViews(network);

  EXPECT_EQ(countLayers(network, LayerKind::kGather), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 0u);
  const auto& params = network.output(0)->producer()->paramsAs<AttentionParams>();
  // k[n, h, l, e] = qkv[l, n, 1, h * 4 + e].
  EXPECT_EQ(params.keyView, (Dims{2, 4, 6, 4, 16, 48, 4, 96}));
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// A torchvision ViT block's attention (MultiheadAttention, batch_first) on an (N, L, E) input
// named "x", N given or dynamic (-1): the reshapes infer it, as torch's do.
struct MultiheadAttentionBlock {
  static constexpr int64_t l = 5, e = 16, h = 4, hd = 4;
  Network network;

  static std::vector<std::vector<float>> inputsOfBatch(int64_t n) {
    return {ramp(n * l * e, -1.0f, 0.05f)};
  }

  explicit MultiheadAttentionBlock(int64_t n) {
    Tensor* x = network.addInput("x", DataType::kFloat32, {n, l, e});
    auto weightsOf = [&](int64_t rows, int64_t cols, float seed) {
      return network
          .addConstant(
              floatWeights({rows, cols}, ramp(static_cast<size_t>(rows * cols), seed, 0.03f)))
          ->output(0);
    };
    Tensor* biasIn =
        network.addConstant(floatWeights({3 * e}, ramp(3 * e, -0.1f, 0.02f)))->output(0);
    Tensor* sequenceFirst = shuffle(network, x, {1, 0, 2});  // (L, N, E)
    Tensor* projection =
        network.addFullyConnected(sequenceFirst, weightsOf(3 * e, e, -0.2f), biasIn)->output(0);
    Tensor* packed =
        shuffle(network, shuffle(network, projection, {}, {l, -1, 3, e}), {2, 0, 1, 3});
    auto operand = [&](int64_t index) {
      Tensor* position =
          network
              .addConstant(Weights::fromValues(DataType::kInt64, {}, std::vector<int64_t>{index}))
              ->output(0);
      Tensor* selected = network.addGather(packed, position, {0})->output(0);
      Tensor* split = shuffle(network, selected, {}, {l, -1, hd});  // (L, N * H, hd)
      return shuffle(network, shuffle(network, split, {1, 0, 2}), {}, {-1, h, l, hd});
    };
    AttentionParams p;
    p.scale = 0.5;
    Tensor* q = operand(0);
    Tensor* k = operand(1);
    Tensor* v = operand(2);
    Tensor* attended = network.addAttention(q, k, v, nullptr, p)->output(0);
    Tensor* rows = shuffle(network, shuffle(network, attended, {2, 0, 1, 3}), {}, {-1, e});
    Tensor* projected = network.addFullyConnected(rows, weightsOf(e, e, 0.1f), nullptr)->output(0);
    network.markOutput(shuffle(network, shuffle(network, projected, {}, {l, -1, e}), {1, 0, 2}));
  }
};

// The transposes around the input and output projections move next to the attention and become
// views too.
TEST(BuilderAttentionViews, MultiheadAttentionBlockRunsWithoutCopies) {
  MultiheadAttentionBlock block(2);
  Network& network = block.network;
  const std::vector<std::vector<float>> inputs = MultiheadAttentionBlock::inputsOfBatch(2);
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  moveRowShufflesTowardAttention(network);
  readAttentionOperandsThroughViews(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kGather), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 2u);
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// The same block under a dynamic batch: the moved transposes leave (N, L, 3E) rows, read through
// row views; the engine equals the unoptimized block at every batch.
TEST(BuilderAttentionViews, MultiheadAttentionBlockWithADynamicBatchReadsRowViews) {
  using B = MultiheadAttentionBlock;
  MultiheadAttentionBlock dynamicBlock(-1);
  moveRowShufflesTowardAttention(dynamicBlock.network);
  readAttentionOperandsThroughViews(dynamicBlock.network);
  EXPECT_EQ(countLayers(dynamicBlock.network, LayerKind::kShuffle), 0u);
  EXPECT_EQ(countLayers(dynamicBlock.network, LayerKind::kGather), 0u);
  const Layer* attention = dynamicBlock.network.output(0)->producer()->input(0)->producer();
  ASSERT_EQ(attention->kind(), LayerKind::kAttention);
  EXPECT_EQ(attention->paramsAs<AttentionParams>().keyView, (Dims{B::h, B::hd, B::e}));
  dynamicBlock.network.validate();

  MultiheadAttentionBlock unoptimized(-1);
  BuilderConfig config;
  OptimizationProfile profile;
  profile.setRange("x", {{1, B::l, B::e}, {2, B::l, B::e}, {4, B::l, B::e}});
  config.profiles = {profile};
  std::shared_ptr<Engine> engine = Builder::build(unoptimized.network, config);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  for (int64_t n : {1, 4, 3}) {
    SCOPED_TRACE(concat("batch ", n));
    MultiheadAttentionBlock reference(n);
    const auto size = static_cast<size_t>(n * B::l * B::e);
    const std::vector<std::vector<float>> inputs = {
        ramp(size, -1.0f, 2.0f / static_cast<float>(size))};
    context->setInputShapes({{n, B::l, B::e}});
    std::vector<float> result(size);
    context->execute({inputs[0].data()}, {result.data()});
    expectNear({result}, evaluate(reference.network, inputs), 1e-5f);
  }
}

// GPT-2's attention: its QKV projection (N, L, 3E) split into q, k and v by slices of columns,
// each viewed as heads and transposed, on an input "qkv" of batch n (-1: dynamic).
struct SplitProjectionAttention {
  static constexpr int64_t l = 5, e = 16, h = 4, hd = 4;
  Network network;

  explicit SplitProjectionAttention(int64_t n) {
    Tensor* qkv = network.addInput("qkv", DataType::kFloat32, {n, l, 3 * e});
    auto operand = [&](int64_t index) {
      SliceParams columns;
      columns.axes = {2};
      columns.starts = {index * e};
      columns.ends = {(index + 1) * e};
      columns.steps = {1};
      Tensor* part = network.addSlice(qkv, columns)->output(0);
      return shuffle(network, shuffle(network, part, {}, {0, 0, h, hd}), {0, 2, 1, 3});
    };
    markCausalAttention(network, operand);
  }
};

// ---- tanh GELU recognition ---------------------------------------------------------------

// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in the layers a converter makes of it, with
// `form` choosing the operand order and algebra: 0, HF's NewGELUActivation as written, scalar
// constants behind reshapes as the converters leave them; 1, constants first and x * x * x;
// 2, x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)). `cubic` replaces 0.044715.
std::unique_ptr<Network> writtenOutTanhGelu(DataType dtype, int form, float cubic = 0.044715f) {
  auto network = std::make_unique<Network>();
  Network& n = *network;
  // Half-precision chains read a cast of the float32 input and end in a cast back.
  Tensor* x = n.addInput("x", DataType::kFloat32, {2, 3, 8});
  if (dtype != DataType::kFloat32) x = n.addCast(x, dtype)->output(0);
  auto scalar = [&](float value) {
    Tensor* constant = n.addConstant(floatWeights({1}, {value}))->output(0);
    if (dtype != DataType::kFloat32) constant = n.addCast(constant, dtype)->output(0);
    ShuffleParams view;
    view.hasReshape = true;
    view.reshapeDims = {1, 1, 1};
    return n.addShuffle(constant, view)->output(0);
  };
  auto op = [&](ElementwiseOp o, Tensor* a, Tensor* b) {
    return n.addElementwise(a, b, o)->output(0);
  };
  const float sqrtTwoOverPi = 0.7978845608f;
  Tensor* out = nullptr;
  if (form == 0) {
    Tensor* half = op(ElementwiseOp::kProd, x, scalar(0.5f));
    Tensor* cube = op(ElementwiseOp::kPow, x, scalar(3.0f));
    Tensor* inner = op(ElementwiseOp::kSum, x, op(ElementwiseOp::kProd, cube, scalar(cubic)));
    Tensor* scaled = op(ElementwiseOp::kProd, inner, scalar(sqrtTwoOverPi));
    Tensor* tanh = n.addActivation(scaled, {ActivationType::kTanh})->output(0);
    out = op(ElementwiseOp::kProd, half, op(ElementwiseOp::kSum, tanh, scalar(1.0f)));
  } else if (form == 1) {
    Tensor* cube = op(ElementwiseOp::kProd, op(ElementwiseOp::kProd, x, x), x);
    Tensor* inner = op(ElementwiseOp::kSum, op(ElementwiseOp::kProd, scalar(cubic), cube), x);
    Tensor* tanh = n.addActivation(op(ElementwiseOp::kProd, scalar(sqrtTwoOverPi), inner),
                                   {ActivationType::kTanh})
                       ->output(0);
    Tensor* onePlus = op(ElementwiseOp::kSum, scalar(1.0f), tanh);
    out = op(ElementwiseOp::kProd, op(ElementwiseOp::kProd, scalar(0.5f), onePlus), x);
  } else {
    Tensor* cube = op(ElementwiseOp::kPow, x, scalar(3.0f));
    Tensor* inner = op(ElementwiseOp::kSum, x, op(ElementwiseOp::kProd, cube, scalar(cubic)));
    Tensor* gate = n.addActivation(op(ElementwiseOp::kProd, inner, scalar(2.0f * sqrtTwoOverPi)),
                                   {ActivationType::kSigmoid})
                       ->output(0);
    out = op(ElementwiseOp::kProd, x, gate);
  }
  if (dtype != DataType::kFloat32) out = n.addCast(out, DataType::kFloat32)->output(0);
  out->setName("gelu_out");
  n.markOutput(out);
  return network;
}

TEST(BuilderTanhGeluRecognition, ReplacesTheWrittenOutApproximationInAnyForm) {
  const std::vector<std::vector<float>> inputs = {ramp(48, -6.0f, 0.7f)};
  for (DataType dtype : {DataType::kFloat32, DataType::kFloat16}) {
    for (int form : {0, 1, 2}) {
      SCOPED_TRACE(concat(toString(dtype), " form ", form));
      std::unique_ptr<Network> network = writtenOutTanhGelu(dtype, form);
      const std::vector<std::vector<float>> before = evaluate(*network, inputs);

      foldConstants(*network);  // as the builder does first: the constants' casts fold
      recognizeTanhGelu(*network);

      network->validate();
      EXPECT_EQ(countLayers(*network, LayerKind::kElementwise), 0u);
      EXPECT_EQ(countLayers(*network, LayerKind::kShuffle), 0u);
      EXPECT_EQ(countLayers(*network, LayerKind::kConstant), 0u);
      ASSERT_EQ(countLayers(*network, LayerKind::kActivation), 1u);
      const Layer* gelu = network->output(0)->producer();
      if (dtype != DataType::kFloat32) gelu = gelu->input(0)->producer();
      ASSERT_EQ(gelu->kind(), LayerKind::kActivation);
      EXPECT_EQ(gelu->paramsAs<ActivationParams>().type, ActivationType::kGeluTanh);
      EXPECT_EQ(gelu->input(0)->dtype(), dtype);
      EXPECT_EQ(network->output(0)->name(), "gelu_out");
      expectNear(evaluate(*network, inputs), before, dtype == DataType::kFloat32 ? 1e-6f : 4e-3f);
    }
  }
}

TEST(BuilderTanhGeluRecognition, LeavesOtherFunctionsAlone) {
  // Another cubic coefficient: a different function, however close.
  std::unique_ptr<Network> other = writtenOutTanhGelu(DataType::kFloat32, 0, 0.0447f);
  const size_t layers = other->numLayers();
  recognizeTanhGelu(*other);
  EXPECT_EQ(other->numLayers(), layers);
  EXPECT_EQ(countLayers(*other, LayerKind::kActivation), 1u);

  // The same formula over two tensors: x's tanh term gates y.
  Network twoSources;
  Tensor* x = twoSources.addInput("x", DataType::kFloat32, {4});
  Tensor* y = twoSources.addInput("y", DataType::kFloat32, {4});
  Tensor* tanh = twoSources.addActivation(x, {ActivationType::kTanh})->output(0);
  twoSources.markOutput(twoSources.addElementwise(y, tanh, ElementwiseOp::kProd)->output(0));
  recognizeTanhGelu(twoSources);
  EXPECT_EQ(twoSources.numLayers(), 2u);
}

// ---- row shuffle motion ------------------------------------------------------------------

// On its own (no views yet): MultiheadAttention's (N, L, E) -> (L, N, E) transpose moves from
// before the input projection to after it, and the reshape and transpose after the output
// projection to before it, so that both projections touch the block's edges; outputs unchanged.
TEST(BuilderRowShuffleMotion, RowShufflesMoveAcrossTheProjectionsTowardAttention) {
  MultiheadAttentionBlock block(2);
  Network& network = block.network;
  const std::vector<std::vector<float>> inputs = MultiheadAttentionBlock::inputsOfBatch(2);
  const std::vector<std::vector<float>> before = evaluate(network, inputs);
  const size_t shuffles = countLayers(network, LayerKind::kShuffle);

  moveRowShufflesTowardAttention(network);

  network.validate();
  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), shuffles);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 2u);
  const std::vector<Layer*> readers = network.consumers(network.input(0));
  ASSERT_EQ(readers.size(), 1u);
  EXPECT_EQ(readers[0]->kind(), LayerKind::kFullyConnected);
  EXPECT_EQ(network.output(0)->producer()->kind(), LayerKind::kFullyConnected);
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// A shuffle that moves elements within rows (the last axis goes elsewhere) does not commute with
// the projection, and a projection with a fused residual keeps its rows where the residual has
// them: neither moves.
TEST(BuilderRowShuffleMotion, LeavesShufflesWithinRowsAndFusedResidualsAlone) {
  constexpr int64_t n = 2, l = 4, e = 8, h = 2;
  for (bool residual : {false, true}) {
    SCOPED_TRACE(residual ? "fused residual" : "transpose within rows");
    Network network;
    Tensor* x = residual ? network.addInput("x", DataType::kFloat32, {l, n, e})
                         : network.addInput("x", DataType::kFloat32, {n, e, l});
    Tensor* rows = residual ? shuffle(network, x, {1, 0, 2}) : shuffle(network, x, {0, 2, 1});
    Tensor* weight =
        network.addConstant(floatWeights({e, e}, ramp(e * e, -0.3f, 0.02f)))->output(0);
    Layer* fc = residual ? network.addLayer(FullyConnectedParams{},
                                            {rows, weight, nullptr,
                                             network.addInput("r", DataType::kFloat32, {n, l, e})})
                         : network.addFullyConnected(rows, weight, nullptr);
    Tensor* heads =
        shuffle(network, shuffle(network, fc->output(0), {}, {n, l, h, e / h}), {0, 2, 1, 3});
    AttentionParams p;
    p.scale = 0.5;
    network.markOutput(network.addAttention(heads, heads, heads, nullptr, p)->output(0));
    const Layer* shuffleBefore = fc->input(0)->producer();

    moveRowShufflesTowardAttention(network);

    network.validate();
    EXPECT_EQ(fc->input(0)->producer(), shuffleBefore);
  }
}

// The slices become offsets of views of the projection: strided views at a static batch, row
// views at a dynamic one.
TEST(BuilderAttentionViews, SlicedColumnsOfAProjectionBecomeOffsets) {
  using S = SplitProjectionAttention;
  for (int64_t n : {int64_t{2}, int64_t{-1}}) {
    SCOPED_TRACE(concat("batch ", n));
    SplitProjectionAttention block(n);
    readAttentionOperandsThroughViews(block.network);

    EXPECT_EQ(countLayers(block.network, LayerKind::kSlice), 0u);
    EXPECT_EQ(countLayers(block.network, LayerKind::kShuffle), 0u);
    const auto& params = block.network.output(0)->producer()->paramsAs<AttentionParams>();
    // v[n, h, l, d] = qkv[n, l, 2E + h * hd + d].
    const Dims expected =
        n > 0 ? Dims{n, S::h, S::l, S::hd, 2 * S::e, S::l * 3 * S::e, S::hd, 3 * S::e}
              : Dims{S::h, S::hd, 2 * S::e};
    EXPECT_EQ(params.valueView, expected);
    block.network.validate();
    if (n < 0) continue;
    const std::vector<std::vector<float>> inputs = {ramp(n * S::l * 3 * S::e, -0.9f, 0.01f)};
    expectNear(evaluate(block.network, inputs),
               evaluate(SplitProjectionAttention(n).network, inputs), 1e-5f);
  }
}

TEST(BuilderAttentionViews, LeavesOperandsThatAreNoViewAlone) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 2, 3, 4});
  // A transpose of the last dim: the operand's rows would not be contiguous.
  Tensor* q =
      shuffle(network, network.addInput("t", DataType::kFloat32, {1, 2, 4, 3}), {0, 1, 3, 2});
  network.markOutput(network.addAttention(q, x, x, nullptr, {})->output(0));

  readAttentionOperandsThroughViews(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 1u);
  EXPECT_TRUE(network.output(0)->producer()->paramsAs<AttentionParams>().queryView.empty());
}

// ---- fully connected epilogues --------------------------------------------------------------

const Layer* onlyFullyConnected(const Network& network) {
  const Layer* found = nullptr;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() != LayerKind::kFullyConnected) continue;
    EXPECT_EQ(found, nullptr) << "more than one fully connected layer";
    found = network.layer(i);
  }
  return found;
}

// activation(fc(x) + h), a transformer MLP's tail, computed in `dtype` between float32 inputs
// and output: x and h (2, 3, 8), an 8 -> 8 projection with bias.
std::unique_ptr<Network> fullyConnectedBlock(DataType dtype, ActivationType activation) {
  auto network = std::make_unique<Network>();
  auto narrow = [&](Tensor* t) {
    return dtype == DataType::kFloat32 ? t : network->addCast(t, dtype)->output(0);
  };
  Tensor* x = narrow(network->addInput("x", DataType::kFloat32, {2, 3, 8}));
  Tensor* h = narrow(network->addInput("h", DataType::kFloat32, {2, 3, 8}));
  Tensor* w = narrow(network->addConstant(floatWeights({8, 8}, ramp(64, -0.4f, 0.05f)))->output(0));
  Tensor* b = narrow(network->addConstant(floatWeights({8}, ramp(8, -0.2f, 0.07f)))->output(0));
  Tensor* projected = network->addFullyConnected(x, w, b)->output(0);
  Tensor* sum = network->addElementwise(projected, h, ElementwiseOp::kSum)->output(0);
  Tensor* out = network->addActivation(sum, {activation})->output(0);
  if (dtype != DataType::kFloat32) out = network->addCast(out, DataType::kFloat32)->output(0);
  out->setName("block_out");
  network->markOutput(out);
  return network;
}

const std::vector<std::vector<float>> kBlockInputs = {ramp(48, -1.5f, 0.2f),
                                                      ramp(48, 0.9f, -0.11f)};

TEST(BuilderFullyConnectedEpilogueFusion, FusesResidualAddThenActivationIntoTheLayer) {
  struct Case {
    DataType dtype;
    ActivationType activation;
    FusedActivation fused;
    float tolerance;  // the fused layer rounds to half precision once, the unfused thrice
  };
  for (const Case& c :
       {Case{DataType::kFloat32, ActivationType::kRelu, FusedActivation::kRelu, 1e-5f},
        Case{DataType::kFloat32, ActivationType::kGeluTanh, FusedActivation::kGeluTanh, 1e-5f},
        Case{DataType::kFloat16, ActivationType::kGeluErf, FusedActivation::kGeluErf, 2e-2f},
        Case{DataType::kBFloat16, ActivationType::kGeluErf, FusedActivation::kGeluErf, 1e-1f}}) {
    SCOPED_TRACE(concat(toString(c.dtype), " ", toString(c.activation)));
    std::unique_ptr<Network> network = fullyConnectedBlock(c.dtype, c.activation);
    const std::vector<std::vector<float>> before = evaluate(*network, kBlockInputs);
    const size_t layers = network->numLayers();

    fuseFullyConnectedEpilogues(*network);

    EXPECT_EQ(network->numLayers(), layers - 2);
    EXPECT_EQ(countLayers(*network, LayerKind::kElementwise), 0u);
    EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 0u);
    const Layer* fc = onlyFullyConnected(*network);
    ASSERT_NE(fc, nullptr);
    EXPECT_EQ(fc->paramsAs<FullyConnectedParams>().activation, c.fused);
    ASSERT_EQ(fc->inputs().size(), 4u);
    ASSERT_NE(fc->input(3), nullptr);
    EXPECT_EQ(fc->input(3)->dims(), (Dims{2, 3, 8}));
    EXPECT_EQ(network->output(0)->name(), "block_out");
    network->validate();
    expectNear(evaluate(*network, kBlockInputs), before, c.tolerance);
  }
}

// GPT-2's MLP views its (N*L, 4E) product as (N, L, 4E) before the GELU: the activation moves
// into the epilogue and the reshape after it.
TEST(BuilderFullyConnectedEpilogueFusion, TakesAnActivationBehindAReshape) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {6, 8});
  Tensor* w = network.addConstant(floatWeights({16, 8}, ramp(128, -0.3f, 0.04f)))->output(0);
  Tensor* product = network.addFullyConnected(x, w, nullptr)->output(0);
  ShuffleParams view;
  view.hasReshape = true;
  view.reshapeDims = {2, 3, 16};
  Tensor* viewed = network.addShuffle(product, view)->output(0);
  Tensor* activated = network.addActivation(viewed, {ActivationType::kGeluTanh})->output(0);
  activated->setName("mlp_out");
  network.markOutput(activated);
  const std::vector<std::vector<float>> inputs = {ramp(48, -2.0f, 0.15f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  fuseFullyConnectedEpilogues(network);

  network.validate();
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 0u);
  const Layer* fc = onlyFullyConnected(network);
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(fc->paramsAs<FullyConnectedParams>().activation, FusedActivation::kGeluTanh);
  const Layer* reshape = network.output(0)->producer();
  EXPECT_EQ(reshape->kind(), LayerKind::kShuffle);
  EXPECT_EQ(reshape->input(0), fc->output(0));
  EXPECT_EQ(network.output(0)->name(), "mlp_out");
  expectNear(evaluate(network, inputs), before, 1e-6f);
}

TEST(BuilderFullyConnectedEpilogueFusion, KeepsAFloat32ErfGeluExact) {
  std::unique_ptr<Network> network =
      fullyConnectedBlock(DataType::kFloat32, ActivationType::kGeluErf);
  const std::vector<std::vector<float>> before = evaluate(*network, kBlockInputs);

  fuseFullyConnectedEpilogues(*network);

  EXPECT_EQ(countLayers(*network, LayerKind::kElementwise), 0u);
  EXPECT_EQ(countLayers(*network, LayerKind::kActivation), 1u);
  const Layer* fc = onlyFullyConnected(*network);
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(fc->paramsAs<FullyConnectedParams>().activation, FusedActivation::kNone);
  ASSERT_EQ(fc->inputs().size(), 4u);
  EXPECT_EQ(fc->input(3), network->input(1));
  EXPECT_EQ(network->soleReader(fc->output(0)), network->output(0)->producer());
  network->validate();
  expectNear(evaluate(*network, kBlockInputs), before, 1e-6f);
}

TEST(BuilderFullyConnectedEpilogueFusion, LeavesWhatTheEpilogueCannotTake) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {4, 8});
  Tensor* w = network.addConstant(floatWeights({8, 8}, ramp(64, -0.3f, 0.04f)))->output(0);
  auto fc = [&] { return network.addFullyConnected(x, w, nullptr)->output(0); };
  auto relu = [&](Tensor* t) {
    return network.addActivation(t, {ActivationType::kRelu})->output(0);
  };
  // A network output: the tensor must still be written.
  Tensor* kept = fc();
  network.markOutput(relu(kept));
  network.markOutput(kept);
  // A broadcast add: the other operand is not of the output's dims.
  Tensor* row = network.addConstant(floatWeights({1, 8}, ramp(8, -0.5f, 0.1f)))->output(0);
  network.markOutput(network.addElementwise(fc(), row, ElementwiseOp::kSum)->output(0));
  // An activation no epilogue has.
  network.markOutput(network.addActivation(fc(), {ActivationType::kSigmoid})->output(0));
  // An add after the activation: the activation is the epilogue's last step.
  network.markOutput(network.addElementwise(relu(fc()), x, ElementwiseOp::kSum)->output(0));
  // An add reading the output twice.
  Tensor* twice = fc();
  network.markOutput(network.addElementwise(twice, twice, ElementwiseOp::kSum)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(32, -1.0f, 0.15f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  fuseFullyConnectedEpilogues(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 5u);
  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 3u);
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 2u);  // the output's relu, sigmoid
  size_t withRelu = 0;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kFullyConnected) continue;
    withRelu += layer->paramsAs<FullyConnectedParams>().activation == FusedActivation::kRelu;
    EXPECT_TRUE(layer->inputs().size() < 4 || layer->input(3) == nullptr);
  }
  EXPECT_EQ(withRelu, 1u);
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-6f);
}

// A ViT block's attention output projection (MultiheadAttention, batch_first) and the residual
// add after it: once the shuffles around the projection have moved next to the attention, the
// add reads the projection's output and joins its epilogue.
TEST(BuilderFullyConnectedEpilogueFusion, BuiltEngineFusesTheOutputProjectionsResidual) {
  const int64_t n = 2, l = 5, e = 16, h = 4, hd = 4;
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {n, l, e});
  Tensor* q = network.addInput("q", DataType::kFloat32, {n, h, l, hd});
  AttentionParams p;
  p.scale = 0.5;
  Tensor* attended = network.addAttention(q, q, q, nullptr, p)->output(0);
  Tensor* rows = shuffle(network, shuffle(network, attended, {2, 0, 1, 3}), {}, {l * n, e});
  Tensor* w = network.addConstant(floatWeights({e, e}, ramp(e * e, -0.2f, 0.03f)))->output(0);
  Tensor* b = network.addConstant(floatWeights({e}, ramp(e, 0.1f, -0.02f)))->output(0);
  Tensor* projected = network.addFullyConnected(rows, w, b)->output(0);
  Tensor* out = shuffle(network, shuffle(network, projected, {}, {l, n, e}), {1, 0, 2});
  Tensor* sum = network.addElementwise(x, out, ElementwiseOp::kSum)->output(0);
  network.markOutput(sum);
  const std::vector<std::vector<float>> inputs = {ramp(n * l * e, -1.0f, 0.05f),
                                                  ramp(n * h * l * hd, 0.8f, -0.07f)};
  const std::vector<std::vector<float>> expected = evaluate(network, inputs);

  std::shared_ptr<Engine> engine = Builder::build(network, {});

  const EngineDefinition& d = engine->definition();
  size_t fused = 0;
  for (const EngineLayer& layer : d.layers) {
    EXPECT_FALSE(std::holds_alternative<ElementwiseParams>(layer.params)) << layer.name;
    if (!std::holds_alternative<FullyConnectedParams>(layer.params)) continue;
    ASSERT_EQ(layer.inputs.size(), 4u);
    EXPECT_EQ(d.tensors.at(static_cast<size_t>(layer.inputs[3])).name, "x");
    ++fused;
  }
  EXPECT_EQ(fused, 1u);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{n, l, e}, {n, h, l, hd}});
  std::vector<float> result(static_cast<size_t>(n * l * e));
  context->execute({inputs[0].data(), inputs[1].data()}, {result.data()});
  expectNear({result}, expected, 1e-5f);
}

// ---- identity layers -------------------------------------------------------------------------

TEST(BuilderIdentityLayerRemoval, ReadersReadTheInputOfAOneTensorConcatOrASameTypeCast) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3});
  Tensor* concatenated = network.addConcat({x}, {1})->output(0);
  Tensor* cast = network.addCast(concatenated, DataType::kFloat32)->output(0);
  Layer* relu = network.addActivation(cast, {ActivationType::kRelu});
  network.markOutput(relu->output(0));
  // A network output keeps its copy.
  network.markOutput(network.addCast(x, DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(6, -1.0f, 0.4f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  removeIdentityLayers(network);

  EXPECT_EQ(countLayers(network, LayerKind::kConcat), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kCast), 1u);
  EXPECT_EQ(relu->input(0), x);
  network.validate();
  expectNear(evaluate(network, inputs), before, 0.0f);
}

// ---- matrix multiplies by constants as fully connected layers ---------------------------------

// GPT-2's Conv1D (x @ W + b, W (K, N)), torch.export's linear (x @ W^T + b, W^T a transposed
// view), a product whose add is not a bias, and one by a tensor that is no constant.
TEST(BuilderConstantMatMulToFullyConnected, TakesTheBiasAddIntoTheLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4});
  Tensor* y = network.addInput("y", DataType::kFloat32, {4, 5});
  auto constant = [&](const Dims& dims, float start, float step) {
    return network
        .addConstant(floatWeights(dims, ramp(static_cast<size_t>(volume(dims)), start, step)))
        ->output(0);
  };
  auto add = [&](Tensor* a, Tensor* b) {
    return network.addElementwise(a, b, ElementwiseOp::kSum)->output(0);
  };
  network.markOutput(add(network.addMatMul(x, constant({4, 5}, -0.5f, 0.05f))->output(0),
                         constant({5}, 0.2f, 0.1f)));
  MatMulParams transposed;
  transposed.transposeB = true;
  network.markOutput(
      add(constant({1, 1, 5}, -0.3f, 0.07f),
          network.addMatMul(x, constant({5, 4}, 0.4f, -0.03f), transposed)->output(0)));
  network.markOutput(add(network.addMatMul(x, constant({4, 5}, 0.1f, 0.02f))->output(0),
                         constant({3, 5}, 0.0f, 0.1f)));
  network.markOutput(network.addMatMul(x, y)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(24, -1.0f, 0.09f), ramp(20, 0.5f, -0.05f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  convertConstantMatMulsToFullyConnected(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 3u);
  EXPECT_EQ(countLayers(network, LayerKind::kMatMul), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 1u);  // the (3, 5) add stays
  for (size_t o = 0; o < 2; ++o) {
    const Layer* fc = network.output(o)->producer();
    ASSERT_EQ(fc->kind(), LayerKind::kFullyConnected);
    ASSERT_NE(fc->input(2), nullptr);
    EXPECT_EQ(fc->input(2)->dims(), (Dims{5}));
  }
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// ---- horizontal fusion of sibling GEMMs -----------------------------------------------------

// BERT's self-attention: query, key and value projections of one input, each split into heads
// by a view and a transpose, attention, heads merged, output projection. `projection` makes
// each of the three from the input, a width and a seed.
struct SelfAttention {
  static constexpr int64_t n = 2, l = 5, e = 16, h = 4, hd = 4;
  Network network;
  Tensor* x = nullptr;
  Tensor* projections[3] = {};
};

// The input is (batch, length, e): (n, l, e) unless given, and its batch and length may be
// dynamic (-1); the reshapes keep them (0) as HF's do.
void buildSelfAttention(SelfAttention& block,
                        const std::function<Tensor*(Tensor*, int64_t, float)>& projection,
                        const Dims& inputDims = {SelfAttention::n, SelfAttention::l,
                                                 SelfAttention::e}) {
  using S = SelfAttention;
  Network& network = block.network;
  block.x = network.addInput("x", DataType::kFloat32, inputDims);
  Tensor* heads[3];
  for (int i = 0; i < 3; ++i) {
    block.projections[i] = projection(block.x, S::e, -0.3f + 0.2f * static_cast<float>(i));
    block.projections[i]->setName(concat("projection", i));
    heads[i] = shuffle(network, shuffle(network, block.projections[i], {}, {0, 0, S::h, S::hd}),
                       {0, 2, 1, 3});
  }
  AttentionParams p;
  p.scale = 0.5;
  Tensor* attended = network.addAttention(heads[0], heads[1], heads[2], nullptr, p)->output(0);
  Tensor* merged = shuffle(network, shuffle(network, attended, {0, 2, 1, 3}), {}, {0, 0, S::e});
  merged->setName("merged");
  network.markOutput(merged);
}

Tensor* linear(Network& network, Tensor* x, int64_t outFeatures, float seed,
               FusedActivation activation = FusedActivation::kNone) {
  const int64_t inFeatures = x->dims().back();
  const auto count = static_cast<size_t>(outFeatures * inFeatures);
  Tensor* w =
      network.addConstant(floatWeights({outFeatures, inFeatures}, ramp(count, seed, 0.013f)))
          ->output(0);
  Tensor* b = network
                  .addConstant(floatWeights({outFeatures},
                                            ramp(static_cast<size_t>(outFeatures), -seed, 0.021f)))
                  ->output(0);
  FullyConnectedParams p;
  p.activation = activation;
  return network.addLayer(p, {x, w, b})->output(0);
}

TEST(BuilderHorizontalFusion, QueryKeyValueBecomeOneGemmThatAttentionReadsInPlace) {
  using S = SelfAttention;
  SelfAttention block;
  buildSelfAttention(block, [&](Tensor* x, int64_t width, float seed) {
    return linear(block.network, x, width, seed);
  });
  Network& network = block.network;
  const std::vector<std::vector<float>> inputs = {ramp(S::n * S::l * S::e, -1.0f, 0.09f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  readAttentionOperandsThroughViews(network);
  fuseSiblingGemms(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kSlice), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 0u);
  const Layer* attention = network.output(0)->producer();
  ASSERT_EQ(attention->kind(), LayerKind::kAttention);
  const Tensor* fused = attention->input(0);
  ASSERT_EQ(fused->producer()->kind(), LayerKind::kFullyConnected);
  EXPECT_EQ(fused->dims(), (Dims{S::n, S::l, 3 * S::e}));
  EXPECT_EQ(attention->input(1), fused);
  EXPECT_EQ(attention->input(2), fused);
  // q[n, h, l, d] = fused[n, l, block + h * hd + d]: offset = block start, row stride = 3E.
  const auto& p = attention->paramsAs<AttentionParams>();
  const int64_t batchStride = S::l * 3 * S::e;
  EXPECT_EQ(p.queryView, (Dims{S::n, S::h, S::l, S::hd, 0, batchStride, S::hd, 3 * S::e}));
  EXPECT_EQ(p.keyView, (Dims{S::n, S::h, S::l, S::hd, S::e, batchStride, S::hd, 3 * S::e}));
  EXPECT_EQ(p.valueView, (Dims{S::n, S::h, S::l, S::hd, 2 * S::e, batchStride, S::hd, 3 * S::e}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

TEST(BuilderHorizontalFusion, MatMulsByConstantMatricesConcatenateTheirColumns) {
  using S = SelfAttention;
  SelfAttention block;
  buildSelfAttention(block, [&](Tensor* x, int64_t width, float seed) {
    const auto count = static_cast<size_t>(S::e * width);
    Tensor* b = block.network.addConstant(floatWeights({S::e, width}, ramp(count, seed, 0.017f)))
                    ->output(0);
    return block.network.addMatMul(x, b)->output(0);
  });
  Network& network = block.network;
  const std::vector<std::vector<float>> inputs = {ramp(S::n * S::l * S::e, 0.7f, -0.06f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  readAttentionOperandsThroughViews(network);
  fuseSiblingGemms(network);

  EXPECT_EQ(countLayers(network, LayerKind::kMatMul), 1u);
  const Layer* attention = network.output(0)->producer();
  EXPECT_EQ(attention->input(0)->dims(), (Dims{S::n, S::l, 3 * S::e}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

TEST(BuilderHorizontalFusion, BuiltEngineRunsOneGemmForTheProjections) {
  using S = SelfAttention;
  SelfAttention block;
  buildSelfAttention(block, [&](Tensor* x, int64_t width, float seed) {
    return linear(block.network, x, width, seed);
  });
  const std::vector<std::vector<float>> inputs = {ramp(S::n * S::l * S::e, -0.4f, 0.05f)};
  const std::vector<std::vector<float>> expected = evaluate(block.network, inputs);

  std::shared_ptr<Engine> engine = Builder::build(block.network, {});

  size_t gemms = 0;
  size_t copies = 0;
  for (const EngineLayer& layer : engine->definition().layers) {
    gemms += std::holds_alternative<FullyConnectedParams>(layer.params);
    copies += std::holds_alternative<ShuffleParams>(layer.params) ||
              std::holds_alternative<SliceParams>(layer.params);
  }
  EXPECT_EQ(gemms, 1u);
  EXPECT_EQ(copies, 0u);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{S::n, S::l, S::e}});
  std::vector<float> result(static_cast<size_t>(S::n * S::l * S::e));
  context->execute({inputs[0].data()}, {result.data()});
  expectNear({result}, expected, 1e-5f);
}

// BERT under a dynamic batch and sequence length: the strides of the head split depend on the
// length, so q, k and v are row views ({H, E, column}) of the fused projection, and the output
// one of the (N, L, E) tensor, worked out at run time. The engine has no copy left and equals the
// unoptimized network at every shape.
TEST(BuilderHorizontalFusion, DynamicBatchAndLengthReadRowViewsOfTheFusedGemm) {
  using S = SelfAttention;
  const auto linearOf = [](SelfAttention& block) {
    return [&block](Tensor* x, int64_t width, float seed) {
      return linear(block.network, x, width, seed);
    };
  };
  SelfAttention dynamicBlock;
  buildSelfAttention(dynamicBlock, linearOf(dynamicBlock), {-1, -1, S::e});
  BuilderConfig config;
  OptimizationProfile profile;
  profile.setRange("x", {{1, 1, S::e}, {2, 5, S::e}, {3, 9, S::e}});
  config.profiles = {profile};
  std::shared_ptr<Engine> engine = Builder::build(dynamicBlock.network, config);

  size_t gemms = 0;
  size_t copies = 0;
  const AttentionParams* attention = nullptr;
  for (const EngineLayer& layer : engine->definition().layers) {
    gemms += std::holds_alternative<FullyConnectedParams>(layer.params);
    copies += std::holds_alternative<ShuffleParams>(layer.params) ||
              std::holds_alternative<SliceParams>(layer.params);
    if (const auto* p = std::get_if<AttentionParams>(&layer.params)) attention = p;
  }
  EXPECT_EQ(gemms, 1u);
  EXPECT_EQ(copies, 0u);
  ASSERT_NE(attention, nullptr);
  EXPECT_EQ(attention->queryView, (Dims{S::h, S::hd, 0}));
  EXPECT_EQ(attention->keyView, (Dims{S::h, S::hd, S::e}));
  EXPECT_EQ(attention->valueView, (Dims{S::h, S::hd, 2 * S::e}));
  EXPECT_EQ(attention->outputView, (Dims{S::h, S::hd, 0}));

  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  for (const auto& [batch, length] : {std::pair<int64_t, int64_t>{1, 1}, {3, 9}, {2, 4}}) {
    SCOPED_TRACE(concat("batch ", batch, ", length ", length));
    SelfAttention staticBlock;
    buildSelfAttention(staticBlock, linearOf(staticBlock), {batch, length, S::e});
    const auto size = static_cast<size_t>(batch * length * S::e);
    const std::vector<std::vector<float>> inputs = {
        ramp(size, -0.6f, 0.9f / static_cast<float>(size))};
    context->setInputShapes({{batch, length, S::e}});
    std::vector<float> result(size);
    context->execute({inputs[0].data()}, {result.data()});
    expectNear({result}, evaluate(staticBlock.network, inputs), 1e-5f);
  }
}

// Three siblings: two read by an attention, a narrow one also a network output, which takes a
// Slice (a copy) of its columns; the fusion still saves more than the copy costs.
TEST(BuilderHorizontalFusion, ANarrowNetworkOutputIsSlicedOut) {
  const int64_t n = 2, l = 5, e = 16, h = 4, hd = 4;
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {n, l, e});
  auto heads = [&](Tensor* t) {
    return shuffle(network, shuffle(network, t, {}, {n, l, h, hd}), {0, 2, 1, 3});
  };
  Tensor* q = linear(network, x, e, -0.2f);
  Tensor* kv = linear(network, x, e, 0.1f);
  Tensor* gate = linear(network, x, 4, 0.3f);
  gate->setName("gate");
  AttentionParams p;
  p.scale = 0.5;
  network.markOutput(network.addAttention(heads(q), heads(kv), heads(kv), nullptr, p)->output(0));
  network.markOutput(gate);
  const std::vector<std::vector<float>> inputs = {ramp(n * l * e, -1.0f, 0.08f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  readAttentionOperandsThroughViews(network);
  fuseSiblingGemms(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kSlice), 1u);
  EXPECT_EQ(network.output(1)->name(), "gate");
  EXPECT_EQ(network.output(1)->producer()->kind(), LayerKind::kSlice);
  const auto& view = network.output(0)->producer()->paramsAs<AttentionParams>().keyView;
  EXPECT_EQ(view, (Dims{n, h, l, hd, e, l * (2 * e + 4), hd, 2 * e + 4}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

TEST(BuilderHorizontalFusion, SiblingsWithoutABiasGetZerosInTheFusedBias) {
  const int64_t n = 2, l = 3, e = 8, h = 2, hd = 4;
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {n, l, e});
  auto heads = [&](Tensor* t) {
    return shuffle(network, shuffle(network, t, {}, {n, l, h, hd}), {0, 2, 1, 3});
  };
  Tensor* q = linear(network, x, e, -0.2f);
  Tensor* w = network.addConstant(floatWeights({e, e}, ramp(e * e, 0.3f, -0.02f)))->output(0);
  Tensor* kv = network.addFullyConnected(x, w, nullptr)->output(0);
  AttentionParams p;
  p.scale = 0.5;
  network.markOutput(network.addAttention(heads(q), heads(kv), heads(kv), nullptr, p)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(n * l * e, -1.0f, 0.11f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  readAttentionOperandsThroughViews(network);
  fuseSiblingGemms(network);

  ASSERT_EQ(countLayers(network, LayerKind::kFullyConnected), 1u);
  const Layer* fused = network.output(0)->producer()->input(0)->producer();
  ASSERT_EQ(fused->kind(), LayerKind::kFullyConnected);
  const Weights& bias = fused->input(2)->producer()->paramsAs<ConstantParams>().weights;
  ASSERT_EQ(bias.dims, (Dims{2 * e}));
  const auto* values = static_cast<const float*>(bias.data());
  for (int64_t i = e; i < 2 * e; ++i) EXPECT_EQ(values[i], 0.0f) << i;
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

TEST(BuilderHorizontalFusion, LeavesSiblingsWhoseCopiesWouldCostMore) {
  const int64_t e = 8;
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3, e});
  // Every output is read by something that takes no view: three copies of 32 columns each
  // against two reads of 8 saved.
  for (int i = 0; i < 3; ++i) {
    network.markOutput(linear(network, x, 32, 0.1f * static_cast<float>(i)));
  }
  fuseSiblingGemms(network);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 3u);
  EXPECT_EQ(countLayers(network, LayerKind::kSlice), 0u);
}

TEST(BuilderHorizontalFusion, LeavesLayersThatAreNoSiblings) {
  using S = SelfAttention;
  // Different inputs, a different fused activation, weights that are no constant, a residual:
  // nothing to merge.
  SelfAttention block;
  Network& network = block.network;
  Tensor* other = network.addInput("other", DataType::kFloat32, {S::n, S::l, S::e});
  Tensor* weightInput = network.addInput("w", DataType::kFloat32, {S::e, S::e});
  int made = 0;
  buildSelfAttention(block, [&](Tensor* x, int64_t width, float seed) {
    switch (made++) {
      case 0:
        return linear(network, other, width, seed);
      case 1:
        return linear(network, x, width, seed, FusedActivation::kRelu);
      default:
        return network.addFullyConnected(x, weightInput, nullptr)->output(0);
    }
  });
  Tensor* w =
      network.addConstant(floatWeights({S::e, S::e}, ramp(S::e * S::e, 0.2f, 0.01f)))->output(0);
  network.markOutput(
      network.addLayer(FullyConnectedParams{}, {block.x, w, nullptr, other})->output(0));
  // Narrow enough that slicing it out would pay, were it a sibling of any of the above.
  network.markOutput(linear(network, block.x, 4, 0.4f));
  readAttentionOperandsThroughViews(network);
  const size_t before = countLayers(network, LayerKind::kFullyConnected);

  fuseSiblingGemms(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), before);
}

// ---- channels-last convolutions and layout transposes ---------------------------------------

Tensor* halfConv3x3(Network& network, Tensor* x, int64_t inChannels, int64_t outChannels,
                    Tensor* residual, float seed) {
  ConvolutionParams p;
  p.outChannels = outChannels;
  p.kernel = {3, 3};
  p.prePadding = {1, 1};
  p.postPadding = {1, 1};
  p.activation = FusedActivation::kRelu;
  auto half = [&](const Dims& dims, float start, float step) {
    const auto count = static_cast<size_t>(volume(dims));
    Tensor* values = network.addConstant(floatWeights(dims, ramp(count, start, step)))->output(0);
    return network.addCast(values, DataType::kFloat16)->output(0);
  };
  Tensor* w = half({outChannels, inChannels, 3, 3}, -0.3f * seed, 0.04f);
  Tensor* b = half({outChannels}, 0.1f * seed, -0.05f);
  return network.addLayer(p, {x, w, b, residual})->output(0);
}

// fp16: conv -> max pool -> conv (+ the pooled tensor) -> conv -> global average pool, and a
// second output that reads the first convolution directly.
std::unique_ptr<Network> halfPrecisionTrunk() {
  auto network = std::make_unique<Network>();
  Tensor* x = network->addInput("x", DataType::kFloat32, {2, 3, 6, 5});
  Tensor* a = halfConv3x3(*network, network->addCast(x, DataType::kFloat16)->output(0), 3, 8,
                          nullptr, 1.0f);
  PoolingParams maxPool;
  maxPool.kernel = {3, 3};
  maxPool.prePadding = {1, 1};
  maxPool.postPadding = {1, 1};
  Tensor* pooled = network->addPooling(a, maxPool)->output(0);
  Tensor* b = halfConv3x3(*network, pooled, 8, 8, pooled, 2.0f);
  Tensor* c = halfConv3x3(*network, b, 8, 8, nullptr, 3.0f);
  PoolingParams globalAverage;
  globalAverage.type = PoolingType::kAverage;
  globalAverage.adaptive = true;
  globalAverage.outputSize = {1, 1};
  Tensor* features = network->addPooling(c, globalAverage)->output(0);
  features->setName("features");
  network->markOutput(network->addCast(features, DataType::kFloat32)->output(0));
  network->markOutput(network->addCast(a, DataType::kFloat32)->output(0));
  return network;
}

TEST(BuilderChannelsLast, TrunkStaysNhwcWithATransposeAtEachEdge) {
  std::unique_ptr<Network> network = halfPrecisionTrunk();
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 6 * 5, -1.0f, 0.13f)};
  const std::vector<std::vector<float>> before = evaluate(*network, inputs);

  convertConvolutionsToChannelsLast(*network);
  EXPECT_EQ(countLayers(*network, LayerKind::kShuffle), 3u * 3u + 1u);  // x, weight, out; residual
  sinkLayoutTransposes(*network);
  foldConstants(*network);
  eliminateDeadLayers(*network);

  // The input's transpose, one before the second output and one after the global pooling.
  EXPECT_EQ(countLayers(*network, LayerKind::kShuffle), 3u);
  for (size_t i = 0; i < network->numLayers(); ++i) {
    const Layer* layer = network->layer(i);
    if (layer->kind() == LayerKind::kConvolution) {
      EXPECT_TRUE(layer->paramsAs<ConvolutionParams>().channelsLast) << layer->name();
    } else if (layer->kind() == LayerKind::kPooling) {
      EXPECT_TRUE(layer->paramsAs<PoolingParams>().channelsLast) << layer->name();
    }
  }
  EXPECT_EQ(network->output(0)->dims(), (Dims{2, 8, 1, 1}));
  network->validate();
  // The same float32 arithmetic on the same fp16 values: only the layout changed.
  expectNear(evaluate(*network, inputs), before, 0.0f);
}

TEST(BuilderChannelsLast, LeavesFloat32AndThreeDimensionalConvolutionsAlone) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 3, 5, 5});
  network.markOutput(conv3x3(network, x, 3, 4, true, 1.0f));
  Tensor* volumeInput = network.addInput("v", DataType::kFloat16, {1, 2, 3, 3, 3});
  ConvolutionParams p;
  p.outChannels = 2;
  p.kernel = {1, 1, 1};
  Tensor* w = network.addInput("w", DataType::kFloat16, {2, 2, 1, 1, 1});
  network.markOutput(network.addConvolution(volumeInput, w, nullptr, p)->output(0));

  convertConvolutionsToChannelsLast(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 0u);
}

// A speech front end in fp16: 1-D conv (k 5, stride 2) -> 1-D conv (k 3, ReLU) -> transpose to
// (N, L, C) as wav2vec2's feature projection reads it. The convolutions run channels-last (NLC),
// and the transposes cancel: the input's remains alone.
TEST(BuilderChannelsLast, OneDimensionalConvolutionsRunChannelsLast) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 4, 23});
  Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
  auto constant = [&](const Dims& dims, float start, float step) {
    const auto count = static_cast<size_t>(volume(dims));
    Tensor* values = network.addConstant(floatWeights(dims, ramp(count, start, step)))->output(0);
    return network.addCast(values, DataType::kFloat16)->output(0);
  };
  ConvolutionParams strided;
  strided.outChannels = 6;
  strided.kernel = {5};
  strided.stride = {2};
  Tensor* a =
      network.addLayer(strided, {half, constant({6, 4, 5}, -0.3f, 0.01f), nullptr, nullptr})
          ->output(0);
  ConvolutionParams padded;
  padded.outChannels = 8;
  padded.kernel = {3};
  padded.prePadding = {1};
  padded.postPadding = {1};
  padded.activation = FusedActivation::kRelu;
  Tensor* b = network
                  .addLayer(padded, {a, constant({8, 6, 3}, 0.2f, -0.01f),
                                     constant({8}, 0.1f, -0.02f), nullptr})
                  ->output(0);
  ShuffleParams toRows;
  toRows.firstPermutation = {0, 2, 1};
  network.markOutput(
      network.addCast(network.addShuffle(b, toRows)->output(0), DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 4 * 23, -1.0f, 0.01f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  convertConvolutionsToChannelsLast(network);
  sinkLayoutTransposes(network);
  foldConstants(network);
  eliminateDeadLayers(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 1u);
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() == LayerKind::kConvolution) {
      EXPECT_TRUE(layer->paramsAs<ConvolutionParams>().channelsLast) << layer->name();
    }
  }
  EXPECT_EQ(network.output(0)->dims(), (Dims{2, 10, 8}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 0.0f);
}

// fp16 x -> 1x1 conv (+ bias, + x as residual, ReLU) -> 1x1 conv with stride 2 -> 3x3 conv.
TEST(BuilderPointwiseConvolutionGemm, OneByOneConvolutionsBecomeFullyConnected) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 6, 5, 4});
  Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
  auto constant = [&](const Dims& dims, float start, float step) {
    const auto count = static_cast<size_t>(volume(dims));
    Tensor* values = network.addConstant(floatWeights(dims, ramp(count, start, step)))->output(0);
    return network.addCast(values, DataType::kFloat16)->output(0);
  };
  ConvolutionParams pointwise;
  pointwise.outChannels = 6;
  pointwise.kernel = {1, 1};
  pointwise.activation = FusedActivation::kRelu;
  Tensor* a = network
                  .addLayer(pointwise, {half, constant({6, 6, 1, 1}, -0.4f, 0.03f),
                                        constant({6}, 0.2f, -0.07f), half})
                  ->output(0);
  ConvolutionParams strided = pointwise;
  strided.stride = {2, 2};
  strided.activation = FusedActivation::kNone;
  Tensor* b =
      network.addLayer(strided, {a, constant({6, 6, 1, 1}, 0.3f, -0.02f), nullptr, nullptr})
          ->output(0);
  network.markOutput(
      network.addCast(halfConv3x3(network, b, 6, 4, nullptr, 1.0f), DataType::kFloat32)->output(0));
  network.markOutput(network.addCast(a, DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 6 * 5 * 4, -1.0f, 0.02f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  convertConvolutionsToChannelsLast(network);
  sinkLayoutTransposes(network);
  convertPointwiseConvolutionsToFullyConnected(network);
  foldConstants(network);
  eliminateDeadLayers(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kConvolution), 2u);  // strided 1x1 and 3x3 stay
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kFullyConnected) continue;
    EXPECT_EQ(layer->paramsAs<FullyConnectedParams>().activation, FusedActivation::kRelu);
    EXPECT_EQ(layer->input(1)->dims(), (Dims{6, 6}));
    ASSERT_EQ(layer->inputs().size(), 4u);
    EXPECT_NE(layer->input(3), nullptr);  // the residual
  }
  network.validate();
  expectNear(evaluate(network, inputs), before, 2e-3f);
}

// A 4x4 patch embedding of 3 channels with bias and ReLU and a 1-D one of 2 channels become GEMMs.
// What stays: windows that overlap, a 1x1 kernel, 8 input channels, and a kernel that does not
// divide the spatial dims.
TEST(BuilderPatchConvolutionGemm, PatchEmbeddingsBecomeAGatherAndAFullyConnectedLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 8, 12});
  auto constant = [&](const Dims& dims, float start, float step) {
    const auto count = static_cast<size_t>(volume(dims));
    return network.addConstant(floatWeights(dims, ramp(count, start, step)))->output(0);
  };
  auto conv = [&](Tensor* input, int64_t outChannels, const Dims& kernel, const Dims& stride,
                  float seed) {
    ConvolutionParams p;
    p.outChannels = outChannels;
    p.kernel = kernel;
    p.stride = stride;
    Dims weightDims = {outChannels, input->dims()[1]};
    weightDims.insert(weightDims.end(), kernel.begin(), kernel.end());
    return network
        .addConvolution(input, constant(weightDims, -0.3f * seed, 0.011f),
                        constant({outChannels}, 0.2f * seed, -0.07f), p)
        ->output(0);
  };
  Tensor* patches = conv(x, 5, {4, 4}, {4, 4}, 1.0f);
  network.markOutput(network.addActivation(patches, {ActivationType::kRelu})->output(0));
  Tensor* line = network.addInput("line", DataType::kFloat32, {2, 2, 9});
  network.markOutput(conv(line, 4, {3}, {3}, 2.0f));
  network.markOutput(conv(x, 4, {4, 4}, {2, 2}, 3.0f));  // overlapping windows
  network.markOutput(
      conv(conv(x, 8, {1, 1}, {1, 1}, 4.0f), 4, {2, 2}, {2, 2}, 5.0f));  // 8 channels
  network.markOutput(conv(x, 4, {3, 3}, {3, 3}, 6.0f));  // 8 rows: not whole patches
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 8 * 12, -1.0f, 0.01f),
                                                  ramp(2 * 2 * 9, 0.5f, -0.03f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  fuseConvolutionEpilogues(network);
  convertPatchConvolutionsToFullyConnected(network);
  eliminateDeadLayers(network);

  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 2u);
  EXPECT_EQ(countLayers(network, LayerKind::kConvolution), 4u);
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 0u);  // the ReLU went with the bias
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kFullyConnected) continue;
    const bool image = layer->input(0)->dims().size() == 4;
    EXPECT_EQ(layer->input(0)->dims(), image ? (Dims{2, 2, 3, 48}) : (Dims{2, 3, 6}));
    EXPECT_EQ(layer->paramsAs<FullyConnectedParams>().activation,
              image ? FusedActivation::kRelu : FusedActivation::kNone);
    EXPECT_NE(layer->input(2), nullptr);
  }
  EXPECT_EQ(network.output(0)->dims(), (Dims{2, 5, 2, 3}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

TEST(BuilderPatchConvolutionGemm, LeavesAConvolutionWithAFusedResidual) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 2, 4, 4});
  Tensor* residual = network.addInput("residual", DataType::kFloat32, {1, 3, 2, 2});
  ConvolutionParams p;
  p.outChannels = 3;
  p.kernel = {2, 2};
  p.stride = {2, 2};
  Tensor* w = network.addConstant(floatWeights({3, 2, 2, 2}, ramp(24, -0.5f, 0.04f)))->output(0);
  network.markOutput(network.addLayer(p, {x, w, nullptr, residual})->output(0));

  convertPatchConvolutionsToFullyConnected(network);

  EXPECT_EQ(countLayers(network, LayerKind::kConvolution), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 0u);
}

const ShuffleParams* onlyShuffle(const Network& network) {
  const ShuffleParams* found = nullptr;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() != LayerKind::kShuffle) continue;
    EXPECT_EQ(found, nullptr) << "more than one shuffle";
    found = &network.layer(i)->paramsAs<ShuffleParams>();
  }
  return found;
}

// ViT after its patch GEMM: (N, h, w, C) -> (N, C, h, w) -> (N, C, h*w) -> (N, h*w, C) is a
// reshape of the GEMM's output.
TEST(BuilderShuffleChainFolding, TransposeFlattenTransposeBecomesOneReshape) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4, 6});
  Tensor* channelsFirst = shuffle(network, x, {0, 3, 1, 2});
  Tensor* flat = shuffle(network, channelsFirst, {}, {0, 6, 12});
  Tensor* tokens = shuffle(network, flat, {0, 2, 1});
  Tensor* classToken = network.addInput("cls", DataType::kFloat32, {2, 1, 6});
  network.markOutput(network.addConcat({classToken, tokens}, {1})->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 4 * 6, -1.0f, 0.01f),
                                                  ramp(2 * 6, 0.5f, 0.1f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  foldShuffleChainsIntoReshapes(network);
  eliminateDeadLayers(network);

  const ShuffleParams* folded = onlyShuffle(network);
  ASSERT_NE(folded, nullptr);
  EXPECT_TRUE(folded->firstPermutation.empty());
  EXPECT_TRUE(folded->secondPermutation.empty());
  EXPECT_EQ(folded->reshapeDims, (Dims{2, 12, 6}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 0.0f);
}

TEST(BuilderShuffleChainFolding, ADynamicBatchKeepsItsPlace) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {kDynamic, 4, 6, 8});
  Tensor* channelsFirst = shuffle(network, x, {0, 3, 1, 2});
  Tensor* flat = shuffle(network, channelsFirst, {}, {0, 8, 24});
  network.markOutput(shuffle(network, flat, {0, 2, 1}));

  foldShuffleChainsIntoReshapes(network);
  eliminateDeadLayers(network);

  const ShuffleParams* folded = onlyShuffle(network);
  ASSERT_NE(folded, nullptr);
  EXPECT_EQ(folded->reshapeDims, (Dims{0, 24, 8}));
  EXPECT_EQ(network.output(0)->dims(), (Dims{kDynamic, 24, 8}));
  network.validate();
}

// Copying shuffles in a chain: those with a permutation (a reshape is aliased).
size_t copyingShuffles(const Network& network) {
  size_t copies = 0;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    const Layer* layer = network.layer(i);
    if (layer->kind() != LayerKind::kShuffle) continue;
    const auto& p = layer->paramsAs<ShuffleParams>();
    copies += p.firstPermutation.empty() && p.secondPermutation.empty() ? 0 : 1;
  }
  return copies;
}

// MaxViT's block partition after a channels-last convolution: (N, H, W, C) back to (N, C, H, W),
// split into 2x2 windows of 3x3 pixels, permuted to (N, 2, 2, 3, 3, C) and flattened to
// (N, windows, tokens, C): two copies, and a third for the grid partition's transpose of windows
// and tokens, where one copy moves every element to its place.
TEST(BuilderShuffleChainFolding, WindowPartitionBecomesOneCopy) {
  for (bool gridTranspose : {false, true}) {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 6, 6, 4});
    Tensor* channelsFirst = shuffle(network, x, {0, 3, 1, 2});
    Tensor* windows = shuffle(network, channelsFirst, {}, {2, 4, 2, 3, 2, 3});
    Tensor* tokens = shuffle(network, windows, {0, 2, 4, 3, 5, 1}, {2, 4, 9, 4});
    if (gridTranspose) tokens = shuffle(network, tokens, {0, 2, 1, 3});
    network.markOutput(network.addUnary(tokens, UnaryOp::kNeg)->output(0));
    const std::vector<std::vector<float>> inputs = {ramp(2 * 6 * 6 * 4, -1.0f, 0.01f, 144)};
    const std::vector<std::vector<float>> before = evaluate(network, inputs);
    ASSERT_EQ(copyingShuffles(network), gridTranspose ? 3u : 2u);

    foldShuffleChainsIntoReshapes(network);
    eliminateDeadLayers(network);

    EXPECT_EQ(copyingShuffles(network), 1u) << "grid transpose " << gridTranspose;
    EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 2u);  // a reshape into blocks, the copy
    network.validate();
    expectNear(evaluate(network, inputs), before, 0.0f);
  }
}

// A chain of one copy, or with a dynamic dim, stays as it is.
TEST(BuilderShuffleChainFolding, LeavesOneCopyAndDynamicChainsAlone) {
  for (int64_t batch : {int64_t{2}, kDynamic}) {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {batch, 6, 6, 4});
    Tensor* channelsFirst = shuffle(network, x, {0, 3, 1, 2});
    Tensor* windows = shuffle(network, channelsFirst, {}, {0, 4, 2, 3, 2, 3});
    Tensor* tokens = shuffle(network, windows, {0, 2, 4, 3, 5, 1}, {0, 4, 9, 4});
    network.markOutput(batch == kDynamic ? tokens : channelsFirst);
    const size_t before = countLayers(network, LayerKind::kShuffle);
    foldShuffleChainsIntoReshapes(network);
    eliminateDeadLayers(network);
    EXPECT_EQ(countLayers(network, LayerKind::kShuffle), batch == kDynamic ? before : 1u);
  }
}

// (A) swaps two dims of 3 and 4: a real copy. (B, C) after it undo each other's layout change.
// (D) is read twice, so a chain through it ends there.
TEST(BuilderShuffleChainFolding, FoldsOnlyTheSuffixThatMovesNothing) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* a = shuffle(network, x, {0, 2, 1, 3});  // (2, 4, 3, 5)
  Tensor* b = shuffle(network, a, {0, 3, 1, 2});  // (2, 5, 4, 3)
  ShuffleParams back;
  back.hasReshape = true;
  back.reshapeDims = {0, 5, 12};
  back.secondPermutation = {0, 2, 1};  // (2, 12, 5)
  Tensor* c = network.addShuffle(b, back)->output(0);
  network.markOutput(c);
  Tensor* d = shuffle(network, x, {0, 1, 3, 2});
  network.markOutput(shuffle(network, d, {0, 1, 3, 2}));
  network.markOutput(network.addUnary(d, UnaryOp::kExp)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 4 * 5, -1.0f, 0.01f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  foldShuffleChainsIntoReshapes(network);
  eliminateDeadLayers(network);

  // a stays, b + c become a reshape of a; d and the transpose that undoes it stay (d has two
  // readers, and the transpose alone moves elements).
  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 4u);
  const Layer* producer = network.output(0)->producer();
  ASSERT_EQ(producer->kind(), LayerKind::kShuffle);
  EXPECT_TRUE(producer->paramsAs<ShuffleParams>().firstPermutation.empty());
  EXPECT_TRUE(producer->paramsAs<ShuffleParams>().secondPermutation.empty());
  EXPECT_EQ(producer->input(0)->producer()->paramsAs<ShuffleParams>().firstPermutation,
            (Dims{0, 2, 1, 3}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 0.0f);
}

// Four attentions over the same q, k, v: masks that mask nothing (all true, broadcast from one
// row; all zero, cast from float32 to float16 on the way) go; masks with one false or one -inf
// stay.
// Runs removeAttentionMasksThatMaskNothing on a network whose outputs are casts of attention
// layers (its one input of 24 elements) and checks which attentions still read a mask and that
// the outputs did not change.
void expectMasksKeptAfterElimination(Network& network, const std::vector<bool>& expected) {
  const std::vector<std::vector<float>> inputs = {ramp(24, -1.0f, 0.09f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  removeAttentionMasksThatMaskNothing(network);
  eliminateDeadLayers(network);

  std::vector<bool> hasMask;
  for (size_t o = 0; o < network.numOutputs(); ++o) {
    const Layer* attention = network.output(o)->producer()->input(0)->producer();
    ASSERT_EQ(attention->kind(), LayerKind::kAttention);
    hasMask.push_back(attention->inputs().size() > 3 && attention->input(3) != nullptr);
  }
  EXPECT_EQ(hasMask, expected);
  network.validate();
  expectNear(evaluate(network, inputs), before, 0.0f);
}

TEST(BuilderAttentionMaskElimination, DropsMasksThatMaskNothing) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 2, 3, 4});
  Tensor* q = network.addCast(x, DataType::kFloat16)->output(0);
  auto attend = [&](Tensor* mask) {
    AttentionParams p;
    p.scale = 0.5;
    Tensor* out = network.addAttention(q, q, q, mask, p)->output(0);
    network.markOutput(network.addCast(out, DataType::kFloat32)->output(0));
  };
  auto boolMask = [&](const std::vector<uint8_t>& values) {
    return network.addConstant(Weights::fromValues(DataType::kBool, {1, 1, 1, 3}, values))
        ->output(0);
  };
  SliceParams repeatRows;
  repeatRows.axes = {2};
  repeatRows.starts = {0};
  repeatRows.ends = {3};
  repeatRows.steps = {0};
  attend(network.addSlice(boolMask({1, 1, 1}), repeatRows)->output(0));
  attend(network.addSlice(boolMask({1, 0, 1}), repeatRows)->output(0));
  Tensor* zeros =
      network.addConstant(floatWeights({1, 1, 3, 3}, std::vector<float>(9, 0.0f)))->output(0);
  attend(network.addCast(zeros, DataType::kFloat16)->output(0));
  std::vector<float> oneMasked(9, 0.0f);
  oneMasked[4] = -std::numeric_limits<float>::infinity();
  Tensor* masked = network.addConstant(floatWeights({1, 1, 3, 3}, oneMasked))->output(0);
  attend(network.addCast(masked, DataType::kFloat16)->output(0));
  expectMasksKeptAfterElimination(network, {false, true, false, true});
}

// HF's mask under a dynamic sequence length: (i > c) | (i == c) over i = arange(seq) + 0, expanded
// to (1, 1, seq, seq). Dropped when it holds at every i the arange can give.
TEST(BuilderAttentionMaskElimination, DropsComputedMasksTrueAtEveryValueOfTheirIndex) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 2, 3, 4});
  Tensor* q = network.addCast(x, DataType::kFloat16)->output(0);
  auto int64Constant = [&](const Dims& dims, const std::vector<int64_t>& values) {
    return network.addConstant(Weights::fromValues(DataType::kInt64, dims, values))->output(0);
  };
  // Slices and expands ending at x's sequence length, as a dynamic one would.
  auto toSequence = [&](Tensor* tensor, int64_t axis) {
    SliceParams p;
    p.axes = {axis};
    p.starts = {0};
    p.ends = {0};
    p.steps = {tensor->dims()[static_cast<size_t>(axis)] == 1 ? 0 : 1};
    p.endReferences = {2};
    return network.addSlice(tensor, x, p)->output(0);
  };
  Tensor* arange = toSequence(int64Constant({8}, {0, 1, 2, 3, 4, 5, 6, 7}), 0);
  Tensor* index =
      network.addElementwise(arange, int64Constant({1}, {0}), ElementwiseOp::kSum)->output(0);
  ShuffleParams unsqueeze;
  unsqueeze.hasReshape = true;
  unsqueeze.reshapeDims = {1, 1, -1, 1};
  Tensor* rows = network.addShuffle(index, unsqueeze)->output(0);
  auto attend = [&](Tensor* mask) {
    AttentionParams p;
    p.scale = 0.5;
    Tensor* out = network.addAttention(q, q, q, toSequence(mask, 3), p)->output(0);
    network.markOutput(network.addCast(out, DataType::kFloat32)->output(0));
  };
  auto compare = [&](Tensor* a, ElementwiseOp op, int64_t c) {
    return network.addElementwise(a, int64Constant({1, 1, 1, 1}, {c}), op)->output(0);
  };
  auto atLeast = [&](Tensor* a, int64_t c) {
    return network
        .addElementwise(compare(a, ElementwiseOp::kGreater, c),
                        compare(a, ElementwiseOp::kEqual, c), ElementwiseOp::kOr)
        ->output(0);
  };
  attend(atLeast(rows, 0));  // i >= 0: always
  attend(atLeast(rows, 1));  // i >= 1: not at row 0
  attend(network.addUnary(compare(rows, ElementwiseOp::kGreater, 7), UnaryOp::kNot)->output(0));
  // Its variable has no proven range: a cast of the network's input.
  Tensor* fromInput =
      network.addShuffle(network.addCast(x, DataType::kInt64)->output(0), {})->output(0);
  ShuffleParams firstColumn;
  firstColumn.hasReshape = true;
  firstColumn.reshapeDims = {1, 2, 3, 4};
  attend(
      compare(network.addShuffle(fromInput, firstColumn)->output(0), ElementwiseOp::kLess, 1000));
  expectMasksKeptAfterElimination(network, {false, true, false, true});
}

TEST(BuilderLayoutTransposeSinking, ComposesTransposesAndMovesThemPastElementwiseLayers) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* y = network.addInput("y", DataType::kFloat32, {2, 3, 4, 5});
  // relu(T(x)) + T(y), transposed back: no transpose is left.
  Tensor* relu =
      network.addActivation(shuffle(network, x, {0, 2, 3, 1}), {ActivationType::kRelu})->output(0);
  Tensor* sum =
      network.addElementwise(relu, shuffle(network, y, {0, 2, 3, 1}), ElementwiseOp::kSum)
          ->output(0);
  Tensor* back = shuffle(network, sum, {0, 3, 1, 2});
  back->setName("back");
  network.markOutput(back);
  // Two transposes in a row that are not inverses: one transpose.
  network.markOutput(shuffle(network, shuffle(network, x, {0, 2, 3, 1}), {0, 2, 3, 1}));
  const std::vector<std::vector<float>> inputs = {ramp(120, -1.0f, 0.13f), ramp(120, 0.5f, -0.07f)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  sinkLayoutTransposes(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 1u);
  EXPECT_EQ(network.output(0)->name(), "back");
  EXPECT_EQ(network.output(1)->producer()->paramsAs<ShuffleParams>().firstPermutation,
            (Dims{0, 3, 1, 2}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 0.0f);
}

TEST(BuilderLayoutTransposeSinking, KeepsATransposeThatOtherLayersRead) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  Tensor* t = shuffle(network, x, {0, 2, 3, 1});
  network.markOutput(network.addActivation(t, {ActivationType::kRelu})->output(0));
  network.markOutput(network.addUnary(t, UnaryOp::kExp)->output(0));

  sinkLayoutTransposes(network);

  EXPECT_EQ(countLayers(network, LayerKind::kShuffle), 1u);
  EXPECT_EQ(network.output(0)->producer()->kind(), LayerKind::kActivation);
}

// ---- profile validation --------------------------------------------------------------------

// x (-1, 3) -> relu, for profile errors.
std::unique_ptr<Network> dynamicNetwork() {
  auto network = std::make_unique<Network>();
  Tensor* x = network->addInput("x", DataType::kFloat32, {-1, 3});
  network->markOutput(network->addActivation(x, {ActivationType::kRelu})->output(0));
  return network;
}

BuilderConfig configWith(const std::string& input, ShapeRange range) {
  BuilderConfig config;
  OptimizationProfile profile;
  profile.setRange(input, std::move(range));
  config.profiles.push_back(profile);
  return config;
}

// The message of the Error that building throws; fails the test when none is thrown.
std::string buildError(const Network& network, const BuilderConfig& config) {
  try {
    Builder::build(network, config);
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "the build was expected to fail";
  return "";
}

void expectContains(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

TEST(BuilderProfiles, StaticNetworkGetsOneImplicitProfile) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3});
  network.markOutput(network.addActivation(x, {ActivationType::kRelu})->output(0));
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  ASSERT_EQ(engine->profiles().size(), 1u);
  EXPECT_EQ(engine->target().backend, Backend::kCpu);
  EXPECT_EQ(engine->target().deviceName, "cpu");
}

TEST(BuilderProfiles, DynamicInputWithoutProfileIsRefused) {
  expectContains(buildError(*dynamicNetwork(), {}), {"'x'", "no optimization profile"});
}

TEST(BuilderProfiles, ProfileMissingADynamicInputIsRefused) {
  expectContains(buildError(*dynamicNetwork(), configWith("y", {{1, 3}, {1, 3}, {1, 3}})),
                 {"profile 0", "'y'", "not an input"});
  BuilderConfig empty;
  empty.profiles.emplace_back();
  expectContains(buildError(*dynamicNetwork(), empty), {"profile 0", "'x'", "no range"});
}

TEST(BuilderProfiles, MinOptMaxOutOfOrderIsRefused) {
  expectContains(buildError(*dynamicNetwork(), configWith("x", {{4, 3}, {2, 3}, {8, 3}})),
                 {"profile 0", "'x'", "dim 0", "min <= opt <= max"});
}

TEST(BuilderProfiles, WrongRankIsRefused) {
  expectContains(buildError(*dynamicNetwork(), configWith("x", {{1, 3}, {2, 3, 1}, {4, 3}})),
                 {"profile 0", "opt", "'x'", "rank 3"});
}

TEST(BuilderProfiles, StaticDimDifferentFromTheDeclaredOneIsRefused) {
  expectContains(buildError(*dynamicNetwork(), configWith("x", {{1, 3}, {2, 4}, {4, 3}})),
                 {"profile 0", "opt", "'x'", "dim 1", "fixed at 3"});
}

TEST(BuilderProfiles, SecondProfileIsCheckedToo) {
  BuilderConfig config = configWith("x", {{1, 3}, {2, 3}, {4, 3}});
  OptimizationProfile second;
  second.setRange("x", {{8, 3}, {6, 3}, {16, 3}});
  config.profiles.push_back(second);
  expectContains(buildError(*dynamicNetwork(), config), {"profile 1", "min <= opt <= max"});
}

TEST(BuilderProfiles, ValidProfilesAreKept) {
  BuilderConfig config = configWith("x", {{1, 3}, {2, 3}, {4, 3}});
  OptimizationProfile second;
  second.setRange("x", {{5, 3}, {8, 3}, {16, 3}});
  config.profiles.push_back(second);
  std::shared_ptr<Engine> engine = Builder::build(*dynamicNetwork(), config);
  ASSERT_EQ(engine->profiles().size(), 2u);
  EXPECT_EQ(engine->profiles()[1].ranges.at("x").max, (Dims{16, 3}));
}

// Without CUDA in the build, or without a GPU, a CUDA build is refused saying which.
TEST(BuilderProfiles, CudaBackendWithoutAGpuIsRefusedClearly) {
#ifdef KILN_WITH_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    GTEST_SKIP() << "a GPU is present; tests/cpp/cuda covers CUDA builds";
  }
  const char* expected = "no CUDA device";
#else
  const char* expected = "built without CUDA";
#endif
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2});
  network.markOutput(network.addActivation(x, {ActivationType::kRelu})->output(0));
  BuilderConfig config;
  config.backend = Backend::kCuda;
  expectContains(buildError(network, config), {expected, "CPU"});
}

}  // namespace
}  // namespace kiln

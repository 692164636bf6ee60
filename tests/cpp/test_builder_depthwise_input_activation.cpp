// fuseActivationsIntoDepthwiseInputs on inverted residual blocks (expansion, activation,
// depthwise convolution, projection) in fp16, and on the cases it must leave alone. Each test
// compares the network's outputs before and after.
#include <gtest/gtest.h>

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

// fp16 activations and weights: the values the engine's layers see.
constexpr float kTolerance = 2e-2f;

Tensor* halfConstant(Network& network, const Dims& dims, float start, float step) {
  const auto count = static_cast<size_t>(volume(dims));
  Tensor* values =
      network.addConstant(Weights::fromValues(DataType::kFloat32, dims, ramp(count, start, step)))
          ->output(0);
  return network.addCast(values, DataType::kFloat16)->output(0);
}

Tensor* convolution(Network& network, Tensor* x, int64_t inChannels, int64_t outChannels,
                    int64_t groups, int64_t kernel, int64_t stride, float seed) {
  ConvolutionParams p;
  p.outChannels = outChannels;
  p.groups = groups;
  p.kernel = {kernel, kernel};
  p.stride = {stride, stride};
  p.prePadding = p.postPadding = {kernel / 2, kernel / 2};
  Tensor* w = halfConstant(network, {outChannels, inChannels / groups, kernel, kernel},
                           -0.2f * seed, 0.03f);
  Tensor* b = halfConstant(network, {outChannels}, 0.1f * seed, -0.04f);
  return network.addConvolution(x, w, b, p)->output(0);
}

struct Block {
  std::unique_ptr<Network> network = std::make_unique<Network>();
  Tensor* activated = nullptr;  // the expansion's activation, which the depthwise reads
};

// x (2, 8, 7, 6) -> 1x1 expansion to 24 channels -> activation -> depthwise 3x3 of `multiplier`
// output channels a group at `stride` -> 1x1 projection to 8 channels, in fp16.
Block invertedResidual(const ActivationParams& activation, int64_t stride = 1,
                       int64_t multiplier = 1) {
  Block block;
  Network& network = *block.network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 8, 7, 6});
  Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
  Tensor* expanded = convolution(network, half, 8, 24, 1, 1, 1, 1.0f);
  block.activated = network.addActivation(expanded, activation)->output(0);
  Tensor* depthwise =
      convolution(network, block.activated, 24, 24 * multiplier, 24, 3, stride, 2.0f);
  Tensor* projected = convolution(network, depthwise, 24 * multiplier, 8, 1, 1, 1, 3.0f);
  network.markOutput(network.addCast(projected, DataType::kFloat32)->output(0));
  return block;
}

// The builder's passes up to this one: channels-last convolutions, transposes cancelled, 1x1
// convolutions as GEMMs.
void runPassesUpToTheFusion(Network& network) {
  convertConvolutionsToChannelsLast(network);
  sinkLayoutTransposes(network);
  convertPointwiseConvolutionsToFullyConnected(network);
  foldConstants(network);
  eliminateDeadLayers(network);
}

// The convolutions left in `network`: with a fused input activation and without one.
std::vector<const Layer*> convolutions(const Network& network) {
  std::vector<const Layer*> found;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() == LayerKind::kConvolution) found.push_back(network.layer(i));
  }
  return found;
}

const std::vector<float>& blockInput() {
  static const std::vector<float> values = ramp(2 * 8 * 7 * 6, -1.5f, 0.19f);
  return values;
}

TEST(BuilderDepthwiseInputActivation, FusesTheExpansionsActivationIntoTheDepthwiseConvolution) {
  const std::pair<ActivationParams, FusedActivation> cases[] = {
      {{ActivationType::kSilu}, FusedActivation::kSilu},
      {{ActivationType::kHardSwish}, FusedActivation::kHardSwish},
      {{ActivationType::kClip, 0.0, 6.0}, FusedActivation::kRelu6},
      {{ActivationType::kRelu}, FusedActivation::kRelu}};
  for (const auto& [activation, fused] : cases) {
    for (int64_t stride : {1, 2}) {
      SCOPED_TRACE(std::string(toString(fused)) + ", stride " + std::to_string(stride));
      Block block = invertedResidual(activation, stride);
      Network& network = *block.network;
      const std::vector<std::vector<float>> before = evaluate(network, {blockInput()});
      runPassesUpToTheFusion(network);
      ASSERT_EQ(countLayers(network, LayerKind::kActivation), 1u);

      fuseActivationsIntoDepthwiseInputs(network);
      eliminateDeadLayers(network);

      EXPECT_EQ(countLayers(network, LayerKind::kActivation), 0u);
      const std::vector<const Layer*> convs = convolutions(network);
      ASSERT_EQ(convs.size(), 1u);  // the 1x1 convolutions are GEMMs
      const auto& p = convs[0]->paramsAs<ConvolutionParams>();
      EXPECT_EQ(p.inputActivation, fused);
      EXPECT_TRUE(p.channelsLast);
      ASSERT_NE(convs[0]->input(0)->producer(), nullptr);
      EXPECT_EQ(convs[0]->input(0)->producer()->kind(), LayerKind::kFullyConnected);
      network.validate();
      expectNear(evaluate(network, {blockInput()}), before, kTolerance);
    }
  }
}

// A depthwise convolution with a channel multiplier (FastViT's, MobileOne's) takes it too.
TEST(BuilderDepthwiseInputActivation, FusesIntoADepthwiseConvolutionWithAMultiplier) {
  Block block = invertedResidual({ActivationType::kSilu}, 2, 2);
  Network& network = *block.network;
  const std::vector<std::vector<float>> before = evaluate(network, {blockInput()});
  runPassesUpToTheFusion(network);
  fuseActivationsIntoDepthwiseInputs(network);
  eliminateDeadLayers(network);
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 0u);
  network.validate();
  expectNear(evaluate(network, {blockInput()}), before, kTolerance);
}

// Left alone: an activation another layer also reads (it must be stored), one that is a network
// output, one no convolution computes (sigmoid, a clip other than [0, 6]), and an activation
// before a grouped convolution that is not depthwise or before a channels-first (fp32) one.
TEST(BuilderDepthwiseInputActivation, LeavesWhatItCannotFuseAlone) {
  {
    Block block = invertedResidual({ActivationType::kSilu});
    Network& network = *block.network;
    network.markOutput(network
                           .addCast(network.addUnary(block.activated, UnaryOp::kNeg)->output(0),
                                    DataType::kFloat32)
                           ->output(0));
    runPassesUpToTheFusion(network);
    fuseActivationsIntoDepthwiseInputs(network);
    EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u) << "a second reader";
  }
  {
    Block block = invertedResidual({ActivationType::kSilu});
    Network& network = *block.network;
    network.markOutput(block.activated);
    runPassesUpToTheFusion(network);
    fuseActivationsIntoDepthwiseInputs(network);
    EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u) << "a network output";
  }
  for (const ActivationParams& activation : {ActivationParams{ActivationType::kSigmoid},
                                             ActivationParams{ActivationType::kClip, 0, 5}}) {
    Block block = invertedResidual(activation);
    runPassesUpToTheFusion(*block.network);
    fuseActivationsIntoDepthwiseInputs(*block.network);
    EXPECT_EQ(countLayers(*block.network, LayerKind::kActivation), 1u) << toString(activation.type);
  }
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {1, 8, 5, 5});
    Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
    Tensor* activated = network.addActivation(half, {ActivationType::kSilu})->output(0);
    Tensor* grouped = convolution(network, activated, 8, 8, 4, 3, 1, 1.0f);
    network.markOutput(network.addCast(grouped, DataType::kFloat32)->output(0));
    runPassesUpToTheFusion(network);
    fuseActivationsIntoDepthwiseInputs(network);
    EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u) << "a grouped convolution";
  }
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {1, 8, 5, 5});
    Tensor* activated = network.addActivation(x, {ActivationType::kSilu})->output(0);
    ConvolutionParams p;
    p.outChannels = 8;
    p.groups = 8;
    p.kernel = {3, 3};
    p.prePadding = p.postPadding = {1, 1};
    Tensor* w = network
                    .addConstant(Weights::fromValues(DataType::kFloat32, {8, 1, 3, 3},
                                                     ramp(72, -0.5f, 0.07f)))
                    ->output(0);
    network.markOutput(network.addConvolution(activated, w, nullptr, p)->output(0));
    runPassesUpToTheFusion(network);
    fuseActivationsIntoDepthwiseInputs(network);
    EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u) << "a channels-first convolution";
  }
}

// The builder runs the pass: the engine of an inverted residual block has no activation layer,
// its depthwise convolution carries the expansion's SiLU, and it computes what the network does.
TEST(BuilderDepthwiseInputActivation, BuiltEngineRunsTheFusedBlock) {
  Block block = invertedResidual({ActivationType::kSilu});
  const std::vector<std::vector<float>> expected = evaluate(*block.network, {blockInput()});
  std::shared_ptr<Engine> engine = Builder::build(*block.network, {});
  size_t fused = 0;
  for (const EngineLayer& layer : engine->definition().layers) {
    EXPECT_FALSE(std::holds_alternative<ActivationParams>(layer.params)) << layer.name;
    if (const auto* p = std::get_if<ConvolutionParams>(&layer.params)) {
      fused += p->inputActivation == FusedActivation::kSilu ? 1 : 0;
    }
  }
  EXPECT_EQ(fused, 1u);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{2, 8, 7, 6}});
  std::vector<float> out(2 * 8 * 7 * 6);
  context->execute({blockInput().data()}, {out.data()});
  expectNear({out}, expected, kTolerance);
}

}  // namespace
}  // namespace kiln

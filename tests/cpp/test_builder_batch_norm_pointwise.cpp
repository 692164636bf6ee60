// convertBatchNormsToPointwise: batch norms no convolution took become per-channel scale and
// shift in fp32, which the pointwise fusion joins with the activation after them. Each test
// compares the network's outputs before and after.
#include <gtest/gtest.h>

#include <memory>
#include <variant>
#include <vector>

#include "core/builder/builder.h"
#include "core/builder/passes.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"
#include "tests/cpp/network_evaluator.h"

namespace kiln {
namespace {

Tensor* constant(Network& network, const Dims& dims, float start, float step, DataType type) {
  return rampConstant(network, dims, start, step, type, 11);
}

// A trained model's batch norm over `channels` along `axis`: no channel is the identity.
Tensor* batchNorm(Network& network, Tensor* x, int64_t channels, int64_t axis, DataType type) {
  NormalizationParams p;
  p.type = NormalizationType::kBatch;
  p.axis = axis;
  p.epsilon = 1e-5;
  Tensor* gamma = constant(network, {channels}, 0.6f, 0.1f, type);
  Tensor* beta = constant(network, {channels}, -0.3f, 0.07f, type);
  Tensor* mean = constant(network, {channels}, -0.4f, 0.09f, type);
  Tensor* var = constant(network, {channels}, 0.5f, 0.15f, type);
  return network.addNormalization(x, gamma, beta, mean, var, p)->output(0);
}

TEST(BuilderBatchNormPointwise, ChannelsLastHalfNormAndReluBecomeOnePointwiseLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4, 8});
  Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
  Tensor* normed = batchNorm(network, half, 8, 3, DataType::kFloat16);
  Tensor* relu = network.addActivation(normed, {ActivationType::kRelu})->output(0);
  network.markOutput(network.addCast(relu, DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 4 * 8, -2.0f, 0.37f, 11)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);
  foldConstants(network);  // the fp16 statistics, cast from fp32 constants

  convertBatchNormsToPointwise(network);
  EXPECT_EQ(countLayers(network, LayerKind::kNormalization), 0u);
  fusePointwiseChains(network);
  eliminateDeadLayers(network);

  EXPECT_EQ(countLayers(network, LayerKind::kPointwise), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 0u);
  network.validate();
  // The norm computed in fp32 either way; only the fp16 rounding of its output differs.
  expectNear(evaluate(network, inputs), before, 1e-2f);
}

TEST(BuilderBatchNormPointwise, ChannelsFirstFloat32NormBroadcastsOverTheDimsAfterItsAxis) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4, 5});
  network.markOutput(batchNorm(network, x, 3, 1, DataType::kFloat32));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 3 * 4 * 5, -1.0f, 0.23f, 11)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  convertBatchNormsToPointwise(network);

  EXPECT_EQ(countLayers(network, LayerKind::kNormalization), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kCast), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kElementwise), 2u);
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() == LayerKind::kConstant) {
      EXPECT_EQ(network.layer(i)->output(0)->dims(), (Dims{3, 1, 1}));
    }
  }
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// Statistics that are not constants (a norm over a tensor computed at run time) stay a norm.
TEST(BuilderBatchNormPointwise, LeavesANormWithRunTimeStatisticsAlone) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4});
  Tensor* mean = network.addInput("mean", DataType::kFloat32, {3});
  NormalizationParams p;
  Tensor* var = constant(network, {3}, 0.5f, 0.1f, DataType::kFloat32);
  network.markOutput(network.addNormalization(x, nullptr, nullptr, mean, var, p)->output(0));
  convertBatchNormsToPointwise(network);
  EXPECT_EQ(countLayers(network, LayerKind::kNormalization), 1u);
}

// A DenseNet layer in fp16 (concatenation -> BN -> ReLU -> 1x1 convolution): the built engine
// has no norm and no activation layer left, and computes what the network does.
TEST(BuilderBatchNormPointwise, BuiltDenseLayerHasNoNormLeft) {
  Network network;
  Tensor* a = network.addInput("a", DataType::kFloat32, {2, 8, 5, 5});
  Tensor* b = network.addInput("b", DataType::kFloat32, {2, 4, 5, 5});
  ConcatParams concatParams;
  concatParams.axis = 1;
  Tensor* features = network
                         .addConcat({network.addCast(a, DataType::kFloat16)->output(0),
                                     network.addCast(b, DataType::kFloat16)->output(0)},
                                    concatParams)
                         ->output(0);
  Tensor* normed = batchNorm(network, features, 12, 1, DataType::kFloat16);
  Tensor* relu = network.addActivation(normed, {ActivationType::kRelu})->output(0);
  ConvolutionParams p;
  p.outChannels = 16;
  p.kernel = {1, 1};
  Tensor* w = constant(network, {16, 12, 1, 1}, -0.3f, 0.05f, DataType::kFloat16);
  Tensor* conv = network.addConvolution(relu, w, nullptr, p)->output(0);
  network.markOutput(network.addCast(conv, DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 8 * 25, -1.5f, 0.29f, 11),
                                                  ramp(2 * 4 * 25, -0.7f, 0.13f, 11)};
  const std::vector<std::vector<float>> expected = evaluate(network, inputs);

  std::shared_ptr<Engine> engine = Builder::build(network, {});
  for (const EngineLayer& layer : engine->definition().layers) {
    EXPECT_FALSE(std::holds_alternative<NormalizationParams>(layer.params)) << layer.name;
    EXPECT_FALSE(std::holds_alternative<ActivationParams>(layer.params)) << layer.name;
  }
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{2, 8, 5, 5}, {2, 4, 5, 5}});
  std::vector<float> out(2 * 16 * 25);
  context->execute({inputs[0].data(), inputs[1].data()}, {out.data()});
  expectNear({out}, expected, 3e-2f);
}

}  // namespace
}  // namespace kiln

// fuseSqueezeExcitations: a squeeze-and-excitation block's global pool, fully connected layers
// and hidden activation become one SqueezeExcitation layer. Each test compares the network's
// outputs before and after (the CPU backend runs the fused layer as the same steps in float32).
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
  return rampConstant(network, dims, start, step, type);
}

Tensor* fullyConnected(Network& network, Tensor* x, int64_t outFeatures, DataType type,
                       FusedActivation activation = FusedActivation::kNone) {
  const int64_t inFeatures = x->dims().back();
  Tensor* w = constant(network, {outFeatures, inFeatures}, -0.4f, 0.07f, type);
  Tensor* b = constant(network, {outFeatures}, -0.2f, 0.05f, type);
  FullyConnectedParams p;
  p.activation = activation;
  return network.addLayer(p, {x, w, b})->output(0);
}

Tensor* globalPool(Network& network, Tensor* x) {
  PoolingParams p;
  p.type = PoolingType::kAverage;
  p.adaptive = true;
  p.outputSize = Dims(static_cast<size_t>(x->rank() - 2), 1);
  p.channelsLast = true;
  return network.addPooling(x, p)->output(0);
}

// x * sigmoid(squeeze(x)): the gate and the scaling that stay outside the fused layer.
Tensor* excite(Network& network, Tensor* x, Tensor* squeezed) {
  Tensor* gate = network.addActivation(squeezed, {ActivationType::kSigmoid})->output(0);
  return network.addElementwise(x, gate, ElementwiseOp::kProd)->output(0);
}

TEST(BuilderSqueezeExcitation, PoolLinearSiluLinearBecomesOneLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 5, 6, 8});
  Tensor* hidden = fullyConnected(network, globalPool(network, x), 4, DataType::kFloat32);
  Tensor* activated = network.addActivation(hidden, {ActivationType::kSilu})->output(0);
  Tensor* squeezed = fullyConnected(network, activated, 8, DataType::kFloat32);
  network.markOutput(excite(network, x, squeezed));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 5 * 6 * 8, -2.0f, 0.31f, 23)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);

  fuseSqueezeExcitations(network);

  EXPECT_EQ(countLayers(network, LayerKind::kSqueezeExcitation), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kPooling), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kActivation), 1u);  // the gate
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-5f);
}

// timm's squeeze: x.mean((1, 2)) without keepdim, then a linear with ReLU in its epilogue, in
// fp16 (the fused layer rounds once where the unfused rounds after each step).
TEST(BuilderSqueezeExcitation, HalfMeanWithoutKeepDimsAndFusedReluBecomesOneLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3, 4, 4, 16});
  Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
  ReduceParams mean;
  mean.op = ReduceOp::kAvg;
  mean.axes = {1, -2};
  Tensor* pooled = network.addReduce(half, mean)->output(0);
  Tensor* hidden = fullyConnected(network, pooled, 6, DataType::kFloat16, FusedActivation::kRelu);
  Tensor* squeezed = fullyConnected(network, hidden, 10, DataType::kFloat16);
  network.markOutput(network.addCast(squeezed, DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(3 * 4 * 4 * 16, -1.5f, 0.17f, 29)};
  const std::vector<std::vector<float>> before = evaluate(network, inputs);
  foldConstants(network);  // the fp16 weights, cast from fp32 constants

  fuseSqueezeExcitations(network);

  ASSERT_EQ(countLayers(network, LayerKind::kSqueezeExcitation), 1u);
  EXPECT_EQ(countLayers(network, LayerKind::kReduce), 0u);
  EXPECT_EQ(countLayers(network, LayerKind::kFullyConnected), 0u);
  EXPECT_EQ(network.output(0)->dims(), (Dims{3, 10}));
  network.validate();
  expectNear(evaluate(network, inputs), before, 1e-2f);
}

// A pooled tensor another layer also reads, a hidden tensor read twice, a mean that keeps a
// spatial dim, and more channels than the GPU's MLP holds stay as they are.
TEST(BuilderSqueezeExcitation, LeavesWhatIsNotASqueezeAlone) {
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 3, 8});
    Tensor* pooled = globalPool(network, x);
    Tensor* hidden = fullyConnected(network, pooled, 4, DataType::kFloat32);
    network.markOutput(fullyConnected(network, hidden, 8, DataType::kFloat32));
    network.markOutput(pooled);
    fuseSqueezeExcitations(network);
    EXPECT_EQ(countLayers(network, LayerKind::kSqueezeExcitation), 0u);
  }
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 3, 8});
    Tensor* hidden = fullyConnected(network, globalPool(network, x), 4, DataType::kFloat32,
                                    FusedActivation::kRelu);
    network.markOutput(fullyConnected(network, hidden, 8, DataType::kFloat32));
    network.markOutput(network.addActivation(hidden, {ActivationType::kTanh})->output(0));
    fuseSqueezeExcitations(network);
    EXPECT_EQ(countLayers(network, LayerKind::kSqueezeExcitation), 0u);
  }
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 3, 8});
    ReduceParams mean;
    mean.op = ReduceOp::kAvg;
    mean.axes = {1};
    mean.keepDims = true;
    Tensor* pooled = network.addReduce(x, mean)->output(0);
    Tensor* hidden = fullyConnected(network, pooled, 4, DataType::kFloat32);
    network.markOutput(fullyConnected(network, hidden, 8, DataType::kFloat32));
    fuseSqueezeExcitations(network);
    EXPECT_EQ(countLayers(network, LayerKind::kSqueezeExcitation), 0u);
  }
  {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {1, 1, 2, 12 * 1024});
    Tensor* hidden = fullyConnected(network, globalPool(network, x), 1, DataType::kFloat32);
    network.markOutput(fullyConnected(network, hidden, 2, DataType::kFloat32));
    fuseSqueezeExcitations(network);
    EXPECT_EQ(countLayers(network, LayerKind::kSqueezeExcitation), 0u);
  }
}

// An fp16 MBConv tail as the converters give it (NCHW convolutions, adaptive pooling, 1x1
// convolutions for the squeeze): the built engine squeezes in one layer, keeps no pooling or
// activation outside the gate's pointwise kernel, and computes what the network does.
TEST(BuilderSqueezeExcitation, BuiltMbConvTailSqueezesInOneLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 16, 7, 7});
  Tensor* half = network.addCast(x, DataType::kFloat16)->output(0);
  const auto conv = [&](Tensor* in, int64_t outChannels, int64_t kernel, int64_t groups) {
    ConvolutionParams p;
    p.outChannels = outChannels;
    p.kernel = {kernel, kernel};
    p.prePadding = p.postPadding = {kernel / 2, kernel / 2};
    p.groups = groups;
    const int64_t inChannels = in->dims()[1];
    Tensor* w = constant(network, {outChannels, inChannels / groups, kernel, kernel}, -0.3f, 0.04f,
                         DataType::kFloat16);
    Tensor* b = constant(network, {outChannels}, -0.1f, 0.03f, DataType::kFloat16);
    return network.addConvolution(in, w, b, p)->output(0);
  };
  Tensor* depthwise = conv(half, 16, 3, 16);
  Tensor* features = network.addActivation(depthwise, {ActivationType::kSilu})->output(0);
  PoolingParams pool;
  pool.type = PoolingType::kAverage;
  pool.adaptive = true;
  pool.outputSize = {1, 1};
  Tensor* pooled = network.addPooling(features, pool)->output(0);
  Tensor* reduced =
      network.addActivation(conv(pooled, 4, 1, 1), {ActivationType::kSilu})->output(0);
  Tensor* gate =
      network.addActivation(conv(reduced, 16, 1, 1), {ActivationType::kSigmoid})->output(0);
  Tensor* scaled = network.addElementwise(features, gate, ElementwiseOp::kProd)->output(0);
  network.markOutput(network.addCast(conv(scaled, 8, 1, 1), DataType::kFloat32)->output(0));
  const std::vector<std::vector<float>> inputs = {ramp(2 * 16 * 49, -1.2f, 0.11f, 31)};
  const std::vector<std::vector<float>> expected = evaluate(network, inputs);

  std::shared_ptr<Engine> engine = Builder::build(network, {});
  size_t squeezes = 0;
  for (const EngineLayer& layer : engine->definition().layers) {
    squeezes += std::holds_alternative<SqueezeExcitationParams>(layer.params) ? 1 : 0;
    EXPECT_FALSE(std::holds_alternative<PoolingParams>(layer.params)) << layer.name;
    EXPECT_FALSE(std::holds_alternative<ActivationParams>(layer.params)) << layer.name;
  }
  EXPECT_EQ(squeezes, 1u);
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{2, 16, 7, 7}});
  std::vector<float> out(2 * 8 * 49);
  context->execute({inputs[0].data()}, {out.data()});
  expectNear({out}, expected, 2e-2f);
}

}  // namespace
}  // namespace kiln

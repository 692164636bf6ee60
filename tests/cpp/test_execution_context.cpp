// ExecutionContext: shapes within and outside optimization profiles, buffers across runs, and
// several contexts of one engine.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/builder/builder.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"

#ifdef KILN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kiln {
namespace {

constexpr int64_t kChannels = 3;
constexpr int64_t kFeatures = 4;
constexpr int64_t kSize = 8;

std::vector<float> randomFloats(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(-1.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = distribution(generator);
  return values;
}

// x (N, 3, 8, 8) -> 3x3 convolution (padding 1) + bias -> relu: (N, 4, 8, 8).
struct ConvReluModel {
  std::vector<float> weight = randomFloats(kFeatures * kChannels * 9, 1);
  std::vector<float> bias = randomFloats(kFeatures, 2);

  std::shared_ptr<Engine> build(const std::vector<OptimizationProfile>& profiles) const {
    Network network;
    Tensor* x = network.addInput("x", DataType::kFloat32, {-1, kChannels, kSize, kSize});
    Tensor* w = network
                    .addConstant(Weights::fromValues(DataType::kFloat32,
                                                     {kFeatures, kChannels, 3, 3}, weight))
                    ->output(0);
    Tensor* b =
        network.addConstant(Weights::fromValues(DataType::kFloat32, {kFeatures}, bias))->output(0);
    ConvolutionParams conv;
    conv.outChannels = kFeatures;
    conv.kernel = {3, 3};
    conv.stride = {1, 1};
    conv.prePadding = {1, 1};
    conv.postPadding = {1, 1};
    conv.dilation = {1, 1};
    Tensor* y = network.addConvolution(x, w, b, conv)->output(0);
    Tensor* out = network.addActivation(y, {ActivationType::kRelu})->output(0);
    out->setName("y");
    network.markOutput(out);
    BuilderConfig config;
    config.profiles = profiles;
    return Builder::build(network, config);
  }

  std::vector<float> reference(const std::vector<float>& x, int64_t batch) const {
    std::vector<float> out;
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t k = 0; k < kFeatures; ++k) {
        for (int64_t h = 0; h < kSize; ++h) {
          for (int64_t w = 0; w < kSize; ++w) {
            double sum = bias[k];
            for (int64_t c = 0; c < kChannels; ++c) {
              for (int64_t i = 0; i < 3; ++i) {
                for (int64_t j = 0; j < 3; ++j) {
                  const int64_t ih = h + i - 1;
                  const int64_t iw = w + j - 1;
                  if (ih < 0 || iw < 0 || ih >= kSize || iw >= kSize) continue;
                  sum += double(x[((n * kChannels + c) * kSize + ih) * kSize + iw]) *
                         weight[((k * kChannels + c) * 3 + i) * 3 + j];
                }
              }
            }
            out.push_back(std::max(float(sum), 0.0f));
          }
        }
      }
    }
    return out;
  }
};

OptimizationProfile batchProfile(int64_t min, int64_t opt, int64_t max) {
  OptimizationProfile profile;
  profile.setRange("x", {{min, kChannels, kSize, kSize},
                         {opt, kChannels, kSize, kSize},
                         {max, kChannels, kSize, kSize}});
  return profile;
}

std::vector<float> run(ExecutionContext& context, const std::vector<float>& x, int64_t batch) {
  const std::vector<Dims> outputDims = context.setInputShapes({{batch, kChannels, kSize, kSize}});
  EXPECT_EQ(outputDims, (std::vector<Dims>{{batch, kFeatures, kSize, kSize}}));
  std::vector<float> out(static_cast<size_t>(volume(outputDims.at(0))));
  context.execute({x.data()}, {out.data()});
  return out;
}

void expectAllNear(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5f) << i;
}

std::string errorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

void expectContains(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

class ExecutionContextTest : public ::testing::Test {
 protected:
  ConvReluModel model;
  std::shared_ptr<Engine> engine = model.build({batchProfile(1, 4, 8)});
  std::vector<float> input = randomFloats(8 * kChannels * kSize * kSize, 3);
};

TEST_F(ExecutionContextTest, EveryBatchInTheProfileRunsAndMatches) {
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  for (int64_t batch = 1; batch <= 8; ++batch) {
    SCOPED_TRACE(concat("batch ", batch));
    expectAllNear(run(*context, input, batch), model.reference(input, batch));
    EXPECT_EQ(context->activeProfile(), 0);
  }
  // Smaller after larger: the buffers grown for 8 serve 2.
  expectAllNear(run(*context, input, 2), model.reference(input, 2));
}

TEST_F(ExecutionContextTest, BatchOutsideTheProfileIsRefusedNamingInputAndProfile) {
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  const Dims tooLarge = {9, kChannels, kSize, kSize};
  expectContains(errorOf([&] { context->setInputShapes({tooLarge}); }),
                 {"input 'x' has shape " + toString(tooLarge), "dim 0 = 9",
                  "outside the optimization profile range [1, 8]",
                  "profile 0: min " + toString(Dims{1, kChannels, kSize, kSize}) + ", max " +
                      toString(Dims{8, kChannels, kSize, kSize}),
                  "rebuild the engine with a larger max_shape"});
  expectContains(errorOf([&] {
                   context->setInputShapes({{0, kChannels, kSize, kSize}});
                 }),
                 {"input 'x'", "dim 0 = 0", "range [1, 8]", "smaller min_shape"});
  // The refused shapes leave no run behind.
  std::vector<float> out(16);
  expectContains(errorOf([&] { context->execute({input.data()}, {out.data()}); }),
                 {"setInputShapes"});
}

TEST_F(ExecutionContextTest, WrongRankCountOrStaticDimIsRefused) {
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  expectContains(errorOf([&] {
                   context->setInputShapes({{2, kChannels, kSize}});
                 }),
                 {"'x'", "rank 3", "rank 4"});
  expectContains(errorOf([&] { context->setInputShapes({}); }), {"1 input", "0 shape"});
  expectContains(
      errorOf([&] {
        context->setInputShapes({{2, kChannels, kSize, kSize}, {2, kChannels, kSize, kSize}});
      }),
      {"1 input", "2 shape"});
  expectContains(errorOf([&] {
                   context->setInputShapes({{2, 4, kSize, kSize}});
                 }),
                 {"'x'", "dim 1 is 4", "fixed 3"});
  context->setInputShapes({{2, kChannels, kSize, kSize}});
  std::vector<float> out(2 * kFeatures * kSize * kSize);
  expectContains(errorOf([&] { context->execute({}, {out.data()}); }), {"1 input", "0 input"});
  expectContains(errorOf([&] { context->execute({input.data()}, {}); }), {"1 output"});
}

TEST_F(ExecutionContextTest, InputTypesAreChecked) {
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->checkInputTypes({DataType::kFloat32});
  expectContains(
      errorOf([&] { context->checkInputTypes({DataType::kFloat16}); }),
      {"input 'x'", toString(DataType::kFloat16), "built for", toString(DataType::kFloat32)});
  expectContains(errorOf([&] { context->checkInputTypes({}); }), {"1 input", "0 input type"});
}

TEST_F(ExecutionContextTest, TwoContextsOfOneEngineGiveEqualResults) {
  std::unique_ptr<ExecutionContext> first = engine->createExecutionContext();
  std::unique_ptr<ExecutionContext> second = engine->createExecutionContext();
  const std::vector<float> a = run(*first, input, 5);
  const std::vector<float> b = run(*second, input, 3);
  const std::vector<float> c = run(*second, input, 5);
  const std::vector<float> d = run(*first, input, 3);
  EXPECT_EQ(a, c);
  EXPECT_EQ(b, d);
  // The first three samples do not depend on the batch they ran in.
  EXPECT_EQ(std::vector<float>(a.begin(), a.begin() + b.size()), b);
}

TEST(ExecutionContext, PicksTheFirstProfileHoldingTheShapes) {
  ConvReluModel model;
  std::shared_ptr<Engine> engine = model.build({batchProfile(1, 2, 4), batchProfile(3, 6, 8)});
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  const std::vector<float> input = randomFloats(8 * kChannels * kSize * kSize, 4);
  expectAllNear(run(*context, input, 3), model.reference(input, 3));
  EXPECT_EQ(context->activeProfile(), 0);
  expectAllNear(run(*context, input, 7), model.reference(input, 7));
  EXPECT_EQ(context->activeProfile(), 1);
  expectContains(errorOf([&] {
                   context->setInputShapes({{12, kChannels, kSize, kSize}});
                 }),
                 {"input 'x'", "dim 0 = 12", "every optimization profile",
                  "[1, 4] (profile 0:", "[3, 8] (profile 1:", "larger max_shape"});
  // Back inside the first profile after an error.
  expectAllNear(run(*context, input, 2), model.reference(input, 2));
  EXPECT_EQ(context->activeProfile(), 0);
}

TEST(ExecutionContext, OutputsThatAreInputsOrConstantsAreCopied) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3});
  Tensor* c =
      network.addConstant(Weights::fromValues(DataType::kFloat32, {2}, std::vector<float>{7, 8}))
          ->output(0);
  network.markOutput(network.addUnary(x, UnaryOp::kNeg)->output(0));
  network.markOutput(x);
  network.markOutput(c);
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  const std::vector<Dims> dims = context->setInputShapes({{3}});
  ASSERT_EQ(dims, (std::vector<Dims>{{3}, {3}, {2}}));
  const std::vector<float> in = {1, 2, 3};
  std::vector<float> negated(3);
  std::vector<float> copy(3);
  std::vector<float> weights(2);
  context->execute({in.data()}, {negated.data(), copy.data(), weights.data()});
  EXPECT_EQ(negated, (std::vector<float>{-1, -2, -3}));
  EXPECT_EQ(copy, in);
  EXPECT_EQ(weights, (std::vector<float>{7, 8}));
}

// A CUDA engine where Kiln has no CUDA, or the machine no GPU: no context, and a clear error.
TEST(ExecutionContext, ProfileTimesEveryLayerAndComputesWhatExecuteDoes) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {4, 16});
  Tensor* w =
      network.addConstant(Weights::fromValues(DataType::kFloat32, {8, 16}, randomFloats(128, 4)))
          ->output(0);
  Tensor* h = network.addFullyConnected(x, w, nullptr)->output(0);
  Tensor* s = network.addActivation(h, {ActivationType::kSigmoid})->output(0);
  Tensor* p = network.addSoftmax(s, {})->output(0);
  network.markOutput(p);
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{4, 16}});
  const std::vector<float> input = randomFloats(64, 5);
  std::vector<float> expected(32), profiled(32);
  context->execute({input.data()}, {expected.data()});

  const std::vector<LayerTiming> timings =
      context->profileLayers({input.data()}, {profiled.data()}, 3);

  const EngineDefinition& definition = engine->definition();
  ASSERT_EQ(timings.size(), definition.layers.size());
  size_t timed = 0;
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    if (std::holds_alternative<ConstantParams>(definition.layers[l].params)) {
      EXPECT_EQ(timings[l].milliseconds, 0.0) << definition.layers[l].name;
      EXPECT_EQ(engine->layerKernel(l), "none (weights)");
      continue;
    }
    EXPECT_GT(timings[l].milliseconds, 0.0) << definition.layers[l].name;
    EXPECT_EQ(timings[l].tactic, "");  // the CPU backend has one kernel a kind
    EXPECT_EQ(engine->layerPrecision(l), "float32");
    ++timed;
  }
  EXPECT_EQ(timed, 3u);
  EXPECT_EQ(profiled, expected);
  EXPECT_NE(errorOf([&] {
              context->profileLayers({input.data()}, {profiled.data()}, 0);
            }).find("at least one iteration"),
            std::string::npos);
}

TEST(ExecutionContext, CudaEngineWithoutAGpuIsRefused) {
#ifdef KILN_WITH_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    GTEST_SKIP() << "a GPU is present; tests/cpp/cuda covers CUDA engines";
  }
  const std::vector<std::string> expected = {"no CUDA device"};
#else
  const std::vector<std::string> expected = {"built for CUDA", "NVIDIA H100", "without CUDA"};
#endif
  ConvReluModel model;
  EngineDefinition definition = model.build({batchProfile(1, 1, 2)})->definition();
  definition.target.backend = Backend::kCuda;
  definition.target.deviceName = "NVIDIA H100";
  auto engine = std::make_shared<Engine>(definition);
  expectContains(errorOf([&] { engine->createExecutionContext(); }), expected);
}

TEST(ExecutionContext, EngineNotOwnedBySharedPtrCannotMakeContexts) {
  ConvReluModel model;
  const Engine engine(model.build({batchProfile(1, 1, 2)})->definition());
  expectContains(errorOf([&] { engine.createExecutionContext(); }), {"shared_ptr"});
}

TEST(ExecutionContext, LayerErrorsNameTheLayer) {
  Network network;
  Tensor* data = network.addInput("data", DataType::kFloat32, {4});
  Tensor* indices = network.addInput("indices", DataType::kInt64, {1});
  Layer* gather = network.addGather(data, indices, {0});
  gather->setName("lookup");
  network.markOutput(gather->output(0));
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{4}, {1}});
  const std::vector<float> in = {1, 2, 3, 4};
  const std::vector<int64_t> index = {4};
  float out = 0;
  expectContains(errorOf([&] {
                   context->execute({in.data(), index.data()}, {&out});
                 }),
                 {"layer 'lookup'", "Gather", "out of range"});
}

}  // namespace
}  // namespace kiln

// The pointwise fusion pass (core/builder/pointwise_fusion.cpp) alone on small networks, and the
// CPU backend's interpreter of the fused programs: fused networks compute the very bytes of the
// unfused ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/builder/builder.h"
#include "core/builder/passes.h"
#include "core/engine/cpu_backend.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"
#include "kernels/cpu/cast.h"
#include "tests/cpp/network_evaluator.h"

namespace kiln {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
Bytes bytesOf(const std::vector<T>& values) {
  Bytes bytes(values.size() * sizeof(T));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<float> ramp(size_t count, float start, float step) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = start + step * static_cast<float>(i % 13);
  return values;
}

Bytes halfBytes(const std::vector<float>& values) {
  std::vector<uint16_t> halves;
  for (float value : values) halves.push_back(cpu_kernels::floatToHalf(value));
  return bytesOf(halves);
}

std::vector<Bytes> evaluate(const Network& network, const std::vector<Bytes>& inputs) {
  return evaluateNetwork(network, inputs);
}

std::vector<std::string> layerKinds(const Network& network) {
  std::vector<std::string> kinds;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    kinds.push_back(toString(network.layer(i)->kind()));
  }
  return kinds;
}

const Layer* onlyPointwise(const Network& network) {
  const Layer* found = nullptr;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (network.layer(i)->kind() != LayerKind::kPointwise) continue;
    EXPECT_EQ(found, nullptr) << "more than one Pointwise layer";
    found = network.layer(i);
  }
  return found;
}

// Fuses a copy of the network and checks that it computes the same bytes as the original.
std::unique_ptr<Network> fuseAndCompare(const Network& network, const std::vector<Bytes>& inputs) {
  std::unique_ptr<Network> fused = network.clone();
  fusePointwiseChains(*fused);
  fused->validate();
  const std::vector<Bytes> expected = evaluate(network, inputs);
  const std::vector<Bytes> actual = evaluate(*fused, inputs);
  EXPECT_EQ(actual.size(), expected.size());
  for (size_t o = 0; o < expected.size() && o < actual.size(); ++o) {
    EXPECT_EQ(actual[o], expected[o]) << "output " << o << " differs from the unfused network's";
  }
  return fused;
}

Tensor* constant(Network& network, Dims dims, const std::vector<float>& values) {
  return network.addConstant(Weights::fromValues(DataType::kFloat32, std::move(dims), values))
      ->output(0);
}

TEST(BuilderPointwiseFusion, ChainWithBroadcastOperandsBecomesOneLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4});
  Tensor* y = network.addInput("y", DataType::kFloat32, {4});
  Tensor* scale = constant(network, {3, 1}, {0.5f, -2.0f, 3.0f});
  Tensor* d = network.addElementwise(x, y, ElementwiseOp::kSub)->output(0);
  Tensor* m = network.addElementwise(d, scale, ElementwiseOp::kProd)->output(0);
  Tensor* s = network.addElementwise(m, x, ElementwiseOp::kSum)->output(0);
  Tensor* r = network.addActivation(s, {ActivationType::kRelu})->output(0);
  r->setName("result");
  network.markOutput(r);
  EXPECT_EQ(layerKinds(network), (std::vector<std::string>{"Constant", "Elementwise", "Elementwise",
                                                           "Elementwise", "Activation"}));

  std::unique_ptr<Network> fused =
      fuseAndCompare(network, {bytesOf(ramp(24, -1.5f, 0.37f)), bytesOf(ramp(4, 0.3f, -0.4f))});
  EXPECT_EQ(layerKinds(*fused), (std::vector<std::string>{"Constant", "Pointwise"}));
  const Layer* pointwise = onlyPointwise(*fused);
  ASSERT_NE(pointwise, nullptr);
  EXPECT_EQ(describe(pointwise->params()), "Pointwise(sub,prod,sum,relu; 3 inputs)");
  EXPECT_EQ(pointwise->inputs(),
            (std::vector<Tensor*>{fused->input(0), fused->input(1), fused->layer(0)->output(0)}));
  EXPECT_EQ(fused->output(0)->name(), "result");
  EXPECT_EQ(fused->output(0)->dims(), (Dims{2, 3, 4}));
}

// Every register is rounded to its layer's type where the unfused layer stores it: a float16
// chain gives the unfused network's bytes, which a chain computed in float32 throughout would
// not (the check at the end shows that the rounding points matter on these inputs).
TEST(BuilderPointwiseFusion, HalfPrecisionRegistersRoundWhereTheLayersStored) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat16, {64});
  Tensor* third =
      network.addConstant(Weights::fromBytes(DataType::kFloat16, {1}, halfBytes({1.0f / 3.0f})))
          ->output(0);
  Tensor* a = network.addElementwise(x, third, ElementwiseOp::kProd)->output(0);
  Tensor* e = network.addUnary(a, UnaryOp::kExp)->output(0);
  Tensor* s = network.addElementwise(e, x, ElementwiseOp::kSub)->output(0);
  Tensor* g = network.addActivation(s, {ActivationType::kGeluErf})->output(0);
  network.markOutput(network.addCast(g, DataType::kFloat32)->output(0));

  std::vector<float> values = ramp(64, -2.0f, 0.29f);
  for (size_t i = 0; i < values.size(); ++i) values[i] += 0.001f * static_cast<float>(i);
  const Bytes input = halfBytes(values);
  std::unique_ptr<Network> fused = fuseAndCompare(network, {input});
  EXPECT_EQ(layerKinds(*fused), (std::vector<std::string>{"Constant", "Pointwise"}));
  EXPECT_EQ(describe(onlyPointwise(*fused)->params()),
            "Pointwise(prod,exp,sub,gelu_erf,cast_float32; 2 inputs)");

  const std::vector<float> result = [&] {
    const Bytes bytes = evaluate(*fused, {input})[0];
    std::vector<float> floats(bytes.size() / sizeof(float));
    std::memcpy(floats.data(), bytes.data(), bytes.size());
    return floats;
  }();
  size_t differences = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const float xi = cpu_kernels::halfToFloat(cpu_kernels::floatToHalf(values[i]));
    const float t = cpu_kernels::halfToFloat(cpu_kernels::floatToHalf(1.0f / 3.0f));
    const float unrounded = std::exp(xi * t) - xi;
    const float gelu = 0.5f * unrounded * (1.0f + std::erf(unrounded / std::sqrt(2.0f)));
    const float wide = cpu_kernels::halfToFloat(cpu_kernels::floatToHalf(gelu));
    differences += wide != result[i];
  }
  EXPECT_GT(differences, 0u) << "these inputs do not tell rounding points apart";
}

// An intermediate that a layer outside the group reads, and one that is a network output, stay
// materialized: the fused layer writes both as outputs, under their names.
TEST(BuilderPointwiseFusion, IntermediatesReadOutsideBecomeOutputs) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3, 5});
  Tensor* y = network.addInput("y", DataType::kFloat32, {3, 5});
  Tensor* sum = network.addElementwise(x, y, ElementwiseOp::kSum)->output(0);
  sum->setName("sum");
  Tensor* doubled = network.addElementwise(sum, sum, ElementwiseOp::kSum)->output(0);
  doubled->setName("doubled");
  Tensor* relu = network.addActivation(doubled, {ActivationType::kRelu})->output(0);
  relu->setName("relu");
  Tensor* softmax = network.addSoftmax(sum, {})->output(0);
  network.markOutput(relu);
  network.markOutput(softmax);
  network.markOutput(doubled);

  std::unique_ptr<Network> fused =
      fuseAndCompare(network, {bytesOf(ramp(15, -1.0f, 0.2f)), bytesOf(ramp(15, 0.7f, -0.3f))});
  EXPECT_EQ(layerKinds(*fused), (std::vector<std::string>{"Pointwise", "Softmax"}));
  const Layer* pointwise = onlyPointwise(*fused);
  ASSERT_NE(pointwise, nullptr);
  ASSERT_EQ(pointwise->outputs().size(), 3u);
  EXPECT_EQ(pointwise->output(0)->name(), "sum");
  EXPECT_EQ(pointwise->output(1)->name(), "doubled");
  EXPECT_EQ(pointwise->output(2)->name(), "relu");
  EXPECT_EQ(describe(pointwise->params()), "Pointwise(sum,sum,relu; 2 inputs, 3 outputs)");
  EXPECT_EQ(fused->output(2), pointwise->output(1));

  // The built engine runs the multi-output layer with its outputs in the planned arena.
  const std::vector<Bytes> inputs = {bytesOf(ramp(15, -1.0f, 0.2f)),
                                     bytesOf(ramp(15, 0.7f, -0.3f))};
  const std::vector<Bytes> expected = evaluate(network, inputs);
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  context->setInputShapes({{3, 5}, {3, 5}});
  std::vector<Bytes> outputs(3, Bytes(15 * sizeof(float)));
  context->execute({inputs[0].data(), inputs[1].data()},
                   {outputs[0].data(), outputs[1].data(), outputs[2].data()});
  EXPECT_EQ(outputs, expected);
}

// BERT's attention mask: an int64 mask cast to float, (1 - mask) * -10000, on dynamic dims,
// through the whole builder and a run at two shapes.
TEST(BuilderPointwiseFusion, BuiltEngineRunsAFusedMaskOnDynamicDims) {
  Network network;
  Tensor* mask = network.addInput("mask", DataType::kInt64, {-1, -1});
  Tensor* f = network.addCast(mask, DataType::kFloat32)->output(0);
  Tensor* inverted =
      network.addElementwise(constant(network, {}, {1.0f}), f, ElementwiseOp::kSub)->output(0);
  network.markOutput(
      network.addElementwise(inverted, constant(network, {1}, {-10000.0f}), ElementwiseOp::kProd)
          ->output(0));
  BuilderConfig config;
  OptimizationProfile profile;
  profile.setRange("mask", {{1, 1}, {2, 8}, {4, 16}});
  config.profiles = {profile};
  std::shared_ptr<Engine> engine = Builder::build(network, config);
  size_t pointwise = 0;
  for (const EngineLayer& layer : engine->definition().layers) {
    pointwise += kindOf(layer.params) == LayerKind::kPointwise;
    EXPECT_NE(kindOf(layer.params), LayerKind::kElementwise);
    EXPECT_NE(kindOf(layer.params), LayerKind::kCast);
  }
  EXPECT_EQ(pointwise, 1u);
  EXPECT_NE(engine->inspect().find("Pointwise(cast_float32,sub,prod; 3 inputs)"), std::string::npos)
      << engine->inspect();

  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  for (const Dims& shape : {Dims{2, 8}, Dims{3, 5}}) {
    std::vector<int64_t> values(static_cast<size_t>(volume(shape)));
    for (size_t i = 0; i < values.size(); ++i) values[i] = (i * 7 % 5) < 3 ? 1 : 0;
    context->setInputShapes({shape});
    std::vector<float> out(values.size(), 123.0f);
    context->execute({values.data()}, {out.data()});
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(out[i], values[i] == 1 ? -0.0f : -10000.0f) << "element " << i;
    }
  }
}

TEST(BuilderPointwiseFusion, LeavesWhatMustNotFuse) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {4});
  Tensor* z = network.addInput("z", DataType::kFloat32, {3, 4});
  Tensor* n = network.addInput("n", DataType::kInt32, {4});
  // exp feeds a softmax and a product that also reads the softmax: fusing exp and the product
  // would make the fused layer read its own output through the softmax.
  Tensor* e = network.addUnary(x, UnaryOp::kExp)->output(0);
  Tensor* s = network.addSoftmax(e, {})->output(0);
  network.markOutput(network.addElementwise(e, s, ElementwiseOp::kProd)->output(0));
  // A network output of dims [4] next to a product of dims [3, 4]: one kernel cannot write both.
  Tensor* small = network.addUnary(x, UnaryOp::kNeg)->output(0);
  network.markOutput(small);
  network.markOutput(network.addElementwise(small, z, ElementwiseOp::kProd)->output(0));
  // Integer arithmetic stays with the kernels that report a division by zero.
  Tensor* q = network.addElementwise(n, n, ElementwiseOp::kDiv)->output(0);
  network.markOutput(network.addElementwise(q, n, ElementwiseOp::kSum)->output(0));
  // With dynamic dims nothing proves that `d` (of x's dims) spans the product with w: w's
  // dynamic dim could be larger than x's 1 at run time.
  Tensor* dx = network.addInput("dx", DataType::kFloat32, {-1, 4});
  Tensor* dw = network.addInput("dw", DataType::kFloat32, {-1, 4});
  Tensor* d = network.addUnary(dx, UnaryOp::kAbs)->output(0);
  network.markOutput(d);
  network.markOutput(network.addElementwise(d, dw, ElementwiseOp::kSum)->output(0));
  // A single pointwise layer is left as it is.
  network.markOutput(network.addActivation(z, {ActivationType::kSigmoid})->output(0));

  std::unique_ptr<Network> fused = network.clone();
  fusePointwiseChains(*fused);
  EXPECT_EQ(layerKinds(*fused), layerKinds(network));
}

TEST(BuilderPointwiseFusion, ASmallerOutputFusesWhenTheOtherInputsCannotWidenIt) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3, 4});
  Tensor* row = network.addInput("row", DataType::kFloat32, {1, 4});
  Tensor* neg = network.addUnary(x, UnaryOp::kNeg)->output(0);
  network.markOutput(neg);  // [3, 4]: the row input broadcasts into it
  network.markOutput(network.addElementwise(neg, row, ElementwiseOp::kMax)->output(0));
  std::unique_ptr<Network> fused =
      fuseAndCompare(network, {bytesOf(ramp(12, -1.0f, 0.3f)), bytesOf(ramp(4, 0.1f, -0.2f))});
  EXPECT_EQ(layerKinds(*fused), (std::vector<std::string>{"Pointwise"}));
}

TEST(BuilderPointwiseFusion, FusedEngineSurvivesTheRoundTripThroughAPlan) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 6});
  Tensor* t = network.addActivation(x, {ActivationType::kTanh})->output(0);
  Tensor* c = network.addActivation(t, {ActivationType::kClip, -0.25, 0.5})->output(0);
  network.markOutput(network.addElementwise(c, x, ElementwiseOp::kGreater)->output(0));
  std::shared_ptr<Engine> engine = Builder::build(network, {});
  const std::vector<uint8_t> plan = engine->serialize();
  std::shared_ptr<Engine> loaded = Engine::deserialize(plan.data(), plan.size());
  EXPECT_EQ(loaded->inspect(), engine->inspect());
  EXPECT_NE(loaded->inspect().find("Pointwise(tanh,clip,greater; 1 input)"), std::string::npos)
      << loaded->inspect();
  const std::vector<float> input = ramp(12, -1.0f, 0.21f);
  std::vector<uint8_t> expected(12), actual(12);
  for (auto [e, out] : {std::pair{engine, &expected}, std::pair{loaded, &actual}}) {
    std::unique_ptr<ExecutionContext> context = e->createExecutionContext();
    context->setInputShapes({{2, 6}});
    context->execute({input.data()}, {out->data()});
  }
  EXPECT_EQ(actual, expected);
  for (size_t i = 0; i < input.size(); ++i) {
    const float clipped = std::min(std::max(std::tanh(input[i]), -0.25f), 0.5f);
    EXPECT_EQ(actual[i], clipped > input[i] ? 1 : 0) << "element " << i;
  }
}

}  // namespace
}  // namespace kiln

// The activation memory plan: lifetimes, sharing, sizes over profiles, and the invariant that
// tensors alive at the same time never share bytes.
#include <gtest/gtest.h>

#include <memory>

#include "core/builder/builder.h"
#include "core/engine/memory_plan.h"
#include "core/ir/network.h"

namespace kiln {
namespace {

std::shared_ptr<Engine> buildEngine(const Network& network,
                                    std::vector<OptimizationProfile> profiles = {}) {
  BuilderConfig config;
  config.profiles = std::move(profiles);
  return Builder::build(network, config);
}

// A layer of its input's dims that no builder pass fuses with its neighbours (pointwise layers
// would become one fused layer, and the plans below would have fewer tensors to place).
Tensor* softmax(Network& network, Tensor* x, int64_t axis = -1) {
  return network.addSoftmax(x, {axis})->output(0);
}

// For every pair of arena tensors whose lifetimes overlap, their byte ranges do not.
void expectNoLiveOverlap(const EngineDefinition& definition, const MemoryPlan& plan) {
  const size_t n = definition.tensors.size();
  std::vector<int64_t> first(n, -1), last(n, -1);
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    for (int32_t t : definition.layers[l].outputs) first[t] = last[t] = static_cast<int64_t>(l);
    for (int32_t t : definition.layers[l].inputs) {
      if (t >= 0) last[t] = std::max(last[t], static_cast<int64_t>(l));
    }
  }
  for (size_t a = 0; a < n; ++a) {
    for (size_t b = a + 1; b < n; ++b) {
      if (plan.offsets[a] < 0 || plan.offsets[b] < 0) continue;
      const bool liveTogether = first[a] <= last[b] && first[b] <= last[a];
      const bool bytesOverlap = plan.offsets[a] < plan.offsets[b] + plan.bytes[b] &&
                                plan.offsets[b] < plan.offsets[a] + plan.bytes[a];
      EXPECT_FALSE(liveTogether && bytesOverlap)
          << definition.tensors[a].name << " and " << definition.tensors[b].name;
    }
  }
}

Tensor* reshape(Network& network, Tensor* x, Dims dims) {
  ShuffleParams p;
  p.hasReshape = true;
  p.reshapeDims = std::move(dims);
  return network.addShuffle(x, p)->output(0);
}

TEST(MemoryPlan, ReshapesAliasTheirInputWhichLivesUntilTheLastAliasIsRead) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {10, 100});
  Tensor* a = softmax(network, x);
  Tensor* viewOfA = reshape(network, reshape(network, a, {1000}), {100, 10});
  Tensor* b = softmax(network, a);
  Tensor* c = softmax(network, b);
  network.markOutput(
      network.addElementwise(reshape(network, c, {100, 10}), viewOfA, ElementwiseOp::kSum)
          ->output(0));
  network.markOutput(reshape(network, x, {1000}));
  auto engine = buildEngine(network);
  const EngineDefinition& definition = engine->definition();
  const MemoryPlan plan = planMemory(definition, largestTensorBytes(definition));

  auto tensorOf = [&](const std::string& name) {
    for (size_t t = 0; t < definition.tensors.size(); ++t) {
      if (definition.tensors[t].name == name) return static_cast<int32_t>(t);
    }
    ADD_FAILURE() << "no tensor " << name;
    return int32_t{0};
  };
  const int32_t aIndex = tensorOf(a->name());
  EXPECT_EQ(plan.aliasOf[tensorOf(viewOfA->name())], aIndex);  // through a chain of two
  EXPECT_EQ(plan.offsets[tensorOf(viewOfA->name())], MemoryPlan::kNotInArena);
  EXPECT_EQ(plan.aliasOf[aIndex], MemoryPlan::kNoAlias);
  // The reshape that is an engine output is written to the caller's buffer, not aliased.
  EXPECT_EQ(plan.aliasOf[definition.outputs[1]], MemoryPlan::kNoAlias);
  // a is read through its alias by the last layer, so b and c, alive meanwhile, get other bytes.
  const int64_t aOffset = plan.offsets[aIndex];
  for (const std::string& name : {b->name(), c->name()}) {
    const int32_t t = tensorOf(name);
    EXPECT_TRUE(plan.offsets[t] + plan.bytes[t] <= aOffset ||
                aOffset + plan.bytes[aIndex] <= plan.offsets[t])
        << name << " shares bytes with a, which its alias still needs";
  }
}

TEST(MemoryPlan, ChainReusesMemoryOfDeadTensors) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1000});
  Tensor* y = x;
  for (int i = 0; i < 6; ++i) y = softmax(network, y);
  network.markOutput(y);
  auto engine = buildEngine(network);
  const EngineDefinition& definition = engine->definition();
  MemoryPlan plan = planMemory(definition, largestTensorBytes(definition));

  // Five intermediates of 4000 bytes (4096 aligned); a chain needs two buffers at a time.
  EXPECT_EQ(plan.naiveBytes, 5 * 4096);
  EXPECT_EQ(plan.arenaBytes, 2 * 4096);
  EXPECT_EQ(plan.offsets[definition.inputs[0]], MemoryPlan::kNotInArena);
  EXPECT_EQ(plan.offsets[definition.outputs[0]], MemoryPlan::kNotInArena);
  expectNoLiveOverlap(definition, plan);
}

TEST(MemoryPlan, BranchesKeepLiveTensorsApart) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {4, 64});
  Tensor* a = softmax(network, x);
  Tensor* b = softmax(network, a, 0);
  Tensor* c = softmax(network, a, 1);
  Tensor* d = network.addElementwise(b, c, ElementwiseOp::kSum)->output(0);
  Tensor* e = softmax(network, d);
  Tensor* f = network.addElementwise(e, a, ElementwiseOp::kProd)->output(0);
  network.markOutput(f);
  auto engine = buildEngine(network);
  const EngineDefinition& definition = engine->definition();
  MemoryPlan plan = planMemory(definition, largestTensorBytes(definition));

  expectNoLiveOverlap(definition, plan);
  EXPECT_LT(plan.arenaBytes, plan.naiveBytes);
  // `a` lives until the last layer, alongside every other intermediate.
  EXPECT_GE(plan.arenaBytes, 2 * 1024);
}

TEST(MemoryPlan, SizesAreTheLargestOverEveryProfile) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat16, {-1, 8});
  network.markOutput(softmax(network, softmax(network, x)));
  OptimizationProfile small, large;
  small.setRange("x", {{1, 8}, {2, 8}, {4, 8}});
  large.setRange("x", {{5, 8}, {16, 8}, {32, 8}});
  auto engine = buildEngine(network, {small, large});
  const EngineDefinition& definition = engine->definition();
  std::vector<int64_t> bytes = largestTensorBytes(definition);
  for (const EngineLayer& layer : definition.layers) {
    for (int32_t t : layer.outputs) EXPECT_EQ(bytes[t], 32 * 8 * 2);
  }
  MemoryPlan plan = planMemory(definition, bytes);
  EXPECT_EQ(plan.arenaBytes, 512);
}

TEST(MemoryPlan, RejectsMismatchedSizes) {
  Network network;
  network.markOutput(softmax(network, network.addInput("x", DataType::kFloat32, {4})));
  auto engine = buildEngine(network);
  EXPECT_THROW(planMemory(engine->definition(), {}), Error);
}

}  // namespace
}  // namespace kiln

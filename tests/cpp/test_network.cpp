// The Network: building with inference at each add, validation errors, cloning and the graph
// surgery builder passes use; and the IR's basic types and layer descriptions.
#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/ir/network.h"

namespace kiln {
namespace {

Weights floatWeights(Dims dims) {
  const int64_t count = volume(dims);
  std::vector<float> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) values[i] = 0.5f * static_cast<float>(i);
  return Weights::fromValues(DataType::kFloat32, std::move(dims), values);
}

// The message of the Error `action` throws; fails the test when none is thrown.
std::string errorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

void expectContains(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

ConvolutionParams conv3x3(int64_t outChannels) {
  ConvolutionParams p;
  p.outChannels = outChannels;
  p.kernel = {3, 3};
  p.stride = {1, 1};
  p.prePadding = {1, 1};
  p.postPadding = {1, 1};
  p.dilation = {1, 1};
  return p;
}

// x (-1, 3, 8, 8) -> conv 3x3 (4) -> relu -> global average pool -> reshape (N, 4) -> fc (2).
struct SmallNet {
  Network network;
  Tensor* x = nullptr;
  Layer* conv = nullptr;
  Layer* relu = nullptr;
  Layer* pool = nullptr;
  Layer* flatten = nullptr;
  Layer* fc = nullptr;

  SmallNet() {
    x = network.addInput("x", DataType::kFloat32, {-1, 3, 8, 8});
    Tensor* w = network.addConstant(floatWeights({4, 3, 3, 3}))->output(0);
    Tensor* b = network.addConstant(floatWeights({4}))->output(0);
    conv = network.addConvolution(x, w, b, conv3x3(4));
    relu = network.addActivation(conv->output(0), {ActivationType::kRelu});
    PoolingParams global;
    global.type = PoolingType::kAverage;
    global.adaptive = true;
    global.outputSize = {1, 1};
    pool = network.addPooling(relu->output(0), global);
    ShuffleParams reshape;
    reshape.hasReshape = true;
    reshape.reshapeDims = {0, -1};
    flatten = network.addShuffle(pool->output(0), reshape);
    Tensor* fcWeight = network.addConstant(floatWeights({2, 4}))->output(0);
    fc = network.addFullyConnected(flatten->output(0), fcWeight, nullptr);
    network.markOutput(fc->output(0));
  }
};

// ---- building ---------------------------------------------------------------------------------

TEST(Network, AddInfersEveryOutputAtOnce) {
  SmallNet net;
  EXPECT_EQ(net.conv->output(0)->dims(), (Dims{-1, 4, 8, 8}));
  EXPECT_EQ(net.relu->output(0)->dims(), (Dims{-1, 4, 8, 8}));
  EXPECT_EQ(net.pool->output(0)->dims(), (Dims{-1, 4, 1, 1}));
  EXPECT_EQ(net.flatten->output(0)->dims(), (Dims{-1, 4}));
  EXPECT_EQ(net.fc->output(0)->dims(), (Dims{-1, 2}));
  EXPECT_EQ(net.fc->output(0)->dtype(), DataType::kFloat32);
  EXPECT_EQ(net.network.numInputs(), 1u);
  EXPECT_EQ(net.network.numOutputs(), 1u);
  EXPECT_EQ(net.network.numLayers(), 8u);
  EXPECT_EQ(net.network.output(0), net.fc->output(0));
  EXPECT_TRUE(net.x->isNetworkInput());
  EXPECT_EQ(net.x->rank(), 4);
  EXPECT_EQ(net.relu->output(0)->producer(), net.relu);
  EXPECT_EQ(net.conv->kind(), LayerKind::kConvolution);
  EXPECT_EQ(net.conv->paramsAs<ConvolutionParams>().outChannels, 4);
  EXPECT_EQ(net.conv->inputs().size(), 3u);
  EXPECT_EQ(net.fc->input(2), nullptr);  // the absent bias
  net.network.validate();
}

TEST(Network, LayerAndTensorNamesAreGeneratedUnique) {
  SmallNet net;
  std::set<std::string> layerNames;
  std::set<std::string> tensorNames = {net.x->name()};
  for (size_t i = 0; i < net.network.numLayers(); ++i) {
    const Layer* layer = net.network.layer(i);
    EXPECT_FALSE(layer->name().empty());
    layerNames.insert(layer->name());
    for (const Tensor* output : layer->outputs()) tensorNames.insert(output->name());
  }
  EXPECT_EQ(layerNames.size(), net.network.numLayers());
  EXPECT_EQ(tensorNames.size(), net.network.numLayers() + 1);
  EXPECT_NE(net.conv->name().find("Convolution"), std::string::npos) << net.conv->name();
}

TEST(Network, LayersStayInTopologicalOrder) {
  SmallNet net;
  std::set<const Layer*> seen;
  for (size_t i = 0; i < net.network.numLayers(); ++i) {
    const Layer* layer = net.network.layer(i);
    for (const Tensor* input : layer->inputs()) {
      if (input != nullptr && input->producer() != nullptr) {
        EXPECT_EQ(seen.count(input->producer()), 1u) << layer->name();
      }
    }
    seen.insert(layer);
  }
}

TEST(Network, ConsumersListEachReaderOnce) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {4});
  Layer* square = network.addElementwise(x, x, ElementwiseOp::kProd);
  Layer* negate = network.addUnary(x, UnaryOp::kNeg);
  EXPECT_EQ(network.consumers(x), (std::vector<Layer*>{square, negate}));
  EXPECT_TRUE(network.consumers(negate->output(0)).empty());
}

TEST(Network, NormalizationInputsFollowTheKind) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3, 4});
  Tensor* c = network.addConstant(floatWeights({3}))->output(0);
  Tensor* last = network.addConstant(floatWeights({4}))->output(0);
  Layer* batch = network.addNormalization(x, c, c, c, c, {NormalizationType::kBatch, 1e-5, 1});
  EXPECT_EQ(batch->inputs().size(), 5u);
  Layer* layer = network.addNormalization(x, last, nullptr, nullptr, nullptr,
                                          {NormalizationType::kLayer, 1e-5, -1});
  EXPECT_EQ(layer->inputs().size(), 3u);
  EXPECT_EQ(layer->output(0)->dims(), (Dims{2, 3, 4}));
}

// ---- errors at add time -----------------------------------------------------------------------

TEST(Network, MismatchedRanksAreReportedAtTheLayer) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 3, 8});
  Tensor* w = network.addConstant(floatWeights({4, 3, 3, 3}))->output(0);
  expectContains(errorOf([&] { network.addConvolution(x, w, nullptr, conv3x3(4)); }),
                 {"layer 'Convolution_", "(Convolution)", "mismatched ranks", "rank 3", "rank 4"});
  Tensor* a = network.addInput("a", DataType::kFloat32, {2, 3});
  Tensor* b = network.addInput("b", DataType::kFloat32, {2, 3, 1});
  expectContains(errorOf([&] {
                   network.addConcat({a, b}, {0});
                 }),
                 {"(Concat)", "mismatched ranks"});
  // A failed add leaves nothing behind.
  EXPECT_EQ(network.numLayers(), 1u);
}

TEST(Network, BadAxesAreReportedWithAxisAndRank) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 5});
  expectContains(errorOf([&] {
                   network.addSoftmax(x, {5, false});
                 }),
                 {"(Softmax)", "softmax axis 5", "rank 2"});
  expectContains(errorOf([&] {
                   network.addReduce(x, {ReduceOp::kSum, {-3}, false});
                 }),
                 {"(Reduce)", "reduce axis -3", "rank 2"});
  expectContains(errorOf([&] { network.addConcat({x, x}, {2}); }), {"concat axis 2", "rank 2"});
}

TEST(Network, WrongChannelCountIsReported) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {1, 5, 8, 8});
  Tensor* w = network.addConstant(floatWeights({4, 3, 3, 3}))->output(0);
  expectContains(errorOf([&] { network.addConvolution(x, w, nullptr, conv3x3(4)); }),
                 {"(Convolution)", "channel mismatch", "5 channels", "expects 3"});
  Tensor* c = network.addConstant(floatWeights({4}))->output(0);
  expectContains(errorOf([&] {
                   network.addNormalization(x, c, c, c, c, {NormalizationType::kBatch, 1e-5, 1});
                 }),
                 {"(Normalization)", "channel mismatch"});
}

TEST(Network, DtypeMismatchIsReported) {
  Network network;
  Tensor* a = network.addInput("a", DataType::kFloat32, {2});
  Tensor* b = network.addInput("b", DataType::kInt32, {2});
  expectContains(errorOf([&] { network.addElementwise(a, b, ElementwiseOp::kSum); }),
                 {"(Elementwise)", "dtype mismatch", "int32", "float32"});
}

TEST(Network, InputsAreChecked) {
  Network network;
  network.addInput("x", DataType::kFloat32, {2, -1});
  expectContains(errorOf([&] { network.addInput("x", DataType::kFloat32, {2}); }),
                 {"duplicate name", "'x'"});
  expectContains(errorOf([&] {
                   network.addInput("y", DataType::kFloat32, {2, -2});
                 }),
                 {"'y'", "[2, -2]", "-1"});
  expectContains(errorOf([&] { network.addInput("", DataType::kFloat32, {2}); }), {"name"});
}

TEST(Network, TensorsOfAnotherNetworkAreRefused) {
  Network network;
  Network other;
  Tensor* foreign = other.addInput("x", DataType::kFloat32, {2});
  expectContains(errorOf([&] { network.addUnary(foreign, UnaryOp::kExp); }),
                 {"'x'", "not a tensor of this network"});
  expectContains(errorOf([&] { network.markOutput(foreign); }), {"not a tensor of this network"});
}

TEST(Network, MarkingAnOutputTwiceIsRefused) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2});
  Tensor* y = network.addUnary(x, UnaryOp::kExp)->output(0);
  network.markOutput(y);
  expectContains(errorOf([&] { network.markOutput(y); }), {"already marked"});
}

// ---- validate ---------------------------------------------------------------------------------

TEST(Network, ValidateRequiresAnOutput) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2});
  network.addUnary(x, UnaryOp::kExp);
  expectContains(errorOf([&] { network.validate(); }), {"no outputs", "markOutput"});
}

TEST(Network, ValidateRequiresUniqueNames) {
  SmallNet net;
  net.relu->setName("block");
  net.pool->setName("block");
  expectContains(errorOf([&] { net.network.validate(); }), {"duplicate name", "layers", "'block'"});
  net.pool->setName("pool");
  net.network.validate();
  net.relu->output(0)->setName("x");
  expectContains(errorOf([&] { net.network.validate(); }), {"duplicate name", "tensors", "'x'"});
}

TEST(Network, ValidateAcceptsAnInputMarkedAsOutput) {
  Network network;
  network.markOutput(network.addInput("x", DataType::kFloat32, {2}));
  network.validate();
}

// ---- clone ------------------------------------------------------------------------------------

TEST(Network, CloneIsDeepAndSharesWeights) {
  SmallNet net;
  std::unique_ptr<Network> copy = net.network.clone();
  ASSERT_EQ(copy->numLayers(), net.network.numLayers());
  ASSERT_EQ(copy->numInputs(), 1u);
  ASSERT_EQ(copy->numOutputs(), 1u);
  EXPECT_NE(copy->input(0), net.x);
  EXPECT_EQ(copy->input(0)->name(), "x");
  EXPECT_EQ(copy->input(0)->dims(), net.x->dims());
  for (size_t i = 0; i < copy->numLayers(); ++i) {
    const Layer* original = net.network.layer(i);
    const Layer* cloned = copy->layer(i);
    EXPECT_NE(original, cloned);
    EXPECT_EQ(cloned->name(), original->name());
    EXPECT_EQ(cloned->kind(), original->kind());
    EXPECT_EQ(describe(cloned->params()), describe(original->params()));
    ASSERT_EQ(cloned->inputs().size(), original->inputs().size());
    for (size_t j = 0; j < cloned->inputs().size(); ++j) {
      if (original->input(j) == nullptr) {
        EXPECT_EQ(cloned->input(j), nullptr);
        continue;
      }
      EXPECT_NE(cloned->input(j), original->input(j));
      EXPECT_EQ(cloned->input(j)->name(), original->input(j)->name());
    }
    EXPECT_EQ(cloned->output(0)->producer(), cloned);
    EXPECT_EQ(cloned->output(0)->dims(), original->output(0)->dims());
    if (original->kind() == LayerKind::kConstant) {
      EXPECT_EQ(cloned->paramsAs<ConstantParams>().weights.bytes,
                original->paramsAs<ConstantParams>().weights.bytes);
    }
  }
  EXPECT_EQ(copy->output(0)->producer(), copy->layer(copy->numLayers() - 1));
  copy->validate();

  // Changing the copy leaves the original as it was.
  copy->layer(0)->setName("renamed");
  copy->unmarkOutput(copy->output(0));
  EXPECT_EQ(net.network.numOutputs(), 1u);
  EXPECT_NE(net.network.layer(0)->name(), "renamed");
  net.network.validate();
  // New layers in the copy get names that do not clash with the cloned ones.
  Layer* added = copy->addActivation(copy->input(0), {ActivationType::kRelu});
  copy->markOutput(added->output(0));
  copy->validate();
}

// ---- graph surgery ----------------------------------------------------------------------------

TEST(Network, ReplaceAllUsesWithRewiresLayersAndOutputs) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3});
  Layer* relu = network.addActivation(x, {ActivationType::kRelu});
  Layer* negate = network.addUnary(relu->output(0), UnaryOp::kNeg);
  network.markOutput(relu->output(0));
  network.markOutput(negate->output(0));
  Layer* sigmoid = network.addActivation(x, {ActivationType::kSigmoid});

  network.replaceAllUsesWith(relu->output(0), sigmoid->output(0));
  EXPECT_EQ(negate->input(0), sigmoid->output(0));
  EXPECT_EQ(network.output(0), sigmoid->output(0));
  EXPECT_TRUE(network.consumers(relu->output(0)).empty());
  // The sigmoid now feeds the negation, so it moved before it.
  std::vector<const Layer*> order;
  for (size_t i = 0; i < network.numLayers(); ++i) order.push_back(network.layer(i));
  EXPECT_EQ(order, (std::vector<const Layer*>{relu, sigmoid, negate}));

  network.removeLayer(relu);
  EXPECT_EQ(network.numLayers(), 2u);
  network.validate();
}

TEST(Network, ReplaceAllUsesWithRefusesCyclesAndOtherTypes) {
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {2, 3});
  Tensor* y = network.addActivation(x, {ActivationType::kRelu})->output(0);
  Tensor* z = network.addUnary(y, UnaryOp::kNeg)->output(0);
  network.markOutput(z);
  expectContains(errorOf([&] { network.replaceAllUsesWith(y, z); }), {"cycle"});
  // The refused replacement left the graph as it was.
  EXPECT_EQ(z->producer()->input(0), y);
  EXPECT_EQ(network.output(0), z);
  network.validate();

  Tensor* ints = network.addCast(x, DataType::kInt32)->output(0);
  expectContains(errorOf([&] { network.replaceAllUsesWith(y, ints); }),
                 {"cannot stand in", "int32", "float32"});
  Tensor* other = network.addInput("w", DataType::kFloat32, {2, 4});
  expectContains(errorOf([&] { network.replaceAllUsesWith(y, other); }), {"[2, 4]", "[2, 3]"});
}

TEST(Network, FoldingStyleRewriteKeepsTheNetworkValid) {
  // As constant folding does: add a constant, move the uses over, remove the old layer.
  Network network;
  Tensor* x = network.addInput("x", DataType::kFloat32, {3});
  Tensor* a = network.addConstant(floatWeights({3}))->output(0);
  Layer* negate = network.addUnary(a, UnaryOp::kNeg);
  Layer* sum = network.addElementwise(x, negate->output(0), ElementwiseOp::kSum);
  network.markOutput(sum->output(0));
  Layer* folded = network.addConstant(floatWeights({3}));
  network.replaceAllUsesWith(negate->output(0), folded->output(0));
  network.removeLayer(negate);
  network.removeLayer(a->producer());
  EXPECT_EQ(network.numLayers(), 2u);
  EXPECT_EQ(network.layer(0), folded);
  EXPECT_EQ(sum->input(1), folded->output(0));
  network.validate();
}

TEST(Network, RemoveLayerRefusesUsedOutputs) {
  SmallNet net;
  expectContains(errorOf([&] { net.network.removeLayer(net.relu); }),
                 {"cannot remove", net.relu->name(), "read by", net.pool->name()});
  expectContains(errorOf([&] { net.network.removeLayer(net.fc); }),
                 {"cannot remove", "network output", "unmark"});
  net.network.unmarkOutput(net.fc->output(0));
  net.network.removeLayer(net.fc);
  EXPECT_EQ(net.network.numLayers(), 7u);
  expectContains(errorOf([&] { net.network.unmarkOutput(net.x); }), {"not a network output"});
  expectContains(errorOf([&] { net.network.validate(); }), {"no outputs"});
  net.network.markOutput(net.flatten->output(0));
  net.network.validate();
}

// ---- types and layer descriptions -------------------------------------------------------------

TEST(NetworkTypes, ElementSizesAndKinds) {
  EXPECT_EQ(elementSize(DataType::kFloat32), 4u);
  EXPECT_EQ(elementSize(DataType::kFloat16), 2u);
  EXPECT_EQ(elementSize(DataType::kBFloat16), 2u);
  EXPECT_EQ(elementSize(DataType::kInt8), 1u);
  EXPECT_EQ(elementSize(DataType::kInt64), 8u);
  EXPECT_EQ(elementSize(DataType::kBool), 1u);
  EXPECT_TRUE(isFloatingPoint(DataType::kBFloat16));
  EXPECT_FALSE(isFloatingPoint(DataType::kInt32));
  EXPECT_TRUE(isIntegral(DataType::kBool));
  EXPECT_TRUE(isIntegral(DataType::kUInt8));
  EXPECT_FALSE(isIntegral(DataType::kFloat16));
  EXPECT_STREQ(toString(DataType::kBFloat16), "bfloat16");
}

TEST(NetworkTypes, DimsHelpers) {
  EXPECT_TRUE(isStatic({2, 3}));
  EXPECT_FALSE(isStatic({-1, 3}));
  EXPECT_EQ(volume({2, 3, 4}), 24);
  EXPECT_EQ(volume({}), 1);
  EXPECT_EQ(volume({5, 0}), 0);
  EXPECT_EQ(toString(Dims{-1, 3}), "[-1, 3]");
  EXPECT_EQ(toString(Dims{}), "[]");
  expectContains(errorOf([] { volume({-1, 3}); }), {"[-1, 3]", "run time"});
}

TEST(NetworkTypes, WeightsCheckTheirSize) {
  const Weights weights = Weights::fromValues(DataType::kInt64, {2}, std::vector<int64_t>{7, 9});
  EXPECT_EQ(weights.count(), 2);
  EXPECT_EQ(static_cast<const int64_t*>(weights.data())[1], 9);
  expectContains(
      errorOf([] { Weights::fromValues(DataType::kFloat32, {3}, std::vector<float>{1}); }),
      {"need 12 bytes", "4 were given"});
  expectContains(errorOf([] { Weights::fromBytes(DataType::kFloat32, {-1}, {}); }),
                 {"static dims"});
}

TEST(NetworkLayers, DescribeListsEveryField) {
  EXPECT_EQ(describe(conv3x3(8)),
            "Convolution(outChannels=8, kernel=[3, 3], stride=[1, 1], prePadding=[1, 1], "
            "postPadding=[1, 1], dilation=[1, 1], groups=1, activation=none, "
            "inputActivation=none, channelsLast=false)");
  EXPECT_EQ(describe(ActivationParams{ActivationType::kLeakyRelu, 0.5, 0}),
            "Activation(type=leaky_relu, alpha=0.5, beta=0)");
  EXPECT_EQ(describe(FullyConnectedParams{FusedActivation::kGeluErf}),
            "FullyConnected(activation=gelu_erf)");
  EXPECT_EQ(describe(CastParams{DataType::kFloat16}), "Cast(toType=float16)");
  EXPECT_EQ(describe(ConstantParams{floatWeights({2, 2})}), "Constant(weights=float32[2, 2])");
  EXPECT_EQ(describe(ReduceParams{ReduceOp::kAvg, {1}, true}),
            "Reduce(op=avg, axes=[1], keepDims=true)");
}

TEST(NetworkLayers, EveryKindHasAName) {
  std::set<std::string> names;
  for (int kind = 0; kind < static_cast<int>(std::variant_size_v<LayerParams>); ++kind) {
    names.insert(toString(static_cast<LayerKind>(kind)));
  }
  EXPECT_EQ(names.size(), std::variant_size_v<LayerParams>);
  EXPECT_EQ(names.count("UnknownLayer"), 0u);
  EXPECT_EQ(kindOf(LayerParams{GatherParams{}}), LayerKind::kGather);
  EXPECT_EQ(kindOf(LayerParams{CastParams{}}), LayerKind::kCast);
}

}  // namespace
}  // namespace kiln

// The plan format: round trips of every layer kind and profile, and refusal of truncated,
// corrupt, foreign and newer plans with a message that says which.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <initializer_list>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "core/engine/engine.h"
#include "core/engine/plan.h"

namespace kiln {
namespace {

std::string planErrorOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const PlanError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a PlanError";
  return "";
}

void expectContains(const std::string& text, std::initializer_list<const char*> parts) {
  for (const char* part : parts) {
    EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
  }
}

// "name=value" for every field of a params struct, weights with all their bytes, doubles by
// their bits: two params are equal exactly when these lists are.
class FieldRecorder {
 public:
  explicit FieldRecorder(std::vector<std::string>& fields) : fields_(fields) {}
  template <typename T>
  void operator()(const char* name, const T& value) const {
    std::ostringstream out;
    out << name << "=";
    write(out, value);
    fields_.push_back(out.str());
  }

 private:
  static void write(std::ostringstream& out, const Dims& dims) { out << toString(dims); }
  static void write(std::ostringstream& out, bool value) { out << value; }
  static void write(std::ostringstream& out, int64_t value) { out << value; }
  static void write(std::ostringstream& out, double value) {
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(bits));
    out << bits;
  }
  static void write(std::ostringstream& out, const std::vector<double>& values) {
    for (double value : values) write(out, value), out << ",";
  }
  static void write(std::ostringstream& out, const Weights& weights) {
    out << toString(weights.dtype) << toString(weights.dims);
    if (!weights.bytes) {
      out << " no bytes";
      return;
    }
    for (uint8_t byte : *weights.bytes) out << " " << int(byte);
  }
  static void write(std::ostringstream& out, const std::string& value) { out << value; }
  template <typename Enum, typename = std::enable_if_t<std::is_enum_v<Enum>>>
  static void write(std::ostringstream& out, Enum value) {
    out << "enum " << int(value);
  }
  static void write(std::ostringstream& out, const std::vector<uint8_t>& bytes) {
    for (uint8_t byte : bytes) out << " " << int(byte);
  }
  template <typename Struct,
            typename = decltype(std::declval<Struct&>().fields(std::declval<FieldRecorder&>()))>
  static void write(std::ostringstream& out, const Struct& value) {
    std::vector<std::string> nested;
    Struct copy = value;
    copy.fields(FieldRecorder(nested));
    out << "{";
    for (const std::string& field : nested) out << field << ";";
    out << "}";
  }
  template <typename Element>
  static void write(std::ostringstream& out, const std::vector<Element>& elements) {
    out << "[";
    for (const Element& element : elements) {
      write(out, element);
      out << ",";
    }
    out << "]";
  }
  std::vector<std::string>& fields_;
};

std::vector<std::string> fieldsOf(const LayerParams& params) {
  std::vector<std::string> fields;
  LayerParams copy = params;
  std::visit([&](auto& typed) { typed.fields(FieldRecorder(fields)); }, copy);
  return fields;
}

void expectSameDefinition(const EngineDefinition& expected, const EngineDefinition& actual) {
  EXPECT_EQ(actual.target.backend, expected.target.backend);
  EXPECT_EQ(actual.target.deviceName, expected.target.deviceName);
  EXPECT_EQ(actual.target.computeCapabilityMajor, expected.target.computeCapabilityMajor);
  EXPECT_EQ(actual.target.computeCapabilityMinor, expected.target.computeCapabilityMinor);
  EXPECT_EQ(actual.target.cudaVersion, expected.target.cudaVersion);
  EXPECT_EQ(actual.target.cudnnVersion, expected.target.cudnnVersion);
  EXPECT_EQ(actual.tf32.convolutions, expected.tf32.convolutions);
  EXPECT_EQ(actual.tf32.matmuls, expected.tf32.matmuls);
  EXPECT_EQ(actual.networkLayers, expected.networkLayers);
  ASSERT_EQ(actual.tensors.size(), expected.tensors.size());
  for (size_t t = 0; t < expected.tensors.size(); ++t) {
    EXPECT_EQ(actual.tensors[t].name, expected.tensors[t].name) << "tensor " << t;
    EXPECT_EQ(actual.tensors[t].dtype, expected.tensors[t].dtype) << "tensor " << t;
    EXPECT_EQ(actual.tensors[t].dims, expected.tensors[t].dims) << "tensor " << t;
  }
  ASSERT_EQ(actual.layers.size(), expected.layers.size());
  for (size_t l = 0; l < expected.layers.size(); ++l) {
    const EngineLayer& want = expected.layers[l];
    const EngineLayer& got = actual.layers[l];
    EXPECT_EQ(got.name, want.name) << "layer " << l;
    EXPECT_EQ(kindOf(got.params), kindOf(want.params)) << "layer " << l;
    EXPECT_EQ(fieldsOf(got.params), fieldsOf(want.params)) << "layer " << l;
    EXPECT_EQ(got.inputs, want.inputs) << "layer " << l;
    EXPECT_EQ(got.outputs, want.outputs) << "layer " << l;
  }
  EXPECT_EQ(actual.inputs, expected.inputs);
  EXPECT_EQ(actual.outputs, expected.outputs);
  ASSERT_EQ(actual.profiles.size(), expected.profiles.size());
  for (size_t p = 0; p < expected.profiles.size(); ++p) {
    const auto& want = expected.profiles[p].ranges;
    const auto& got = actual.profiles[p].ranges;
    ASSERT_EQ(got.size(), want.size()) << "profile " << p;
    for (const auto& [name, range] : want) {
      ASSERT_EQ(got.count(name), 1u) << "profile " << p << " input " << name;
      EXPECT_EQ(got.at(name).min, range.min) << "profile " << p << " input " << name;
      EXPECT_EQ(got.at(name).opt, range.opt) << "profile " << p << " input " << name;
      EXPECT_EQ(got.at(name).max, range.max) << "profile " << p << " input " << name;
    }
  }
}

// A definition with one layer of every kind, every params field away from its default, weights
// of several types and three profiles. The layers' wiring is plausible, not computable: the plan
// format does not infer shapes.
EngineDefinition everyKindDefinition() {
  EngineDefinition d;
  d.target.backend = Backend::kCpu;
  d.target.deviceName = "cpu";
  auto tensor = [&](const std::string& name, DataType dtype, Dims dims) {
    d.tensors.push_back({name, dtype, std::move(dims)});
    return static_cast<int32_t>(d.tensors.size() - 1);
  };
  auto layer = [&](const std::string& name, LayerParams params, std::vector<int32_t> inputs,
                   DataType dtype, Dims dims) {
    const int32_t out = tensor(name + ".out", dtype, std::move(dims));
    d.layers.push_back({name, std::move(params), std::move(inputs), {out}});
    return out;
  };
  const DataType f32 = DataType::kFloat32;

  const int32_t x = tensor("x", f32, {-1, 3, 8, 8});
  const int32_t indices = tensor("indices", DataType::kInt64, {-1});
  const int32_t scale = tensor("scale", DataType::kFloat16, {2, 2});
  d.inputs = {x, indices, scale};

  ConstantParams weight;
  weight.weights = Weights::fromValues(f32, {4, 3, 3, 3}, std::vector<float>(108, 0.25f));
  const int32_t w = layer("weight", weight, {}, f32, {4, 3, 3, 3});
  ConstantParams bias;
  bias.weights = Weights::fromValues(DataType::kInt64, {}, std::vector<int64_t>{-7});
  const int32_t b = layer("bias", bias, {}, DataType::kInt64, {});
  ConstantParams bytes;
  bytes.weights =
      Weights::fromValues(DataType::kInt8, {5}, std::vector<int8_t>{-128, -1, 0, 1, 127});
  layer("bytes", bytes, {}, DataType::kInt8, {5});

  ConvolutionParams conv;
  conv.outChannels = 4;
  conv.kernel = {3, 3};
  conv.stride = {2, 1};
  conv.prePadding = {1, 0};
  conv.postPadding = {0, 1};
  conv.dilation = {1, 2};
  conv.groups = 1;
  conv.activation = FusedActivation::kRelu;
  const int32_t c = layer("conv", conv, {x, w, -1}, f32, {-1, 4, 4, 6});

  DeconvolutionParams deconv;
  deconv.outChannels = 6;
  deconv.kernel = {2, 2, 2};
  deconv.stride = {2, 2, 1};
  deconv.prePadding = {0, 1, 0};
  deconv.postPadding = {1, 0, 0};
  deconv.outputPadding = {1, 0, 1};
  deconv.dilation = {1, 1, 3};
  deconv.groups = 2;
  layer("deconv", deconv, {c, w, b}, f32, {-1, 6, 9, 13});

  MatMulParams matmul;
  matmul.transposeA = true;
  matmul.transposeB = false;
  const int32_t m = layer("matmul", matmul, {c, c}, f32, {-1, 4, 6, 6});
  FullyConnectedParams fc;
  fc.activation = FusedActivation::kGeluTanh;  // the last value: the reader must accept it
  layer("fc", fc, {m, w, -1, m}, f32, {-1, 4, 6, 4});
  const int32_t e =
      layer("add", ElementwiseParams{ElementwiseOp::kXor}, {m, m}, f32, {-1, 4, 6, 6});
  layer("not", UnaryParams{UnaryOp::kNot}, {e}, f32, {-1, 4, 6, 6});

  ActivationParams activation;
  activation.type = ActivationType::kClip;
  activation.alpha = -0.1;  // not exactly representable: the bits must survive
  activation.beta = 6.0e300;
  const int32_t a = layer("clip", activation, {e}, f32, {-1, 4, 6, 6});

  PoolingParams pool;
  pool.type = PoolingType::kAverage;
  pool.adaptive = true;
  pool.outputSize = {3, 2};
  pool.kernel = {2, 3};
  pool.stride = {1, 2};
  pool.prePadding = {1, 1};
  pool.postPadding = {0, 2};
  pool.dilation = {2, 1};
  pool.ceilMode = true;
  pool.countIncludePad = false;
  layer("pool", pool, {a}, f32, {-1, 4, 3, 2});

  ReduceParams reduce;
  reduce.op = ReduceOp::kAvg;
  reduce.axes = {-1, 1};
  reduce.keepDims = true;
  layer("mean", reduce, {a}, f32, {-1, 1, 6, 1});

  SoftmaxParams softmax;
  softmax.axis = -2;
  softmax.log = true;
  layer("logsoftmax", softmax, {a}, f32, {-1, 4, 6, 6});

  NormalizationParams norm;
  norm.type = NormalizationType::kLayer;
  norm.epsilon = 1e-12;
  norm.axis = 2;
  layer("layernorm", norm, {a, -1, -1}, f32, {-1, 4, 6, 6});

  ShuffleParams shuffle;
  shuffle.firstPermutation = {0, 2, 3, 1};
  shuffle.hasReshape = true;
  shuffle.reshapeDims = {0, -1, 4};
  shuffle.secondPermutation = {0, 2, 1};
  const int32_t s = layer("shuffle", shuffle, {a}, f32, {-1, 4, 36});

  layer("concat", ConcatParams{-3}, {s, s, s}, f32, {-3, 4, 36});

  SliceParams slice;
  slice.axes = {0, 2};
  slice.starts = {-1, 3};
  slice.ends = {kSliceEnd, -2};
  slice.steps = {1, 3};
  layer("slice", slice, {s}, f32, {1, 4, 11});

  const int32_t g = layer("gather", GatherParams{1}, {s, indices}, f32, {-1, -1, 36});
  layer("cast", CastParams{DataType::kBFloat16}, {g}, DataType::kBFloat16, {-1, -1, 36});
  AttentionParams attention;
  attention.scale = 0.3;
  attention.causal = true;
  attention.queryView = {1, 4, 4, 6, 0, 96, 24, 6};
  layer("attention", attention, {c, c, c, -1}, f32, {-1, 4, 4, 6});
  ResizeParams resize;
  resize.mode = ResizeMode::kCubic;  // the last value: the reader must accept it
  resize.outputSize = {7, 13};
  resize.scales = {1.75, 0.1};  // 0.1 is not exactly representable: the bits must survive
  resize.alignCorners = true;
  layer("resize", resize, {c}, f32, {-1, 4, 7, 13});
  layer("cumprod", CumulativeParams{CumulativeOp::kProd, -2}, {c}, f32, {-1, 4, 4, 6});
  PointwiseParams pointwise;
  PointwiseInstruction load;
  load.opcode = PointwiseOpcode::kInput;
  load.a = 1;
  load.type = DataType::kInt64;
  PointwiseInstruction cast;
  cast.opcode = PointwiseOpcode::kCast;
  cast.type = DataType::kFloat16;
  cast.a = 0;
  PointwiseInstruction compare;
  compare.opcode = PointwiseOpcode::kElementwise;
  compare.elementwise = ElementwiseOp::kXor;
  compare.type = DataType::kBool;
  compare.a = 1;
  compare.b = 1;
  PointwiseInstruction softplus;
  softplus.opcode = PointwiseOpcode::kActivation;  // the last opcode is kCast, used above
  softplus.activation = ActivationType::kMish;
  softplus.unary = UnaryOp::kNot;
  softplus.alpha = -0.1;
  softplus.beta = 3e-300;
  softplus.type = DataType::kFloat16;
  softplus.a = 1;
  pointwise.program = {load, cast, compare, softplus};
  pointwise.outputs = {3, 2};
  pointwise.cudaKernel.source = "extern \"C\" __global__ void kernel() {}";
  pointwise.cudaKernel.architecture = "sm_90a";
  pointwise.cudaKernel.binary = {0x7f, 'E', 'L', 'F', 0, 255};
  d.tensors.push_back({"pointwise.out1", DataType::kBool, {-1}});
  const int32_t pointwiseOut = tensor("pointwise.out0", DataType::kFloat16, {-1});
  d.layers.push_back({"pointwise", pointwise, {c, indices}, {pointwiseOut, pointwiseOut - 1}});
  SqueezeExcitationParams squeeze;
  squeeze.hasHiddenActivation = true;
  squeeze.hiddenActivation = ActivationType::kMish;  // the last value: the reader must accept it
  squeeze.hiddenAlpha = 0.1;  // not exactly representable: the bits must survive
  squeeze.hiddenBeta = -2.5;
  squeeze.keepDims = false;
  layer("squeeze", squeeze, {a, w, -1, w, b}, f32, {-1, 4});
  d.outputs = {g, a, s};

  OptimizationProfile small;
  small.setRange("x", {{1, 3, 8, 8}, {1, 3, 8, 8}, {2, 3, 8, 8}});
  small.setRange("indices", {{1}, {1}, {4}});
  OptimizationProfile large;
  large.setRange("x", {{4, 3, 8, 8}, {16, 3, 8, 8}, {64, 3, 8, 8}});
  large.setRange("indices", {{0}, {32}, {1024}});
  large.setRange("scale", {{2, 2}, {2, 2}, {2, 2}});
  OptimizationProfile single;
  single.setRange("x", {{7, 3, 8, 8}, {7, 3, 8, 8}, {7, 3, 8, 8}});
  single.setRange("indices", {{5}, {5}, {5}});
  d.profiles = {small, large, single};
  d.networkLayers = 40;
  return d;
}

EngineDefinition cudaDefinition() {
  EngineDefinition d = everyKindDefinition();
  d.target.backend = Backend::kCuda;
  d.target.deviceName = "NVIDIA H100 80GB HBM3";
  d.target.computeCapabilityMajor = 9;
  d.target.computeCapabilityMinor = 0;
  d.target.cudaVersion = 12040;
  d.target.cudnnVersion = 90100;
  return d;
}

// Offset of the payload: the header's last two fields are the payload size and the checksum.
size_t payloadOffset(const std::vector<uint8_t>& plan) {
  for (size_t offset = 16; offset <= plan.size(); ++offset) {
    uint64_t size = 0;
    for (int i = 0; i < 8; ++i) size |= uint64_t(plan[offset - 16 + i]) << (8 * i);
    if (offset + size == plan.size()) return offset;
  }
  ADD_FAILURE() << "no payload size in the header matches the plan's size";
  return plan.size();
}

// Rewrites the checksum (FNV-1a 64 of the header before it and of the payload) after a test
// changed the payload on purpose, so that the reader's checks behind the checksum are reached.
void resealChecksum(std::vector<uint8_t>& plan) {
  const size_t payload = payloadOffset(plan);
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (i >= payload - 8 && i < payload) continue;
    hash ^= plan[i];
    hash *= 0x100000001b3ULL;
  }
  for (int i = 0; i < 8; ++i) plan[payload - 8 + i] = static_cast<uint8_t>(hash >> (8 * i));
}

TEST(PlanRoundTrip, EveryLayerKindWeightsAndProfiles) {
  const EngineDefinition definition = everyKindDefinition();
  std::set<LayerKind> kinds;
  for (const EngineLayer& layer : definition.layers) kinds.insert(kindOf(layer.params));
  ASSERT_EQ(kinds.size(), std::variant_size_v<LayerParams>) << "a layer kind is not covered";

  const std::vector<uint8_t> plan = writePlan(definition);
  ASSERT_EQ(std::memcmp(plan.data(), "KILNPLAN", 8), 0);
  expectSameDefinition(definition, readPlan(plan.data(), plan.size()));
}

TEST(PlanRoundTrip, Tf32Policy) {
  for (const Tf32Policy policy : {Tf32Policy{true, false}, Tf32Policy{false, true}}) {
    EngineDefinition definition = everyKindDefinition();
    definition.tf32 = policy;
    const std::vector<uint8_t> plan = writePlan(definition);
    expectSameDefinition(definition, readPlan(plan.data(), plan.size()));
  }
}

TEST(PlanRoundTrip, CudaTargetAndHeaderOnlyRead) {
  const EngineDefinition definition = cudaDefinition();
  const std::vector<uint8_t> plan = writePlan(definition);
  expectSameDefinition(definition, readPlan(plan.data(), plan.size()));

  // The header alone is enough for readPlanTarget, so a cut payload does not matter to it.
  const BuildTarget target = readPlanTarget(plan.data(), payloadOffset(plan));
  EXPECT_EQ(target.backend, Backend::kCuda);
  EXPECT_EQ(target.deviceName, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(target.computeCapabilityMajor, 9);
  EXPECT_EQ(target.computeCapabilityMinor, 0);
  EXPECT_EQ(target.cudaVersion, 12040);
  EXPECT_EQ(target.cudnnVersion, 90100);
}

TEST(PlanRoundTrip, EngineSerializeDeserialize) {
  const Engine engine(everyKindDefinition());
  const std::vector<uint8_t> plan = engine.serialize();
  std::shared_ptr<Engine> loaded = Engine::deserialize(plan.data(), plan.size());
  expectSameDefinition(engine.definition(), loaded->definition());
  EXPECT_EQ(loaded->serialize(), plan) << "writing a plan is not deterministic";
  EXPECT_EQ(loaded->inputTensor(1).name, "indices");
  EXPECT_EQ(loaded->outputTensor(2).name, "shuffle.out");
}

TEST(PlanRoundTrip, NullWeightsAndEmptyDefinition) {
  EngineDefinition definition;
  definition.target.deviceName = "cpu";
  definition.tensors.push_back({"c", DataType::kFloat32, {}});
  definition.layers.push_back({"", ConstantParams{}, {}, {0}});
  definition.outputs = {0};
  const std::vector<uint8_t> plan = writePlan(definition);
  const EngineDefinition read = readPlan(plan.data(), plan.size());
  expectSameDefinition(definition, read);
  EXPECT_FALSE(std::get<ConstantParams>(read.layers[0].params).weights.bytes);

  const EngineDefinition empty;
  const std::vector<uint8_t> emptyPlan = writePlan(empty);
  expectSameDefinition(empty, readPlan(emptyPlan.data(), emptyPlan.size()));
}

TEST(PlanErrors, EveryTruncationIsRefused) {
  const std::vector<uint8_t> plan = writePlan(everyKindDefinition());
  for (size_t size = 0; size < plan.size(); ++size) {
    const std::string error = planErrorOf([&] { readPlan(plan.data(), size); });
    ASSERT_NE(error.find("truncated"), std::string::npos)
        << "prefix of " << size << " bytes: " << error;
  }
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size() - 1); }),
                 {"truncated", "copy it again or rebuild"});
}

TEST(PlanErrors, EveryBitFlipInThePayloadIsCorrupt) {
  const std::vector<uint8_t> plan = writePlan(everyKindDefinition());
  const size_t payload = payloadOffset(plan);
  std::vector<uint8_t> flipped = plan;
  for (size_t i = payload; i < plan.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      flipped[i] = static_cast<uint8_t>(plan[i] ^ (1u << bit));
      const std::string error = planErrorOf([&] { readPlan(flipped.data(), flipped.size()); });
      ASSERT_NE(error.find("corrupt"), std::string::npos)
          << "byte " << i << " bit " << bit << ": " << error;
      flipped[i] = plan[i];
    }
  }
}

TEST(PlanErrors, BitFlipsInTheHeaderAreRefused) {
  const std::vector<uint8_t> plan = writePlan(cudaDefinition());
  const size_t payload = payloadOffset(plan);
  std::vector<uint8_t> flipped = plan;
  for (size_t i = 0; i < payload; ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      flipped[i] = static_cast<uint8_t>(plan[i] ^ (1u << bit));
      EXPECT_THROW(readPlan(flipped.data(), flipped.size()), PlanError)
          << "byte " << i << " bit " << bit;
      flipped[i] = plan[i];
    }
  }
}

TEST(PlanErrors, TrailingBytesAreCorrupt) {
  std::vector<uint8_t> plan = writePlan(everyKindDefinition());
  plan.push_back(0);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "1 bytes follow"});
}

TEST(PlanErrors, ForeignFilesAreNotKilnPlans) {
  std::vector<uint8_t> plan = writePlan(everyKindDefinition());
  plan[0] = 'X';
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"not a Kiln plan", "TensorRT"});
  const std::string text = "ftrt this is some other engine";
  expectContains(planErrorOf([&] { readPlan(text.data(), text.size()); }), {"not a Kiln plan"});
  expectContains(planErrorOf([&] { readPlanTarget(text.data(), 3); }), {"not a Kiln plan"});
  const char zip[] = "PK\x03\x04 archive";
  expectContains(planErrorOf([&] { readPlan(zip, sizeof(zip)); }),
                 {"not a Kiln plan", "zip archive", "torch.jit.load"});
}

TEST(PlanErrors, NewerFormatVersionIsRefused) {
  std::vector<uint8_t> plan = writePlan(everyKindDefinition());
  const uint32_t newer = kPlanFormatVersion + 1;
  for (int i = 0; i < 4; ++i) plan[8 + i] = static_cast<uint8_t>(newer >> (8 * i));
  const std::string error = planErrorOf([&] { readPlan(plan.data(), plan.size()); });
  expectContains(error, {"newer", "Upgrade Kiln", "rebuild the engine", kKilnVersion});
  expectContains(planErrorOf([&] { readPlanTarget(plan.data(), plan.size()); }), {"newer"});
  // Only the magic and the version are needed to tell a newer plan.
  expectContains(planErrorOf([&] { readPlan(plan.data(), 12); }), {"newer"});
}

TEST(PlanErrors, OlderFormatVersionIsRefused) {
  std::vector<uint8_t> plan = writePlan(everyKindDefinition());
  const uint32_t older = kPlanFormatVersion - 1;
  for (int i = 0; i < 4; ++i) plan[8 + i] = static_cast<uint8_t>(older >> (8 * i));
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"older", "Rebuild the engine", kKilnVersion});
}

TEST(PlanErrors, EmptyAndNullInputs) {
  expectContains(planErrorOf([] { readPlan(nullptr, 0); }), {"empty", "truncated"});
  expectContains(planErrorOf([] { readPlanTarget(nullptr, 0); }), {"empty"});
  expectContains(planErrorOf([] { readPlan(nullptr, 64); }), {"null pointer"});
  expectContains(planErrorOf([] { Engine::deserialize(nullptr, 64); }), {"null pointer"});
  const uint8_t byte = 'K';
  expectContains(planErrorOf([&] { readPlan(&byte, 0); }), {"empty"});
}

TEST(PlanErrors, OutOfRangeTensorIndicesAreCorrupt) {
  EngineDefinition definition = everyKindDefinition();
  definition.layers[4].inputs[0] = 999;
  std::vector<uint8_t> plan = writePlan(definition);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "layer 4", "tensor 999", "Rebuild the engine"});

  definition = everyKindDefinition();
  definition.outputs.push_back(-1);
  plan = writePlan(definition);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "output bindings", "tensor -1"});
}

TEST(PlanErrors, InvalidEnumValuesAreCorrupt) {
  EngineDefinition definition = everyKindDefinition();
  for (EngineLayer& layer : definition.layers) {
    if (auto* elementwise = std::get_if<ElementwiseParams>(&layer.params)) {
      elementwise->op = static_cast<ElementwiseOp>(200);
    }
  }
  std::vector<uint8_t> plan = writePlan(definition);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "'add'", "'op'", "200", "elementwise op"});

  definition = everyKindDefinition();
  for (EngineLayer& layer : definition.layers) {
    if (auto* fc = std::get_if<FullyConnectedParams>(&layer.params)) {
      fc->activation =
          static_cast<FusedActivation>(static_cast<int>(FusedActivation::kHardSwish) + 1);
    }
  }
  plan = writePlan(definition);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "'fc'", "'activation'", "7", "fused activation"});

  definition = everyKindDefinition();
  definition.tensors[0].dtype = static_cast<DataType>(kNumDataTypes);
  plan = writePlan(definition);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "'x'", "data type"});
}

TEST(PlanErrors, InvalidLayerKindIsCorrupt) {
  // No tensors and one layer with an empty name: the payload is u32 0, u32 1, u32 0, kind.
  EngineDefinition definition;
  definition.layers.push_back({"", SoftmaxParams{}, {}, {}});
  std::vector<uint8_t> plan = writePlan(definition);
  const size_t kindOffset = payloadOffset(plan) + 12;
  ASSERT_EQ(plan[kindOffset], static_cast<uint8_t>(LayerKind::kSoftmax));
  plan[kindOffset] = static_cast<uint8_t>(std::variant_size_v<LayerParams>);
  resealChecksum(plan);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }),
                 {"corrupt", "layer 0", "kind"});
}

TEST(PlanErrors, InconsistentLengthsBehindAValidChecksumAreCorrupt) {
  EngineDefinition definition;
  definition.tensors.push_back({"t", DataType::kFloat32, {2}});
  std::vector<uint8_t> plan = writePlan(definition);
  // The tensor count says a million tensors; the payload holds one.
  const size_t countOffset = payloadOffset(plan);
  plan[countOffset + 2] = 0x10;
  resealChecksum(plan);
  expectContains(planErrorOf([&] { readPlan(plan.data(), plan.size()); }), {"corrupt"});
}

TEST(PlanEngine, DefinitionsAreValidated) {
  EngineDefinition definition = everyKindDefinition();
  definition.profiles.clear();
  EXPECT_THROW(Engine{definition}, Error);
  try {
    Engine engine(definition);
  } catch (const Error& error) {
    expectContains(error.what(), {"dynamic", "no optimization profile"});
  }

  definition = everyKindDefinition();
  definition.profiles[1].ranges.erase("indices");
  EXPECT_THROW(Engine{definition}, Error);

  definition = everyKindDefinition();
  definition.profiles[0].setRange("y", {{1}, {1}, {1}});
  EXPECT_THROW(Engine{definition}, Error);

  definition = everyKindDefinition();
  definition.profiles[0].ranges["x"].max = {2, 3, 8};
  EXPECT_THROW(Engine{definition}, Error);

  definition = everyKindDefinition();
  definition.inputs.push_back(static_cast<int32_t>(definition.tensors.size()));
  EXPECT_THROW(Engine{definition}, Error);

  definition = everyKindDefinition();
  definition.layers[0].outputs = {-1};
  EXPECT_THROW(Engine{definition}, Error);

  const Engine engine(everyKindDefinition());
  EXPECT_THROW(engine.inputTensor(3), Error);
  EXPECT_THROW(engine.outputTensor(3), Error);
}

TEST(PlanEngine, PlanOfAnInvalidDefinitionIsCorrupt) {
  EngineDefinition definition = everyKindDefinition();
  definition.profiles.clear();
  const std::vector<uint8_t> plan = writePlan(definition);
  EXPECT_NO_THROW(readPlan(plan.data(), plan.size()));
  expectContains(planErrorOf([&] { Engine::deserialize(plan.data(), plan.size()); }),
                 {"corrupt", "no optimization profile"});
}

TEST(PlanEngine, InspectDescribesTargetBindingsProfilesAndLayers) {
  EngineDefinition definition = cudaDefinition();
  definition.tf32.convolutions = true;
  const Engine engine(std::move(definition));
  const std::string text = engine.inspect();
  expectContains(text, {"TF32 tensor cores: convolutions yes, matmuls no"});
  expectContains(text, {"(the network had 40)", "activation arena: "});
  expectContains(text, {"CUDA", "NVIDIA H100 80GB HBM3", "compute capability 9.0", "CUDA 12.4",
                        "cuDNN 9.1.0", "x: float32 [-1, 3, 8, 8]"});
  expectContains(text, {"min [4, 3, 8, 8], opt [16, 3, 8, 8], max [64, 3, 8, 8]"});
  expectContains(text, {"conv: Convolution(", "outChannels=4", "(x, weight.out, (none))",
                        "Constant(", "Gather(", "Cast("});
  EXPECT_EQ(toString(Backend::kCpu), std::string("CPU"));
}

}  // namespace
}  // namespace kiln

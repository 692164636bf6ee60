// Fused pointwise kernels generated with NVRTC: the generated source compiles for Hopper (NVRTC
// needs no GPU, so this runs everywhere), fused engines compute what the CPU backend computes in
// fp32, fp16 and bf16 with broadcasting, and a loaded plan runs without compiling anything.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/builder/builder.h"
#include "core/engine/execution_context.h"
#include "core/engine/kernel_mapping.h"
#include "core/ir/network.h"
#include "kernels/cuda/pointwise_codegen.h"
#include "tests/cpp/cuda/cuda_test_util.h"

namespace kiln {
namespace {

namespace ck = cuda_kernels;
using cuda_test::DeviceBuffer;
using Bytes = std::vector<uint8_t>;

PointwiseInstruction load(int64_t input, DataType type) {
  PointwiseInstruction instruction;
  instruction.opcode = PointwiseOpcode::kInput;
  instruction.a = input;
  instruction.type = type;
  return instruction;
}

PointwiseInstruction binary(ElementwiseOp op, int64_t a, int64_t b, DataType type) {
  PointwiseInstruction instruction;
  instruction.opcode = PointwiseOpcode::kElementwise;
  instruction.elementwise = op;
  instruction.a = a;
  instruction.b = b;
  instruction.type = type;
  return instruction;
}

// Every opcode, every unary function but not, every activation, both half types and a bool.
PointwiseParams everyOperationProgram() {
  PointwiseParams p;
  p.program.push_back(load(0, DataType::kFloat32));
  p.program.push_back(load(1, DataType::kInt64));
  PointwiseInstruction cast;
  cast.opcode = PointwiseOpcode::kCast;
  cast.a = 1;
  cast.type = DataType::kFloat16;
  p.program.push_back(cast);
  cast.a = 0;
  p.program.push_back(cast);
  p.program.push_back(binary(ElementwiseOp::kPow, 2, 3, DataType::kFloat16));
  int64_t last = 4;
  for (int op = 0; op <= static_cast<int>(UnaryOp::kSign); ++op) {
    PointwiseInstruction unary;
    unary.opcode = PointwiseOpcode::kUnary;
    unary.unary = static_cast<UnaryOp>(op);
    unary.a = last;
    unary.type = DataType::kFloat16;
    p.program.push_back(unary);
    last = static_cast<int64_t>(p.program.size()) - 1;
  }
  for (int type = 0; type <= static_cast<int>(ActivationType::kMish); ++type) {
    PointwiseInstruction activation;
    activation.opcode = PointwiseOpcode::kActivation;
    activation.activation = static_cast<ActivationType>(type);
    activation.alpha = 0.1;
    activation.beta = 20.0;
    activation.a = last;
    activation.type = DataType::kFloat16;
    p.program.push_back(activation);
    last = static_cast<int64_t>(p.program.size()) - 1;
  }
  cast.a = last;
  cast.type = DataType::kBFloat16;
  p.program.push_back(cast);
  const int64_t bf16 = static_cast<int64_t>(p.program.size()) - 1;
  for (int op = 0; op <= static_cast<int>(ElementwiseOp::kGreater); ++op) {
    const auto elementwise = static_cast<ElementwiseOp>(op);
    const bool comparison = elementwise == ElementwiseOp::kEqual ||
                            elementwise == ElementwiseOp::kLess ||
                            elementwise == ElementwiseOp::kGreater;
    p.program.push_back(
        binary(elementwise, bf16, bf16, comparison ? DataType::kBool : DataType::kBFloat16));
  }
  p.outputs = {bf16, static_cast<int64_t>(p.program.size()) - 1};
  return p;
}

TEST(CudaPointwiseCodegen, EveryOperationCompilesForHopperWithNvrtc) {
  const std::string source =
      ck::generatePointwiseSource(toPointwiseProgram(everyOperationProgram()));
  // fp16 and bf16 registers round where their layers stored; binary ops never fuse into an FMA.
  EXPECT_NE(source.find("kiln_round_f16(powf("), std::string::npos) << source;
  EXPECT_NE(source.find("kiln_round_bf16(__fmul_rn("), std::string::npos) << source;
  EXPECT_NE(source.find("kiln_pointwise_i64"), std::string::npos) << source;
  const size_t before = ck::pointwiseCompilationCount();
  const std::vector<uint8_t> cubin = ck::compilePointwiseKernel(source, "sm_90a");
  EXPECT_EQ(ck::pointwiseCompilationCount(), before + 1);
  ASSERT_GT(cubin.size(), 4u);
  EXPECT_EQ(std::string(cubin.begin(), cubin.begin() + 4),
            "\x7f"
            "ELF");
}

TEST(CudaPointwiseCodegen, RefusesWhatItHasNoCodeForAndReportsCompilerErrors) {
  PointwiseParams integer;
  integer.program = {load(0, DataType::kInt32),
                     binary(ElementwiseOp::kDiv, 0, 0, DataType::kInt32)};
  integer.outputs = {1};
  try {
    ck::generatePointwiseSource(toPointwiseProgram(integer));
    ADD_FAILURE() << "integer division was given generated code";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("step 1"), std::string::npos) << error.what();
  }
  try {
    ck::compilePointwiseKernel("this is not CUDA", "sm_90a");
    ADD_FAILURE() << "a broken source compiled";
  } catch (const ck::CudaError& error) {
    EXPECT_NE(std::string(error.what()).find("log:"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("sm_90a"), std::string::npos) << error.what();
  }
}

// ---- on the GPU -------------------------------------------------------------------------------

float toFloat(const Bytes& data, DataType dtype, size_t i) {
  switch (dtype) {
    case DataType::kFloat32:
      return reinterpret_cast<const float*>(data.data())[i];
    case DataType::kFloat16:
      return __half2float(reinterpret_cast<const __half*>(data.data())[i]);
    case DataType::kBFloat16:
      return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(data.data())[i]);
    case DataType::kInt64:
      return static_cast<float>(reinterpret_cast<const int64_t*>(data.data())[i]);
    default:
      return static_cast<float>(data[i]);  // bool
  }
}

Bytes randomBytes(DataType dtype, int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  Bytes bytes(static_cast<size_t>(count) * elementSize(dtype));
  for (int64_t i = 0; i < count; ++i) {
    const float value = uniform(rng);
    if (dtype == DataType::kFloat32) {
      reinterpret_cast<float*>(bytes.data())[i] = value;
    } else if (dtype == DataType::kFloat16) {
      reinterpret_cast<__half*>(bytes.data())[i] = __float2half(value);
    } else if (dtype == DataType::kBFloat16) {
      reinterpret_cast<__nv_bfloat16*>(bytes.data())[i] = __float2bfloat16(value);
    } else if (dtype == DataType::kInt64) {
      reinterpret_cast<int64_t*>(bytes.data())[i] = value > 0 ? 1 : 0;
    }
  }
  return bytes;
}

Tensor* constantOf(Network& network, DataType dtype, const Dims& dims, float value) {
  std::vector<float> values(static_cast<size_t>(volume(dims)), value);
  for (size_t i = 0; i < values.size(); ++i) values[i] += 0.125f * static_cast<float>(i % 5);
  Tensor* t = network.addConstant(Weights::fromValues(DataType::kFloat32, dims, values))->output(0);
  return dtype == DataType::kFloat32 ? t : network.addCast(t, dtype)->output(0);
}

struct FusionCase {
  std::string name;
  std::vector<Dims> shapes;
  std::function<void(Network&, const std::vector<Tensor*>&, DataType)> build;
};

std::vector<FusionCase> fusionCases() {
  std::vector<FusionCase> cases;
  // Vector path: innermost dim a multiple of 4, inputs along it or broadcast across it.
  cases.push_back({"broadcast_chain_vectorized",
                   {{4, 6, 8}, {6, 1}, {8}},
                   [](Network& n, const std::vector<Tensor*>& x, DataType t) {
                     Tensor* d = n.addElementwise(x[0], x[1], ElementwiseOp::kSub)->output(0);
                     Tensor* m = n.addElementwise(d, x[2], ElementwiseOp::kProd)->output(0);
                     Tensor* s = n.addElementwise(m, x[0], ElementwiseOp::kSum)->output(0);
                     Tensor* g = n.addActivation(s, {ActivationType::kGeluErf})->output(0);
                     Tensor* c = constantOf(n, t, {8}, 0.5f);
                     n.markOutput(n.addElementwise(g, c, ElementwiseOp::kMax)->output(0));
                   }});
  // Scalar path: an innermost dim of 7; a rank-0 constant; a second output read outside.
  cases.push_back({"odd_inner_dim_two_outputs",
                   {{3, 5, 7}, {7}},
                   [](Network& n, const std::vector<Tensor*>& x, DataType t) {
                     Tensor* a = n.addElementwise(x[0], x[1], ElementwiseOp::kDiv)->output(0);
                     Tensor* e = n.addUnary(a, UnaryOp::kSin)->output(0);
                     Tensor* c = constantOf(n, t, {}, 1.5f);
                     Tensor* f = n.addElementwise(e, c, ElementwiseOp::kProd)->output(0);
                     n.markOutput(n.addSoftmax(a, {})->output(0));
                     n.markOutput(n.addActivation(f, {ActivationType::kSilu})->output(0));
                     n.markOutput(n.addElementwise(f, x[1], ElementwiseOp::kGreater)->output(0));
                   }});
  // BERT's mask (input 0 is int64): int64 -> float, (1 - mask) * -10000, broadcast over heads and
  // queries.
  cases.push_back({"attention_mask",
                   {{2, 1, 1, 12}, {2, 3, 5, 12}},
                   [](Network& n, const std::vector<Tensor*>& x, DataType t) {
                     Tensor* mask = n.addCast(x[0], t)->output(0);
                     Tensor* one = constantOf(n, t, {}, 1.0f);
                     Tensor* inverted = n.addElementwise(one, mask, ElementwiseOp::kSub)->output(0);
                     Tensor* big = constantOf(n, t, {}, -100.0f);
                     Tensor* bias =
                         n.addElementwise(inverted, big, ElementwiseOp::kProd)->output(0);
                     n.markOutput(n.addElementwise(x[1], bias, ElementwiseOp::kSum)->output(0));
                   }});
  // Every activation and unary function (their domains kept valid), each fused with a scale.
  cases.push_back(
      {"every_activation_and_unary",
       {{2, 64}},
       [](Network& n, const std::vector<Tensor*>& x, DataType t) {
         for (int type = 0; type <= static_cast<int>(ActivationType::kMish); ++type) {
           ActivationParams p{static_cast<ActivationType>(type), 0.2, 1.5};
           if (p.type == ActivationType::kClip) p.alpha = -0.5;
           if (p.type == ActivationType::kSoftplus) p = {p.type, 2.0, 20.0};
           Tensor* a = n.addActivation(x[0], p)->output(0);
           n.markOutput(
               n.addElementwise(a, constantOf(n, t, {64}, 0.75f), ElementwiseOp::kProd)->output(0));
         }
         Tensor* positive = n.addElementwise(n.addUnary(x[0], UnaryOp::kAbs)->output(0),
                                             constantOf(n, t, {}, 0.25f), ElementwiseOp::kSum)
                                ->output(0);
         for (int op = 0; op <= static_cast<int>(UnaryOp::kSign); ++op) {
           n.markOutput(n.addUnary(positive, static_cast<UnaryOp>(op))->output(0));
         }
       }});
  return cases;
}

struct BuiltCase {
  std::shared_ptr<Engine> cpu;
  std::shared_ptr<Engine> cuda;
  std::vector<Bytes> inputs;
  std::vector<Dims> shapes;
};

BuiltCase buildCase(const FusionCase& c, DataType dtype) {
  BuiltCase built;
  Network network;
  std::vector<Tensor*> inputs;
  std::mt19937 rng(7);
  for (size_t i = 0; i < c.shapes.size(); ++i) {
    const DataType inputType = c.name == "attention_mask" && i == 0 ? DataType::kInt64 : dtype;
    inputs.push_back(network.addInput("x" + std::to_string(i), inputType, c.shapes[i]));
    built.inputs.push_back(randomBytes(inputType, volume(c.shapes[i]), rng));
    built.shapes.push_back(c.shapes[i]);
  }
  c.build(network, inputs, dtype);
  BuilderConfig config;
  built.cpu = Builder::build(network, config);
  config.backend = Backend::kCuda;
  built.cuda = Builder::build(network, config);
  return built;
}

std::vector<Bytes> run(const Engine& engine, const BuiltCase& c) {
  auto context = engine.createExecutionContext();
  const std::vector<Dims> outputDims = context->setInputShapes(c.shapes);
  const bool gpu = engine.target().backend == Backend::kCuda;
  std::vector<DeviceBuffer> deviceInputs, deviceOutputs;
  std::vector<Bytes> outputs;
  std::vector<const void*> inputPointers;
  std::vector<void*> outputPointers;
  for (const Bytes& input : c.inputs) {
    if (gpu) deviceInputs.push_back(DeviceBuffer::from(input));
    inputPointers.push_back(gpu ? deviceInputs.back().data() : input.data());
  }
  for (size_t o = 0; o < outputDims.size(); ++o) {
    outputs.emplace_back(static_cast<size_t>(volume(outputDims[o])) *
                         elementSize(engine.outputTensor(o).dtype));
    if (gpu) deviceOutputs.emplace_back(outputs.back().size());
    outputPointers.push_back(gpu ? deviceOutputs.back().data() : outputs.back().data());
  }
  context->execute(inputPointers, outputPointers);
  if (gpu) {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (size_t o = 0; o < outputs.size(); ++o) {
      deviceOutputs[o].download(outputs[o].data(), outputs[o].size());
    }
  }
  return outputs;
}

size_t countKind(const Engine& engine, LayerKind kind) {
  size_t count = 0;
  for (const EngineLayer& layer : engine.definition().layers) count += kindOf(layer.params) == kind;
  return count;
}

class CudaPointwiseFusion : public ::testing::TestWithParam<DataType> {};

TEST_P(CudaPointwiseFusion, FusedKernelsEqualTheCpuBackend) {
  KILN_SKIP_WITHOUT_GPU();
  const DataType dtype = GetParam();
  // Both backends round each register to its type: only the float32 math inside one operation
  // (libdevice's vs the host's exp, erf, ...) may differ, by a few float32 ulps, which a half
  // type's rounding can turn into one ulp of the half type.
  const double tolerance =
      dtype == DataType::kFloat32 ? 1e-5 : (dtype == DataType::kFloat16 ? 2e-3 : 1.6e-2);
  for (const FusionCase& c : fusionCases()) {
    SCOPED_TRACE(c.name);
    const BuiltCase built = buildCase(c, dtype);
    EXPECT_GT(countKind(*built.cuda, LayerKind::kPointwise), 0u) << built.cuda->inspect();
    EXPECT_EQ(countKind(*built.cuda, LayerKind::kElementwise), 0u) << built.cuda->inspect();
    const std::vector<Bytes> expected = run(*built.cpu, built);
    const std::vector<Bytes> actual = run(*built.cuda, built);
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t o = 0; o < expected.size(); ++o) {
      const DataType type = built.cuda->outputTensor(o).dtype;
      ASSERT_EQ(actual[o].size(), expected[o].size());
      for (size_t i = 0; i < expected[o].size() / elementSize(type); ++i) {
        const float want = toFloat(expected[o], type, i);
        const float got = toFloat(actual[o], type, i);
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(got)) << "output " << o << " element " << i;
          continue;
        }
        EXPECT_NEAR(got, want, tolerance * std::max(1.0f, std::fabs(want)))
            << "output " << o << " (" << toString(type) << ") element " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaPointwiseFusion,
                         ::testing::Values(DataType::kFloat32, DataType::kFloat16,
                                           DataType::kBFloat16),
                         [](const auto& info) { return std::string(toString(info.param)); });

TEST(CudaPointwiseFusionPlan, LoadedPlanRunsWithoutCompiling) {
  KILN_SKIP_WITHOUT_GPU();
  const FusionCase c = fusionCases()[0];
  const size_t beforeBuild = ck::pointwiseCompilationCount();
  const BuiltCase built = buildCase(c, DataType::kFloat16);
  EXPECT_EQ(ck::pointwiseCompilationCount(), beforeBuild + 1);  // one program, compiled once
  for (const EngineLayer& layer : built.cuda->definition().layers) {
    if (const auto* p = std::get_if<PointwiseParams>(&layer.params)) {
      EXPECT_EQ(p->cudaKernel.architecture, ck::currentPointwiseArchitecture());
      EXPECT_FALSE(p->cudaKernel.binary.empty());
      EXPECT_NE(p->cudaKernel.source.find("kiln_program"), std::string::npos);
    }
  }
  const std::vector<Bytes> expected = run(*built.cuda, built);

  const std::vector<uint8_t> plan = built.cuda->serialize();
  const size_t beforeLoad = ck::pointwiseCompilationCount();
  std::shared_ptr<Engine> loaded = Engine::deserialize(plan.data(), plan.size());
  BuiltCase fromPlan = built;
  fromPlan.cuda = loaded;
  EXPECT_EQ(run(*loaded, fromPlan), expected);
  EXPECT_EQ(ck::pointwiseCompilationCount(), beforeLoad) << "loading the plan ran NVRTC";

  // A kernel kept for another architecture (a plan loaded with allowOtherGpu) is compiled again
  // from its source, and computes the same.
  EngineDefinition foreign = built.cuda->definition();
  for (EngineLayer& layer : foreign.layers) {
    if (auto* p = std::get_if<PointwiseParams>(&layer.params)) {
      p->cudaKernel.architecture = "sm_80";
      p->cudaKernel.binary = {0, 1, 2, 3};
    }
  }
  auto recompiled = std::make_shared<Engine>(foreign);
  fromPlan.cuda = recompiled;
  EXPECT_EQ(run(*recompiled, fromPlan), expected);
  EXPECT_EQ(ck::pointwiseCompilationCount(), beforeLoad + 1);
}

}  // namespace
}  // namespace kiln

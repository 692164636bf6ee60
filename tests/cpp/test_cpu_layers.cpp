// Every layer kind run through Network -> Builder -> Engine -> ExecutionContext on the CPU
// backend, checked against straightforward reference loops written here or known values.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/builder/builder.h"
#include "core/engine/execution_context.h"
#include "core/ir/network.h"

namespace kiln {
namespace {

struct HostTensor {
  DataType dtype = DataType::kFloat32;
  Dims dims;
  std::vector<uint8_t> bytes;

  template <typename T>
  std::vector<T> values() const {
    EXPECT_EQ(bytes.size() % sizeof(T), 0u);
    std::vector<T> result(bytes.size() / sizeof(T));
    if (!bytes.empty()) std::memcpy(result.data(), bytes.data(), bytes.size());
    return result;
  }
};

template <typename T>
HostTensor tensorOf(DataType dtype, Dims dims, const std::vector<T>& values) {
  HostTensor tensor{dtype, std::move(dims), std::vector<uint8_t>(values.size() * sizeof(T))};
  EXPECT_EQ(static_cast<size_t>(volume(tensor.dims)) * elementSize(dtype), tensor.bytes.size());
  if (!values.empty()) std::memcpy(tensor.bytes.data(), values.data(), tensor.bytes.size());
  return tensor;
}

HostTensor floats(Dims dims, const std::vector<float>& values) {
  return tensorOf(DataType::kFloat32, std::move(dims), values);
}

// bool tensors are one byte per element, 0 or 1.
HostTensor bools(Dims dims, const std::vector<uint8_t>& values) {
  return tensorOf(DataType::kBool, std::move(dims), values);
}

std::vector<float> randomFloats(int64_t count, uint32_t seed, float low = -1.0f,
                                float high = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = distribution(generator);
  return values;
}

HostTensor randomTensor(Dims dims, uint32_t seed, float low = -1.0f, float high = 1.0f) {
  const int64_t count = volume(dims);
  return floats(std::move(dims), randomFloats(count, seed, low, high));
}

Tensor* constant(Network& network, const HostTensor& tensor) {
  return network.addConstant(Weights::fromBytes(tensor.dtype, tensor.dims, tensor.bytes))
      ->output(0);
}

using LayerMaker = std::function<Tensor*(Network&, const std::vector<Tensor*>&)>;

// Builds a network whose inputs are `inputs` and whose one output is what `addLayers` returns,
// then builds it and runs it once.
HostTensor buildAndRun(const std::vector<HostTensor>& inputs, const LayerMaker& addLayers,
                       bool dynamicBatch, Dims* declaredOutputDims) {
  Network network;
  std::vector<Tensor*> tensors;
  OptimizationProfile profile;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string name = "in" + std::to_string(i);
    Dims declared = inputs[i].dims;
    if (dynamicBatch && !declared.empty()) {
      declared[0] = kDynamic;
      profile.setRange(name, {inputs[i].dims, inputs[i].dims, inputs[i].dims});
    }
    tensors.push_back(network.addInput(name, inputs[i].dtype, declared));
  }
  network.markOutput(addLayers(network, tensors));
  BuilderConfig config;
  if (dynamicBatch) config.profiles.push_back(profile);
  std::shared_ptr<Engine> engine = Builder::build(network, config);
  *declaredOutputDims = engine->outputTensor(0).dims;
  std::unique_ptr<ExecutionContext> context = engine->createExecutionContext();
  std::vector<Dims> shapes;
  std::vector<const void*> inputPointers;
  for (const HostTensor& input : inputs) {
    shapes.push_back(input.dims);
    inputPointers.push_back(input.bytes.data());
  }
  const std::vector<Dims> outputDims = context->setInputShapes(shapes);
  HostTensor output;
  output.dtype = engine->outputTensor(0).dtype;
  output.dims = outputDims.at(0);
  output.bytes.resize(static_cast<size_t>(volume(output.dims)) * elementSize(output.dtype));
  context->execute(inputPointers, {output.bytes.data()});
  return output;
}

// Runs the layers twice: with the inputs' dims declared static, and with their first dim
// declared dynamic (-1) so that shape inference meets -1 when the network is made and the
// concrete dims at run time. Both must give the same result, and the declared output dims must
// agree with the concrete ones wherever they are not -1.
HostTensor runLayer(const std::vector<HostTensor>& inputs, const LayerMaker& addLayers) {
  Dims staticDims;
  const HostTensor result = buildAndRun(inputs, addLayers, false, &staticDims);
  EXPECT_EQ(staticDims, result.dims) << "shape inference on static dims";
  Dims dynamicDims;
  const HostTensor dynamic = buildAndRun(inputs, addLayers, true, &dynamicDims);
  EXPECT_EQ(dynamic.dtype, result.dtype);
  EXPECT_EQ(dynamic.dims, result.dims);
  EXPECT_TRUE(dynamic.bytes == result.bytes) << "the dynamic-batch engine computes differently";
  EXPECT_EQ(dynamicDims.size(), result.dims.size());
  for (size_t d = 0; d < dynamicDims.size() && d < result.dims.size(); ++d) {
    EXPECT_TRUE(dynamicDims[d] == kDynamic || dynamicDims[d] == result.dims[d])
        << "declared output dims " << toString(dynamicDims) << " contradict the run's "
        << toString(result.dims);
  }
  return result;
}

void expectAllNear(const std::vector<float>& actual, const std::vector<float>& expected,
                   float tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(actual[i])) << "at " << i;
      continue;
    }
    EXPECT_NEAR(actual[i], expected[i], tolerance * std::max(1.0f, std::fabs(expected[i])))
        << "at " << i;
  }
}

// ---- convolution ---------------------------------------------------------------------------

// One convolution's sizes, every spatial field with the spatial rank.
struct ConvCase {
  int64_t batch;
  int64_t inChannels;
  int64_t outChannels;
  int64_t groups;
  Dims in;
  Dims kernel;
  Dims stride;
  Dims prePadding;
  Dims postPadding;
  Dims dilation;
  Dims outputPadding;  // deconvolution only
};

// Flat index of position `p` (spatial rank r) in a row-major block of `sizes`.
int64_t flatIndex(const Dims& p, const Dims& sizes) {
  int64_t index = 0;
  for (size_t i = 0; i < sizes.size(); ++i) index = index * sizes[i] + p[i];
  return index;
}

// Calls visit(position) for every position of a block of `sizes`, in row-major order.
void forEachPosition(const Dims& sizes, const std::function<void(const Dims&)>& visit) {
  Dims position(sizes.size(), 0);
  for (int64_t n = 0; n < volume(sizes); ++n) {
    visit(position);
    for (size_t d = sizes.size(); d-- > 0;) {
      if (++position[d] < sizes[d]) break;
      position[d] = 0;
    }
  }
}

std::vector<float> referenceConvolution(const ConvCase& c, const Dims& out,
                                        const std::vector<float>& x, const std::vector<float>& w,
                                        const std::vector<float>& bias) {
  const int64_t groupIn = c.inChannels / c.groups;
  const int64_t groupOut = c.outChannels / c.groups;
  const int64_t inVolume = volume(c.in);
  const int64_t outVolume = volume(out);
  const int64_t kernelVolume = volume(c.kernel);
  std::vector<float> result(static_cast<size_t>(c.batch * c.outChannels * outVolume));
  for (int64_t n = 0; n < c.batch; ++n) {
    for (int64_t k = 0; k < c.outChannels; ++k) {
      const int64_t group = k / groupOut;
      forEachPosition(out, [&](const Dims& o) {
        double sum = bias.empty() ? 0.0 : bias[k];
        for (int64_t ci = 0; ci < groupIn; ++ci) {
          const int64_t channel = group * groupIn + ci;
          forEachPosition(c.kernel, [&](const Dims& t) {
            Dims i(o.size());
            for (size_t d = 0; d < o.size(); ++d) {
              i[d] = o[d] * c.stride[d] - c.prePadding[d] + t[d] * c.dilation[d];
              if (i[d] < 0 || i[d] >= c.in[d]) return;
            }
            sum += double(x[(n * c.inChannels + channel) * inVolume + flatIndex(i, c.in)]) *
                   w[(k * groupIn + ci) * kernelVolume + flatIndex(t, c.kernel)];
          });
        }
        result[(n * c.outChannels + k) * outVolume + flatIndex(o, out)] = float(sum);
      });
    }
  }
  return result;
}

void checkConvolution(const ConvCase& c, bool withBias) {
  const size_t rank = c.kernel.size();
  Dims xDims = {c.batch, c.inChannels};
  xDims.insert(xDims.end(), c.in.begin(), c.in.end());
  Dims wDims = {c.outChannels, c.inChannels / c.groups};
  wDims.insert(wDims.end(), c.kernel.begin(), c.kernel.end());
  Dims out;
  for (size_t d = 0; d < rank; ++d) {
    out.push_back(
        (c.in[d] + c.prePadding[d] + c.postPadding[d] - c.dilation[d] * (c.kernel[d] - 1) - 1) /
            c.stride[d] +
        1);
  }
  const HostTensor x = randomTensor(xDims, 1);
  const HostTensor w = randomTensor(wDims, 2);
  const HostTensor bias = withBias ? randomTensor({c.outChannels}, 3) : HostTensor{};
  ConvolutionParams params;
  params.outChannels = c.outChannels;
  params.kernel = c.kernel;
  params.stride = c.stride;
  params.prePadding = c.prePadding;
  params.postPadding = c.postPadding;
  params.dilation = c.dilation;
  params.groups = c.groups;
  const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net
        .addConvolution(in[0], constant(net, w), withBias ? constant(net, bias) : nullptr, params)
        ->output(0);
  });
  Dims expectedDims = {c.batch, c.outChannels};
  expectedDims.insert(expectedDims.end(), out.begin(), out.end());
  ASSERT_EQ(y.dims, expectedDims);
  expectAllNear(y.values<float>(),
                referenceConvolution(c, out, x.values<float>(), w.values<float>(),
                                     withBias ? bias.values<float>() : std::vector<float>{}),
                1e-4f);
}

TEST(CpuLayers, Convolution1D) {
  checkConvolution({2, 4, 6, 2, {17}, {3}, {2}, {1}, {2}, {2}, {}}, true);
}

TEST(CpuLayers, Convolution2DGroupsStridePaddingDilation) {
  checkConvolution({2, 6, 9, 3, {11, 9}, {3, 2}, {2, 1}, {1, 0}, {2, 1}, {1, 2}, {}}, true);
}

TEST(CpuLayers, Convolution2DPointwiseWithoutBias) {
  checkConvolution({3, 16, 8, 1, {7, 5}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {1, 1}, {}}, false);
}

TEST(CpuLayers, Convolution2DLargeEnoughForTheBlockedGemm) {
  checkConvolution({1, 32, 40, 1, {20, 20}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {}}, true);
}

TEST(CpuLayers, Convolution2DDepthwise) {
  checkConvolution({2, 8, 8, 8, {9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, {}}, true);
}

TEST(CpuLayers, Convolution3D) {
  checkConvolution(
      {1, 4, 4, 2, {5, 6, 7}, {2, 3, 3}, {1, 2, 1}, {1, 1, 0}, {0, 1, 2}, {2, 1, 1}, {}}, true);
}

std::vector<float> referenceDeconvolution(const ConvCase& c, const Dims& out,
                                          const std::vector<float>& x, const std::vector<float>& w,
                                          const std::vector<float>& bias) {
  const int64_t groupIn = c.inChannels / c.groups;
  const int64_t groupOut = c.outChannels / c.groups;
  const int64_t inVolume = volume(c.in);
  const int64_t outVolume = volume(out);
  const int64_t kernelVolume = volume(c.kernel);
  std::vector<double> result(static_cast<size_t>(c.batch * c.outChannels * outVolume), 0.0);
  for (int64_t n = 0; n < c.batch; ++n) {
    for (int64_t k = 0; k < c.outChannels; ++k) {
      for (int64_t o = 0; o < outVolume; ++o) {
        result[(n * c.outChannels + k) * outVolume + o] = bias.empty() ? 0.0 : bias[k];
      }
    }
    for (int64_t channel = 0; channel < c.inChannels; ++channel) {
      const int64_t group = channel / groupIn;
      forEachPosition(c.in, [&](const Dims& i) {
        const float value = x[(n * c.inChannels + channel) * inVolume + flatIndex(i, c.in)];
        for (int64_t ko = 0; ko < groupOut; ++ko) {
          forEachPosition(c.kernel, [&](const Dims& t) {
            Dims o(i.size());
            for (size_t d = 0; d < i.size(); ++d) {
              o[d] = i[d] * c.stride[d] - c.prePadding[d] + t[d] * c.dilation[d];
              if (o[d] < 0 || o[d] >= out[d]) return;
            }
            const int64_t k = group * groupOut + ko;
            result[(n * c.outChannels + k) * outVolume + flatIndex(o, out)] +=
                double(value) *
                w[(channel * groupOut + ko) * kernelVolume + flatIndex(t, c.kernel)];
          });
        }
      });
    }
  }
  return std::vector<float>(result.begin(), result.end());
}

void checkDeconvolution(const ConvCase& c) {
  const size_t rank = c.kernel.size();
  Dims xDims = {c.batch, c.inChannels};
  xDims.insert(xDims.end(), c.in.begin(), c.in.end());
  Dims wDims = {c.inChannels, c.outChannels / c.groups};
  wDims.insert(wDims.end(), c.kernel.begin(), c.kernel.end());
  Dims out;
  for (size_t d = 0; d < rank; ++d) {
    out.push_back((c.in[d] - 1) * c.stride[d] - c.prePadding[d] - c.postPadding[d] +
                  c.dilation[d] * (c.kernel[d] - 1) + c.outputPadding[d] + 1);
  }
  const HostTensor x = randomTensor(xDims, 4);
  const HostTensor w = randomTensor(wDims, 5);
  const HostTensor bias = randomTensor({c.outChannels}, 6);
  DeconvolutionParams params;
  params.outChannels = c.outChannels;
  params.kernel = c.kernel;
  params.stride = c.stride;
  params.prePadding = c.prePadding;
  params.postPadding = c.postPadding;
  params.outputPadding = c.outputPadding;
  params.dilation = c.dilation;
  params.groups = c.groups;
  const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addDeconvolution(in[0], constant(net, w), constant(net, bias), params)->output(0);
  });
  Dims expectedDims = {c.batch, c.outChannels};
  expectedDims.insert(expectedDims.end(), out.begin(), out.end());
  ASSERT_EQ(y.dims, expectedDims);
  expectAllNear(
      y.values<float>(),
      referenceDeconvolution(c, out, x.values<float>(), w.values<float>(), bias.values<float>()),
      1e-4f);
}

TEST(CpuLayers, Deconvolution1D) {
  checkDeconvolution({2, 3, 4, 1, {7}, {3}, {2}, {1}, {1}, {1}, {1}});
}

TEST(CpuLayers, Deconvolution2DGroupsStridePaddingDilation) {
  checkDeconvolution({2, 4, 6, 2, {5, 4}, {3, 2}, {2, 3}, {1, 0}, {1, 1}, {2, 1}, {1, 2}});
}

// ---- matrix products -----------------------------------------------------------------------

// Reference for (..., M, K) x (..., K, N) with broadcast batch dims and transposes.
std::vector<float> referenceMatMul(const Dims& aDims, const std::vector<float>& a,
                                   const Dims& bDims, const std::vector<float>& b, bool ta, bool tb,
                                   Dims* outDims) {
  const size_t rank = std::max(aDims.size(), bDims.size());
  Dims aFull(rank - aDims.size(), 1);
  aFull.insert(aFull.end(), aDims.begin(), aDims.end());
  Dims bFull(rank - bDims.size(), 1);
  bFull.insert(bFull.end(), bDims.begin(), bDims.end());
  const int64_t m = ta ? aFull[rank - 1] : aFull[rank - 2];
  const int64_t k = ta ? aFull[rank - 2] : aFull[rank - 1];
  const int64_t n = tb ? bFull[rank - 2] : bFull[rank - 1];
  Dims batch(rank - 2);
  for (size_t i = 0; i < rank - 2; ++i) batch[i] = std::max(aFull[i], bFull[i]);
  *outDims = batch;
  outDims->push_back(m);
  outDims->push_back(n);
  std::vector<float> out(static_cast<size_t>(volume(*outDims)));
  int64_t batchIndex = 0;
  forEachPosition(batch, [&](const Dims& position) {
    int64_t aBatch = 0;
    int64_t bBatch = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      aBatch = aBatch * aFull[i] + (aFull[i] == 1 ? 0 : position[i]);
      bBatch = bBatch * bFull[i] + (bFull[i] == 1 ? 0 : position[i]);
    }
    const float* aMatrix = a.data() + aBatch * m * k;
    const float* bMatrix = b.data() + bBatch * k * n;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0.0;
        for (int64_t p = 0; p < k; ++p) {
          sum += double(ta ? aMatrix[p * m + i] : aMatrix[i * k + p]) *
                 (tb ? bMatrix[j * k + p] : bMatrix[p * n + j]);
        }
        out[(batchIndex * m + i) * n + j] = float(sum);
      }
    }
    ++batchIndex;
  });
  return out;
}

void checkMatMul(const Dims& aDims, const Dims& bDims, bool ta, bool tb) {
  const HostTensor a = randomTensor(aDims, 7);
  const HostTensor b = randomTensor(bDims, 8);
  const HostTensor y = runLayer({a, b}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addMatMul(in[0], in[1], {ta, tb})->output(0);
  });
  Dims expectedDims;
  const std::vector<float> expected =
      referenceMatMul(aDims, a.values<float>(), bDims, b.values<float>(), ta, tb, &expectedDims);
  ASSERT_EQ(y.dims, expectedDims);
  expectAllNear(y.values<float>(), expected, 1e-4f);
}

TEST(CpuLayers, MatMulPlainAndTransposed) {
  checkMatMul({5, 7}, {7, 3}, false, false);
  checkMatMul({7, 5}, {7, 3}, true, false);
  checkMatMul({5, 7}, {3, 7}, false, true);
  checkMatMul({7, 5}, {3, 7}, true, true);
  checkMatMul({70, 90}, {90, 50}, false, false);  // the blocked GEMM path
  checkMatMul({90, 70}, {50, 90}, true, true);
}

TEST(CpuLayers, MatMulBroadcastBatch) {
  checkMatMul({2, 1, 4, 5}, {3, 5, 6}, false, false);
  checkMatMul({3, 4, 5}, {5, 6}, false, false);     // b shared by every batch
  checkMatMul({4, 5}, {2, 3, 5, 6}, false, false);  // a shared by every batch
  checkMatMul({2, 5, 4}, {1, 6, 5}, true, true);
}

TEST(CpuLayers, FullyConnected) {
  const HostTensor x = randomTensor({2, 3, 10}, 9);
  const HostTensor w = randomTensor({4, 10}, 10);
  const HostTensor bias = randomTensor({4}, 11);
  for (bool withBias : {true, false}) {
    const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net
          .addFullyConnected(in[0], constant(net, w), withBias ? constant(net, bias) : nullptr)
          ->output(0);
    });
    ASSERT_EQ(y.dims, (Dims{2, 3, 4}));
    Dims unused;
    std::vector<float> expected = referenceMatMul({6, 10}, x.values<float>(), {4, 10},
                                                  w.values<float>(), false, true, &unused);
    if (withBias) {
      for (size_t i = 0; i < expected.size(); ++i) expected[i] += bias.values<float>()[i % 4];
    }
    expectAllNear(y.values<float>(), expected, 1e-5f);
  }
}

double referenceActivation(FusedActivation activation, double x) {
  switch (activation) {
    case FusedActivation::kNone:
      return x;
    case FusedActivation::kRelu:
      return x < 0.0 ? 0.0 : x;
    case FusedActivation::kGeluErf:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case FusedActivation::kGeluTanh:
      return 0.5 * x *
             (1.0 + std::tanh(std::sqrt(2.0 / std::acos(-1.0)) * (x + 0.044715 * x * x * x)));
    case FusedActivation::kRelu6:
      return std::min(std::max(x, 0.0), 6.0);
    case FusedActivation::kSilu:
      return x / (1.0 + std::exp(-x));
    case FusedActivation::kHardSwish:
      return x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
  }
  return x;
}

// What the builder's epilogue fusion makes: out = activation(x @ w^T + bias + residual).
TEST(CpuLayers, FullyConnectedWithResidualAndActivation) {
  const HostTensor x = randomTensor({2, 3, 10}, 12);
  const HostTensor w = randomTensor({4, 10}, 13);
  const HostTensor bias = randomTensor({4}, 14);
  const HostTensor residual = randomTensor({2, 3, 4}, 15, -2.0f, 2.0f);
  Dims unused;
  const std::vector<float> product =
      referenceMatMul({6, 10}, x.values<float>(), {4, 10}, w.values<float>(), false, true, &unused);
  for (FusedActivation activation : {FusedActivation::kNone, FusedActivation::kRelu,
                                     FusedActivation::kGeluErf, FusedActivation::kGeluTanh}) {
    for (bool withBias : {true, false}) {
      SCOPED_TRACE(std::string(toString(activation)) + (withBias ? " with bias" : ""));
      FullyConnectedParams params;
      params.activation = activation;
      const HostTensor y =
          runLayer({x, residual}, [&](Network& net, const std::vector<Tensor*>& in) {
            return net
                .addLayer(params, {in[0], constant(net, w),
                                   withBias ? constant(net, bias) : nullptr, in[1]})
                ->output(0);
          });
      ASSERT_EQ(y.dims, (Dims{2, 3, 4}));
      std::vector<float> expected(product.size());
      for (size_t i = 0; i < expected.size(); ++i) {
        const double sum = double(product[i]) + (withBias ? bias.values<float>()[i % 4] : 0.0) +
                           residual.values<float>()[i];
        expected[i] = static_cast<float>(referenceActivation(activation, sum));
      }
      expectAllNear(y.values<float>(), expected, 1e-5f);
    }
  }
}

// ---- elementwise ---------------------------------------------------------------------------

template <typename T>
HostTensor runElementwise(DataType dtype, const Dims& aDims, const std::vector<T>& a,
                          const Dims& bDims, const std::vector<T>& b, ElementwiseOp op) {
  return runLayer({tensorOf(dtype, aDims, a), tensorOf(dtype, bDims, b)},
                  [&](Network& net, const std::vector<Tensor*>& in) {
                    return net.addElementwise(in[0], in[1], op)->output(0);
                  });
}

TEST(CpuLayers, ElementwiseFloatEveryOpWithBroadcasting) {
  // a (2, 1, 4) against b (3, 1): the output is (2, 3, 4); a is positive so pow is defined.
  const std::vector<float> a = randomFloats(8, 12, 0.5f, 2.0f);
  const std::vector<float> b = randomFloats(3, 13, -2.0f, 2.0f);
  struct Case {
    ElementwiseOp op;
    std::function<float(float, float)> reference;
  };
  const std::vector<Case> cases = {
      {ElementwiseOp::kSum, [](float x, float y) { return x + y; }},
      {ElementwiseOp::kSub, [](float x, float y) { return x - y; }},
      {ElementwiseOp::kProd, [](float x, float y) { return x * y; }},
      {ElementwiseOp::kDiv, [](float x, float y) { return x / y; }},
      {ElementwiseOp::kPow, [](float x, float y) { return std::pow(x, y); }},
      {ElementwiseOp::kMax, [](float x, float y) { return std::max(x, y); }},
      {ElementwiseOp::kMin, [](float x, float y) { return std::min(x, y); }},
      {ElementwiseOp::kFloorDiv, [](float x, float y) { return std::floor(x / y); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(toString(c.op));
    const HostTensor y = runElementwise(DataType::kFloat32, {2, 1, 4}, a, {3, 1}, b, c.op);
    ASSERT_EQ(y.dims, (Dims{2, 3, 4}));
    std::vector<float> expected;
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 3; ++j) {
        for (int k = 0; k < 4; ++k) expected.push_back(c.reference(a[i * 4 + k], b[j]));
      }
    }
    expectAllNear(y.values<float>(), expected, 1e-6f);
  }
}

TEST(CpuLayers, ElementwiseFloatComparisonsGiveBool) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<float> b = {2, 5};
  const HostTensor less =
      runElementwise(DataType::kFloat32, {2, 3}, a, {2, 1}, b, ElementwiseOp::kLess);
  EXPECT_EQ(less.dtype, DataType::kBool);
  EXPECT_EQ(less.values<uint8_t>(), (std::vector<uint8_t>{1, 0, 0, 1, 0, 0}));
  const HostTensor greater =
      runElementwise(DataType::kFloat32, {2, 3}, a, {2, 1}, b, ElementwiseOp::kGreater);
  EXPECT_EQ(greater.values<uint8_t>(), (std::vector<uint8_t>{0, 0, 1, 0, 0, 1}));
  const HostTensor equal =
      runElementwise(DataType::kFloat32, {2, 3}, a, {2, 1}, b, ElementwiseOp::kEqual);
  EXPECT_EQ(equal.values<uint8_t>(), (std::vector<uint8_t>{0, 1, 0, 0, 1, 0}));
}

TEST(CpuLayers, ElementwiseFloatMaxPropagatesNan) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const HostTensor y = runElementwise(DataType::kFloat32, {3}, std::vector<float>{nan, 1, 2}, {3},
                                      std::vector<float>{0, nan, 1}, ElementwiseOp::kMax);
  const std::vector<float> values = y.values<float>();
  EXPECT_TRUE(std::isnan(values[0]));
  EXPECT_TRUE(std::isnan(values[1]));
  EXPECT_EQ(values[2], 2.0f);
}

template <typename T>
void checkIntegerElementwise(DataType dtype) {
  // a (2, 3) against b (3): integer semantics of every op.
  const std::vector<T> a = {7, -7, 6, 5, 0, -9};
  const std::vector<T> b = {2, 3, -4};
  auto run = [&](ElementwiseOp op) { return runElementwise(dtype, {2, 3}, a, {3}, b, op); };
  EXPECT_EQ(run(ElementwiseOp::kSum).template values<T>(), (std::vector<T>{9, -4, 2, 7, 3, -13}));
  EXPECT_EQ(run(ElementwiseOp::kSub).template values<T>(), (std::vector<T>{5, -10, 10, 3, -3, -5}));
  EXPECT_EQ(run(ElementwiseOp::kProd).template values<T>(),
            (std::vector<T>{14, -21, -24, 10, 0, 36}));
  EXPECT_EQ(run(ElementwiseOp::kDiv).template values<T>(), (std::vector<T>{3, -2, -1, 2, 0, 2}));
  EXPECT_EQ(run(ElementwiseOp::kFloorDiv).template values<T>(),
            (std::vector<T>{3, -3, -2, 2, 0, 2}));
  EXPECT_EQ(run(ElementwiseOp::kMax).template values<T>(), (std::vector<T>{7, 3, 6, 5, 3, -4}));
  EXPECT_EQ(run(ElementwiseOp::kMin).template values<T>(), (std::vector<T>{2, -7, -4, 2, 0, -9}));
  EXPECT_EQ(run(ElementwiseOp::kAnd).template values<T>(),
            (std::vector<T>{T(7 & 2), T(-7 & 3), T(6 & -4), T(5 & 2), T(0 & 3), T(-9 & -4)}));
  EXPECT_EQ(run(ElementwiseOp::kOr).template values<T>(),
            (std::vector<T>{T(7 | 2), T(-7 | 3), T(6 | -4), T(5 | 2), T(0 | 3), T(-9 | -4)}));
  EXPECT_EQ(run(ElementwiseOp::kXor).template values<T>(),
            (std::vector<T>{T(7 ^ 2), T(-7 ^ 3), T(6 ^ -4), T(5 ^ 2), T(0 ^ 3), T(-9 ^ -4)}));
  EXPECT_EQ(run(ElementwiseOp::kLess).template values<uint8_t>(),
            (std::vector<uint8_t>{0, 1, 0, 0, 1, 1}));
  EXPECT_EQ(run(ElementwiseOp::kGreater).template values<uint8_t>(),
            (std::vector<uint8_t>{1, 0, 1, 1, 0, 0}));
  EXPECT_EQ(run(ElementwiseOp::kEqual).template values<uint8_t>(),
            (std::vector<uint8_t>{0, 0, 0, 0, 0, 0}));
  const HostTensor power = runElementwise(dtype, {4}, std::vector<T>{2, -3, 5, 0}, {4},
                                          std::vector<T>{10, 3, 0, 2}, ElementwiseOp::kPow);
  EXPECT_EQ(power.template values<T>(), (std::vector<T>{1024, -27, 1, 0}));
}

TEST(CpuLayers, ElementwiseInt32) { checkIntegerElementwise<int32_t>(DataType::kInt32); }

TEST(CpuLayers, ElementwiseInt64) { checkIntegerElementwise<int64_t>(DataType::kInt64); }

TEST(CpuLayers, ElementwiseIntegerDivisionByZeroIsAnErrorNamingTheLayer) {
  try {
    runElementwise(DataType::kInt32, {2}, std::vector<int32_t>{1, 2}, {2},
                   std::vector<int32_t>{1, 0}, ElementwiseOp::kDiv);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("division by zero"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("layer '"), std::string::npos) << error.what();
  }
}

TEST(CpuLayers, ElementwiseBool) {
  const HostTensor a = bools({4}, {0, 0, 1, 1});
  const HostTensor b = bools({4}, {0, 1, 0, 1});
  auto run = [&](ElementwiseOp op) {
    return runLayer({a, b},
                    [&](Network& net, const std::vector<Tensor*>& in) {
                      return net.addElementwise(in[0], in[1], op)->output(0);
                    })
        .values<uint8_t>();
  };
  EXPECT_EQ(run(ElementwiseOp::kAnd), (std::vector<uint8_t>{0, 0, 0, 1}));
  EXPECT_EQ(run(ElementwiseOp::kOr), (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(run(ElementwiseOp::kXor), (std::vector<uint8_t>{0, 1, 1, 0}));
  EXPECT_EQ(run(ElementwiseOp::kEqual), (std::vector<uint8_t>{1, 0, 0, 1}));
  EXPECT_EQ(run(ElementwiseOp::kLess), (std::vector<uint8_t>{0, 1, 0, 0}));
}

// ---- unary and activations -----------------------------------------------------------------

HostTensor runUnary(const HostTensor& x, UnaryOp op) {
  return runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addUnary(in[0], op)->output(0);
  });
}

TEST(CpuLayers, UnaryFloatEveryOp) {
  const std::vector<float> x = {-2.5f, -1.5f, -0.4f, 0.0f, 0.3f, 0.5f, 1.5f, 2.5f, 3.7f};
  const std::vector<float> positive = {0.1f, 0.5f, 1.0f, 2.0f, 3.7f, 10.0f};
  struct Case {
    UnaryOp op;
    std::function<float(float)> reference;
    bool positiveOnly;
  };
  const std::vector<Case> cases = {
      {UnaryOp::kExp, [](float v) { return std::exp(v); }, false},
      {UnaryOp::kLog, [](float v) { return std::log(v); }, true},
      {UnaryOp::kSqrt, [](float v) { return std::sqrt(v); }, true},
      {UnaryOp::kRsqrt, [](float v) { return 1.0f / std::sqrt(v); }, true},
      {UnaryOp::kRecip, [](float v) { return 1.0f / v; }, true},
      {UnaryOp::kAbs, [](float v) { return std::fabs(v); }, false},
      {UnaryOp::kNeg, [](float v) { return -v; }, false},
      {UnaryOp::kSin, [](float v) { return std::sin(v); }, false},
      {UnaryOp::kCos, [](float v) { return std::cos(v); }, false},
      {UnaryOp::kTan, [](float v) { return std::tan(v); }, false},
      {UnaryOp::kErf, [](float v) { return std::erf(v); }, false},
      {UnaryOp::kFloor, [](float v) { return std::floor(v); }, false},
      {UnaryOp::kCeil, [](float v) { return std::ceil(v); }, false},
      {UnaryOp::kSign, [](float v) { return float((v > 0) - (v < 0)); }, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(toString(c.op));
    const std::vector<float>& input = c.positiveOnly ? positive : x;
    std::vector<float> expected;
    for (float v : input) expected.push_back(c.reference(v));
    const HostTensor y = runUnary(floats({static_cast<int64_t>(input.size())}, input), c.op);
    expectAllNear(y.values<float>(), expected, 1e-6f);
  }
  // Round is half to even, as torch.round.
  EXPECT_EQ(runUnary(floats({9}, x), UnaryOp::kRound).values<float>(),
            (std::vector<float>{-2, -2, -0, 0, 0, 0, 2, 2, 4}));
}

TEST(CpuLayers, UnaryIntegerAndBool) {
  const HostTensor ints = tensorOf(DataType::kInt32, {4}, std::vector<int32_t>{-3, 0, 5, -1});
  EXPECT_EQ(runUnary(ints, UnaryOp::kAbs).values<int32_t>(), (std::vector<int32_t>{3, 0, 5, 1}));
  EXPECT_EQ(runUnary(ints, UnaryOp::kNeg).values<int32_t>(), (std::vector<int32_t>{3, 0, -5, 1}));
  EXPECT_EQ(runUnary(ints, UnaryOp::kSign).values<int32_t>(), (std::vector<int32_t>{-1, 0, 1, -1}));
  const HostTensor longs = tensorOf(DataType::kInt64, {2}, std::vector<int64_t>{-4, 9});
  EXPECT_EQ(runUnary(longs, UnaryOp::kAbs).values<int64_t>(), (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(runUnary(bools({3}, {1, 0, 1}), UnaryOp::kNot).values<uint8_t>(),
            (std::vector<uint8_t>{0, 1, 0}));
}

float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

TEST(CpuLayers, ActivationEveryType) {
  const std::vector<float> x = {-25.0f, -3.5f, -1.0f, -0.2f, 0.0f, 0.7f, 2.0f, 4.0f, 30.0f};
  struct Case {
    ActivationParams params;
    std::function<float(float)> reference;
  };
  const double seluAlpha = 1.6732632423543772;
  const double seluScale = 1.0507009873554805;
  const std::vector<Case> cases = {
      {{ActivationType::kRelu}, [](float v) { return v > 0 ? v : 0.0f; }},
      {{ActivationType::kSigmoid}, sigmoid},
      {{ActivationType::kTanh}, [](float v) { return std::tanh(v); }},
      {{ActivationType::kLeakyRelu, 0.1}, [](float v) { return v > 0 ? v : 0.1f * v; }},
      {{ActivationType::kElu, 0.7}, [](float v) { return v > 0 ? v : 0.7f * std::expm1(v); }},
      {{ActivationType::kSelu},
       [&](float v) { return float(seluScale * (v > 0 ? v : seluAlpha * std::expm1(double(v)))); }},
      {{ActivationType::kSoftplus, 2.0, 10.0},
       [](float v) { return 2.0f * v > 10.0f ? v : std::log1p(std::exp(2.0f * v)) / 2.0f; }},
      {{ActivationType::kClip, -1.0, 2.5},
       [](float v) { return std::min(std::max(v, -1.0f), 2.5f); }},
      {{ActivationType::kHardSigmoid},
       [](float v) { return std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f; }},
      {{ActivationType::kHardSwish},
       [](float v) { return v * std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f; }},
      {{ActivationType::kGeluErf},
       [](float v) { return float(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))); }},
      {{ActivationType::kGeluTanh},
       [](float v) {
         const double inner =
             std::sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * double(v) * v * v);
         return float(0.5 * v * (1.0 + std::tanh(inner)));
       }},
      {{ActivationType::kSilu}, [](float v) { return v * sigmoid(v); }},
      {{ActivationType::kMish},
       [](float v) { return float(v * std::tanh(std::log1p(std::exp(double(v))))); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(toString(c.params.type));
    const HostTensor y =
        runLayer({floats({9}, x)}, [&](Network& net, const std::vector<Tensor*>& in) {
          return net.addActivation(in[0], c.params)->output(0);
        });
    std::vector<float> expected;
    for (float v : x) expected.push_back(c.reference(v));
    expectAllNear(y.values<float>(), expected, 1e-5f);
  }
}

TEST(CpuLayers, ActivationReluAndClipOnIntegers) {
  // torch.relu and torch.clamp keep integer tensors integer (clamping indices is common).
  const HostTensor longs =
      tensorOf(DataType::kInt64, {5}, std::vector<int64_t>{-7, -1, 0, 3, int64_t{1} << 40});
  auto run = [](const HostTensor& x, const ActivationParams& p) {
    return runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net.addActivation(in[0], p)->output(0);
    });
  };
  EXPECT_EQ(run(longs, {ActivationType::kRelu}).values<int64_t>(),
            (std::vector<int64_t>{0, 0, 0, 3, int64_t{1} << 40}));
  EXPECT_EQ(run(longs, {ActivationType::kClip, -2.0, 9.0}).values<int64_t>(),
            (std::vector<int64_t>{-2, -1, 0, 3, 9}));
  // A bound beyond the type's range leaves that side open.
  const HostTensor bytes = tensorOf(DataType::kUInt8, {3}, std::vector<uint8_t>{0, 100, 250});
  EXPECT_EQ(run(bytes, {ActivationType::kClip, -1e9, 200.0}).values<uint8_t>(),
            (std::vector<uint8_t>{0, 100, 200}));
  try {
    run(longs, {ActivationType::kClip, 0.5, 9.0});
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("whole-number"), std::string::npos) << error.what();
  }
  try {
    run(longs, {ActivationType::kSigmoid});
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("cast to float32"), std::string::npos) << error.what();
  }
}

// ---- pooling -------------------------------------------------------------------------------

// Reference 2-D pooling over windows that may reach into padding and, in ceil mode, past it.
std::vector<float> referencePool2D(const std::vector<float>& x, int64_t planes, int64_t h,
                                   int64_t w, const PoolingParams& p, int64_t outH, int64_t outW) {
  std::vector<float> out;
  for (int64_t plane = 0; plane < planes; ++plane) {
    for (int64_t oh = 0; oh < outH; ++oh) {
      for (int64_t ow = 0; ow < outW; ++ow) {
        float maximum = -std::numeric_limits<float>::infinity();
        double sum = 0.0;
        int inside = 0;
        int padded = 0;
        for (int64_t kh = 0; kh < p.kernel[0]; ++kh) {
          for (int64_t kw = 0; kw < p.kernel[1]; ++kw) {
            const int64_t ih = oh * p.stride[0] - p.prePadding[0] + kh * p.dilation[0];
            const int64_t iw = ow * p.stride[1] - p.prePadding[1] + kw * p.dilation[1];
            if (ih >= h + p.postPadding[0] || iw >= w + p.postPadding[1]) continue;
            ++padded;
            if (ih < 0 || iw < 0 || ih >= h || iw >= w) continue;
            const float v = x[(plane * h + ih) * w + iw];
            maximum = std::max(maximum, v);
            sum += v;
            ++inside;
          }
        }
        if (p.type == PoolingType::kMax) {
          out.push_back(maximum);
        } else {
          out.push_back(float(sum / (p.countIncludePad ? padded : inside)));
        }
      }
    }
  }
  return out;
}

int64_t pooledSize(int64_t in, int64_t kernel, int64_t stride, int64_t pre, int64_t post,
                   int64_t dilation, bool ceilMode) {
  const int64_t span = in + pre + post - dilation * (kernel - 1) - 1;
  int64_t out = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1;
  // torch: the last window must start inside the input or the left padding.
  if (ceilMode && (out - 1) * stride >= in + pre) --out;
  return out;
}

void checkPool2D(const PoolingParams& p, int64_t h, int64_t w) {
  const HostTensor x = randomTensor({2, 3, h, w}, 14);
  const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addPooling(in[0], p)->output(0);
  });
  const int64_t outH = pooledSize(h, p.kernel[0], p.stride[0], p.prePadding[0], p.postPadding[0],
                                  p.dilation[0], p.ceilMode);
  const int64_t outW = pooledSize(w, p.kernel[1], p.stride[1], p.prePadding[1], p.postPadding[1],
                                  p.dilation[1], p.ceilMode);
  ASSERT_EQ(y.dims, (Dims{2, 3, outH, outW}));
  expectAllNear(y.values<float>(), referencePool2D(x.values<float>(), 6, h, w, p, outH, outW),
                1e-6f);
}

PoolingParams pool2D(PoolingType type, Dims kernel, Dims stride, Dims padding, bool ceilMode,
                     bool countIncludePad = true, Dims dilation = {1, 1}) {
  PoolingParams p;
  p.type = type;
  p.kernel = std::move(kernel);
  p.stride = std::move(stride);
  p.prePadding = padding;
  p.postPadding = padding;
  p.dilation = std::move(dilation);
  p.ceilMode = ceilMode;
  p.countIncludePad = countIncludePad;
  return p;
}

TEST(CpuLayers, MaxPooling2DPaddingCeilModeDilation) {
  checkPool2D(pool2D(PoolingType::kMax, {3, 3}, {2, 2}, {1, 1}, false), 11, 10);
  checkPool2D(pool2D(PoolingType::kMax, {3, 2}, {2, 2}, {1, 0}, true), 10, 9);
  checkPool2D(pool2D(PoolingType::kMax, {2, 2}, {1, 2}, {0, 0}, false, true, {2, 1}), 8, 8);
}

TEST(CpuLayers, AveragePooling2DCountIncludePadAndCeilMode) {
  checkPool2D(pool2D(PoolingType::kAverage, {3, 3}, {2, 2}, {1, 1}, false, true), 9, 10);
  checkPool2D(pool2D(PoolingType::kAverage, {3, 3}, {2, 2}, {1, 1}, false, false), 9, 10);
  checkPool2D(pool2D(PoolingType::kAverage, {2, 3}, {2, 2}, {0, 1}, true, true), 9, 8);
  checkPool2D(pool2D(PoolingType::kAverage, {2, 3}, {2, 2}, {0, 1}, true, false), 9, 8);
}

TEST(CpuLayers, Pooling1DAnd3D) {
  // 1-D max over (1, 1, 6) with kernel 2, stride 2: pairwise maxima.
  const HostTensor x1 = floats({1, 1, 6}, {1, 5, 2, 2, -1, -3});
  PoolingParams p1;
  p1.type = PoolingType::kMax;
  p1.kernel = {2};
  p1.stride = {2};
  p1.prePadding = {0};
  p1.postPadding = {0};
  p1.dilation = {1};
  const HostTensor y1 = runLayer({x1}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addPooling(in[0], p1)->output(0);
  });
  EXPECT_EQ(y1.values<float>(), (std::vector<float>{5, 2, -1}));
  // 3-D average of a 2x2x2 cube with kernel 2: one mean.
  const HostTensor x3 = floats({1, 1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  PoolingParams p3;
  p3.type = PoolingType::kAverage;
  p3.kernel = {2, 2, 2};
  p3.stride = {2, 2, 2};
  p3.prePadding = {0, 0, 0};
  p3.postPadding = {0, 0, 0};
  p3.dilation = {1, 1, 1};
  const HostTensor y3 = runLayer({x3}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addPooling(in[0], p3)->output(0);
  });
  ASSERT_EQ(y3.dims, (Dims{1, 1, 1, 1, 1}));
  EXPECT_FLOAT_EQ(y3.values<float>()[0], 4.5f);
}

TEST(CpuLayers, AdaptivePoolingWithUnevenWindows) {
  // Input (1, 1, 5, 7) to (3, 4): torch's windows [floor(o*in/out), ceil((o+1)*in/out)).
  const HostTensor x = randomTensor({1, 1, 5, 7}, 15);
  const std::vector<float> values = x.values<float>();
  for (PoolingType type : {PoolingType::kAverage, PoolingType::kMax}) {
    PoolingParams p;
    p.type = type;
    p.adaptive = true;
    p.outputSize = {3, 4};
    const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net.addPooling(in[0], p)->output(0);
    });
    ASSERT_EQ(y.dims, (Dims{1, 1, 3, 4}));
    std::vector<float> expected;
    for (int64_t oh = 0; oh < 3; ++oh) {
      for (int64_t ow = 0; ow < 4; ++ow) {
        const int64_t h0 = oh * 5 / 3;
        const int64_t h1 = ((oh + 1) * 5 + 2) / 3;
        const int64_t w0 = ow * 7 / 4;
        const int64_t w1 = ((ow + 1) * 7 + 3) / 4;
        double sum = 0.0;
        float maximum = -std::numeric_limits<float>::infinity();
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) {
            sum += values[h * 7 + w];
            maximum = std::max(maximum, values[h * 7 + w]);
          }
        }
        expected.push_back(type == PoolingType::kMax ? maximum
                                                     : float(sum / ((h1 - h0) * (w1 - w0))));
      }
    }
    expectAllNear(y.values<float>(), expected, 1e-6f);
  }
}

// ---- reduce, softmax, normalization --------------------------------------------------------

// Reference reduction of a (2, 3, 4) tensor over `axes` (non-negative), keeping size-1 dims.
std::vector<double> referenceReduce(const std::vector<float>& x, const std::vector<bool>& reduced,
                                    ReduceOp op) {
  const Dims dims = {2, 3, 4};
  Dims outDims;
  for (size_t d = 0; d < 3; ++d) outDims.push_back(reduced[d] ? 1 : dims[d]);
  std::vector<std::vector<double>> groups(static_cast<size_t>(volume(outDims)));
  forEachPosition(dims, [&](const Dims& p) {
    Dims o(3);
    for (size_t d = 0; d < 3; ++d) o[d] = reduced[d] ? 0 : p[d];
    groups[flatIndex(o, outDims)].push_back(x[flatIndex(p, dims)]);
  });
  std::vector<double> out;
  for (const std::vector<double>& g : groups) {
    double value = op == ReduceOp::kProd ? 1.0 : 0.0;
    if (op == ReduceOp::kMax) value = -INFINITY;
    if (op == ReduceOp::kMin) value = INFINITY;
    for (double v : g) {
      if (op == ReduceOp::kSum || op == ReduceOp::kAvg) value += v;
      if (op == ReduceOp::kProd) value *= v;
      if (op == ReduceOp::kMax) value = std::max(value, v);
      if (op == ReduceOp::kMin) value = std::min(value, v);
    }
    out.push_back(op == ReduceOp::kAvg ? value / g.size() : value);
  }
  return out;
}

TEST(CpuLayers, ReduceEveryOpAxesAndKeepDims) {
  const HostTensor x = randomTensor({2, 3, 4}, 16, 0.5f, 1.5f);
  struct AxesCase {
    Dims axes;
    std::vector<bool> reduced;
  };
  const std::vector<AxesCase> axesCases = {
      {{1}, {false, true, false}},
      {{-1}, {false, false, true}},
      {{0, -1}, {true, false, true}},
      {{}, {true, true, true}},
  };
  for (ReduceOp op :
       {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kAvg}) {
    for (const AxesCase& axesCase : axesCases) {
      for (bool keepDims : {true, false}) {
        SCOPED_TRACE(concat(toString(op), " axes ", toString(axesCase.axes), " keep ", keepDims));
        const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
          return net.addReduce(in[0], {op, axesCase.axes, keepDims})->output(0);
        });
        Dims expectedDims;
        const Dims dims = {2, 3, 4};
        for (size_t d = 0; d < 3; ++d) {
          if (!axesCase.reduced[d]) {
            expectedDims.push_back(dims[d]);
          } else if (keepDims) {
            expectedDims.push_back(1);
          }
        }
        EXPECT_EQ(y.dims, expectedDims);
        const std::vector<double> expected =
            referenceReduce(x.values<float>(), axesCase.reduced, op);
        expectAllNear(y.values<float>(), std::vector<float>(expected.begin(), expected.end()),
                      1e-5f);
      }
    }
  }
}

TEST(CpuLayers, ReduceInt32) {
  const HostTensor x = tensorOf(DataType::kInt32, {2, 3}, std::vector<int32_t>{1, -2, 3, 4, 5, 6});
  auto run = [&](ReduceOp op) {
    return runLayer({x},
                    [&](Network& net, const std::vector<Tensor*>& in) {
                      return net.addReduce(in[0], {op, {1}, false})->output(0);
                    })
        .values<int32_t>();
  };
  EXPECT_EQ(run(ReduceOp::kSum), (std::vector<int32_t>{2, 15}));
  EXPECT_EQ(run(ReduceOp::kProd), (std::vector<int32_t>{-6, 120}));
  EXPECT_EQ(run(ReduceOp::kMax), (std::vector<int32_t>{3, 6}));
  EXPECT_EQ(run(ReduceOp::kMin), (std::vector<int32_t>{-2, 4}));
}

TEST(CpuLayers, SoftmaxAndLogSoftmax) {
  const HostTensor x = randomTensor({2, 3, 4}, 17, -5.0f, 5.0f);
  const std::vector<float> values = x.values<float>();
  for (int64_t axis : {1, -1, 0}) {
    for (bool log : {false, true}) {
      SCOPED_TRACE(concat("axis ", axis, " log ", log));
      const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
        return net.addSoftmax(in[0], {axis, log})->output(0);
      });
      const Dims dims = {2, 3, 4};
      const size_t a = static_cast<size_t>(axis < 0 ? axis + 3 : axis);
      std::vector<float> expected(values.size());
      forEachPosition(dims, [&](const Dims& p) {
        double sum = 0.0;
        Dims q = p;
        for (q[a] = 0; q[a] < dims[a]; ++q[a]) sum += std::exp(double(values[flatIndex(q, dims)]));
        const double v = values[flatIndex(p, dims)];
        expected[flatIndex(p, dims)] = float(log ? v - std::log(sum) : std::exp(v) / sum);
      });
      expectAllNear(y.values<float>(), expected, 1e-5f);
    }
  }
}

TEST(CpuLayers, BatchNormalization) {
  const HostTensor x = randomTensor({2, 3, 2, 2}, 18);
  const HostTensor scale = floats({3}, {1.5f, -0.5f, 2.0f});
  const HostTensor bias = floats({3}, {0.1f, 0.2f, -0.3f});
  const HostTensor mean = floats({3}, {0.05f, -0.1f, 0.2f});
  const HostTensor var = floats({3}, {0.5f, 2.0f, 0.01f});
  for (bool affine : {true, false}) {
    NormalizationParams p;
    p.type = NormalizationType::kBatch;
    p.epsilon = 1e-3;
    const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net
          .addNormalization(in[0], affine ? constant(net, scale) : nullptr,
                            affine ? constant(net, bias) : nullptr, constant(net, mean),
                            constant(net, var), p)
          ->output(0);
    });
    std::vector<float> expected;
    const std::vector<float> v = x.values<float>();
    for (size_t i = 0; i < v.size(); ++i) {
      const size_t c = (i / 4) % 3;
      double value = (v[i] - mean.values<float>()[c]) / std::sqrt(var.values<float>()[c] + 1e-3);
      if (affine) value = value * scale.values<float>()[c] + bias.values<float>()[c];
      expected.push_back(float(value));
    }
    expectAllNear(y.values<float>(), expected, 1e-5f);
  }
}

// Over the channel dim that `axis` names: channels last, the norm of the transposed tensor.
TEST(CpuLayers, BatchNormalizationOverTheLastDim) {
  const HostTensor x = randomTensor({2, 2, 2, 3}, 22);  // (N, H, W, C)
  const HostTensor scale = floats({3}, {1.5f, -0.5f, 2.0f});
  const HostTensor bias = floats({3}, {0.1f, 0.2f, -0.3f});
  const HostTensor mean = floats({3}, {0.05f, -0.1f, 0.2f});
  const HostTensor var = floats({3}, {0.5f, 2.0f, 0.01f});
  for (int64_t axis : {3, -1}) {
    NormalizationParams p;
    p.type = NormalizationType::kBatch;
    p.epsilon = 1e-3;
    p.axis = axis;
    const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net
          .addNormalization(in[0], constant(net, scale), constant(net, bias), constant(net, mean),
                            constant(net, var), p)
          ->output(0);
    });
    std::vector<float> expected;
    const std::vector<float> v = x.values<float>();
    for (size_t i = 0; i < v.size(); ++i) {
      const size_t c = i % 3;
      const double value =
          (v[i] - mean.values<float>()[c]) / std::sqrt(var.values<float>()[c] + 1e-3);
      expected.push_back(float(value * scale.values<float>()[c] + bias.values<float>()[c]));
    }
    expectAllNear(y.values<float>(), expected, 1e-5f);
  }
}

TEST(CpuLayers, LayerNormalization) {
  const HostTensor x = randomTensor({2, 3, 4}, 19, -3.0f, 3.0f);
  const std::vector<float> v = x.values<float>();
  for (int64_t axis : {-1, 1}) {
    const int64_t cols = axis == -1 ? 4 : 12;
    const HostTensor scale = randomTensor(axis == -1 ? Dims{4} : Dims{3, 4}, 20);
    const HostTensor bias = randomTensor(axis == -1 ? Dims{4} : Dims{3, 4}, 21);
    NormalizationParams p;
    p.type = NormalizationType::kLayer;
    p.axis = axis;
    p.epsilon = 1e-5;
    const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net
          .addNormalization(in[0], constant(net, scale), constant(net, bias), nullptr, nullptr, p)
          ->output(0);
    });
    std::vector<float> expected;
    for (size_t row = 0; row < v.size() / cols; ++row) {
      double mean = 0.0;
      for (int64_t i = 0; i < cols; ++i) mean += v[row * cols + i];
      mean /= cols;
      double variance = 0.0;
      for (int64_t i = 0; i < cols; ++i) variance += std::pow(v[row * cols + i] - mean, 2);
      variance /= cols;
      for (int64_t i = 0; i < cols; ++i) {
        expected.push_back(float((v[row * cols + i] - mean) / std::sqrt(variance + 1e-5) *
                                     scale.values<float>()[i] +
                                 bias.values<float>()[i]));
      }
    }
    expectAllNear(y.values<float>(), expected, 1e-5f);
  }
}

// ---- data movement -------------------------------------------------------------------------

std::vector<float> iota(int64_t count) {
  std::vector<float> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) values[i] = float(i);
  return values;
}

// Reference transpose: out dim i is in dim permutation[i].
std::vector<float> referenceTranspose(const std::vector<float>& x, const Dims& dims,
                                      const Dims& permutation) {
  Dims outDims;
  for (int64_t axis : permutation) outDims.push_back(dims[axis]);
  std::vector<float> out;
  forEachPosition(outDims, [&](const Dims& o) {
    Dims i(dims.size());
    for (size_t d = 0; d < permutation.size(); ++d) i[permutation[d]] = o[d];
    out.push_back(x[flatIndex(i, dims)]);
  });
  return out;
}

HostTensor runShuffle(const HostTensor& x, const ShuffleParams& p) {
  return runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addShuffle(in[0], p)->output(0);
  });
}

TEST(CpuLayers, ShuffleReshapeTransposeAndBoth) {
  const HostTensor x = floats({2, 3, 4}, iota(24));
  ShuffleParams reshape;
  reshape.hasReshape = true;
  reshape.reshapeDims = {0, -1};
  HostTensor y = runShuffle(x, reshape);
  EXPECT_EQ(y.dims, (Dims{2, 12}));
  EXPECT_EQ(y.values<float>(), iota(24));

  ShuffleParams transpose;
  transpose.firstPermutation = {2, 0, 1};
  y = runShuffle(x, transpose);
  EXPECT_EQ(y.dims, (Dims{4, 2, 3}));
  EXPECT_EQ(y.values<float>(), referenceTranspose(iota(24), {2, 3, 4}, {2, 0, 1}));

  // (2, 3, 4) -> transpose (1, 0, 2) -> (3, 2, 4) -> reshape (3, 8) -> transpose (1, 0).
  ShuffleParams both;
  both.firstPermutation = {1, 0, 2};
  both.hasReshape = true;
  both.reshapeDims = {3, 8};
  both.secondPermutation = {1, 0};
  y = runShuffle(x, both);
  EXPECT_EQ(y.dims, (Dims{8, 3}));
  EXPECT_EQ(y.values<float>(),
            referenceTranspose(referenceTranspose(iota(24), {2, 3, 4}, {1, 0, 2}), {3, 8}, {1, 0}));

  // Reshape then transpose, on int64 elements.
  std::vector<int64_t> longs(24);
  for (int64_t i = 0; i < 24; ++i) longs[i] = i * 1000000007LL;
  ShuffleParams second;
  second.hasReshape = true;
  second.reshapeDims = {6, 4};
  second.secondPermutation = {1, 0};
  y = runShuffle(tensorOf(DataType::kInt64, {2, 3, 4}, longs), second);
  EXPECT_EQ(y.dims, (Dims{4, 6}));
  const std::vector<int64_t> result = y.values<int64_t>();
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(result[i * 6 + j], longs[j * 4 + i]);
  }
}

TEST(CpuLayers, ConcatAlongAxes) {
  const HostTensor a = floats({2, 1, 3}, {1, 2, 3, 4, 5, 6});
  const HostTensor b = floats({2, 2, 3}, {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21});
  for (int64_t axis : {1, -2}) {
    const HostTensor y = runLayer({a, b}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net.addConcat({in[0], in[1]}, {axis})->output(0);
    });
    EXPECT_EQ(y.dims, (Dims{2, 3, 3}));
    EXPECT_EQ(y.values<float>(), (std::vector<float>{1, 2, 3, 10, 11, 12, 13, 14, 15, 4, 5, 6, 16,
                                                     17, 18, 19, 20, 21}));
  }
  const HostTensor c = tensorOf(DataType::kInt64, {2}, std::vector<int64_t>{1, 2});
  const HostTensor d = tensorOf(DataType::kInt64, {1}, std::vector<int64_t>{3});
  const HostTensor y = runLayer({c, d, c}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addConcat({in[0], in[1], in[2]}, {0})->output(0);
  });
  EXPECT_EQ(y.values<int64_t>(), (std::vector<int64_t>{1, 2, 3, 1, 2}));
}

TEST(CpuLayers, SliceNegativeStartsStepsAndEnds) {
  const HostTensor x = floats({4, 6}, iota(24));
  SliceParams p;
  p.axes = {0, -1};
  p.starts = {-3, 1};
  p.ends = {kSliceEnd, -1};
  p.steps = {2, 3};
  const HostTensor y = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addSlice(in[0], p)->output(0);
  });
  // Rows 1 and 3, columns 1 and 4.
  EXPECT_EQ(y.dims, (Dims{2, 2}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{7, 10, 19, 22}));

  SliceParams clamped;
  clamped.axes = {1};
  clamped.starts = {-100};
  clamped.ends = {2};
  clamped.steps = {1};
  const HostTensor z =
      runLayer({tensorOf(DataType::kInt32, {2, 3}, std::vector<int32_t>{1, 2, 3, 4, 5, 6})},
               [&](Network& net, const std::vector<Tensor*>& in) {
                 return net.addSlice(in[0], clamped)->output(0);
               });
  EXPECT_EQ(z.dims, (Dims{2, 2}));
  EXPECT_EQ(z.values<int32_t>(), (std::vector<int32_t>{1, 2, 4, 5}));
}

// x[:, 1:ids.size(1) + 1] and x broadcast along a size-1 dim to ids.size(0): the slice ends and
// the broadcast length come from another input's dims at run time.
TEST(CpuLayers, SliceEndsAtAReferenceDimAndBroadcastsWithStepZero) {
  const HostTensor x = floats({1, 6}, iota(6));
  const HostTensor ids = tensorOf(DataType::kInt64, {3, 4}, std::vector<int64_t>(12, 0));
  SliceParams p;
  p.axes = {0, 1};
  p.starts = {0, 1};
  p.ends = {0, 1};
  p.steps = {0, 1};
  p.endReferences = {0, 1};
  const HostTensor y = runLayer({x, ids}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addSlice(in[0], in[1], p)->output(0);
  });
  EXPECT_EQ(y.dims, (Dims{3, 4}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}));
}

TEST(CpuLayers, GatherInt32AndInt64IndicesWithNegatives) {
  const HostTensor data = floats({3, 4}, iota(12));
  const HostTensor indices32 =
      tensorOf(DataType::kInt32, {2, 2}, std::vector<int32_t>{2, -1, 0, -4});
  HostTensor y = runLayer({data, indices32}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addGather(in[0], in[1], {1})->output(0);
  });
  EXPECT_EQ(y.dims, (Dims{3, 2, 2}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{2, 3, 0, 0, 6, 7, 4, 4, 10, 11, 8, 8}));

  const HostTensor indices64 = tensorOf(DataType::kInt64, {3}, std::vector<int64_t>{-1, 0, 1});
  y = runLayer({data, indices64}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addGather(in[0], in[1], {0})->output(0);
  });
  EXPECT_EQ(y.dims, (Dims{3, 4}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6, 7}));

  // A rank-0 index removes the axis, like torch.select.
  const HostTensor scalarIndex = tensorOf(DataType::kInt64, {}, std::vector<int64_t>{-2});
  y = runLayer({data, scalarIndex}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addGather(in[0], in[1], {-1})->output(0);
  });
  EXPECT_EQ(y.dims, (Dims{3}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{2, 6, 10}));
}

TEST(CpuLayers, ElementGatherTakesAnIndexPerOutputElement) {
  const HostTensor data = floats({3, 4}, iota(12));
  const GatherParams alongColumns{1, GatherMode::kElement};
  const HostTensor columns =
      tensorOf(DataType::kInt64, {3, 2}, std::vector<int64_t>{3, 0, -1, 1, 2, 2});
  HostTensor y = runLayer({data, columns}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addGather(in[0], in[1], alongColumns)->output(0);
  });
  EXPECT_EQ(y.dims, (Dims{3, 2}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{3, 0, 7, 5, 10, 10}));

  const GatherParams alongRows{0, GatherMode::kElement};
  const HostTensor rows =
      tensorOf(DataType::kInt32, {2, 4}, std::vector<int32_t>{2, 0, 1, -1, 0, 0, 0, 0});
  y = runLayer({data, rows}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addGather(in[0], in[1], alongRows)->output(0);
  });
  EXPECT_EQ(y.dims, (Dims{2, 4}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{8, 1, 6, 11, 0, 1, 2, 3}));
}

TEST(CpuLayers, GatherIndexOutOfRangeIsAnError) {
  const HostTensor data = floats({3}, {1, 2, 3});
  const HostTensor indices = tensorOf(DataType::kInt32, {1}, std::vector<int32_t>{3});
  try {
    runLayer({data, indices}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net.addGather(in[0], in[1], {0})->output(0);
    });
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("out of range"), std::string::npos) << error.what();
  }
}

// ---- casts and half precision --------------------------------------------------------------

HostTensor runCast(const HostTensor& x, DataType toType) {
  return runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addCast(in[0], toType)->output(0);
  });
}

TEST(CpuLayers, CastBetweenNumbersAndBool) {
  const HostTensor x = floats({5}, {-2.7f, -0.5f, 0.0f, 1.9f, 3.0f});
  EXPECT_EQ(runCast(x, DataType::kInt32).values<int32_t>(), (std::vector<int32_t>{-2, 0, 0, 1, 3}));
  EXPECT_EQ(runCast(x, DataType::kInt64).values<int64_t>(), (std::vector<int64_t>{-2, 0, 0, 1, 3}));
  EXPECT_EQ(runCast(x, DataType::kBool).values<uint8_t>(), (std::vector<uint8_t>{1, 1, 0, 1, 1}));
  EXPECT_EQ(runCast(bools({3}, {1, 0, 1}), DataType::kFloat32).values<float>(),
            (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(runCast(tensorOf(DataType::kInt64, {2}, std::vector<int64_t>{-5, 7}), DataType::kInt32)
                .values<int32_t>(),
            (std::vector<int32_t>{-5, 7}));
}

TEST(CpuLayers, CastFloat16RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and the next fp16 (1 + 2^-10): even wins, 1. 1 + 3 * 2^-11 is
  // halfway between 1 + 2^-10 and 1 + 2^-9: even wins, 1 + 2^-9. 65520 rounds to infinity.
  const HostTensor x =
      floats({6}, {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65520.0f, 0x1p-24f, -0.1f});
  const HostTensor half = runCast(x, DataType::kFloat16);
  EXPECT_EQ(half.values<uint16_t>(),
            (std::vector<uint16_t>{0x3c00, 0x3c02, 0x7bff, 0x7c00, 0x0001, 0xae66}));
  const HostTensor back = runCast(half, DataType::kFloat32);
  EXPECT_EQ(back.values<float>(), (std::vector<float>{1.0f, 1.0f + 0x1p-9f, 65504.0f, INFINITY,
                                                      0x1p-24f, -0.0999755859375f}));
}

TEST(CpuLayers, CastBFloat16RoundTrip) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even wins, 1. 1 + 3 * 2^-8: up to 1 + 2^-6.
  const HostTensor x = floats({4}, {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.5f, 3.0e38f});
  const HostTensor bf16 = runCast(x, DataType::kBFloat16);
  EXPECT_EQ(bf16.values<uint16_t>(), (std::vector<uint16_t>{0x3f80, 0x3f82, 0xc020, 0x7f62}));
  const HostTensor back = runCast(bf16, DataType::kFloat32);
  EXPECT_EQ(back.values<float>()[0], 1.0f);
  EXPECT_EQ(back.values<float>()[1], 1.0f + 0x1p-6f);
  EXPECT_EQ(back.values<float>()[2], -2.5f);
}

TEST(CpuLayers, HalfPrecisionComputeLayersRunThroughFloat32) {
  // fp16 input -> relu -> fp16 output, and fp16 elementwise with a comparison giving bool.
  const HostTensor x = runCast(floats({4}, {-1.5f, 0.25f, 2.0f, -0.0f}), DataType::kFloat16);
  const HostTensor relu = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addActivation(in[0], {ActivationType::kRelu})->output(0);
  });
  EXPECT_EQ(relu.dtype, DataType::kFloat16);
  EXPECT_EQ(runCast(relu, DataType::kFloat32).values<float>(),
            (std::vector<float>{0.0f, 0.25f, 2.0f, 0.0f}));
  const HostTensor less = runLayer({x, x}, [&](Network& net, const std::vector<Tensor*>& in) {
    Tensor* doubled = net.addElementwise(in[0], in[1], ElementwiseOp::kSum)->output(0);
    return net.addElementwise(doubled, in[1], ElementwiseOp::kLess)->output(0);
  });
  EXPECT_EQ(less.values<uint8_t>(), (std::vector<uint8_t>{1, 0, 0, 0}));
  const HostTensor bf16 = runCast(floats({2, 2}, {1, 2, 3, 4}), DataType::kBFloat16);
  const HostTensor product =
      runLayer({bf16, bf16}, [&](Network& net, const std::vector<Tensor*>& in) {
        return net.addMatMul(in[0], in[1])->output(0);
      });
  EXPECT_EQ(product.dtype, DataType::kBFloat16);
  EXPECT_EQ(runCast(product, DataType::kFloat32).values<float>(),
            (std::vector<float>{7, 10, 15, 22}));
}

TEST(CpuLayers, CastEveryPairOfTypes) {
  // Values every type holds exactly; through bool they become 0 or 1.
  const std::vector<float> values = {0, 1, 2, 7, 100};
  const std::vector<DataType> types = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16,
                                       DataType::kInt8,    DataType::kInt32,   DataType::kInt64,
                                       DataType::kBool,    DataType::kUInt8};
  for (DataType from : types) {
    for (DataType to : types) {
      SCOPED_TRACE(concat(toString(from), " -> ", toString(to)));
      const HostTensor y =
          runLayer({floats({5}, values)}, [&](Network& net, const std::vector<Tensor*>& in) {
            Tensor* a = net.addCast(in[0], from)->output(0);
            Tensor* b = net.addCast(a, to)->output(0);
            return net.addCast(b, DataType::kFloat32)->output(0);
          });
      const bool throughBool = from == DataType::kBool || to == DataType::kBool;
      EXPECT_EQ(y.values<float>(), throughBool ? (std::vector<float>{0, 1, 1, 1, 1}) : values);
    }
  }
}

TEST(CpuLayers, CastFloatToIntegerTruncatesAndSaturates) {
  const HostTensor x = floats({5}, {-300.5f, -2.9f, 2.9f, 300.0f, NAN});
  EXPECT_EQ(runCast(x, DataType::kInt8).values<int8_t>(),
            (std::vector<int8_t>{-128, -2, 2, 127, 0}));
  EXPECT_EQ(runCast(x, DataType::kUInt8).values<uint8_t>(),
            (std::vector<uint8_t>{0, 0, 2, 255, 0}));
  // NaN is not zero, so it casts to true, as in torch.
  EXPECT_EQ(runCast(x, DataType::kBool).values<uint8_t>(), (std::vector<uint8_t>{1, 1, 1, 1, 1}));
}

TEST(CpuLayers, ElementwiseInt8AndUInt8) {
  const HostTensor a8 = tensorOf(DataType::kInt8, {4}, std::vector<int8_t>{100, -7, 5, -128});
  const HostTensor b8 = tensorOf(DataType::kInt8, {4}, std::vector<int8_t>{100, 2, -5, 1});
  auto run = [](const HostTensor& a, const HostTensor& b, ElementwiseOp op) {
    return runLayer({a, b}, [&](Network& net, const std::vector<Tensor*>& in) {
      return net.addElementwise(in[0], in[1], op)->output(0);
    });
  };
  // Sums wrap as in torch: 100 + 100 = -56 in int8.
  EXPECT_EQ(run(a8, b8, ElementwiseOp::kSum).values<int8_t>(),
            (std::vector<int8_t>{-56, -5, 0, -127}));
  EXPECT_EQ(run(a8, b8, ElementwiseOp::kFloorDiv).values<int8_t>(),
            (std::vector<int8_t>{1, -4, -1, -128}));
  EXPECT_EQ(run(a8, b8, ElementwiseOp::kLess).values<uint8_t>(),
            (std::vector<uint8_t>{0, 1, 0, 1}));
  const HostTensor au = tensorOf(DataType::kUInt8, {3}, std::vector<uint8_t>{200, 3, 7});
  const HostTensor bu = tensorOf(DataType::kUInt8, {3}, std::vector<uint8_t>{100, 5, 2});
  EXPECT_EQ(run(au, bu, ElementwiseOp::kSum).values<uint8_t>(), (std::vector<uint8_t>{44, 8, 9}));
  EXPECT_EQ(run(au, bu, ElementwiseOp::kSub).values<uint8_t>(),
            (std::vector<uint8_t>{100, 254, 5}));
  EXPECT_EQ(run(au, bu, ElementwiseOp::kFloorDiv).values<uint8_t>(),
            (std::vector<uint8_t>{2, 0, 3}));
  EXPECT_EQ(run(au, bu, ElementwiseOp::kMax).values<uint8_t>(), (std::vector<uint8_t>{200, 5, 7}));
  EXPECT_EQ(run(au, bu, ElementwiseOp::kGreater).values<uint8_t>(),
            (std::vector<uint8_t>{1, 0, 1}));
}

TEST(CpuLayers, ReduceInt64AndBool) {
  const HostTensor x =
      tensorOf(DataType::kInt64, {2, 2}, std::vector<int64_t>{int64_t{1} << 40, 3, -5, 8});
  const HostTensor sum = runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addReduce(in[0], {ReduceOp::kSum, {0}, true})->output(0);
  });
  EXPECT_EQ(sum.dims, (Dims{1, 2}));
  EXPECT_EQ(sum.values<int64_t>(), (std::vector<int64_t>{(int64_t{1} << 40) - 5, 11}));
  const HostTensor flags = bools({2, 3}, {0, 1, 0, 0, 0, 0});
  auto reduceBool = [&](ReduceOp op) {
    return runLayer({flags},
                    [&](Network& net, const std::vector<Tensor*>& in) {
                      return net.addReduce(in[0], {op, {1}, false})->output(0);
                    })
        .values<uint8_t>();
  };
  EXPECT_EQ(reduceBool(ReduceOp::kMax), (std::vector<uint8_t>{1, 0}));  // any
  EXPECT_EQ(reduceBool(ReduceOp::kMin), (std::vector<uint8_t>{0, 0}));  // all
}

TEST(CpuLayers, HalfPrecisionConvolutionMatchesFloat32Reference) {
  // The fp16 layer computes in float32 on widened inputs: its result is the float32 result of
  // the fp16-rounded operands, rounded once to fp16.
  const ConvCase c = {1, 3, 4, 1, {6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {}};
  const HostTensor x = randomTensor({1, 3, 6, 6}, 22);
  const HostTensor w = randomTensor({4, 3, 3, 3}, 23);
  for (DataType type : {DataType::kFloat16, DataType::kBFloat16}) {
    SCOPED_TRACE(toString(type));
    const HostTensor xRounded = runCast(runCast(x, type), DataType::kFloat32);
    const HostTensor wRounded = runCast(runCast(w, type), DataType::kFloat32);
    ConvolutionParams params;
    params.outChannels = 4;
    params.kernel = {3, 3};
    params.stride = {1, 1};
    params.prePadding = {1, 1};
    params.postPadding = {1, 1};
    params.dilation = {1, 1};
    const HostTensor narrowWeights = runCast(w, type);
    const HostTensor y = runLayer({runCast(x, type)}, [&](Network& net,
                                                          const std::vector<Tensor*>& in) {
      return net.addConvolution(in[0], constant(net, narrowWeights), nullptr, params)->output(0);
    });
    EXPECT_EQ(y.dtype, type);
    const std::vector<float> expected =
        referenceConvolution(c, {6, 6}, xRounded.values<float>(), wRounded.values<float>(), {});
    const float tolerance = type == DataType::kFloat16 ? 1e-3f : 8e-3f;
    expectAllNear(runCast(y, DataType::kFloat32).values<float>(), expected, tolerance);
  }
}

// Declared dims with -1 (dynamic) go through shape inference when the network is made; -1
// stays where an output dim depends on it and concrete dims stay concrete.
TEST(CpuLayers, ShapeInferencePropagatesDynamicDims) {
  Network net;
  Tensor* image = net.addInput("image", DataType::kFloat32, {-1, 4, -1, 9});
  ConvolutionParams conv;
  conv.outChannels = 6;
  conv.kernel = {3, 3};
  conv.stride = {1, 2};
  conv.prePadding = {1, 1};
  conv.postPadding = {1, 1};
  conv.dilation = {1, 1};
  Tensor* weight = constant(net, randomTensor({6, 4, 3, 3}, 24));
  EXPECT_EQ(net.addConvolution(image, weight, nullptr, conv)->output(0)->dims(),
            (Dims{-1, 6, -1, 5}));
  PoolingParams pool = pool2D(PoolingType::kMax, {2, 2}, {2, 2}, {0, 0}, false);
  EXPECT_EQ(net.addPooling(image, pool)->output(0)->dims(), (Dims{-1, 4, -1, 4}));

  Tensor* x = net.addInput("x", DataType::kFloat32, {-1, 5, 7});
  Tensor* b = constant(net, randomTensor({7, 3}, 25));
  EXPECT_EQ(net.addMatMul(x, b)->output(0)->dims(), (Dims{-1, 5, 3}));
  EXPECT_EQ(net.addReduce(x, {ReduceOp::kSum, {1}, false})->output(0)->dims(), (Dims{-1, 7}));
  EXPECT_EQ(net.addReduce(x, {ReduceOp::kMax, {0}, true})->output(0)->dims(), (Dims{1, 5, 7}));
  EXPECT_EQ(net.addSoftmax(x, {-1, false})->output(0)->dims(), (Dims{-1, 5, 7}));
  ShuffleParams transpose;
  transpose.firstPermutation = {2, 0, 1};
  EXPECT_EQ(net.addShuffle(x, transpose)->output(0)->dims(), (Dims{7, -1, 5}));
  EXPECT_EQ(net.addConcat({x, x}, {2})->output(0)->dims(), (Dims{-1, 5, 14}));
  SliceParams slice;
  slice.axes = {2};
  slice.starts = {1};
  slice.ends = {-1};
  slice.steps = {2};
  EXPECT_EQ(net.addSlice(x, slice)->output(0)->dims(), (Dims{-1, 5, 3}));
  Tensor* indices = net.addInput("indices", DataType::kInt64, {2, 3});
  EXPECT_EQ(net.addGather(x, indices, {1})->output(0)->dims(), (Dims{-1, 2, 3, 7}));
  Tensor* row = constant(net, randomTensor({7}, 26));
  Layer* less = net.addElementwise(x, row, ElementwiseOp::kLess);
  EXPECT_EQ(less->output(0)->dims(), (Dims{-1, 5, 7}));
  EXPECT_EQ(less->output(0)->dtype(), DataType::kBool);
  EXPECT_EQ(net.addCast(x, DataType::kFloat16)->output(0)->dtype(), DataType::kFloat16);
}

TEST(CpuLayers, ConstantOutput) {
  // A network whose output is a constant: the engine copies the weights to the output.
  const HostTensor weights = tensorOf(DataType::kInt32, {3}, std::vector<int32_t>{4, 5, 6});
  const HostTensor y = runLayer({floats({1}, {0})}, [&](Network& net, const std::vector<Tensor*>&) {
    return constant(net, weights);
  });
  EXPECT_EQ(y.values<int32_t>(), (std::vector<int32_t>{4, 5, 6}));
}

HostTensor runResize(const HostTensor& x, ResizeMode mode, Dims outputSize, bool alignCorners,
                     std::vector<double> scales = {}, bool channelsLast = false) {
  ResizeParams p;
  p.mode = mode;
  p.outputSize = std::move(outputSize);
  p.alignCorners = alignCorners;
  p.scales = std::move(scales);
  p.channelsLast = channelsLast;
  return runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addResize(in[0], p)->output(0);
  });
}

TEST(CpuLayers, ResizeNearestFloorsAndNearestExactRounds) {
  const HostTensor x = floats({1, 1, 5}, iota(5));
  // nearest: floor(o * 5 / 7); nearest-exact: floor((o + 0.5) * 5 / 7).
  HostTensor y = runResize(x, ResizeMode::kNearest, {7}, false);
  EXPECT_EQ(y.dims, (Dims{1, 1, 7}));
  EXPECT_EQ(y.values<float>(), (std::vector<float>{0, 0, 1, 2, 2, 3, 4}));
  EXPECT_EQ(runResize(x, ResizeMode::kNearestExact, {7}, false).values<float>(),
            (std::vector<float>{0, 1, 1, 2, 3, 3, 4}));
  // Downscaling: floor(o * 5 / 3) against floor((o + 0.5) * 5 / 3).
  EXPECT_EQ(runResize(x, ResizeMode::kNearest, {3}, false).values<float>(),
            (std::vector<float>{0, 1, 3}));
  EXPECT_EQ(runResize(x, ResizeMode::kNearestExact, {3}, false).values<float>(),
            (std::vector<float>{0, 2, 4}));
  // A given scale factor sets the ratio: 1 / 1.3 instead of 5 / 6 (index 5: floor(3.85) = 3,
  // where 5 / 6 would give 4).
  EXPECT_EQ(runResize(x, ResizeMode::kNearest, {6}, false, {1.3}).values<float>(),
            (std::vector<float>{0, 0, 1, 2, 3, 3}));
}

TEST(CpuLayers, ResizeNearest2DDoublesEachPixelAndKeepsPlanesApart) {
  const HostTensor x = floats({1, 2, 2, 2}, iota(8));
  const HostTensor y = runResize(x, ResizeMode::kNearest, {4, 3}, false);
  EXPECT_EQ(y.dims, (Dims{1, 2, 4, 3}));
  // Rows: o >> 1 (output = 2 * input); columns: floor(o * 2 / 3) = 0, 0, 1.
  EXPECT_EQ(y.values<float>(), (std::vector<float>{0, 0, 1, 0, 0, 1, 2, 2, 3, 2, 2, 3,  //
                                                   4, 4, 5, 4, 4, 5, 6, 6, 7, 6, 6, 7}));
}

TEST(CpuLayers, ResizeLinearHalfPixelAlignedCornersAndGivenScale) {
  // Half-pixel: source (o + 0.5) / 2 - 0.5 clamped at 0; the last output reads only pixel 1.
  const HostTensor square = floats({1, 1, 2, 2}, {0, 1, 2, 3});
  HostTensor y = runResize(square, ResizeMode::kLinear, {4, 4}, false);
  expectAllNear(
      y.values<float>(),
      {0, 0.25f, 0.75f, 1, 0.5f, 0.75f, 1.25f, 1.5f, 1.5f, 1.75f, 2.25f, 2.5f, 2, 2.25f, 2.75f, 3},
      1e-6f);
  // Aligned corners: source o * (2 - 1) / (3 - 1).
  y = runResize(square, ResizeMode::kLinear, {3, 3}, true);
  expectAllNear(y.values<float>(), {0, 0.5f, 1, 1, 1.5f, 2, 2, 2.5f, 3}, 1e-6f);
  // 1-D with scale factor 1.7 (5 -> 8): ratio 1 / 1.7, so output 1 reads 1.5 / 1.7 - 0.5.
  const HostTensor line = floats({1, 1, 5}, iota(5));
  std::vector<float> expected;
  for (int o = 0; o < 8; ++o) {
    const float source = std::max(0.0f, (o + 0.5f) / 1.7f - 0.5f);
    expected.push_back(std::min(source, 4.0f));
  }
  expectAllNear(runResize(line, ResizeMode::kLinear, {8}, false, {1.7}).values<float>(), expected,
                1e-6f);
  // Without the scale the ratio is 5 / 8: output 1 reads 0.4375.
  EXPECT_NEAR(runResize(line, ResizeMode::kLinear, {8}, false).values<float>()[1], 0.4375f, 1e-6f);
}

TEST(CpuLayers, ResizeTrilinearAlignedCorners) {
  const HostTensor x = floats({1, 1, 2, 2, 2}, iota(8));
  const HostTensor y = runResize(x, ResizeMode::kLinear, {3, 3, 3}, true);
  EXPECT_EQ(y.dims, (Dims{1, 1, 3, 3, 3}));
  // A linear function of the coordinates stays linear: value = 4 d + 2 h + w at half steps.
  std::vector<float> expected;
  for (int d = 0; d < 3; ++d) {
    for (int h = 0; h < 3; ++h) {
      for (int w = 0; w < 3; ++w) expected.push_back(2.0f * d + 1.0f * h + 0.5f * w);
    }
  }
  expectAllNear(y.values<float>(), expected, 1e-6f);
}

TEST(CpuLayers, ResizeBicubicWeightsAndClampedBorders) {
  const HostTensor x = floats({1, 1, 3, 4}, {1, -2, 0.5f, 4, 3, 0, -1, 2, 0, 2.5f, 1, -3});
  // Aligned corners, (3, 4) -> (2, 3): rows read source 0 and 2 exactly; columns 0, 1.5 and 3.
  // At t = 0.5 Keys' weights (A = -0.75) are -0.09375, 0.59375, 0.59375, -0.09375.
  HostTensor y = runResize(x, ResizeMode::kCubic, {2, 3}, true);
  const float w0 = -0.09375f;
  const float w1 = 0.59375f;
  expectAllNear(
      y.values<float>(),
      {1, w0 * 1 + w1 * -2 + w1 * 0.5f + w0 * 4, 4, 0, w0 * 0 + w1 * 2.5f + w1 * 1 + w0 * -3, -3},
      1e-6f);
  // Half-pixel (3, 4) -> (4, 6): taps past the border repeat the edge (values from torch).
  y = runResize(x, ResizeMode::kCubic, {4, 6}, false);
  expectAllNear(y.values<float>(),
                {1.116862f,  -0.901482f, -2.070507f, -0.146203f, 2.633537f,  4.450489f,
                 2.921756f,  0.777122f,  -1.331417f, -1.129962f, 1.32505f,   3.612833f,
                 2.227046f,  1.776329f,  0.800332f,  -0.273888f, -0.379478f, 0.0152f,
                 -0.466615f, 1.376045f,  2.788465f,  1.805077f,  -1.251656f, -3.749723f},
                1e-5f);
}

// (N, C, S) -> (N, S, C) with toChannelsLast, back with !toChannelsLast; S the spatial volume.
std::vector<float> moveChannels(const std::vector<float>& x, int64_t n, int64_t c, int64_t s,
                                bool toChannelsLast) {
  std::vector<float> y(x.size());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < c; ++k) {
      for (int64_t i = 0; i < s; ++i) {
        const size_t first = static_cast<size_t>((b * c + k) * s + i);
        const size_t last = static_cast<size_t>((b * s + i) * c + k);
        y[toChannelsLast ? last : first] = x[toChannelsLast ? first : last];
      }
    }
  }
  return y;
}

TEST(CpuLayers, ResizeChannelsLastEqualsChannelsFirstTransposed) {
  std::vector<float> values(2 * 3 * 4 * 5);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(0.7f * static_cast<float>(i));
  const HostTensor nchw = floats({2, 3, 4, 5}, values);
  const HostTensor nhwc = floats({2, 4, 5, 3}, moveChannels(values, 2, 3, 20, true));
  for (ResizeMode mode : {ResizeMode::kNearest, ResizeMode::kLinear, ResizeMode::kCubic}) {
    for (const Dims& size : {Dims{8, 10}, Dims{3, 7}}) {
      SCOPED_TRACE(std::string(toString(mode)) + " to " + toString(size));
      const HostTensor first = runResize(nchw, mode, size, false);
      const HostTensor last = runResize(nhwc, mode, size, false, {}, true);
      EXPECT_EQ(last.dims, (Dims{2, size[0], size[1], 3}));
      expectAllNear(moveChannels(last.values<float>(), 2, 3, size[0] * size[1], false),
                    first.values<float>(), 1e-6f);
    }
  }
}

TEST(CpuLayers, ResizeHalfPrecisionRunsThroughFloat32) {
  const HostTensor x = runCast(floats({1, 1, 2, 2}, {0, 1, 2, 3}), DataType::kFloat16);
  const HostTensor y = runResize(x, ResizeMode::kLinear, {3, 3}, true);
  EXPECT_EQ(y.dtype, DataType::kFloat16);
  EXPECT_EQ(runCast(y, DataType::kFloat32).values<float>(),
            (std::vector<float>{0, 0.5f, 1, 1, 1.5f, 2, 2, 2.5f, 3}));
}

HostTensor runCumulative(const HostTensor& x, CumulativeOp op, int64_t axis) {
  return runLayer({x}, [&](Network& net, const std::vector<Tensor*>& in) {
    return net.addCumulative(in[0], {op, axis})->output(0);
  });
}

TEST(CpuLayers, CumulativeSumAndProductAlongEachAxis) {
  const HostTensor x = floats({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(runCumulative(x, CumulativeOp::kSum, 1).values<float>(),
            (std::vector<float>{1, 3, 6, 4, 9, 15}));
  EXPECT_EQ(runCumulative(x, CumulativeOp::kSum, -2).values<float>(),
            (std::vector<float>{1, 2, 3, 5, 7, 9}));
  EXPECT_EQ(runCumulative(x, CumulativeOp::kProd, -1).values<float>(),
            (std::vector<float>{1, 2, 6, 4, 20, 120}));
  EXPECT_EQ(runCumulative(x, CumulativeOp::kProd, 0).values<float>(),
            (std::vector<float>{1, 2, 3, 4, 10, 18}));
  // The middle axis of (2, 2, 2): each (outer, inner) column scans on its own.
  const HostTensor cube = floats({2, 2, 2}, iota(8));
  EXPECT_EQ(runCumulative(cube, CumulativeOp::kSum, 1).values<float>(),
            (std::vector<float>{0, 1, 2, 4, 4, 5, 10, 12}));
}

TEST(CpuLayers, CumulativeIntegersWrapAroundAsTorch) {
  const HostTensor x32 = tensorOf(
      DataType::kInt32, {4}, std::vector<int32_t>{std::numeric_limits<int32_t>::max(), 1, -3, 7});
  HostTensor y = runCumulative(x32, CumulativeOp::kSum, 0);
  EXPECT_EQ(y.dtype, DataType::kInt32);
  constexpr int32_t kMax = std::numeric_limits<int32_t>::max();
  constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
  EXPECT_EQ(y.values<int32_t>(), (std::vector<int32_t>{kMax, kMin, kMax - 2, kMin + 4}));
  const HostTensor x64 =
      tensorOf(DataType::kInt64, {2, 3}, std::vector<int64_t>{-2, 3, 4, 5, -1, 2});
  y = runCumulative(x64, CumulativeOp::kProd, 1);
  EXPECT_EQ(y.values<int64_t>(), (std::vector<int64_t>{-2, -6, -24, 5, -5, -10}));
}

TEST(CpuLayers, CumulativeHalfPrecisionAccumulatesInFloat32) {
  // 2048 + 1 + 1 + ...: fp16 cannot hold 2049, but the float32 running sum can; each output is
  // the running sum rounded once (to even), where summing in fp16 would stay at 2048.
  std::vector<float> ones(6, 1.0f);
  ones[0] = 2048.0f;
  const HostTensor x = runCast(floats({6}, ones), DataType::kFloat16);
  const HostTensor y = runCumulative(x, CumulativeOp::kSum, 0);
  EXPECT_EQ(y.dtype, DataType::kFloat16);
  EXPECT_EQ(runCast(y, DataType::kFloat32).values<float>(),
            (std::vector<float>{2048, 2048, 2050, 2052, 2052, 2052}));
}

}  // namespace
}  // namespace kiln

// cuDNN convolution and deconvolution (kernels/cuda/convolution.h) against the CPU reference
// (kernels/cpu/convolution.h): groups, depthwise, stride, dilation, padding (symmetric and not),
// 1-D to 3-D, output padding, bias and ReLU, in fp32, fp16 and bf16, NCHW and NHWC; Kiln's own
// depthwise kernels (kernels/cuda/depthwise_convolution.h) against the same reference, and as
// autotune's candidates. The padding arithmetic and which convolutions the depthwise kernels
// take are also checked on the CPU alone, so that they run on machines without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cast.h"
#include "kernels/cpu/convolution.h"
#include "kernels/cuda/convolution.h"
#include "kernels/cuda/depthwise_convolution.h"
#include "tests/cpp/cuda/cuda_test_util.h"
#include "tests/cpp/cuda/typed_values.h"

namespace kiln::cuda_kernels {
namespace {

namespace ck = ::kiln::cpu_kernels;
using cuda_test::DeviceBuffer;
using cuda_test::kFloatTypes;
using cuda_test::Stream;

// ---- shapes -------------------------------------------------------------------------------------

struct ConvolutionCase {
  std::string name;
  bool transposed = false;
  int64_t batch = 1;
  int64_t inChannels = 1;
  int64_t outChannels = 1;
  int64_t groups = 1;
  Shape inSpatial;
  Shape kernel;
  Shape stride;
  Shape prePadding;
  Shape postPadding;
  Shape outputPadding;  // transposed only
  Shape dilation;
  bool bias = true;
  ConvolutionActivation activation = ConvolutionActivation::kNone;
  ConvolutionActivation inputActivation = ConvolutionActivation::kNone;
};

// out = (in + pre + post - extent) / stride + 1, or for the transpose
// (in - 1) * stride - pre - post + extent + outputPadding, as torch.
Shape outSpatialOf(const ConvolutionCase& c) {
  Shape out;
  for (size_t i = 0; i < c.kernel.size(); ++i) {
    const int64_t extent = c.dilation[i] * (c.kernel[i] - 1) + 1;
    if (c.transposed) {
      const int64_t extra = c.outputPadding.empty() ? 0 : c.outputPadding[i];
      out.push_back((c.inSpatial[i] - 1) * c.stride[i] - c.prePadding[i] - c.postPadding[i] +
                    extent + extra);
    } else {
      out.push_back((c.inSpatial[i] + c.prePadding[i] + c.postPadding[i] - extent) / c.stride[i] +
                    1);
    }
  }
  return out;
}

ConvolutionParams paramsOf(const ConvolutionCase& c, ScalarType type, TensorLayout layout) {
  ConvolutionParams p;
  p.transposed = c.transposed;
  p.batch = c.batch;
  p.inChannels = c.inChannels;
  p.outChannels = c.outChannels;
  p.groups = c.groups;
  p.inSpatial = c.inSpatial;
  p.outSpatial = outSpatialOf(c);
  p.kernel = c.kernel;
  p.stride = c.stride;
  p.prePadding = c.prePadding;
  p.dilation = c.dilation;
  p.type = type;
  p.layout = layout;
  p.activation = c.activation;
  p.inputActivation = c.inputActivation;
  return p;
}

ck::ConvolutionParams cpuParamsOf(const ConvolutionParams& p) {
  ck::ConvolutionParams cpu;
  cpu.batch = p.batch;
  cpu.inChannels = p.inChannels;
  cpu.outChannels = p.outChannels;
  cpu.groups = p.groups;
  cpu.inSpatial = p.inSpatial;
  cpu.outSpatial = p.outSpatial;
  cpu.kernel = p.kernel;
  cpu.stride = p.stride;
  cpu.prePadding = p.prePadding;
  cpu.dilation = p.dilation;
  return cpu;
}

int64_t weightCount(const ConvolutionParams& p) {
  const int64_t perGroup = p.transposed ? p.outChannels / p.groups : p.inChannels / p.groups;
  const int64_t leading = p.transposed ? p.inChannels : p.outChannels;
  return leading * perGroup * shapeVolume(p.kernel);
}

Shape concat(Shape head, const Shape& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

std::vector<ConvolutionCase> forwardCases() {
  std::vector<ConvolutionCase> cases;
  cases.push_back(
      {"basic3x3", false, 2, 3, 4, 1, {8, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}});
  cases.push_back(
      {"groupsStride2", false, 2, 4, 6, 2, {9, 10}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {}, {1, 1}});
  cases.push_back(
      {"depthwise", false, 1, 8, 8, 8, {7, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}});
  cases.push_back(
      {"dilatedStrided", false, 2, 3, 5, 1, {11, 7}, {3, 2}, {2, 1}, {2, 1}, {2, 1}, {}, {2, 3}});
  cases.push_back(
      {"pointwise1x1", false, 3, 16, 8, 1, {5, 6}, {1, 1}, {1, 1}, {0, 0}, {0, 0}, {}, {1, 1}});
  cases.push_back({"conv1d", false, 2, 3, 5, 1, {17}, {5}, {2}, {2}, {2}, {}, {1}});
  cases.push_back({"conv1dGroupsDilated", false, 1, 6, 4, 2, {20}, {3}, {1}, {2}, {2}, {}, {2}});
  cases.push_back(
      {"asymmetricPadding", false, 2, 3, 4, 1, {8, 9}, {4, 4}, {1, 1}, {1, 2}, {2, 1}, {}, {1, 1}});
  cases.push_back({"asymmetricStrided",
                   false,
                   1,
                   2,
                   3,
                   1,
                   {10, 9},
                   {3, 3},
                   {2, 2},
                   {0, 1},
                   {1, 0},
                   {},
                   {1, 1}});
  cases.push_back({"conv3d",
                   false,
                   1,
                   2,
                   3,
                   1,
                   {4, 5, 6},
                   {3, 3, 3},
                   {1, 1, 2},
                   {1, 1, 1},
                   {1, 1, 1},
                   {},
                   {1, 1, 1}});
  ConvolutionCase relu{"biasRelu", false,  2,      4,      8,  1,     {6, 6},
                       {3, 3},     {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}};
  relu.activation = ConvolutionActivation::kRelu;
  cases.push_back(relu);
  ConvolutionCase silu = relu;
  silu.name = "biasSiluInKilnsEpilogue";
  silu.activation = ConvolutionActivation::kSilu;
  cases.push_back(silu);
  ConvolutionCase reluNoBias = relu;
  reluNoBias.name = "reluWithoutBias";
  reluNoBias.bias = false;
  cases.push_back(reluNoBias);
  ConvolutionCase noBias = cases.front();
  noBias.name = "noBias";
  noBias.bias = false;
  cases.push_back(noBias);
  return cases;
}

std::vector<ConvolutionCase> transposedCases() {
  std::vector<ConvolutionCase> cases;
  cases.push_back({"deconvStride2OutputPadding",
                   true,
                   2,
                   4,
                   3,
                   1,
                   {5, 6},
                   {3, 3},
                   {2, 2},
                   {1, 1},
                   {1, 1},
                   {1, 1},
                   {1, 1}});
  cases.push_back({"deconvGroupsDilated",
                   true,
                   1,
                   4,
                   6,
                   2,
                   {5, 4},
                   {3, 3},
                   {1, 2},
                   {1, 0},
                   {1, 0},
                   {0, 1},
                   {2, 2}});
  cases.push_back({"deconv1d", true, 2, 3, 2, 1, {9}, {4}, {3}, {1}, {1}, {2}, {1}});
  // Output padding >= stride (torch allows it below the dilation): cuDNN's sizes do not match.
  cases.push_back({"deconvOutputPaddingPastStride",
                   true,
                   1,
                   3,
                   2,
                   1,
                   {4, 5},
                   {3, 3},
                   {2, 1},
                   {1, 0},
                   {1, 0},
                   {2, 1},
                   {3, 2}});
  cases.push_back({"deconvAsymmetricPadding",
                   true,
                   2,
                   2,
                   3,
                   1,
                   {5, 5},
                   {3, 4},
                   {2, 2},
                   {2, 0},
                   {0, 1},
                   {0, 0},
                   {1, 1}});
  cases.push_back({"deconvDepthwise",
                   true,
                   1,
                   6,
                   6,
                   6,
                   {6, 7},
                   {3, 3},
                   {2, 2},
                   {1, 1},
                   {1, 1},
                   {1, 0},
                   {1, 1}});
  ConvolutionCase relu{"deconvBiasRelu", true,   2,      4,      4,      1,     {4, 4},
                       {2, 2},           {2, 2}, {0, 0}, {0, 0}, {0, 0}, {1, 1}};
  relu.activation = ConvolutionActivation::kRelu;
  cases.push_back(relu);
  cases.push_back({"deconv3d",
                   true,
                   1,
                   2,
                   2,
                   1,
                   {3, 4, 3},
                   {2, 3, 2},
                   {2, 1, 2},
                   {0, 1, 0},
                   {0, 1, 0},
                   {1, 0, 0},
                   {1, 1, 1}});
  return cases;
}

// ---- host data ----------------------------------------------------------------------------------

std::vector<float> randomValues(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(-1.0f, 1.0f);
  std::vector<float> values(count);
  for (float& v : values) v = distribution(generator);
  return values;
}

// Values exactly representable in `type`, so that the reference sees what the GPU sees.
std::vector<float> roundTo(ScalarType type, std::vector<float> values) {
  for (float& v : values) {
    if (type == ScalarType::kFloat16) v = ck::halfToFloat(ck::floatToHalf(v));
    if (type == ScalarType::kBFloat16) v = ck::bfloat16ToFloat(ck::floatToBFloat16(v));
  }
  return values;
}

std::vector<uint8_t> encode(ScalarType type, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * scalarSize(type));
  for (size_t i = 0; i < values.size(); ++i) {
    if (type == ScalarType::kFloat32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t bits = type == ScalarType::kFloat16 ? ck::floatToHalf(values[i])
                                                         : ck::floatToBFloat16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
  }
  return bytes;
}

std::vector<float> decode(ScalarType type, const std::vector<uint8_t>& bytes) {
  std::vector<float> values(bytes.size() / scalarSize(type));
  for (size_t i = 0; i < values.size(); ++i) {
    if (type == ScalarType::kFloat32) {
      std::memcpy(&values[i], bytes.data() + 4 * i, 4);
    } else {
      uint16_t bits = 0;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      values[i] = type == ScalarType::kFloat16 ? ck::halfToFloat(bits) : ck::bfloat16ToFloat(bits);
    }
  }
  return values;
}

// (d0, d1, rest...) <-> (d0, rest..., d1): NCHW <-> NHWC for tensors and KCRS <-> KRSC weights.
std::vector<float> channelsLast(const std::vector<float>& values, const Shape& dims) {
  const int64_t outer = dims[0];
  const int64_t channels = dims[1];
  const int64_t inner = shapeVolume(Shape(dims.begin() + 2, dims.end()));
  std::vector<float> result(values.size());
  for (int64_t n = 0; n < outer; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t s = 0; s < inner; ++s) {
        result[(n * inner + s) * channels + c] = values[(n * channels + c) * inner + s];
      }
    }
  }
  return result;
}

std::vector<float> channelsFirst(const std::vector<float>& values, const Shape& dims) {
  const int64_t outer = dims[0];
  const int64_t channels = dims[1];
  const int64_t inner = shapeVolume(Shape(dims.begin() + 2, dims.end()));
  std::vector<float> result(values.size());
  for (int64_t n = 0; n < outer; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t s = 0; s < inner; ++s) {
        result[(n * channels + c) * inner + s] = values[(n * inner + s) * channels + c];
      }
    }
  }
  return result;
}

struct HostOperands {
  std::vector<float> x;
  std::vector<float> weight;
  std::vector<float> bias;  // empty: none
};

HostOperands makeOperands(const ConvolutionParams& p, bool withBias, uint32_t seed) {
  HostOperands operands;
  operands.x = roundTo(
      p.type,
      randomValues(static_cast<size_t>(p.batch * p.inChannels * shapeVolume(p.inSpatial)), seed));
  operands.weight = roundTo(p.type, randomValues(static_cast<size_t>(weightCount(p)), seed + 1));
  if (withBias) {
    operands.bias = roundTo(p.type, randomValues(static_cast<size_t>(p.outChannels), seed + 2));
  }
  return operands;
}

std::vector<float> absolute(std::vector<float> values) {
  for (float& v : values) v = std::fabs(v);
  return values;
}

float activated(ConvolutionActivation activation, float v) {
  switch (activation) {
    case ConvolutionActivation::kRelu:
      return v < 0.0f ? 0.0f : v;
    case ConvolutionActivation::kRelu6:
      return std::min(std::max(v, 0.0f), 6.0f);
    case ConvolutionActivation::kSilu:
      return v / (1.0f + std::exp(-v));
    case ConvolutionActivation::kHardSwish:
      return v * std::min(std::max(v + 3.0f, 0.0f), 6.0f) / 6.0f;
    default:
      return v;
  }
}

// x as the convolution reads it: with the input activation applied (before the padding).
std::vector<float> activatedInput(const ConvolutionParams& p, std::vector<float> x) {
  for (float& v : x) v = activated(p.inputActivation, v);
  return x;
}

// The CPU reference in NCHW, with the input activation and the activation applied.
std::vector<float> reference(const ConvolutionParams& p, const HostOperands& operands) {
  std::vector<float> out(static_cast<size_t>(p.batch * p.outChannels * shapeVolume(p.outSpatial)));
  const float* bias = operands.bias.empty() ? nullptr : operands.bias.data();
  const std::vector<float> x = activatedInput(p, operands.x);
  if (p.transposed) {
    ck::deconvolution(cpuParamsOf(p), x.data(), operands.weight.data(), bias, out.data());
  } else {
    ck::convolution(cpuParamsOf(p), x.data(), operands.weight.data(), bias, out.data());
  }
  for (float& v : out) v = activated(p.activation, v);
  return out;
}

// Bound on the rounding error of each output: tolerance * (sum of |x * w| + |bias|).
std::vector<float> errorScale(const ConvolutionParams& p, const HostOperands& operands) {
  ConvolutionParams linear = p;
  linear.activation = ConvolutionActivation::kNone;
  linear.inputActivation = ConvolutionActivation::kNone;
  const HostOperands magnitudes{absolute(activatedInput(p, operands.x)), absolute(operands.weight),
                                absolute(operands.bias)};
  return reference(linear, magnitudes);
}

float toleranceOf(const ConvolutionParams& p) {
  switch (p.type) {
    case ScalarType::kFloat16:
      return 4e-3f;
    case ScalarType::kBFloat16:
      return 2e-2f;
    default:
      return p.allowTf32 ? 4e-3f : 1e-4f;
  }
}

// ---- running on the GPU -------------------------------------------------------------------------

const CudnnHandle& sharedHandle() {
  static const std::unique_ptr<CudnnHandle> handle = std::make_unique<CudnnHandle>();
  return *handle;
}

enum class Planning { kSelect, kAutotune };

struct DeviceOperands {
  DeviceBuffer x;
  DeviceBuffer weight;
  DeviceBuffer bias;
  DeviceBuffer out;
  ConvolutionTensors tensors() const {
    return {x.data(), weight.data(), bias.bytes() ? bias.data() : nullptr, out.data()};
  }
};

DeviceOperands upload(const ConvolutionParams& p, const HostOperands& operands) {
  const Shape xDims = concat({p.batch, p.inChannels}, p.inSpatial);
  const Shape weightDims = p.transposed
                               ? concat({p.inChannels, p.outChannels / p.groups}, p.kernel)
                               : concat({p.outChannels, p.inChannels / p.groups}, p.kernel);
  const bool nhwc = p.layout == TensorLayout::kNHWC;
  DeviceOperands device;
  device.x =
      DeviceBuffer::from(encode(p.type, nhwc ? channelsLast(operands.x, xDims) : operands.x));
  device.weight = DeviceBuffer::from(
      encode(p.type, nhwc ? channelsLast(operands.weight, weightDims) : operands.weight));
  if (!operands.bias.empty()) device.bias = DeviceBuffer::from(encode(p.type, operands.bias));
  device.out =
      DeviceBuffer(static_cast<size_t>(p.batch * p.outChannels * shapeVolume(p.outSpatial)) *
                   scalarSize(p.type));
  return device;
}

// The GPU result in NCHW as floats.
std::vector<float> downloadOut(const ConvolutionParams& p, const DeviceBuffer& out) {
  std::vector<float> values = decode(p.type, out.download<uint8_t>());
  values.resize(static_cast<size_t>(p.batch * p.outChannels * shapeVolume(p.outSpatial)));
  if (p.layout == TensorLayout::kNHWC) {
    values = channelsFirst(values, concat({p.batch, p.outChannels}, p.outSpatial));
  }
  return values;
}

void launch(const ConvolutionPlan& plan, const DeviceOperands& device, const Stream& stream) {
  DeviceBuffer workspace(plan.workspaceSize());
  convolution(sharedHandle(), plan, device.tensors(), {workspace.data(), workspace.bytes()},
              stream.get());
  stream.synchronize();
}

std::vector<float> runOnGpu(const ConvolutionParams& p, const HostOperands& operands,
                            Planning planning) {
  Stream stream;
  DeviceOperands device = upload(p, operands);
  std::unique_ptr<ConvolutionPlan> plan;
  if (planning == Planning::kSelect) {
    plan = ConvolutionPlan::select(sharedHandle(), p);
  } else {
    DeviceBuffer tuningSpace(size_t{64} << 20);
    plan = ConvolutionPlan::autotune(sharedHandle(), p, device.tensors(),
                                     {tuningSpace.data(), tuningSpace.bytes()}, stream.get());
    EXPECT_GE(plan->algorithm().measuredMs, 0.0f);
  }
  launch(*plan, device, stream);
  return downloadOut(p, device.out);
}

void expectClose(const ConvolutionParams& p, const std::vector<float>& actual,
                 const std::vector<float>& expected, const std::vector<float>& scale) {
  ASSERT_EQ(actual.size(), expected.size()) << describe(p);
  const float tolerance = toleranceOf(p);
  int reported = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const float allowed = tolerance * (scale[i] + 1e-3f);
    if (!(std::fabs(actual[i] - expected[i]) <= allowed) && reported++ < 5) {
      ADD_FAILURE() << describe(p) << ": element " << i << " is " << actual[i] << ", expected "
                    << expected[i] << " (allowed error " << allowed << ")";
    }
  }
}

void checkCase(const ConvolutionCase& c, ScalarType type, TensorLayout layout, Planning planning,
               uint32_t seed) {
  const ConvolutionParams p = paramsOf(c, type, layout);
  SCOPED_TRACE(c.name + " " + describe(p));
  const HostOperands operands = makeOperands(p, c.bias, seed);
  expectClose(p, runOnGpu(p, operands, planning), reference(p, operands), errorScale(p, operands));
}

const TensorLayout kLayouts[] = {TensorLayout::kNCHW, TensorLayout::kNHWC};

// ---- CPU-only: how params map onto cuDNN's symmetric padding ------------------------------------

// dst[n, c, p] = src[n, c, p + shift], 0 outside src; NCHW-order dims.
std::vector<float> windowCopyOnHost(const std::vector<float>& src, const Shape& srcDims,
                                    const Shape& dstDims, const Shape& shift) {
  std::vector<float> dst(static_cast<size_t>(shapeVolume(dstDims)));
  const size_t rank = dstDims.size();
  std::vector<int64_t> coordinates(rank, 0);
  for (size_t e = 0; e < dst.size(); ++e) {
    int64_t rest = static_cast<int64_t>(e);
    for (size_t d = rank; d-- > 0;) {
      coordinates[d] = rest % dstDims[d];
      rest /= dstDims[d];
    }
    int64_t srcIndex = 0;
    bool inside = true;
    for (size_t d = 0; d < rank; ++d) {
      const int64_t coordinate = coordinates[d] + (d >= 2 ? shift[d - 2] : 0);
      inside = inside && coordinate >= 0 && coordinate < srcDims[d];
      srcIndex = srcIndex * srcDims[d] + coordinate;
    }
    dst[e] = inside ? src[static_cast<size_t>(srcIndex)] : 0.0f;
  }
  return dst;
}

// The convolution cuDNN runs per the geometry, on the CPU: padding (forward) or cropping
// (transposed) through the scratch tensor, then the bias.
std::vector<float> viaCudnnGeometry(const ConvolutionParams& p, const HostOperands& operands) {
  const CudnnConvolutionGeometry g = cudnnConvolutionGeometry(p);
  ck::ConvolutionParams cudnnLike = cpuParamsOf(p);
  cudnnLike.inSpatial = g.inSpatial;
  cudnnLike.outSpatial = g.outSpatial;
  cudnnLike.kernel = g.kernel;
  cudnnLike.stride = g.stride;
  cudnnLike.prePadding = g.padding;
  cudnnLike.dilation = g.dilation;
  std::vector<float> out(static_cast<size_t>(p.batch * p.outChannels * shapeVolume(g.outSpatial)));
  if (!p.transposed) {
    std::vector<float> input = operands.x;
    if (g.useScratch) {
      input = windowCopyOnHost(operands.x, concat({p.batch, p.inChannels}, g.inSpatial),
                               concat({p.batch, p.inChannels}, g.scratchSpatial), g.shift);
      cudnnLike.inSpatial = g.scratchSpatial;
    }
    ck::convolution(cudnnLike, input.data(), operands.weight.data(), nullptr, out.data());
  } else if (!g.useScratch) {
    ck::deconvolution(cudnnLike, operands.x.data(), operands.weight.data(), nullptr, out.data());
  } else {
    cudnnLike.outSpatial = g.scratchSpatial;
    std::vector<float> scratch(
        static_cast<size_t>(p.batch * p.outChannels * shapeVolume(g.scratchSpatial)));
    ck::deconvolution(cudnnLike, operands.x.data(), operands.weight.data(), nullptr,
                      scratch.data());
    out = windowCopyOnHost(scratch, concat({p.batch, p.outChannels}, g.scratchSpatial),
                           concat({p.batch, p.outChannels}, g.outSpatial), g.shift);
  }
  if (!operands.bias.empty()) {
    const int64_t plane = shapeVolume(g.outSpatial);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] +=
          operands.bias[static_cast<size_t>((static_cast<int64_t>(i) / plane) % p.outChannels)];
    }
  }
  return out;
}

TEST(CudaConvolutionGeometry, SymmetricPaddingRunsOnCudnnDirectly) {
  const ConvolutionParams p =
      paramsOf(forwardCases()[0], ScalarType::kFloat32, TensorLayout::kNCHW);
  const CudnnConvolutionGeometry g = cudnnConvolutionGeometry(p);
  EXPECT_FALSE(g.useScratch);
  EXPECT_EQ(g.padding, (Shape{1, 1}));
  EXPECT_EQ(g.outSpatial, p.outSpatial);
}

TEST(CudaConvolutionGeometry, OneDimensionalGetsAUnitHeight) {
  ConvolutionCase c = forwardCases()[5];
  ASSERT_EQ(c.name, "conv1d");
  const ConvolutionParams p = paramsOf(c, ScalarType::kFloat32, TensorLayout::kNCHW);
  const CudnnConvolutionGeometry g = cudnnConvolutionGeometry(p);
  EXPECT_EQ(g.inSpatial, (Shape{1, 17}));
  EXPECT_EQ(g.kernel, (Shape{1, 5}));
  EXPECT_EQ(g.stride, (Shape{1, 2}));
  EXPECT_EQ(g.padding, (Shape{0, 2}));
}

TEST(CudaConvolutionGeometry, AsymmetricPaddingAndLargeOutputPaddingUseScratch) {
  for (const ConvolutionCase& c :
       {forwardCases()[7], forwardCases()[8], transposedCases()[3], transposedCases()[4]}) {
    const ConvolutionParams p = paramsOf(c, ScalarType::kFloat32, TensorLayout::kNCHW);
    EXPECT_TRUE(cudnnConvolutionGeometry(p).useScratch) << c.name;
  }
  for (const ConvolutionCase& c : {transposedCases()[0], transposedCases()[2]}) {
    const ConvolutionParams p = paramsOf(c, ScalarType::kFloat32, TensorLayout::kNCHW);
    EXPECT_FALSE(cudnnConvolutionGeometry(p).useScratch) << c.name;
  }
}

// The decomposition the GPU path runs equals the reference, for every case (on the CPU).
TEST(CudaConvolutionGeometry, DecompositionMatchesTheReference) {
  std::vector<ConvolutionCase> cases = forwardCases();
  for (const ConvolutionCase& c : transposedCases()) cases.push_back(c);
  uint32_t seed = 100;
  for (const ConvolutionCase& c : cases) {
    ConvolutionParams p = paramsOf(c, ScalarType::kFloat32, TensorLayout::kNCHW);
    p.activation = ConvolutionActivation::kNone;
    const HostOperands operands = makeOperands(p, c.bias, seed++);
    const std::vector<float> expected = reference(p, operands);
    const std::vector<float> actual = viaCudnnGeometry(p, operands);
    ASSERT_EQ(actual.size(), expected.size()) << c.name;
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_NEAR(actual[i], expected[i], 1e-4f) << c.name << " element " << i;
    }
  }
}

TEST(CudaConvolutionGeometry, RejectsUnsupportedParams) {
  ConvolutionParams p = paramsOf(forwardCases()[1], ScalarType::kFloat32, TensorLayout::kNCHW);
  p.groups = 3;  // does not divide 4 input channels
  EXPECT_THROW(cudnnConvolutionGeometry(p), std::invalid_argument);
  p = paramsOf(forwardCases()[0], ScalarType::kInt32, TensorLayout::kNCHW);
  EXPECT_THROW(cudnnConvolutionGeometry(p), std::invalid_argument);
  p = paramsOf(forwardCases()[0], ScalarType::kFloat32, TensorLayout::kNCHW);
  p.stride = {1};
  EXPECT_THROW(cudnnConvolutionGeometry(p), std::invalid_argument);
}

TEST(CudaConvolutionGeometry, DescribeNamesEveryField) {
  ConvolutionParams p = paramsOf(transposedCases()[0], ScalarType::kFloat16, TensorLayout::kNHWC);
  p.activation = ConvolutionActivation::kRelu;
  p.inputActivation = ConvolutionActivation::kSilu;
  const std::string text = describe(p);
  for (const char* field :
       {"Deconvolution", "groups=1", "outSpatial=[10,12]", "type=float16", "layout=NHWC",
        "activation=relu", "inputActivation=silu", "allowTf32=false"}) {
    EXPECT_NE(text.find(field), std::string::npos) << field << " missing from " << text;
  }
}

// ---- GPU ----------------------------------------------------------------------------------------

TEST(CudaConvolution, ForwardMatchesCpuInEveryTypeAndLayout) {
  KILN_SKIP_WITHOUT_GPU();
  uint32_t seed = 1;
  for (const ConvolutionCase& c : forwardCases()) {
    for (ScalarType type : kFloatTypes) {
      for (TensorLayout layout : kLayouts) checkCase(c, type, layout, Planning::kSelect, seed++);
    }
  }
}

TEST(CudaConvolution, TransposedMatchesCpuInEveryTypeAndLayout) {
  KILN_SKIP_WITHOUT_GPU();
  uint32_t seed = 500;
  for (const ConvolutionCase& c : transposedCases()) {
    for (ScalarType type : kFloatTypes) {
      for (TensorLayout layout : kLayouts) checkCase(c, type, layout, Planning::kSelect, seed++);
    }
  }
}

TEST(CudaConvolution, AutotunedPlansMatchCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const std::vector<ConvolutionCase> forward = forwardCases();
  const std::vector<ConvolutionCase> transposed = transposedCases();
  uint32_t seed = 900;
  for (const ConvolutionCase& c : {forward[0], forward[2], forward[7], forward[10], forward[11],
                                   transposed[0], transposed[3]}) {
    for (ScalarType type : kFloatTypes) {
      checkCase(c, type, TensorLayout::kNCHW, Planning::kAutotune, seed++);
      checkCase(c, type, TensorLayout::kNHWC, Planning::kAutotune, seed++);
    }
  }
}

TEST(CudaConvolution, Tf32WhenAllowed) {
  KILN_SKIP_WITHOUT_GPU();
  ConvolutionCase c{"wide", false,  4,      32,     64, 1,     {16, 16},
                    {3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}};
  ConvolutionParams p = paramsOf(c, ScalarType::kFloat32, TensorLayout::kNHWC);
  p.allowTf32 = true;
  const HostOperands operands = makeOperands(p, true, 77);
  expectClose(p, runOnGpu(p, operands, Planning::kSelect), reference(p, operands),
              errorScale(p, operands));
}

TEST(CudaConvolution, StrictFloat32NeverUsesTensorCoreMath) {
  KILN_SKIP_WITHOUT_GPU();
  for (const ConvolutionCase& c : {forwardCases()[0], transposedCases()[0]}) {
    const ConvolutionParams p = paramsOf(c, ScalarType::kFloat32, TensorLayout::kNHWC);
    const std::unique_ptr<ConvolutionPlan> plan = ConvolutionPlan::select(sharedHandle(), p);
    EXPECT_EQ(plan->algorithm().mathType, CUDNN_FMA_MATH) << c.name;
  }
}

TEST(CudaConvolution, PlanRebuiltFromItsAlgorithmGivesTheSameBits) {
  KILN_SKIP_WITHOUT_GPU();
  for (const ConvolutionCase& c : {forwardCases()[3], transposedCases()[1]}) {
    const ConvolutionParams p = paramsOf(c, ScalarType::kFloat16, TensorLayout::kNHWC);
    const HostOperands operands = makeOperands(p, true, 31);
    Stream stream;
    DeviceOperands device = upload(p, operands);
    const std::unique_ptr<ConvolutionPlan> selected = ConvolutionPlan::select(sharedHandle(), p);
    launch(*selected, device, stream);
    const std::vector<uint8_t> first = device.out.download<uint8_t>();
    const std::unique_ptr<ConvolutionPlan> rebuilt =
        ConvolutionPlan::create(sharedHandle(), p, selected->algorithm());
    EXPECT_EQ(rebuilt->workspaceSize(), selected->workspaceSize());
    launch(*rebuilt, device, stream);
    EXPECT_EQ(device.out.download<uint8_t>(), first) << c.name;
  }
}

// Autotune picks cuDNN's fused bias + ReLU call or the convolution followed by Kiln's epilogue
// kernel, whichever is faster: both must give the convolution's result.
TEST(CudaConvolution, FusedAndKilnEpiloguesBothMatchCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const ConvolutionCase c = forwardCases()[10];
  ASSERT_EQ(c.name, "biasRelu");
  uint32_t seed = 1200;
  for (ScalarType type : kFloatTypes) {
    for (TensorLayout layout : kLayouts) {
      const ConvolutionParams p = paramsOf(c, type, layout);
      const HostOperands operands = makeOperands(p, true, seed++);
      const std::vector<float> expected = reference(p, operands);
      Stream stream;
      DeviceOperands device = upload(p, operands);
      ConvolutionAlgorithm choice = ConvolutionPlan::select(sharedHandle(), p)->algorithm();
      for (bool fused : {false, true}) {
        choice.fusedEpilogue = fused;
        const std::unique_ptr<ConvolutionPlan> plan =
            ConvolutionPlan::create(sharedHandle(), p, choice);
        if (!fused) {
          EXPECT_FALSE(plan->fusesBias()) << describe(p);
        }
        launch(*plan, device, stream);
        expectClose(p, downloadOut(p, device.out), expected, errorScale(p, operands));
      }
    }
  }
}

TEST(CudaConvolution, CacheKeepsOnePlanPerShape) {
  KILN_SKIP_WITHOUT_GPU();
  ConvolutionPlanCache cache;
  const ConvolutionParams a =
      paramsOf(forwardCases()[0], ScalarType::kFloat16, TensorLayout::kNCHW);
  ConvolutionParams b = a;
  b.layout = TensorLayout::kNHWC;
  const ConvolutionPlan& first = cache.select(sharedHandle(), a);
  EXPECT_EQ(&cache.select(sharedHandle(), a), &first);
  EXPECT_EQ(cache.find(a), &first);
  EXPECT_EQ(cache.find(b), nullptr);
  cache.select(sharedHandle(), b);
  EXPECT_EQ(cache.size(), 2u);

  // Autotuning replaces the heuristic plan once, then keeps the tuned one.
  const HostOperands operands = makeOperands(a, true, 5);
  DeviceOperands device = upload(a, operands);
  DeviceBuffer tuningSpace(size_t{16} << 20);
  Stream stream;
  const ConvolutionPlan& tuned = cache.autotune(
      sharedHandle(), a, device.tensors(), {tuningSpace.data(), tuningSpace.bytes()}, stream.get());
  EXPECT_GE(tuned.algorithm().measuredMs, 0.0f);
  EXPECT_EQ(&cache.autotune(sharedHandle(), a, device.tensors(),
                            {tuningSpace.data(), tuningSpace.bytes()}, stream.get()),
            &tuned);
  EXPECT_EQ(cache.size(), 2u);
  launch(tuned, device, stream);
  expectClose(a, downloadOut(a, device.out), reference(a, operands), errorScale(a, operands));
}

TEST(CudaConvolution, EmptyBatchWritesNothing) {
  KILN_SKIP_WITHOUT_GPU();
  ConvolutionParams p = paramsOf(forwardCases()[0], ScalarType::kFloat32, TensorLayout::kNCHW);
  p.batch = 0;
  const std::unique_ptr<ConvolutionPlan> plan = ConvolutionPlan::select(sharedHandle(), p);
  EXPECT_EQ(plan->workspaceSize(), 0u);
  // Nothing to compute: no pointer is touched, so null ones are fine.
  EXPECT_NO_THROW(
      convolution(sharedHandle(), *plan, {nullptr, nullptr, nullptr, nullptr}, {}, nullptr));
}

TEST(CudaConvolution, TooSmallWorkspaceIsRefused) {
  KILN_SKIP_WITHOUT_GPU();
  // Asymmetric padding always needs scratch space.
  const ConvolutionParams p =
      paramsOf(forwardCases()[7], ScalarType::kFloat32, TensorLayout::kNCHW);
  const std::unique_ptr<ConvolutionPlan> plan = ConvolutionPlan::select(sharedHandle(), p);
  ASSERT_GT(plan->workspaceSize(), 0u);
  DeviceOperands device = upload(p, makeOperands(p, true, 3));
  DeviceBuffer workspace(plan->workspaceSize() - 1);
  EXPECT_THROW(convolution(sharedHandle(), *plan, device.tensors(),
                           {workspace.data(), workspace.bytes()}, nullptr),
               std::invalid_argument);
}

// ---- Kiln's depthwise kernels -------------------------------------------------------------------

// Depthwise shapes covering each kernel path: the unrolled row kernel (widths 3, 5, 7 at stride
// 1 and 2), the looping one (other widths, horizontal dilation), channel counts that take
// narrower vectors (162 and 6: 2 fp16/bf16 and 2 fp32 channels; 228 and 10: 4 fp16/bf16, and 4
// and 2 fp32) or none (odd counts in fp16/bf16: one channel a thread), several channel blocks,
// asymmetric padding, 1-D, and rows whose width is not a multiple of the columns a thread
// computes.
std::vector<ConvolutionCase> depthwiseCases() {
  const auto depthwise = [](std::string name, int64_t batch, int64_t channels, Shape in,
                            Shape kernel, Shape stride, Shape pre, Shape post, Shape dilation) {
    return ConvolutionCase{std::move(name),    false,          batch,           channels,
                           channels,           channels,       std::move(in),   std::move(kernel),
                           std::move(stride),  std::move(pre), std::move(post), {},
                           std::move(dilation)};
  };
  std::vector<ConvolutionCase> cases = {
      depthwise("dw3x3", 2, 16, {9, 10}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}),
      depthwise("dw3x3Stride2", 2, 24, {11, 13}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}),
      depthwise("dw5x5Stride2SamePadding", 1, 32, {13, 9}, {5, 5}, {2, 2}, {1, 2}, {2, 1}, {1, 1}),
      depthwise("dw7x7", 2, 40, {14, 15}, {7, 7}, {1, 1}, {3, 3}, {3, 3}, {1, 1}),
      depthwise("dw7x7Stride2", 1, 8, {16, 17}, {7, 7}, {2, 2}, {3, 3}, {3, 3}, {1, 1}),
      depthwise("dw3x5RowsAndColumnsDiffer", 1, 16, {8, 11}, {3, 5}, {2, 1}, {1, 2}, {1, 2},
                {2, 1}),
      depthwise("dw3x3Dilated", 1, 16, {12, 12}, {3, 3}, {1, 1}, {2, 2}, {2, 2}, {2, 2}),
      depthwise("dw4x4LoopingKernel", 2, 16, {9, 9}, {4, 4}, {1, 1}, {1, 2}, {2, 1}, {1, 1}),
      depthwise("dwSevenChannels", 2, 7, {7, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}),
      depthwise("dwManyChannelBlocks", 1, 528, {5, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}),
      depthwise("dw7x7ManyChannels", 1, 200, {6, 7}, {7, 7}, {1, 1}, {3, 3}, {3, 3}, {1, 1}),
      depthwise("dwConv1d", 2, 16, {33}, {5}, {1}, {2}, {2}, {1}),
      depthwise("dwConv1dStride2", 1, 24, {20}, {3}, {2}, {1}, {0}, {1}),
      depthwise("dwNoPadding", 1, 16, {6, 6}, {3, 3}, {1, 1}, {0, 0}, {0, 0}, {1, 1}),
      // Several shared-memory tiles in both directions.
      depthwise("dw3x3ManyTiles", 2, 16, {19, 70}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}),
      depthwise("dw5x5Stride2ManyTiles", 1, 24, {37, 41}, {5, 5}, {2, 2}, {2, 2}, {2, 2}, {1, 1}),
      // Narrower vectors: rexnet's channel counts, and small ones for fp32.
      depthwise("dw3x3Channels162", 2, 162, {11, 35}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}),
      depthwise("dw5x5Stride2Channels228", 1, 228, {13, 18}, {5, 5}, {2, 2}, {2, 2}, {2, 2},
                {1, 1}),
      depthwise("dw7x7Channels6", 2, 6, {10, 11}, {7, 7}, {1, 1}, {3, 3}, {3, 3}, {1, 1}),
      depthwise("dw3x3Stride2Channels10", 1, 10, {12, 9}, {3, 3}, {2, 2}, {1, 1}, {0, 0}, {1, 1}),
      depthwise("dwConv1dChannels18", 2, 18, {21}, {7}, {1}, {3}, {3}, {1}),
      depthwise("dw3x3DilatedChannels20", 1, 20, {9, 9}, {3, 3}, {1, 1}, {2, 2}, {2, 2}, {2, 2}),
      // Odd channel counts: one channel a thread in fp16/bf16, 4-byte vectors in fp32.
      depthwise("dw5x5Stride2Channels33", 1, 33, {11, 12}, {5, 5}, {2, 2}, {2, 2}, {2, 2}, {1, 1}),
      depthwise("dw3x3Channels99", 1, 99, {6, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1}),
  };
  ConvolutionCase relu = cases[1];  // dw3x3Stride2
  relu.name = "dw3x3Stride2Relu";
  relu.activation = ConvolutionActivation::kRelu;
  cases.push_back(relu);
  ConvolutionCase noBias = cases[3];  // dw7x7
  noBias.name = "dw7x7NoBias";
  noBias.bias = false;
  cases.push_back(noBias);
  const std::pair<ConvolutionActivation, const char*> activations[] = {
      {ConvolutionActivation::kRelu6, "Relu6"},
      {ConvolutionActivation::kSilu, "Silu"},
      {ConvolutionActivation::kHardSwish, "HardSwish"}};
  for (const auto& [activation, name] : activations) {
    ConvolutionCase activated = cases[2];  // dw5x5Stride2SamePadding
    activated.name = std::string("dw5x5Stride2") + name;
    activated.activation = activation;
    cases.push_back(activated);
  }
  return cases;
}

// Depthwise convolutions with a channel multiplier m (outChannels == m * inChannels, output
// channel o reading input channel o / m): m == 2 on 16-byte vectors of fp16/bf16 (channel counts
// a multiple of 8) and fp32 (of 4), on one-element fp32 vectors and on the looping kernel
// elsewhere; m == 3 and 4 (one-element fp32 vectors, else the looping kernel); with bias,
// activations, 1-D, dilation (the looping kernel on vectors) and several channel blocks.
std::vector<ConvolutionCase> multiplierCases() {
  const auto multiplied = [](std::string name, int64_t batch, int64_t inChannels,
                             int64_t multiplier, Shape in, Shape kernel, Shape stride, Shape pre,
                             Shape post, Shape dilation, ConvolutionActivation activation) {
    ConvolutionCase c{std::move(name),         false,          batch,           inChannels,
                      multiplier * inChannels, inChannels,     std::move(in),   std::move(kernel),
                      std::move(stride),       std::move(pre), std::move(post), {},
                      std::move(dilation)};
    c.activation = activation;
    return c;
  };
  using A = ConvolutionActivation;
  return {
      // FastViT's and MobileOne's downsampling: 7x7 (or 3x3) stride 2, twice the channels.
      multiplied("dwMultiplier2Downsample7x7", 2, 16, 2, {15, 14}, {7, 7}, {2, 2}, {3, 3}, {3, 3},
                 {1, 1}, A::kNone),
      multiplied("dwMultiplier2Channels64Silu", 1, 64, 2, {9, 10}, {3, 3}, {1, 1}, {1, 1}, {1, 1},
                 {1, 1}, A::kSilu),
      multiplied("dwMultiplier2Channels10HardSwish", 1, 10, 2, {8, 11}, {5, 5}, {1, 1}, {2, 2},
                 {2, 2}, {1, 1}, A::kHardSwish),
      multiplied("dwMultiplier2Channels3", 2, 3, 2, {9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1},
                 A::kNone),
      multiplied("dwMultiplier2Conv1d", 2, 12, 2, {30}, {5}, {2}, {2}, {2}, {1}, A::kRelu),
      multiplied("dwMultiplier2Dilated", 1, 8, 2, {10, 10}, {3, 3}, {1, 1}, {2, 2}, {2, 2}, {2, 2},
                 A::kNone),
      multiplied("dwMultiplier3Relu", 2, 8, 3, {7, 9}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                 A::kRelu),
      multiplied("dwMultiplier3Stride2Relu6", 1, 5, 3, {11, 12}, {5, 5}, {2, 2}, {2, 2}, {2, 2},
                 {1, 1}, A::kRelu6),
      multiplied("dwMultiplier4", 1, 4, 4, {6, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                 A::kNone),
  };
}

const ConvolutionCase& depthwiseCase(const std::string& name) {
  static const std::vector<ConvolutionCase> cases = [] {
    std::vector<ConvolutionCase> all = depthwiseCases();
    for (ConvolutionCase& c : multiplierCases()) all.push_back(std::move(c));
    return all;
  }();
  for (const ConvolutionCase& c : cases) {
    if (c.name == name) return c;
  }
  throw std::invalid_argument("no depthwise case " + name);
}

ConvolutionAlgorithm kilnDepthwise(int variant) {
  ConvolutionAlgorithm algorithm;
  algorithm.kernel = ConvolutionKernel::kKilnDepthwise;
  algorithm.algorithm = variant;
  return algorithm;
}

// Runs a variant of Kiln's depthwise kernels, with a residual when
// asked, into an output poisoned with NaN (so every element must be written), and compares it
// with the CPU reference. x, out and the residual start `misalign` elements past their 16-byte
// alignment.
void checkDepthwise(const ConvolutionCase& c, ScalarType type, int variant, bool withResidual,
                    int misalign, uint32_t seed) {
  const ConvolutionParams p = paramsOf(c, type, TensorLayout::kNHWC);
  SCOPED_TRACE(c.name + " " + describe(p) + ": " + describeDepthwiseVariant(variant) +
               (withResidual ? ", residual" : "") +
               (misalign != 0 ? ", misaligned by " + std::to_string(misalign) : ""));
  ASSERT_TRUE(depthwiseConvolutionApplies(p));
  const HostOperands operands = makeOperands(p, c.bias, seed);
  const Shape outDims = concat({p.batch, p.outChannels}, p.outSpatial);
  const size_t outCount = static_cast<size_t>(shapeVolume(outDims));
  const std::vector<float> residual =
      withResidual ? roundTo(type, randomValues(outCount, seed + 3)) : std::vector<float>{};

  ConvolutionParams linear = p;
  linear.activation = ConvolutionActivation::kNone;
  std::vector<float> expected = reference(linear, operands);
  std::vector<float> scale = errorScale(p, operands);
  for (size_t i = 0; i < outCount; ++i) {
    if (withResidual) {
      expected[i] += residual[i];
      scale[i] += std::fabs(residual[i]);
    }
    expected[i] = activated(p.activation, expected[i]);
  }

  // Misaligned operands start `misalign` elements into their buffers.
  const size_t element = scalarSize(type);
  const size_t offset = static_cast<size_t>(misalign) * element;
  const auto uploadAtOffset = [&](const std::vector<float>& values) {
    std::vector<uint8_t> bytes(offset);
    const std::vector<uint8_t> encoded = encode(type, values);
    bytes.insert(bytes.end(), encoded.begin(), encoded.end());
    return DeviceBuffer::from(bytes);
  };
  const DeviceBuffer x =
      uploadAtOffset(channelsLast(operands.x, concat({p.batch, p.inChannels}, p.inSpatial)));
  const DeviceBuffer weight = DeviceBuffer::from(encode(type, operands.weight));
  const DeviceBuffer bias =
      operands.bias.empty() ? DeviceBuffer() : DeviceBuffer::from(encode(type, operands.bias));
  const DeviceBuffer residualBuffer =
      withResidual ? uploadAtOffset(channelsLast(residual, outDims)) : DeviceBuffer();
  DeviceBuffer out(outCount * element + offset);
  ASSERT_EQ(cudaMemset(out.data(), 0xff, out.bytes()), cudaSuccess);

  const auto at = [&](const DeviceBuffer& buffer) {
    return static_cast<void*>(static_cast<uint8_t*>(buffer.data()) + offset);
  };
  ConvolutionTensors tensors{at(x), weight.data(), operands.bias.empty() ? nullptr : bias.data(),
                             at(out), withResidual ? at(residualBuffer) : nullptr};
  const std::unique_ptr<ConvolutionPlan> plan =
      ConvolutionPlan::create(sharedHandle(), p, kilnDepthwise(variant));
  EXPECT_EQ(plan->algorithm().kernel, ConvolutionKernel::kKilnDepthwise);
  EXPECT_EQ(plan->workspaceSize(), 0u);
  Stream stream;
  convolution(sharedHandle(), *plan, tensors, {}, stream.get());
  stream.synchronize();

  std::vector<uint8_t> bytes = out.download<uint8_t>();
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(offset));
  bytes.resize(outCount * element);
  expectClose(p, channelsFirst(decode(type, bytes), outDims), expected, scale);
}

TEST(CudaDepthwiseConvolution, AppliesToForwardChannelsLastDepthwiseOnly) {
  const ConvolutionParams depthwise =
      paramsOf(depthwiseCase("dw3x3"), ScalarType::kFloat16, TensorLayout::kNHWC);
  EXPECT_TRUE(depthwiseConvolutionApplies(depthwise));
  EXPECT_EQ(depthwiseConvolutionVariants(depthwise), (std::vector<int>{1, 2, 4, kDepthwiseTiles}));
  ConvolutionParams nchw = depthwise;
  nchw.layout = TensorLayout::kNCHW;
  ConvolutionParams grouped = depthwise;
  grouped.groups = depthwise.inChannels / 2;
  ConvolutionParams transposed = depthwise;
  transposed.transposed = true;
  ConvolutionParams threeDims =
      paramsOf(forwardCases()[9], ScalarType::kFloat16, TensorLayout::kNHWC);
  threeDims.groups = threeDims.inChannels = threeDims.outChannels = 8;
  for (const ConvolutionParams& other : {nchw, grouped, transposed, threeDims}) {
    EXPECT_FALSE(depthwiseConvolutionApplies(other)) << describe(other);
    EXPECT_TRUE(depthwiseConvolutionVariants(other).empty()) << describe(other);
  }
  // The looping kernel has one variant.
  EXPECT_EQ(depthwiseConvolutionVariants(
                paramsOf(depthwiseCase("dw3x3Dilated"), ScalarType::kFloat32, TensorLayout::kNHWC)),
            (std::vector<int>{1}));
  EXPECT_EQ(describe(kilnDepthwise(4)), "Kiln depthwise, 4 columns a thread");
  EXPECT_EQ(describe(kilnDepthwise(kDepthwiseTiles)), "Kiln depthwise, shared-memory tiles");
  EXPECT_THROW(depthwiseConvolution(nchw, 1, {}, nullptr), std::invalid_argument);
  EXPECT_THROW(depthwiseConvolution(depthwise, 3, {}, nullptr), std::invalid_argument);
}

// Any channel count a 16-, 8- or 4-byte vector divides gets the row and tiled kernels; odd fp16 and
// bf16 counts get the looping kernel alone, and fp32 always has 4-byte (one-element) vectors.
TEST(CudaDepthwiseConvolution, NarrowerVectorsOfferTheRowAndTiledKernels) {
  const std::vector<int> all = {1, 2, 4, kDepthwiseTiles};
  const std::vector<int> loop = {1};
  const auto variants = [](const std::string& name, ScalarType type) {
    return depthwiseConvolutionVariants(paramsOf(depthwiseCase(name), type, TensorLayout::kNHWC));
  };
  for (ScalarType type : kFloatTypes) {
    for (const char* name : {"dw3x3Channels162", "dw5x5Stride2Channels228", "dw7x7Channels6",
                             "dw3x3Stride2Channels10"}) {
      EXPECT_EQ(variants(name, type), all) << name << " " << scalarName(type);
    }
    EXPECT_EQ(variants("dwConv1dChannels18", type), (std::vector<int>{1, 2, 4}));
    EXPECT_EQ(variants("dw3x3DilatedChannels20", type), loop);
    const bool fp32 = type == ScalarType::kFloat32;
    EXPECT_EQ(variants("dw5x5Stride2Channels33", type), fp32 ? all : loop) << scalarName(type);
    EXPECT_EQ(variants("dwSevenChannels", type), fp32 ? all : loop) << scalarName(type);
  }
}

// A channel multiplier applies (outChannels a multiple of groups == inChannels); the row and tiled
// kernels are offered where a vector takes it: m == 2 at 16 bytes, any m on one-element fp32
// vectors. Grouped convolutions with more than one input channel a group are still refused.
TEST(CudaDepthwiseConvolution, ChannelMultiplierApplies) {
  const std::vector<int> all = {1, 2, 4, kDepthwiseTiles};
  const std::vector<int> loop = {1};
  const auto params = [](const std::string& name, ScalarType type) {
    return paramsOf(depthwiseCase(name), type, TensorLayout::kNHWC);
  };
  for (ScalarType type : kFloatTypes) {
    const bool fp32 = type == ScalarType::kFloat32;
    for (const ConvolutionCase& c : multiplierCases()) {
      EXPECT_TRUE(depthwiseConvolutionApplies(params(c.name, type))) << c.name;
    }
    EXPECT_EQ(depthwiseConvolutionVariants(params("dwMultiplier2Downsample7x7", type)), all);
    EXPECT_EQ(depthwiseConvolutionVariants(params("dwMultiplier2Channels64Silu", type)), all);
    EXPECT_EQ(depthwiseConvolutionVariants(params("dwMultiplier2Conv1d", type)),
              (std::vector<int>{1, 2, 4}));
    EXPECT_EQ(depthwiseConvolutionVariants(params("dwMultiplier2Dilated", type)), loop);
    // 20 output channels: 16-byte fp32 vectors; fp16/bf16 would need 8-byte ones at m == 2.
    EXPECT_EQ(depthwiseConvolutionVariants(params("dwMultiplier2Channels10HardSwish", type)),
              fp32 ? all : loop)
        << scalarName(type);
    for (const char* name : {"dwMultiplier2Channels3", "dwMultiplier3Relu", "dwMultiplier4"}) {
      EXPECT_EQ(depthwiseConvolutionVariants(params(name, type)), fp32 ? all : loop)
          << name << " " << scalarName(type);
    }
  }
  const ConvolutionParams multiplier = params("dwMultiplier2Downsample7x7", ScalarType::kFloat16);
  ConvolutionParams grouped = multiplier;  // two input channels a group
  grouped.groups = multiplier.inChannels / 2;
  ConvolutionParams fewerOutputs = multiplier;
  fewerOutputs.outChannels = multiplier.inChannels / 2;
  ConvolutionParams notAMultiple = multiplier;
  notAMultiple.outChannels = multiplier.inChannels * 3 / 2;
  for (const ConvolutionParams& other : {grouped, fewerOutputs, notAMultiple}) {
    EXPECT_FALSE(depthwiseConvolutionApplies(other)) << describe(other);
    EXPECT_TRUE(depthwiseConvolutionVariants(other).empty()) << describe(other);
  }
}

// The CPU reference the GPU tests compare with computes a channel multiplier as torch does: output
// channel o reads input channel o / m with its own taps (weight (outChannels, 1, kh, kw)).
TEST(CudaDepthwiseConvolution, CpuReferenceComputesAChannelMultiplier) {
  for (const char* name : {"dwMultiplier2Downsample7x7", "dwMultiplier3Stride2Relu6"}) {
    const ConvolutionParams p =
        paramsOf(depthwiseCase(name), ScalarType::kFloat32, TensorLayout::kNCHW);
    ConvolutionParams linear = p;
    linear.activation = ConvolutionActivation::kNone;
    const HostOperands operands = makeOperands(p, true, 7);
    const std::vector<float> actual = reference(linear, operands);
    const int64_t m = p.outChannels / p.inChannels;
    const int64_t inH = p.inSpatial[0], inW = p.inSpatial[1];
    const int64_t outH = p.outSpatial[0], outW = p.outSpatial[1];
    const int64_t kh = p.kernel[0], kw = p.kernel[1];
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t o = 0; o < p.outChannels; ++o) {
        for (int64_t oh = 0; oh < outH; ++oh) {
          for (int64_t ow = 0; ow < outW; ++ow) {
            double sum = operands.bias[static_cast<size_t>(o)];
            for (int64_t i = 0; i < kh; ++i) {
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t ih = oh * p.stride[0] - p.prePadding[0] + i * p.dilation[0];
                const int64_t iw = ow * p.stride[1] - p.prePadding[1] + j * p.dilation[1];
                if (ih < 0 || ih >= inH || iw < 0 || iw >= inW) continue;
                sum += static_cast<double>(operands.x[static_cast<size_t>(
                           ((n * p.inChannels + o / m) * inH + ih) * inW + iw)]) *
                       operands.weight[static_cast<size_t>((o * kh + i) * kw + j)];
              }
            }
            const size_t at =
                static_cast<size_t>(((n * p.outChannels + o) * outH + oh) * outW + ow);
            EXPECT_NEAR(actual[at], sum, 1e-4) << name << " at " << at;
          }
        }
      }
    }
  }
}

TEST(CudaDepthwiseConvolution, EveryVariantMatchesCpuInEveryType) {
  KILN_SKIP_WITHOUT_GPU();
  uint32_t seed = 3000;
  for (const ConvolutionCase& c : depthwiseCases()) {
    for (ScalarType type : kFloatTypes) {
      const ConvolutionParams p = paramsOf(c, type, TensorLayout::kNHWC);
      for (int variant : depthwiseConvolutionVariants(p)) {
        checkDepthwise(c, type, variant, false, 0, seed++);
      }
    }
  }
}

TEST(CudaDepthwiseConvolution, ResidualAndReluInTheEpilogue) {
  KILN_SKIP_WITHOUT_GPU();
  uint32_t seed = 4000;
  for (const ConvolutionCase& c :
       {depthwiseCase("dw7x7"), depthwiseCase("dw3x3Stride2Relu"),
        depthwiseCase("dw3x3Channels162"), depthwiseCase("dw5x5Stride2Channels228")}) {
    for (ScalarType type : kFloatTypes) {
      for (int variant : {1, 2, 4, kDepthwiseTiles}) {
        checkDepthwise(c, type, variant, true, 0, seed++);
      }
    }
  }
}

// Every variant offered for a channel multiplier, with and without a residual.
TEST(CudaDepthwiseConvolution, ChannelMultiplierMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  uint32_t seed = 4500;
  for (const ConvolutionCase& c : multiplierCases()) {
    for (ScalarType type : kFloatTypes) {
      const ConvolutionParams p = paramsOf(c, type, TensorLayout::kNHWC);
      for (int variant : depthwiseConvolutionVariants(p)) {
        for (bool withResidual : {false, true}) {
          checkDepthwise(c, type, variant, withResidual, 0, seed++);
        }
      }
    }
  }
}

// Buffers one element off their alignment run one channel a thread in fp16/bf16 (and 4-byte
// vectors in fp32); two elements off, the 4-byte vectors of fp16/bf16 (and 8-byte ones of fp32).
// At a channel multiplier of 2, which narrower vectors do not take, both run one channel a thread
// in fp16/bf16 and one-element vectors in fp32.
TEST(CudaDepthwiseConvolution, MisalignedBuffersRunNarrowerVectors) {
  KILN_SKIP_WITHOUT_GPU();
  uint32_t seed = 5000;
  for (const ConvolutionCase& c : {depthwiseCase("dw3x3"), depthwiseCase("dwConv1d"),
                                   depthwiseCase("dwMultiplier2Downsample7x7")}) {
    for (ScalarType type : kFloatTypes) {
      for (int misalign : {1, 2}) {
        for (int variant : {4, kDepthwiseTiles}) {
          if (c.kernel.size() == 1 && variant == kDepthwiseTiles) continue;
          checkDepthwise(c, type, variant, true, misalign, seed++);
        }
      }
    }
  }
}

// An input activation (the activation of an inverted residual block's expansion, fused into the
// depthwise convolution that reads it) in every variant: row, tiled and looping kernels, vectors
// and one channel a thread, channel multipliers, 1-D, padding on every side, with the epilogue's
// activation and a residual too.
TEST(CudaDepthwiseConvolution, InputActivationInEveryVariant) {
  KILN_SKIP_WITHOUT_GPU();
  const ConvolutionActivation inputActivations[] = {
      ConvolutionActivation::kSilu, ConvolutionActivation::kHardSwish,
      ConvolutionActivation::kRelu6, ConvolutionActivation::kRelu};
  uint32_t seed = 7000;
  size_t next = 0;
  for (const char* name :
       {"dw3x3", "dw3x3Stride2", "dw5x5Stride2SamePadding", "dw7x7Stride2", "dw3x3Dilated",
        "dw4x4LoopingKernel", "dwSevenChannels", "dwConv1d", "dw3x3Channels162",
        "dwMultiplier2Downsample7x7", "dwMultiplier3Relu", "dwMultiplier2Channels64Silu"}) {
    ConvolutionCase c = depthwiseCase(name);
    for (ScalarType type : kFloatTypes) {
      c.inputActivation = inputActivations[next++ % std::size(inputActivations)];
      const ConvolutionParams p = paramsOf(c, type, TensorLayout::kNHWC);
      for (int variant : depthwiseConvolutionVariants(p)) {
        checkDepthwise(c, type, variant, variant == 2, 0, seed++);
      }
    }
  }
}

// A convolution with an input activation runs on Kiln's depthwise kernels alone: autotune times
// only them, heuristics pick one, a stored cuDNN choice is refused, and a convolution the kernels
// do not compute (grouped, NCHW) is refused with the reason.
TEST(CudaDepthwiseConvolution, InputActivationRunsOnKilnKernelsOnly) {
  KILN_SKIP_WITHOUT_GPU();
  const ConvolutionCase depthwise{"depthwise", false,  8,      96,     96, 96,    {28, 28},
                                  {3, 3},      {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}};
  ConvolutionParams p = paramsOf(depthwise, ScalarType::kFloat16, TensorLayout::kNHWC);
  p.inputActivation = ConvolutionActivation::kSilu;
  const HostOperands operands = makeOperands(p, true, 7500);
  Stream stream;
  DeviceOperands device = upload(p, operands);
  DeviceBuffer tuningSpace(size_t{16} << 20);
  const std::unique_ptr<ConvolutionPlan> tuned = ConvolutionPlan::autotune(
      sharedHandle(), p, device.tensors(), {tuningSpace.data(), tuningSpace.bytes()}, stream.get());
  EXPECT_EQ(tuned->timedCandidates().size(), depthwiseConvolutionVariants(p).size());
  for (const auto& [algorithm, ms] : tuned->timedCandidates()) {
    EXPECT_EQ(algorithm.kernel, ConvolutionKernel::kKilnDepthwise) << describe(algorithm);
  }
  EXPECT_EQ(tuned->algorithm().kernel, ConvolutionKernel::kKilnDepthwise);
  launch(*tuned, device, stream);
  expectClose(p, downloadOut(p, device.out), reference(p, operands), errorScale(p, operands));

  const std::unique_ptr<ConvolutionPlan> picked = ConvolutionPlan::select(sharedHandle(), p);
  EXPECT_EQ(picked->algorithm().kernel, ConvolutionKernel::kKilnDepthwise);
  ConvolutionAlgorithm cudnn;
  cudnn.algorithm = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  EXPECT_THROW(ConvolutionPlan::create(sharedHandle(), p, cudnn), std::invalid_argument);

  ConvolutionParams grouped = p;
  grouped.groups = p.inChannels / 2;
  ConvolutionParams nchw = p;
  nchw.layout = TensorLayout::kNCHW;
  for (const ConvolutionParams& other : {grouped, nchw}) {
    try {
      ConvolutionPlan::select(sharedHandle(), other);
      ADD_FAILURE() << "accepted " << describe(other);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("input activation"), std::string::npos) << e.what();
    }
  }
}

// Autotune times Kiln's depthwise kernels beside cuDNN's algorithms for a depthwise convolution
// (2-D and 1-D, and with a channel multiplier), and only cuDNN's for a grouped one; it keeps the
// fastest it timed, and the plan computes what the CPU does.
TEST(CudaDepthwiseConvolution, AutotuneTimesKilnKernelsBesideCudnn) {
  KILN_SKIP_WITHOUT_GPU();
  const ConvolutionCase grouped{"grouped", false,  4,      32,     32, 8,     {28, 28},
                                {3, 3},    {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}};
  const ConvolutionCase depthwise2d{"depthwise", false,  8,      96,     96, 96,    {56, 56},
                                    {3, 3},      {2, 2}, {1, 1}, {1, 1}, {}, {1, 1}};
  const ConvolutionCase depthwise1d{"depthwise1d", false, 4,   64,  64, 64, {400},
                                    {7},           {1},   {3}, {3}, {}, {1}};
  // FastViT's first downsampling: 64 -> 128 channels, 7x7 stride 2.
  const ConvolutionCase multiplier2{"depthwiseMultiplier2",
                                    false,
                                    4,
                                    64,
                                    128,
                                    64,
                                    {56, 56},
                                    {7, 7},
                                    {2, 2},
                                    {3, 3},
                                    {3, 3},
                                    {},
                                    {1, 1}};
  uint32_t seed = 6000;
  for (const ConvolutionCase& c : {grouped, depthwise2d, depthwise1d, multiplier2}) {
    const ConvolutionParams p = paramsOf(c, ScalarType::kFloat16, TensorLayout::kNHWC);
    const HostOperands operands = makeOperands(p, true, seed++);
    Stream stream;
    DeviceOperands device = upload(p, operands);
    DeviceBuffer tuningSpace(size_t{64} << 20);
    const std::unique_ptr<ConvolutionPlan> plan =
        ConvolutionPlan::autotune(sharedHandle(), p, device.tensors(),
                                  {tuningSpace.data(), tuningSpace.bytes()}, stream.get());
    size_t kiln = 0;
    size_t cudnn = 0;
    float fastest = std::numeric_limits<float>::infinity();
    std::string timed;
    for (const auto& [algorithm, ms] : plan->timedCandidates()) {
      (algorithm.kernel == ConvolutionKernel::kKilnDepthwise ? kiln : cudnn) += 1;
      if (ms >= 0.0f) fastest = std::min(fastest, ms);
      timed += "\n  " + describe(algorithm) + ": " + std::to_string(ms) + " ms";
    }
    RecordProperty(c.name + "_choice", describe(plan->algorithm()));
    std::cout << c.name << ": chose " << describe(plan->algorithm()) << " of" << timed << "\n";
    EXPECT_GT(cudnn, 0u) << c.name;
    EXPECT_EQ(kiln, depthwiseConvolutionVariants(p).size()) << c.name;
    EXPECT_EQ(kiln > 0, c.groups == c.inChannels) << c.name;
    EXPECT_EQ(plan->algorithm().measuredMs, fastest) << c.name;
    launch(*plan, device, stream);
    expectClose(p, downloadOut(p, device.out), reference(p, operands), errorScale(p, operands));
  }
}

// Every engine of cuDNN's graph API that autotune timed, rebuilt from its stored choice as another
// context would, computes the convolution: grouped, few-channel stem, 1-D, with a channel
// multiplier and with asymmetric padding (the scratch path), in each float type and layout.
TEST(CudaConvolution, EveryTimedGraphEngineMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const std::vector<ConvolutionCase> cases = {
      {"grouped24", false, 2, 48, 48, 2, {10, 10}, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {}, {1, 1}},
      {"stem", false, 2, 3, 16, 1, {20, 20}, {7, 7}, {2, 2}, {3, 3}, {3, 3}, {}, {1, 1}},
      {"conv1dGrouped", false, 2, 32, 32, 4, {40}, {9}, {1}, {4}, {4}, {}, {1}},
      {"multiplier2", false, 1, 16, 32, 16, {9, 9}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {}, {1, 1}},
      {"asymmetric", false, 1, 8, 8, 1, {8, 9}, {4, 4}, {1, 1}, {1, 2}, {2, 1}, {}, {1, 1}},
  };
  uint32_t seed = 7000;
  size_t graphEngines = 0;
  for (const ConvolutionCase& c : cases) {
    for (ScalarType type : kFloatTypes) {
      for (TensorLayout layout : kLayouts) {
        ConvolutionCase withEpilogue = c;
        withEpilogue.activation = ConvolutionActivation::kSilu;
        const ConvolutionParams p = paramsOf(withEpilogue, type, layout);
        const HostOperands operands = makeOperands(p, true, seed++);
        const std::vector<float> expected = reference(p, operands);
        Stream stream;
        DeviceOperands device = upload(p, operands);
        DeviceBuffer tuningSpace(size_t{64} << 20);
        const std::unique_ptr<ConvolutionPlan> tuned =
            ConvolutionPlan::autotune(sharedHandle(), p, device.tensors(),
                                      {tuningSpace.data(), tuningSpace.bytes()}, stream.get());
        for (const auto& [algorithm, ms] : tuned->timedCandidates()) {
          if (algorithm.kernel != ConvolutionKernel::kCudnnGraph) continue;
          ++graphEngines;
          const std::unique_ptr<ConvolutionPlan> plan =
              ConvolutionPlan::create(sharedHandle(), p, algorithm);
          EXPECT_TRUE(sameChoice(plan->algorithm(), algorithm)) << describe(p);
          ASSERT_LE(plan->workspaceSize(), tuningSpace.bytes());
          convolution(sharedHandle(), *plan, device.tensors(),
                      {tuningSpace.data(), tuningSpace.bytes()}, stream.get());
          SCOPED_TRACE(describe(algorithm) + " for " + describe(p));
          expectClose(p, downloadOut(p, device.out), expected, errorScale(p, operands));
        }
      }
    }
  }
  EXPECT_GT(graphEngines, 0u);
}

}  // namespace
}  // namespace kiln::cuda_kernels

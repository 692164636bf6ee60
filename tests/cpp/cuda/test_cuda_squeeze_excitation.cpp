// The CUDA squeeze-and-excitation kernels against the CPU reference kernels they replace (mean,
// fully connected, activation, fully connected, in float32): every float type, the pooling's
// split and unsplit paths, vector and scalar loads (channel counts that 16 bytes do and do not
// divide, misaligned inputs), channel counts above one block's threads, biases or none, and the
// workspace bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/unary_activation.h"
#include "kernels/cuda/squeeze_excitation.h"
#include "tests/cpp/cuda/cuda_test_util.h"
#include "tests/cpp/cuda/typed_values.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::decode;
using cuda_test::DeviceBuffer;
using cuda_test::DeviceTensor;
using cuda_test::encode;
using cuda_test::kFloatTypes;
using cuda_test::quantize;
using cuda_test::randomFloats;
using cuda_test::roundingOf;
using cuda_test::Stream;

struct Case {
  int64_t batch, plane, channels, hidden, outFeatures;
  bool biases;
  bool hasActivation;
  gk::Activation activation;
  // Elements the input starts past a 16-byte boundary (a whole element: no tensor starts inside
  // one, and a float32 two bytes off is no valid address).
  size_t misalignment;
};

// The reference: the mean over the plane, then the MLP, all in float32 on the quantized operands.
std::vector<float> reference(const Case& c, const std::vector<float>& x,
                             const std::vector<float>& w1, const std::vector<float>& b1,
                             const std::vector<float>& w2, const std::vector<float>& b2) {
  std::vector<float> mean(static_cast<size_t>(c.batch * c.channels), 0.0f);
  for (int64_t n = 0; n < c.batch; ++n) {
    for (int64_t s = 0; s < c.plane; ++s) {
      for (int64_t ch = 0; ch < c.channels; ++ch) {
        mean[n * c.channels + ch] += x[(n * c.plane + s) * c.channels + ch];
      }
    }
  }
  for (float& value : mean) value /= static_cast<float>(c.plane);
  std::vector<float> hidden(static_cast<size_t>(c.batch * c.hidden));
  ck::fullyConnected({c.batch, c.channels, c.hidden}, mean.data(), w1.data(),
                     c.biases ? b1.data() : nullptr, hidden.data());
  if (c.hasActivation) {
    ck::activation({c.activation, 0.0, 6.0}, hidden.data(), hidden.data(),
                   static_cast<int64_t>(hidden.size()));
  }
  std::vector<float> out(static_cast<size_t>(c.batch * c.outFeatures));
  ck::fullyConnected({c.batch, c.hidden, c.outFeatures}, hidden.data(), w2.data(),
                     c.biases ? b2.data() : nullptr, out.data());
  return out;
}

void runCase(const Case& c, gk::ScalarType type, uint32_t seed, const Stream& stream) {
  const std::vector<float> x =
      quantize(randomFloats(c.batch * c.plane * c.channels, seed, -2, 3), type);
  const std::vector<float> w1 =
      quantize(randomFloats(c.hidden * c.channels, seed + 1, -0.5f, 0.5f), type);
  const std::vector<float> b1 = quantize(randomFloats(c.hidden, seed + 2), type);
  const std::vector<float> w2 =
      quantize(randomFloats(c.outFeatures * c.hidden, seed + 3, -0.5f, 0.5f), type);
  const std::vector<float> b2 = quantize(randomFloats(c.outFeatures, seed + 4), type);
  const std::vector<float> expected = reference(c, x, w1, b1, w2, b2);

  gk::SqueezeExcitationParams params;
  params.batch = c.batch;
  params.plane = c.plane;
  params.channels = c.channels;
  params.hidden = c.hidden;
  params.outFeatures = c.outFeatures;
  params.hasHiddenActivation = c.hasActivation;
  params.hiddenActivation = {c.activation, 0.0, 6.0};
  params.type = type;
  const DeviceTensor input(encode(x, type), c.misalignment * gk::scalarSize(type));
  const DeviceTensor weight1(encode(w1, type), 0);
  const DeviceTensor bias1(encode(b1, type), 0);
  const DeviceTensor weight2(encode(w2, type), 0);
  const DeviceTensor bias2(encode(b2, type), 0);
  const DeviceTensor out(expected.size() * gk::scalarSize(type), 0);
  gk::SqueezeExcitationTensors tensors;
  tensors.x = input.data();
  tensors.w1 = weight1.data();
  tensors.b1 = c.biases ? bias1.data() : nullptr;
  tensors.w2 = weight2.data();
  tensors.b2 = c.biases ? bias2.data() : nullptr;
  tensors.out = out.data();
  const size_t workspaceBytes = gk::squeezeExcitationWorkspaceSize(params);
  EXPECT_LE(workspaceBytes, gk::squeezeExcitationWorkspaceBound(params));
  const DeviceBuffer workspace(workspaceBytes);
  gk::squeezeExcitation(params, tensors, workspace.data(), stream.get());
  stream.synchronize();
  const std::vector<float> actual = decode(out.download(), type);
  // The output rounds once to the type; float32 sums in another order.
  const double rounding = roundingOf(type);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 1e-4 + rounding * (1.0 + std::fabs(expected[i])))
        << "element " << i;
  }
}

TEST(CudaSqueezeExcitation, MatchesTheCpuStepsOnEveryPath) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const std::vector<Case> cases = {
      // EfficientNet-B0's first block at batch 1: the plane splits over many blocks.
      {1, 112 * 112, 32, 8, 32, true, true, gk::Activation::kSilu, 0},
      // Its last at batch 32: one chunk a sample.
      {32, 49, 1152, 48, 1152, true, true, gk::Activation::kSilu, 0},
      // MobileNetV3's ReLU and ReXNet's clip, channels 16 bytes do not divide.
      {3, 28 * 28, 72, 24, 72, true, true, gk::Activation::kRelu, 0},
      {2, 50, 37, 5, 37, false, true, gk::Activation::kClip, 0},
      // No activation, a misaligned input (the scalar loads), more outputs than channels.
      {4, 9, 16, 4, 40, true, false, gk::Activation::kRelu, 1},
      // More channel vectors than a block has threads.
      {2, 64, 4096, 16, 64, true, true, gk::Activation::kGeluErf, 0},
  };
  uint32_t seed = 9100;
  for (gk::ScalarType type : kFloatTypes) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(gk::scalarName(type)) + " batch " + std::to_string(c.batch) +
                   " plane " + std::to_string(c.plane) + " channels " + std::to_string(c.channels) +
                   " hidden " + std::to_string(c.hidden));
      runCase(c, type, seed += 10, stream);
    }
  }
}

// An engine reserves the bound at its profile's largest dims; every smaller batch and plane fits.
TEST(CudaSqueezeExcitation, WorkspaceFitsTheBoundAtSmallerDims) {
  gk::SqueezeExcitationParams largest;
  largest.batch = 64;
  largest.plane = 112 * 112;
  largest.channels = 96;
  largest.hidden = 4;
  largest.outFeatures = 96;
  const size_t bound = gk::squeezeExcitationWorkspaceBound(largest);
  for (int64_t batch : {1, 2, 3, 7, 31, 64}) {
    for (int64_t plane : {1, 49, 3136, 112 * 112}) {
      gk::SqueezeExcitationParams params = largest;
      params.batch = batch;
      params.plane = plane;
      EXPECT_LE(gk::squeezeExcitationWorkspaceSize(params), bound)
          << "batch " << batch << " plane " << plane;
    }
  }
}

TEST(CudaSqueezeExcitation, RefusesWhatItCannotRun) {
  gk::SqueezeExcitationParams params;
  params.channels = 12 * 1024;
  params.hidden = 8;
  params.outFeatures = 8;
  EXPECT_FALSE(gk::squeezeExcitationFits(params.channels, params.hidden));
  EXPECT_THROW(gk::squeezeExcitation(params, {}, nullptr, nullptr), std::invalid_argument);
  params.channels = 64;
  params.type = gk::ScalarType::kInt32;
  const gk::SqueezeExcitationTensors dummy{reinterpret_cast<const void*>(16),
                                           reinterpret_cast<const void*>(16),
                                           nullptr,
                                           reinterpret_cast<const void*>(16),
                                           nullptr,
                                           reinterpret_cast<void*>(16)};
  EXPECT_THROW(gk::squeezeExcitation(params, dummy, reinterpret_cast<void*>(16), nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace kiln

// The cuBLASLt GEMMs against the CPU reference (kernels/cpu/matmul): every dtype, transposes,
// broadcast batches, epilogues, odd and empty sizes. fp16 and bf16 inputs are rounded on the
// host first, so the reference multiplies exactly the values the GPU sees.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/cast.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/unary_activation.h"
#include "kernels/cuda/gemm.h"
#include "tests/cpp/cuda/cuda_test_util.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::DeviceBuffer;
using Shape = std::vector<int64_t>;

constexpr gk::ScalarType kDtypes[] = {gk::ScalarType::kFloat32, gk::ScalarType::kFloat16,
                                      gk::ScalarType::kBFloat16};

int64_t volumeOf(const Shape& shape) {
  int64_t volume = 1;
  for (int64_t d : shape) volume *= d;
  return volume;
}

std::vector<float> randomValues(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = value(generator);
  return values;
}

// Host values in the GPU's storage format.
std::vector<uint8_t> encode(const std::vector<float>& values, gk::ScalarType dtype) {
  std::vector<uint8_t> bytes(values.size() * gk::scalarSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == gk::ScalarType::kFloat32) {
      std::memcpy(bytes.data() + i * 4, &values[i], 4);
    } else {
      const uint16_t bits = dtype == gk::ScalarType::kFloat16 ? ck::floatToHalf(values[i])
                                                              : ck::floatToBFloat16(values[i]);
      std::memcpy(bytes.data() + i * 2, &bits, 2);
    }
  }
  return bytes;
}

std::vector<float> decode(const std::vector<uint8_t>& bytes, gk::ScalarType dtype) {
  const size_t size = gk::scalarSize(dtype);
  std::vector<float> values(bytes.size() / size);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == gk::ScalarType::kFloat32) {
      std::memcpy(&values[i], bytes.data() + i * 4, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + i * 2, 2);
      values[i] =
          dtype == gk::ScalarType::kFloat16 ? ck::halfToFloat(bits) : ck::bfloat16ToFloat(bits);
    }
  }
  return values;
}

// Rounds to the dtype and back, as the GPU will see the values.
std::vector<float> quantize(const std::vector<float>& values, gk::ScalarType dtype) {
  return decode(encode(values, dtype), dtype);
}

struct Tolerance {
  float absolute;
  float relative;
};

// fp32 GELU leaves room for the epilogue's fast tanh.
Tolerance toleranceFor(gk::ScalarType dtype, bool tf32 = false,
                       gk::GemmActivation activation = gk::GemmActivation::kNone) {
  if (tf32) return {2e-2f, 1e-2f};
  if (dtype == gk::ScalarType::kFloat32 && activation == gk::GemmActivation::kGeluTanh) {
    return {2e-3f, 1e-3f};
  }
  switch (dtype) {
    case gk::ScalarType::kFloat16:
      return {2e-2f, 4e-3f};
    case gk::ScalarType::kBFloat16:
      return {1e-1f, 2e-2f};
    default:
      return {2e-4f, 1e-4f};
  }
}

void expectClose(const std::vector<float>& actual, const std::vector<float>& expected,
                 Tolerance tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  int reported = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const float limit = tolerance.absolute + tolerance.relative * std::fabs(expected[i]);
    if (!(std::fabs(actual[i] - expected[i]) <= limit) && reported++ < 5) {
      ADD_FAILURE() << "element " << i << ": got " << actual[i] << ", expected " << expected[i];
    }
  }
}

void applyActivation(gk::GemmActivation activation, std::vector<float>& values) {
  if (activation == gk::GemmActivation::kNone) return;
  ck::ActivationParams params;
  params.type =
      activation == gk::GemmActivation::kRelu ? ck::Activation::kRelu : ck::Activation::kGeluTanh;
  ck::activation(params, values.data(), values.data(), static_cast<int64_t>(values.size()));
}

const char* activationName(gk::GemmActivation activation) {
  switch (activation) {
    case gk::GemmActivation::kNone:
      return "none";
    case gk::GemmActivation::kRelu:
      return "relu";
    case gk::GemmActivation::kGeluTanh:
      return "gelu";
  }
  return "?";
}

// One cuBLASLt handle, plan cache and workspace per test, as an execution context holds them.
class CudaGemm : public testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_test::cudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    handle_ = std::make_unique<gk::CublasLtHandle>();
    cache_ = std::make_unique<gk::GemmPlanCache>();
    workspaceBuffer_ = DeviceBuffer(gk::kGemmRecommendedWorkspaceSize);
  }

  gk::GemmWorkspace workspace() const {
    return {workspaceBuffer_.data(), workspaceBuffer_.bytes()};
  }

  // Runs the GPU matmul on inputs rounded to the dtype, and the CPU matmul (plus bias and
  // activation) on the same rounded values, and compares.
  void checkMatMul(const Shape& aShape, const Shape& bShape, bool transposeA, bool transposeB,
                   gk::ScalarType dtype, bool withBias = false,
                   gk::GemmActivation activation = gk::GemmActivation::kNone,
                   bool allowTf32 = false, size_t misalignment = 0) {
    SCOPED_TRACE(testing::Message()
                 << "a " << testing::PrintToString(aShape) << (transposeA ? "^T" : "") << " b "
                 << testing::PrintToString(bShape) << (transposeB ? "^T" : "") << " dtype "
                 << gk::scalarName(dtype) << " bias " << withBias << " activation "
                 << activationName(activation) << (allowTf32 ? " tf32" : "") << " misalignment "
                 << misalignment);
    const auto a = quantize(randomValues(volumeOf(aShape), 1), dtype);
    const auto b = quantize(randomValues(volumeOf(bShape), 2), dtype);
    const ck::MatMulParams cpuParams{aShape, bShape, transposeA, transposeB};
    const Shape outShape = ck::matmulOutputShape(cpuParams);
    const int64_t n = outShape.back();
    const auto bias = quantize(randomValues(n, 3), dtype);
    std::vector<float> expected(static_cast<size_t>(volumeOf(outShape)));
    ck::matmul(cpuParams, a.data(), b.data(), expected.data());
    if (withBias) {
      for (size_t i = 0; i < expected.size(); ++i) expected[i] += bias[i % static_cast<size_t>(n)];
    }
    applyActivation(activation, expected);

    gk::MatMulParams params;
    params.aShape = aShape;
    params.bShape = bShape;
    params.transposeA = transposeA;
    params.transposeB = transposeB;
    params.dtype = dtype;
    params.allowTf32 = allowTf32;
    params.activation = activation;
    ASSERT_EQ(gk::matmulOutputShape(params), outShape);
    const size_t elementSize = gk::scalarSize(dtype);
    const size_t offset = misalignment * elementSize;
    DeviceBuffer deviceA = upload(encode(a, dtype), offset);
    DeviceBuffer deviceB = upload(encode(b, dtype), offset);
    DeviceBuffer deviceBias = upload(encode(bias, dtype), 0);
    const size_t outBytes = expected.size() * elementSize;
    DeviceBuffer deviceOut(outBytes + offset);
    // NaN everywhere first: every output element must be written.
    ASSERT_EQ(cudaMemset(deviceOut.data(), 0xff, deviceOut.bytes()), cudaSuccess);
    gk::matmul(*handle_, *cache_, params, at(deviceA, offset), at(deviceB, offset),
               withBias ? deviceBias.data() : nullptr, at(deviceOut, offset), workspace(), nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> outBytesHost(outBytes + offset);
    deviceOut.download(outBytesHost.data(), outBytesHost.size());
    outBytesHost.erase(outBytesHost.begin(),
                       outBytesHost.begin() + static_cast<std::ptrdiff_t>(offset));
    expectClose(decode(outBytesHost, dtype), expected, toleranceFor(dtype, allowTf32, activation));
  }

  static DeviceBuffer upload(const std::vector<uint8_t>& bytes, size_t offset) {
    DeviceBuffer buffer(bytes.size() + offset);
    std::vector<uint8_t> padded(offset, 0);
    padded.insert(padded.end(), bytes.begin(), bytes.end());
    buffer.upload(padded.data(), padded.size());
    return buffer;
  }
  static void* at(const DeviceBuffer& buffer, size_t offset) {
    return static_cast<uint8_t*>(buffer.data()) + offset;
  }

  std::unique_ptr<gk::CublasLtHandle> handle_;
  std::unique_ptr<gk::GemmPlanCache> cache_;
  DeviceBuffer workspaceBuffer_;
};

TEST_F(CudaGemm, MatMulOfOddSizesWithEveryTransposeAndDtype) {
  for (gk::ScalarType dtype : kDtypes) {
    for (bool transposeA : {false, true}) {
      for (bool transposeB : {false, true}) {
        const Shape aShape = transposeA ? Shape{33, 17} : Shape{17, 33};
        const Shape bShape = transposeB ? Shape{29, 33} : Shape{33, 29};
        checkMatMul(aShape, bShape, transposeA, transposeB, dtype);
      }
    }
    checkMatMul({128, 256}, {256, 64}, false, false, dtype);  // tensor-core friendly
    checkMatMul({1, 300}, {300, 1}, false, false, dtype);     // a dot product
    checkMatMul({5, 7}, {3, 7}, false, true, dtype);          // rows not 16-byte multiples
  }
}

TEST_F(CudaGemm, MatMulBatchedAndBroadcast) {
  for (gk::ScalarType dtype : kDtypes) {
    checkMatMul({3, 17, 33}, {3, 33, 29}, false, false, dtype);      // one strided batch
    checkMatMul({2, 3, 17, 33}, {33, 29}, false, false, dtype);      // b shared: rows folded
    checkMatMul({2, 3, 33, 17}, {29, 33}, true, true, dtype);        // b shared, a transposed
    checkMatMul({17, 33}, {4, 33, 29}, false, false, dtype);         // a shared (stride 0)
    checkMatMul({1, 5, 8, 16}, {3, 1, 16, 8}, false, false, dtype);  // looped + strided
    checkMatMul({2, 1, 4, 6}, {3, 5, 6}, false, true, dtype);        // rank mismatch
    checkMatMul({2, 1, 3, 1, 6, 4}, {1, 2, 1, 2, 6, 5}, true, false, dtype);  // alternating
  }
}

TEST_F(CudaGemm, MatMulEpilogues) {
  const gk::GemmActivation activations[] = {gk::GemmActivation::kNone, gk::GemmActivation::kRelu,
                                            gk::GemmActivation::kGeluTanh};
  for (gk::ScalarType dtype : kDtypes) {
    for (gk::GemmActivation activation : activations) {
      checkMatMul({37, 64}, {64, 48}, false, false, dtype, true, activation);
      checkMatMul({2, 3, 16, 24}, {40, 24}, false, true, dtype, true, activation);
      checkMatMul({3, 16, 24}, {3, 24, 40}, false, false, dtype, true, activation);
      if (activation != gk::GemmActivation::kNone) {
        checkMatMul({37, 64}, {64, 48}, false, false, dtype, false, activation);
      }
    }
  }
}

TEST_F(CudaGemm, MatMulWithTf32AllowedStaysClose) {
  checkMatMul({64, 128}, {128, 96}, false, false, gk::ScalarType::kFloat32, true,
              gk::GemmActivation::kNone, true);
}

TEST_F(CudaGemm, MatMulOfMisalignedOperands) {
  // One element past an aligned address: cuBLASLt must pick kernels that allow it.
  for (gk::ScalarType dtype : kDtypes) {
    checkMatMul({9, 21}, {21, 13}, false, false, dtype, false, gk::GemmActivation::kNone, false, 1);
  }
}

TEST_F(CudaGemm, MatMulOfEmptySizes) {
  for (gk::ScalarType dtype : kDtypes) {
    checkMatMul({0, 8}, {8, 5}, false, false, dtype);  // no rows: nothing to do
    checkMatMul({3, 0}, {0, 5}, false, false, dtype);  // k = 0: zeros
    checkMatMul({3, 0}, {0, 5}, false, false, dtype, true,
                gk::GemmActivation::kRelu);                        // relu(bias)
    checkMatMul({2, 3, 0}, {2, 0, 5}, false, false, dtype, true);  // batched, k = 0
  }
}

TEST_F(CudaGemm, MatMulRejectsMismatchedShapesAndUnsupportedTypes) {
  gk::MatMulParams params;
  params.aShape = {3, 4};
  params.bShape = {5, 6};
  EXPECT_THROW(gk::matmulOutputShape(params), std::invalid_argument);
  params.bShape = {4, 6};
  params.dtype = gk::ScalarType::kInt32;
  EXPECT_THROW(gk::matmul(*handle_, *cache_, params, nullptr, nullptr, nullptr, nullptr,
                          workspace(), nullptr),
               std::invalid_argument);
  params.aShape = {2, 3, 4};
  params.bShape = {3, 4, 6};
  params.dtype = gk::ScalarType::kFloat32;
  EXPECT_THROW(gk::matmulOutputShape(params), std::invalid_argument);
}

TEST_F(CudaGemm, FullyConnectedMatchesCpu) {
  struct Case {
    int64_t rows;
    int64_t inFeatures;
    int64_t outFeatures;
  };
  const Case cases[] = {{37, 50, 23}, {1, 768, 3072}, {128, 64, 64}, {4, 3, 1}, {0, 8, 8}};
  const gk::GemmActivation activations[] = {gk::GemmActivation::kNone, gk::GemmActivation::kRelu,
                                            gk::GemmActivation::kGeluTanh};
  for (gk::ScalarType dtype : kDtypes) {
    for (const Case& c : cases) {
      for (bool withBias : {true, false}) {
        for (gk::GemmActivation activation : activations) {
          SCOPED_TRACE(testing::Message()
                       << c.rows << "x" << c.inFeatures << " -> " << c.outFeatures << " "
                       << gk::scalarName(dtype) << " bias " << withBias << " "
                       << activationName(activation));
          const auto x = quantize(randomValues(c.rows * c.inFeatures, 4), dtype);
          const auto weight = quantize(randomValues(c.outFeatures * c.inFeatures, 5), dtype);
          const auto bias = quantize(randomValues(c.outFeatures, 6), dtype);
          std::vector<float> expected(static_cast<size_t>(c.rows * c.outFeatures));
          ck::fullyConnected({c.rows, c.inFeatures, c.outFeatures}, x.data(), weight.data(),
                             withBias ? bias.data() : nullptr, expected.data());
          applyActivation(activation, expected);

          gk::FullyConnectedParams params;
          params.rows = c.rows;
          params.inFeatures = c.inFeatures;
          params.outFeatures = c.outFeatures;
          params.dtype = dtype;
          params.activation = activation;
          DeviceBuffer deviceX = DeviceBuffer::from(encode(x, dtype));
          DeviceBuffer deviceWeight = DeviceBuffer::from(encode(weight, dtype));
          DeviceBuffer deviceBias = DeviceBuffer::from(encode(bias, dtype));
          DeviceBuffer deviceOut(expected.size() * gk::scalarSize(dtype));
          gk::fullyConnected(*handle_, *cache_, params, deviceX.data(), deviceWeight.data(),
                             withBias ? deviceBias.data() : nullptr, nullptr, deviceOut.data(),
                             workspace(), nullptr);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          expectClose(decode(deviceOut.download<uint8_t>(), dtype), expected,
                      toleranceFor(dtype, false, activation));
        }
      }
    }
  }
}

TEST_F(CudaGemm, GemmScalesAndAddsTheResidual) {
  // c = 0.5 * a * b + 2 * c over a strided batch of 3 with row strides wider than the rows.
  const int64_t m = 6, n = 10, k = 12, batch = 3, ldc = 16;
  for (gk::ScalarType dtype : kDtypes) {
    SCOPED_TRACE(gk::scalarName(dtype));
    const auto a = quantize(randomValues(batch * m * k, 7), dtype);
    const auto b = quantize(randomValues(batch * k * n, 8), dtype);
    const auto c = quantize(randomValues(batch * m * ldc, 9), dtype);
    std::vector<float> expected = c;
    for (int64_t i = 0; i < batch; ++i) {
      std::vector<float> product(static_cast<size_t>(m * n));
      ck::gemm(m, n, k, a.data() + i * m * k, k, false, b.data() + i * k * n, n, false,
               product.data(), n, false);
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t col = 0; col < n; ++col) {
          float& out = expected[static_cast<size_t>(i * m * ldc + r * ldc + col)];
          out = 0.5f * product[static_cast<size_t>(r * n + col)] + 2.0f * out;
        }
      }
    }
    gk::GemmParams params;
    params.m = m;
    params.n = n;
    params.k = k;
    params.lda = k;
    params.ldb = n;
    params.ldc = ldc;
    params.batchCount = batch;
    params.batchStrideA = m * k;
    params.batchStrideB = k * n;
    params.batchStrideC = m * ldc;
    params.dtype = dtype;
    params.alpha = 0.5f;
    params.beta = 2.0f;
    DeviceBuffer deviceA = DeviceBuffer::from(encode(a, dtype));
    DeviceBuffer deviceB = DeviceBuffer::from(encode(b, dtype));
    DeviceBuffer deviceC = DeviceBuffer::from(encode(c, dtype));
    gk::gemm(*handle_, *cache_, params, deviceA.data(), deviceB.data(), nullptr, nullptr,
             deviceC.data(), workspace(), nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    expectClose(decode(deviceC.download<uint8_t>(), dtype), expected, toleranceFor(dtype));
  }
}

TEST_F(CudaGemm, GemmReadsASeparateResidualAndWritesOnlyC) {
  // c = act(0.5 * a * b + 2 * r + bias) over a strided batch of 3 with row strides wider than the
  // rows: r is cuBLASLt's C, read; c its D, written; c's padding and r stay as they were.
  const int64_t m = 6, n = 10, k = 12, batch = 3, ldc = 16;
  const gk::GemmActivation activations[] = {gk::GemmActivation::kNone, gk::GemmActivation::kRelu,
                                            gk::GemmActivation::kGeluTanh};
  for (gk::ScalarType dtype : kDtypes) {
    for (gk::GemmActivation activation : activations) {
      for (size_t misalignment : {size_t{0}, size_t{1}}) {
        SCOPED_TRACE(testing::Message()
                     << gk::scalarName(dtype) << " " << activationName(activation)
                     << " residual misaligned by " << misalignment);
        const auto a = quantize(randomValues(batch * m * k, 7), dtype);
        const auto b = quantize(randomValues(batch * k * n, 8), dtype);
        const auto r = quantize(randomValues(batch * m * ldc, 9), dtype);
        const auto before = quantize(randomValues(batch * m * ldc, 10), dtype);
        const auto bias = quantize(randomValues(n, 11), dtype);
        std::vector<float> expected = before;
        for (int64_t i = 0; i < batch; ++i) {
          std::vector<float> window(static_cast<size_t>(m * n));
          ck::gemm(m, n, k, a.data() + i * m * k, k, false, b.data() + i * k * n, n, false,
                   window.data(), n, false);
          for (int64_t row = 0; row < m; ++row) {
            for (int64_t col = 0; col < n; ++col) {
              const auto at = static_cast<size_t>(i * m * ldc + row * ldc + col);
              float& value = window[static_cast<size_t>(row * n + col)];
              value = 0.5f * value + 2.0f * r[at] + bias[static_cast<size_t>(col)];
            }
          }
          applyActivation(activation, window);
          for (int64_t row = 0; row < m; ++row) {
            for (int64_t col = 0; col < n; ++col) {
              expected[static_cast<size_t>(i * m * ldc + row * ldc + col)] =
                  window[static_cast<size_t>(row * n + col)];
            }
          }
        }
        gk::GemmParams params;
        params.m = m;
        params.n = n;
        params.k = k;
        params.lda = k;
        params.ldb = n;
        params.ldc = ldc;
        params.batchCount = batch;
        params.batchStrideA = m * k;
        params.batchStrideB = k * n;
        params.batchStrideC = m * ldc;
        params.dtype = dtype;
        params.activation = activation;
        params.alpha = 0.5f;
        params.beta = 2.0f;
        const size_t offset = misalignment * gk::scalarSize(dtype);
        DeviceBuffer deviceA = DeviceBuffer::from(encode(a, dtype));
        DeviceBuffer deviceB = DeviceBuffer::from(encode(b, dtype));
        DeviceBuffer deviceR = upload(encode(r, dtype), offset);
        DeviceBuffer deviceBias = DeviceBuffer::from(encode(bias, dtype));
        DeviceBuffer deviceC = DeviceBuffer::from(encode(before, dtype));
        gk::gemm(*handle_, *cache_, params, deviceA.data(), deviceB.data(), deviceBias.data(),
                 at(deviceR, offset), deviceC.data(), workspace(), nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        expectClose(decode(deviceC.download<uint8_t>(), dtype), expected,
                    toleranceFor(dtype, false, activation));
        std::vector<uint8_t> residualAfter = deviceR.download<uint8_t>();
        residualAfter.erase(residualAfter.begin(),
                            residualAfter.begin() + static_cast<std::ptrdiff_t>(offset));
        EXPECT_EQ(decode(residualAfter, dtype), r);
      }
    }
  }
}

TEST_F(CudaGemm, FullyConnectedAddsTheResidualBeforeTheActivation) {
  struct Case {
    int64_t rows;
    int64_t inFeatures;
    int64_t outFeatures;
  };
  // The last case has no depth: out = act(bias + residual).
  const Case cases[] = {{37, 50, 23}, {197, 768, 768}, {4, 0, 6}};
  const gk::GemmActivation activations[] = {gk::GemmActivation::kNone, gk::GemmActivation::kRelu,
                                            gk::GemmActivation::kGeluTanh};
  for (gk::ScalarType dtype : kDtypes) {
    for (const Case& c : cases) {
      for (gk::GemmActivation activation : activations) {
        for (bool inPlace : {false, true}) {
          SCOPED_TRACE(testing::Message()
                       << c.rows << "x" << c.inFeatures << " -> " << c.outFeatures << " "
                       << gk::scalarName(dtype) << " " << activationName(activation)
                       << (inPlace ? " residual in out" : " separate residual"));
          const auto x = quantize(randomValues(c.rows * c.inFeatures, 12), dtype);
          const auto weight = quantize(randomValues(c.outFeatures * c.inFeatures, 13), dtype);
          const auto bias = quantize(randomValues(c.outFeatures, 14), dtype);
          const auto residual = quantize(randomValues(c.rows * c.outFeatures, 15), dtype);
          std::vector<float> expected(residual.size());
          ck::fullyConnected({c.rows, c.inFeatures, c.outFeatures}, x.data(), weight.data(),
                             bias.data(), expected.data());
          for (size_t i = 0; i < expected.size(); ++i) expected[i] += residual[i];
          applyActivation(activation, expected);

          gk::FullyConnectedParams params;
          params.rows = c.rows;
          params.inFeatures = c.inFeatures;
          params.outFeatures = c.outFeatures;
          params.dtype = dtype;
          params.activation = activation;
          DeviceBuffer deviceX = DeviceBuffer::from(encode(x, dtype));
          DeviceBuffer deviceWeight = DeviceBuffer::from(encode(weight, dtype));
          DeviceBuffer deviceBias = DeviceBuffer::from(encode(bias, dtype));
          DeviceBuffer deviceResidual = DeviceBuffer::from(encode(residual, dtype));
          DeviceBuffer separateOut(residual.size() * gk::scalarSize(dtype));
          // NaN everywhere first: every element must be written, and the NaNs never read.
          ASSERT_EQ(cudaMemset(separateOut.data(), 0xff, separateOut.bytes()), cudaSuccess);
          DeviceBuffer& out = inPlace ? deviceResidual : separateOut;
          gk::fullyConnected(*handle_, *cache_, params, deviceX.data(), deviceWeight.data(),
                             deviceBias.data(), deviceResidual.data(), out.data(), workspace(),
                             nullptr);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          expectClose(decode(out.download<uint8_t>(), dtype), expected,
                      toleranceFor(dtype, false, activation));
          if (!inPlace) {
            EXPECT_EQ(decode(deviceResidual.download<uint8_t>(), dtype), residual);
          }
        }
      }
    }
  }
}

TEST_F(CudaGemm, GemmRejectsInconsistentLeadingDims) {
  gk::GemmParams params;
  params.m = 4;
  params.n = 5;
  params.k = 6;
  params.lda = 5;  // a row holds k = 6 values
  params.ldb = 5;
  params.ldc = 5;
  EXPECT_THROW(gk::gemm(*handle_, *cache_, params, nullptr, nullptr, nullptr, nullptr, nullptr,
                        workspace(), nullptr),
               std::invalid_argument);
}

TEST_F(CudaGemm, PlansAreCachedPerConfiguration) {
  gk::FullyConnectedParams params;
  params.rows = 32;
  params.inFeatures = 64;
  params.outFeatures = 48;
  DeviceBuffer x(32 * 64 * 4);
  DeviceBuffer weight(48 * 64 * 4);
  DeviceBuffer bias(48 * 4);
  DeviceBuffer out(32 * 48 * 4);
  ASSERT_EQ(cudaMemset(x.data(), 0, x.bytes()), cudaSuccess);
  ASSERT_EQ(cudaMemset(weight.data(), 0, weight.bytes()), cudaSuccess);
  ASSERT_EQ(cudaMemset(bias.data(), 0, bias.bytes()), cudaSuccess);
  for (int i = 0; i < 3; ++i) {
    gk::fullyConnected(*handle_, *cache_, params, x.data(), weight.data(), bias.data(), nullptr,
                       out.data(), workspace(), nullptr);
  }
  EXPECT_EQ(cache_->size(), 1u);
  gk::fullyConnected(*handle_, *cache_, params, x.data(), weight.data(), nullptr, nullptr,
                     out.data(), workspace(), nullptr);
  params.dtype = gk::ScalarType::kFloat16;
  gk::fullyConnected(*handle_, *cache_, params, x.data(), weight.data(), nullptr, nullptr,
                     out.data(), workspace(), nullptr);
  EXPECT_EQ(cache_->size(), 3u);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cache_->clear();
  EXPECT_EQ(cache_->size(), 0u);

  // A moved handle and cache keep working.
  gk::CublasLtHandle moved = std::move(*handle_);
  gk::GemmPlanCache movedCache = std::move(*cache_);
  gk::fullyConnected(moved, movedCache, params, x.data(), weight.data(), nullptr, nullptr,
                     out.data(), workspace(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(movedCache.size(), 1u);
  EXPECT_EQ(handle_->get(), nullptr);
}

// A 512 x 512 x 512 fp16 fully connected layer: cuBLASLt offers several candidates for it.
struct TimedLayer {
  gk::FullyConnectedParams params;
  DeviceBuffer x, weight, out;

  TimedLayer() : x(512 * 512 * 2), weight(512 * 512 * 2), out(512 * 512 * 2) {
    params.rows = 512;
    params.inFeatures = 512;
    params.outFeatures = 512;
    params.dtype = gk::ScalarType::kFloat16;
    x.upload(encode(quantize(randomValues(512 * 512, 21), params.dtype), params.dtype).data(),
             x.bytes());
    weight.upload(encode(quantize(randomValues(512 * 512, 22), params.dtype), params.dtype).data(),
                  weight.bytes());
  }
  void run(const gk::CublasLtHandle& handle, gk::GemmPlanCache& cache, gk::GemmWorkspace workspace,
           cudaStream_t stream) const {
    gk::fullyConnected(handle, cache, params, x.data(), weight.data(), nullptr, nullptr, out.data(),
                       workspace, stream);
  }
};

// Two caches of one engine's contexts: the first times the candidates and keeps the fastest, the
// second takes its choice without timing, and both compute the same bits.
TEST_F(CudaGemm, TimedChoicesAreSharedByTheCachesOfOneEngine) {
  auto choices = std::make_shared<gk::GemmChoices>();
  cache_->shareChoices(choices);
  TimedLayer layer;
  layer.run(*handle_, *cache_, workspace(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(choices->size(), 1u);
  const std::vector<uint8_t> first = layer.out.download<uint8_t>();

  gk::GemmPlanCache other;
  other.shareChoices(choices);
  ASSERT_EQ(cudaMemset(layer.out.data(), 0, layer.out.bytes()), cudaSuccess);
  layer.run(*handle_, other, workspace(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(choices->size(), 1u);
  EXPECT_EQ(layer.out.download<uint8_t>(), first);
}

// A configuration first met while the stream is captured into a CUDA graph takes the
// heuristic's first algorithm: timing would wait for the stream, which capture forbids.
TEST_F(CudaGemm, AConfigurationFirstMetInAGraphCaptureIsNotTimed) {
  auto choices = std::make_shared<gk::GemmChoices>();
  cache_->shareChoices(choices);
  TimedLayer layer;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  layer.run(*handle_, *cache_, workspace(), stream);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(choices->size(), 0u);
  const std::vector<uint8_t> captured = layer.out.download<uint8_t>();

  gk::GemmPlanCache fresh;
  layer.run(*handle_, fresh, workspace(), stream);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  expectClose(decode(layer.out.download<uint8_t>(), layer.params.dtype),
              decode(captured, layer.params.dtype), toleranceFor(layer.params.dtype));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// c = a * b + c reads c: launching it once per candidate would add the product again each time,
// so the configuration is not timed and c gets the product exactly once.
TEST_F(CudaGemm, AGemmThatReadsItsOutputIsNotTimed) {
  auto choices = std::make_shared<gk::GemmChoices>();
  cache_->shareChoices(choices);
  const int64_t size = 256;
  const auto a = quantize(randomValues(size * size, 31), gk::ScalarType::kFloat16);
  const auto b = quantize(randomValues(size * size, 32), gk::ScalarType::kFloat16);
  std::vector<float> expected(static_cast<size_t>(size * size));
  ck::gemm(size, size, size, a.data(), size, false, b.data(), size, false, expected.data(), size,
           false);
  for (float& value : expected) value += 1.0f;
  gk::GemmParams params;
  params.m = params.n = params.k = size;
  params.lda = params.ldb = params.ldc = size;
  params.dtype = gk::ScalarType::kFloat16;
  params.beta = 1.0f;
  DeviceBuffer deviceA = DeviceBuffer::from(encode(a, params.dtype));
  DeviceBuffer deviceB = DeviceBuffer::from(encode(b, params.dtype));
  DeviceBuffer deviceC = DeviceBuffer::from(
      encode(std::vector<float>(static_cast<size_t>(size * size), 1.0f), params.dtype));
  gk::gemm(*handle_, *cache_, params, deviceA.data(), deviceB.data(), nullptr, nullptr,
           deviceC.data(), workspace(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(choices->size(), 0u);
  expectClose(decode(deviceC.download<uint8_t>(), params.dtype), expected,
              toleranceFor(params.dtype));
}

}  // namespace
}  // namespace kiln

// The CUDA resize and cumulative (cumsum / cumprod) kernels against the CPU reference kernels:
// every resize mode with aligned and half-pixel corners, given scales, up- and downscaling and
// unchanged dims, 1 to 3 spatial dims; scans along every axis position (contiguous rows, strided
// columns taken a thread each and as block scans), rows longer than one tile, every type. fp16
// and bf16 inputs are rounded first, so that both sides see the same values.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cast.h"
#include "kernels/cpu/cumulative.h"
#include "kernels/cpu/resize.h"
#include "kernels/cuda/cumulative.h"
#include "kernels/cuda/resize.h"
#include "tests/cpp/cuda/cuda_test_util.h"
#include "tests/cpp/cuda/typed_values.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::DeviceTensor;
using cuda_test::kFloatTypes;
using cuda_test::Stream;
using Shape = std::vector<int64_t>;
using cuda_test::decode;
using cuda_test::encode;
using cuda_test::quantize;
using cuda_test::randomFloats;
using cuda_test::roundingOf;
using cuda_test::shapeName;
using cuda_test::volumeOf;

// |actual - expected| <= atol + rtol * |expected|; reports the first few differences only.
void expectClose(const std::vector<float>& actual, const std::vector<float>& expected, double rtol,
                 double atol) {
  ASSERT_EQ(actual.size(), expected.size());
  int failures = 0;
  for (size_t i = 0; i < expected.size() && failures < 8; ++i) {
    const double tolerance = atol + rtol * std::fabs(expected[i]);
    if (!(std::fabs(static_cast<double>(actual[i]) - expected[i]) <= tolerance)) {
      ++failures;
      ADD_FAILURE() << "element " << i << ": got " << actual[i] << ", expected " << expected[i];
    }
  }
}

// ---- resize ------------------------------------------------------------------------------------

struct ResizeCase {
  Shape in;
  Shape out;
  std::vector<double> scales;
};

// channels > 1: channels-last, the CPU reference indexing as the kernel does.
void checkResize(gk::ResizeMode mode, bool alignCorners, const ResizeCase& c, gk::ScalarType type,
                 int64_t channels, uint32_t seed, const Stream& stream) {
  gk::ResizeParams params;
  params.mode = mode;
  params.planes = 6;
  params.channels = channels;
  params.inSpatial = c.in;
  params.outSpatial = c.out;
  params.scales = c.scales;
  params.alignCorners = alignCorners;
  params.type = type;
  const std::vector<float> x =
      quantize(randomFloats(params.planes * volumeOf(c.in) * channels, seed, -4.0f, 4.0f), type);
  std::vector<float> expected(static_cast<size_t>(params.planes * volumeOf(c.out) * channels));
  ck::resize(params, x.data(), expected.data());
  // An odd offset: the kernel must not assume aligned rows.
  const DeviceTensor in(encode(x, type), gk::scalarSize(type));
  const DeviceTensor out(expected.size() * gk::scalarSize(type), 0);
  gk::resize(params, in.data(), out.data(), stream.get());
  stream.synchronize();
  const std::vector<float> actual = decode(out.download(), type);
  const double rounding = roundingOf(type);
  // Nearest copies: exact. Interpolation: float32 sums in the same order, stored once.
  const bool copies = mode == gk::ResizeMode::kNearest || mode == gk::ResizeMode::kNearestExact;
  expectClose(actual, quantize(expected, type), copies ? 0.0 : rounding, copies ? 0.0 : 1e-5);
}

TEST(CudaResize, EveryModeMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const std::vector<ResizeCase> oneD = {{{5}, {7}, {}},     {{5}, {10}, {}}, {{9}, {4}, {}},
                                        {{5}, {8}, {1.7}},  {{6}, {6}, {}},  {{1}, {3}, {}},
                                        {{300}, {1031}, {}}};
  const std::vector<ResizeCase> twoD = {
      {{5, 6}, {10, 12}, {}},       {{5, 6}, {7, 9}, {}},           {{8, 9}, {3, 4}, {}},
      {{5, 6}, {8, 6}, {1.7, 1.0}}, {{7, 7}, {5, 10}, {0.75, 1.5}}, {{4, 33}, {4, 65}, {}},
      {{1, 1}, {3, 2}, {}},         {{64, 64}, {128, 96}, {}}};
  const std::vector<ResizeCase> threeD = {{{2, 3, 4}, {4, 6, 8}, {}},
                                          {{3, 4, 5}, {2, 7, 3}, {}},
                                          {{3, 4, 5}, {4, 6, 7}, {1.5, 1.5, 1.5}}};
  uint32_t seed = 7000;
  for (gk::ScalarType type : kFloatTypes) {
    for (bool alignCorners : {false, true}) {
      for (gk::ResizeMode mode : {gk::ResizeMode::kNearest, gk::ResizeMode::kNearestExact,
                                  gk::ResizeMode::kLinear, gk::ResizeMode::kCubic}) {
        const bool nearest =
            mode == gk::ResizeMode::kNearest || mode == gk::ResizeMode::kNearestExact;
        if (nearest && alignCorners) continue;  // torch has no aligned corners for nearest
        for (const auto* cases : {&oneD, &twoD, &threeD}) {
          if (mode == gk::ResizeMode::kCubic && cases != &twoD) continue;
          for (const ResizeCase& c : *cases) {
            for (int64_t channels : {1, 3}) {
              SCOPED_TRACE(std::string(gk::scalarName(type)) + " mode " +
                           std::to_string(static_cast<int>(mode)) + " " + shapeName(c.in) + " -> " +
                           shapeName(c.out) + (alignCorners ? " aligned" : "") + " channels " +
                           std::to_string(channels));
              checkResize(mode, alignCorners, c, type, channels, ++seed, stream);
            }
          }
        }
      }
    }
  }
}

TEST(CudaResize, RejectsBadParameters) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  gk::ResizeParams params;
  params.mode = gk::ResizeMode::kCubic;
  params.planes = 1;
  params.inSpatial = {4};
  params.outSpatial = {8};
  EXPECT_THROW(gk::resize(params, nullptr, nullptr, stream.get()), std::invalid_argument);
  params.mode = gk::ResizeMode::kLinear;
  params.type = gk::ScalarType::kInt32;
  EXPECT_THROW(gk::resize(params, nullptr, nullptr, stream.get()), std::invalid_argument);
}

// ---- cumulative ------------------------------------------------------------------------------

template <typename T>
std::vector<uint8_t> bytesOf(const std::vector<T>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

template <typename T>
std::vector<T> valuesOf(const std::vector<uint8_t>& bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

struct ScanShape {
  int64_t outer;
  int64_t axisSize;
  int64_t inner;
};

// Every kernel path: contiguous rows (one tile, several tiles, a partial last tile), strided
// columns with few columns (block scans) and many (a thread each), short axes, size-1 dims.
const std::vector<ScanShape> kScanShapes = {
    {1, 1, 1},    {3, 7, 1},  {2, 1024, 1}, {1, 3000, 1}, {5, 1025, 1},  {4, 6, 3},
    {2, 2500, 5}, {1, 3, 17}, {3, 4, 4096}, {1, 2, 9000}, {2, 40, 8193}, {7, 1, 5},
};

template <typename T>
void checkIntegerScan(gk::ScalarType type, gk::CumulativeFunction function, const Stream& stream) {
  uint32_t seed = 9100;
  for (const ScanShape& s : kScanShapes) {
    SCOPED_TRACE(std::string(gk::scalarName(type)) + " (" + std::to_string(s.outer) + ", " +
                 std::to_string(s.axisSize) + ", " + std::to_string(s.inner) + ")");
    const int64_t count = s.outer * s.axisSize * s.inner;
    std::mt19937 generator(++seed);
    // Products of values in [-3, 3] overflow long rows: both sides must wrap alike.
    std::uniform_int_distribution<int> distribution(-3, 3);
    std::vector<T> x(static_cast<size_t>(count));
    for (T& value : x) value = static_cast<T>(distribution(generator));
    if (function == gk::CumulativeFunction::kSum && !x.empty()) {
      x[0] = std::numeric_limits<T>::max();  // the sums wrap too
    }
    std::vector<T> expected(x.size());
    const ck::CumulativeParams cpu{function, s.outer, s.axisSize, s.inner, type};
    ck::cumulative(cpu, x.data(), expected.data());
    const DeviceTensor in(bytesOf(x), 0);
    const DeviceTensor out(expected.size() * sizeof(T), 0);
    gk::cumulative({function, s.outer, s.axisSize, s.inner, type}, in.data(), out.data(),
                   stream.get());
    stream.synchronize();
    EXPECT_EQ(valuesOf<T>(out.download()), expected);
  }
}

TEST(CudaCumulative, IntegersEqualCpuOnEveryPath) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  for (auto function : {gk::CumulativeFunction::kSum, gk::CumulativeFunction::kProd}) {
    checkIntegerScan<int32_t>(gk::ScalarType::kInt32, function, stream);
    checkIntegerScan<int64_t>(gk::ScalarType::kInt64, function, stream);
  }
}

TEST(CudaCumulative, FloatsMatchCpuOnEveryPath) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  uint32_t seed = 9500;
  for (gk::ScalarType type : kFloatTypes) {
    for (auto function : {gk::CumulativeFunction::kSum, gk::CumulativeFunction::kProd}) {
      for (const ScanShape& s : kScanShapes) {
        SCOPED_TRACE(std::string(gk::scalarName(type)) +
                     (function == gk::CumulativeFunction::kSum ? " sum" : " prod") + " (" +
                     std::to_string(s.outer) + ", " + std::to_string(s.axisSize) + ", " +
                     std::to_string(s.inner) + ")");
        const int64_t count = s.outer * s.axisSize * s.inner;
        // Products of values near 1 stay finite over long rows; sums of [-1, 1] stay small.
        const bool prod = function == gk::CumulativeFunction::kProd;
        const std::vector<float> x = quantize(
            randomFloats(count, ++seed, prod ? 0.999f : -1.0f, prod ? 1.001f : 1.0f), type);
        std::vector<float> expected(x.size());
        ck::cumulative({function, s.outer, s.axisSize, s.inner, ck::ScalarType::kFloat32}, x.data(),
                       expected.data());
        const DeviceTensor in(encode(x, type), 0);
        const DeviceTensor out(x.size() * gk::scalarSize(type), 0);
        gk::cumulative({function, s.outer, s.axisSize, s.inner, type}, in.data(), out.data(),
                       stream.get());
        stream.synchronize();
        // The CPU accumulates in double, the GPU in float32 in another order: a running value
        // of n terms of magnitude <= 1 is within a few n * float32 epsilon, then rounded once
        // to the type. A wrong element is off by about 1.
        const double atol = static_cast<double>(s.axisSize) * 1.2e-7 * 16.0 + 1e-6;
        const double rounding = roundingOf(type);
        expectClose(decode(out.download(), type), quantize(expected, type), rounding,
                    atol + (type == gk::ScalarType::kFloat32 ? 0.0 : rounding));
      }
    }
  }
}

TEST(CudaCumulative, RejectsOtherTypes) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const DeviceTensor buffer(16, 0);
  EXPECT_THROW(gk::cumulative({gk::CumulativeFunction::kSum, 1, 4, 1, gk::ScalarType::kBool},
                              buffer.data(), buffer.data(), stream.get()),
               std::invalid_argument);
}

}  // namespace
}  // namespace kiln

// The CUDA reduction, softmax, normalization and pooling kernels against the CPU reference
// kernels: every function and dtype, each kernel path (short and long rows, columns, split
// reductions, generic axes), odd sizes, empty and size-1 dims, misaligned pointers, NaN and inf.
// fp16 and bf16 inputs are rounded first, so that both sides see the same values, and results
// are compared within the dtype's rounding.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/cast.h"
#include "kernels/cpu/normalization.h"
#include "kernels/cpu/pooling.h"
#include "kernels/cpu/reduce_softmax.h"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/pooling.h"
#include "kernels/cuda/reduce_softmax.h"
#include "tests/cpp/cuda/cuda_test_util.h"
#include "tests/cpp/cuda/typed_values.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::DeviceBuffer;
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

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

ck::ScalarType toCpu(gk::ScalarType type) { return static_cast<ck::ScalarType>(type); }

// |actual - expected| <= tolerance[i] (one value for all when it has one entry); NaN must meet
// NaN and inf the same inf. Reports the first few differences only.
void expectClose(const std::vector<float>& actual, const std::vector<float>& expected,
                 const std::vector<double>& tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  int failures = 0;
  for (size_t i = 0; i < expected.size() && failures < 8; ++i) {
    const double tol = tolerance.size() == 1 ? tolerance[0] : tolerance[i];
    bool ok;
    if (std::isnan(expected[i])) {
      ok = std::isnan(actual[i]);
    } else if (std::isinf(expected[i])) {
      ok = actual[i] == expected[i];
    } else {
      ok = std::fabs(static_cast<double>(actual[i]) - expected[i]) <= tol;
    }
    if (!ok) {
      ++failures;
      ADD_FAILURE() << "element " << i << ": got " << actual[i] << ", expected " << expected[i]
                    << " (tolerance " << tol << ")";
    }
  }
}

// atol + rtol * |expected| for every element.
std::vector<double> relativeTolerance(const std::vector<float>& expected, double rtol,
                                      double atol) {
  std::vector<double> tolerance(expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    tolerance[i] = atol + rtol * (std::isfinite(expected[i]) ? std::fabs(expected[i]) : 0.0);
  }
  return tolerance;
}

// (N, C, S) <-> (N, S, C)
std::vector<float> toChannelsLast(const std::vector<float>& values, int64_t batch, int64_t channels,
                                  int64_t spatial) {
  std::vector<float> result(values.size());
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < spatial; ++s)
        result[(n * spatial + s) * channels + c] = values[(n * channels + c) * spatial + s];
  return result;
}

std::vector<float> fromChannelsLast(const std::vector<float>& values, int64_t batch,
                                    int64_t channels, int64_t spatial) {
  std::vector<float> result(values.size());
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < spatial; ++s)
        result[(n * channels + c) * spatial + s] = values[(n * spatial + s) * channels + c];
  return result;
}

// ---- reductions -------------------------------------------------------------------------------

struct ReduceCase {
  Shape shape;
  std::vector<bool> reduced;
};

const std::vector<ReduceCase>& reduceCases() {
  static const std::vector<ReduceCase> cases = {
      {{7, 33}, {false, true}},                            // short rows
      {{5, 1000}, {false, true}},                          // a warp a row
      {{3, 50001}, {false, true}},                         // a block a row, split
      {{70000}, {true}},                                   // everything, split
      {{64, 3, 5}, {true, false, false}},                  // columns, inner not a vector multiple
      {{4, 100, 32}, {false, true, false}},                // columns, vectorized
      {{3000, 8}, {true, false}},                          // few columns, split
      {{2, 3, 4, 5}, {true, false, true, false}},          // generic, innermost kept
      {{3, 4, 5, 6}, {false, true, false, true}},          // generic, innermost reduced
      {{2, 1, 3, 1, 9}, {true, true, false, true, true}},  // size-1 dims merge away
      {{6, 7}, {true, true}},                              // all axes
      {{4, 1, 5}, {false, true, false}},                   // only a size-1 dim: a copy
      {{}, {}},                                            // a scalar
      {{9, 1}, {false, true}},
  };
  return cases;
}

void checkFloatReduction(gk::ReduceFunction function, gk::ScalarType type, const ReduceCase& c,
                         size_t offsetElements, uint32_t seed, const Stream& stream) {
  const int64_t inVolume = volumeOf(c.shape);
  int64_t reducedCount = 1;
  for (size_t i = 0; i < c.shape.size(); ++i) {
    if (c.reduced[i]) reducedCount *= c.shape[i];
  }
  const int64_t outVolume = inVolume / reducedCount;
  const bool prod = function == gk::ReduceFunction::kProd;
  const std::vector<float> input = quantize(
      prod ? randomFloats(inVolume, seed, 0.5f, 1.5f) : randomFloats(inVolume, seed), type);

  ck::ReduceParams cpuParams{static_cast<ck::ReduceFunction>(function), ck::ScalarType::kFloat32,
                             c.shape, c.reduced};
  std::vector<float> expected(static_cast<size_t>(outVolume));
  ck::reduce(cpuParams, input.data(), expected.data());
  // Tolerance: accumulation error grows with the sum of magnitudes; max and min are exact.
  std::vector<double> tolerance(expected.size(), 0.0);
  if (function == gk::ReduceFunction::kSum || function == gk::ReduceFunction::kMean) {
    std::vector<float> magnitudes(input.size());
    for (size_t i = 0; i < input.size(); ++i) magnitudes[i] = std::fabs(input[i]);
    std::vector<float> magnitude(expected.size());
    ck::reduce(cpuParams, magnitudes.data(), magnitude.data());
    for (size_t i = 0; i < expected.size(); ++i) {
      tolerance[i] = 1e-5 * magnitude[i] + roundingOf(type) * std::fabs(expected[i]);
    }
  } else if (prod) {
    for (size_t i = 0; i < expected.size(); ++i) {
      tolerance[i] =
          (1e-6 * static_cast<double>(reducedCount) + roundingOf(type)) * std::fabs(expected[i]);
    }
  }

  const size_t elementSize = gk::scalarSize(type);
  const DeviceTensor in(encode(input, type), offsetElements * elementSize);
  const DeviceTensor out(static_cast<size_t>(outVolume) * elementSize,
                         offsetElements * elementSize);
  const gk::ReduceParams params{function, type, c.shape, c.reduced};
  const DeviceBuffer workspace(gk::reduceWorkspaceSize(params));
  gk::reduce(params, in.data(), out.data(), workspace.data(), stream.get());
  stream.synchronize();
  expectClose(decode(out.download(), type), expected, tolerance);
}

TEST(CudaReduce, FloatReductionsMatchCpuOnEveryPath) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const gk::ReduceFunction functions[] = {gk::ReduceFunction::kSum, gk::ReduceFunction::kMean,
                                          gk::ReduceFunction::kMax, gk::ReduceFunction::kMin,
                                          gk::ReduceFunction::kProd};
  uint32_t seed = 1;
  for (gk::ScalarType type : kFloatTypes) {
    for (gk::ReduceFunction function : functions) {
      for (const ReduceCase& c : reduceCases()) {
        int64_t reducedCount = 1;
        for (size_t i = 0; i < c.shape.size(); ++i) {
          if (c.reduced[i]) reducedCount *= c.shape[i];
        }
        // A product of many factors leaves float range; it is checked on short reductions.
        if (function == gk::ReduceFunction::kProd && reducedCount > 64) continue;
        for (size_t offset : {0, 1}) {
          SCOPED_TRACE(std::string(gk::scalarName(type)) + " function " +
                       std::to_string(static_cast<int>(function)) + " shape " + shapeName(c.shape) +
                       " offset " + std::to_string(offset));
          checkFloatReduction(function, type, c, offset, ++seed, stream);
        }
      }
    }
  }
}

TEST(CudaReduce, SplitReductionsAskForAWorkspace) {
  KILN_SKIP_WITHOUT_GPU();
  EXPECT_GT(gk::reduceWorkspaceSize(
                {gk::ReduceFunction::kSum, gk::ScalarType::kFloat32, {3, 50001}, {false, true}}),
            0u);
  EXPECT_GT(gk::reduceWorkspaceSize(
                {gk::ReduceFunction::kSum, gk::ScalarType::kInt32, {3000, 8}, {true, false}}),
            0u);
  EXPECT_EQ(gk::reduceWorkspaceSize(
                {gk::ReduceFunction::kSum, gk::ScalarType::kFloat32, {4096, 64}, {false, true}}),
            0u);
  // Without the workspace a split reduction refuses rather than writing through null.
  const Stream stream;
  const DeviceBuffer in(3 * 50001 * 4);
  const DeviceBuffer out(3 * 4);
  EXPECT_THROW(
      gk::reduce({gk::ReduceFunction::kSum, gk::ScalarType::kFloat32, {3, 50001}, {false, true}},
                 in.data(), out.data(), nullptr, stream.get()),
      std::invalid_argument);
}

TEST(CudaReduce, MaxAndMinPropagateNaN) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  // NaN at the start, middle and end of rows of each kernel path.
  for (const Shape& shape : {Shape{4, 40}, Shape{4, 900}, Shape{3, 20000}, Shape{40, 4}}) {
    const bool columns = shape[0] == 40;
    std::vector<float> input = randomFloats(volumeOf(shape), 7);
    const int64_t rows = columns ? shape[1] : shape[0];
    const int64_t extent = columns ? shape[0] : shape[1];
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t at = r == 0 ? 0 : r == 1 ? extent / 2 : r == 2 ? extent - 1 : -1;
      if (at < 0) continue;
      input[static_cast<size_t>(columns ? at * shape[1] + r : r * extent + at)] = kNaN;
    }
    const std::vector<bool> reduced =
        columns ? std::vector<bool>{true, false} : std::vector<bool>{false, true};
    for (gk::ReduceFunction function : {gk::ReduceFunction::kMax, gk::ReduceFunction::kMin}) {
      SCOPED_TRACE(shapeName(shape));
      std::vector<float> expected(static_cast<size_t>(rows));
      ck::reduce(
          {static_cast<ck::ReduceFunction>(function), ck::ScalarType::kFloat32, shape, reduced},
          input.data(), expected.data());
      const DeviceTensor in(encode(input, gk::ScalarType::kFloat32), 0);
      const DeviceTensor out(expected.size() * 4, 0);
      const gk::ReduceParams params{function, gk::ScalarType::kFloat32, shape, reduced};
      const DeviceBuffer workspace(gk::reduceWorkspaceSize(params));
      gk::reduce(params, in.data(), out.data(), workspace.data(), stream.get());
      stream.synchronize();
      const std::vector<float> actual = decode(out.download(), gk::ScalarType::kFloat32);
      expectClose(actual, expected, {0.0});
      EXPECT_TRUE(std::isnan(actual[0]) && std::isnan(actual[1]) && std::isnan(actual[2]));
    }
  }
}

// `count` elements of the integer `type`, each drawn from `values`.
std::vector<uint8_t> randomIntegersFrom(gk::ScalarType type, int64_t count,
                                        const std::vector<int>& values, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<size_t> pick(0, values.size() - 1);
  const size_t size = gk::scalarSize(type);
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * size);
  for (int64_t i = 0; i < count; ++i) {
    const int value = values[pick(generator)];
    uint8_t* target = bytes.data() + i * size;
    switch (type) {
      case gk::ScalarType::kInt8: {
        const auto v = static_cast<int8_t>(value);
        std::memcpy(target, &v, size);
        break;
      }
      case gk::ScalarType::kInt32: {
        const auto v = static_cast<int32_t>(value);
        std::memcpy(target, &v, size);
        break;
      }
      case gk::ScalarType::kInt64: {
        const auto v = static_cast<int64_t>(value);
        std::memcpy(target, &v, size);
        break;
      }
      default:  // uint8 and bool
        *target = static_cast<uint8_t>(value);
        break;
    }
  }
  return bytes;
}

TEST(CudaReduce, IntegerAndBoolReductionsEqualCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const std::vector<ReduceCase> cases = {
      {{5, 17}, {false, true}},         {{3, 3000}, {false, true}},
      {{17, 6}, {true, false}},         {{4000, 3}, {true, false}},
      {{3, 4, 5}, {true, false, true}}, {{2, 3, 4, 5}, {false, true, false, true}},
      {{6, 1}, {false, true}},          {{2, 40}, {true, true}},
  };
  const gk::ScalarType types[] = {gk::ScalarType::kInt8, gk::ScalarType::kUInt8,
                                  gk::ScalarType::kInt32, gk::ScalarType::kInt64,
                                  gk::ScalarType::kBool};
  const gk::ReduceFunction functions[] = {gk::ReduceFunction::kSum, gk::ReduceFunction::kMean,
                                          gk::ReduceFunction::kMax, gk::ReduceFunction::kMin,
                                          gk::ReduceFunction::kProd};
  uint32_t seed = 100;
  for (gk::ScalarType type : types) {
    for (gk::ReduceFunction function : functions) {
      for (const ReduceCase& c : cases) {
        for (size_t offset : {0, 1}) {
          SCOPED_TRACE(std::string(gk::scalarName(type)) + " function " +
                       std::to_string(static_cast<int>(function)) + " shape " + shapeName(c.shape) +
                       " offset " + std::to_string(offset));
          const int64_t volume = volumeOf(c.shape);
          int64_t reducedCount = 1;
          for (size_t i = 0; i < c.shape.size(); ++i) {
            if (c.reduced[i]) reducedCount *= c.shape[i];
          }
          // Small values, so that sums and products stay within int64 before the final
          // narrowing (which wraps alike on both sides).
          const bool prod = function == gk::ReduceFunction::kProd;
          const bool shortProd = prod && reducedCount <= 60;
          std::vector<int> values;
          switch (type) {
            case gk::ScalarType::kBool:
              values = {0, 1};
              break;
            case gk::ScalarType::kUInt8:
              values = shortProd ? std::vector<int>{1, 2}
                       : prod    ? std::vector<int>{0, 1, 1, 1}
                                 : std::vector<int>{0, 1, 2, 3, 200};
              break;
            default:
              values = shortProd ? std::vector<int>{-1, 1, 2}
                       : prod    ? std::vector<int>{-1, 1}
                                 : std::vector<int>{-100, -3, 0, 2, 7, 120};
              break;
          }
          const std::vector<uint8_t> input = randomIntegersFrom(type, volume, values, ++seed);
          const size_t outBytes = static_cast<size_t>(volume / reducedCount) * gk::scalarSize(type);
          std::vector<uint8_t> expected(outBytes);
          ck::reduce({static_cast<ck::ReduceFunction>(function), toCpu(type), c.shape, c.reduced},
                     input.data(), expected.data());
          const size_t offsetBytes = offset * gk::scalarSize(type);
          const DeviceTensor in(input, offsetBytes);
          const DeviceTensor out(outBytes, offsetBytes);
          const gk::ReduceParams params{function, type, c.shape, c.reduced};
          const DeviceBuffer workspace(gk::reduceWorkspaceSize(params));
          gk::reduce(params, in.data(), out.data(), workspace.data(), stream.get());
          stream.synchronize();
          EXPECT_EQ(out.download(), expected);
        }
      }
    }
  }
}

TEST(CudaReduce, EmptyReductions) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const Shape shape = {3, 0, 4};
  const std::vector<bool> reduced = {false, true, false};
  for (gk::ScalarType type : kFloatTypes) {
    const DeviceTensor out(12 * gk::scalarSize(type), 0);
    for (auto [function, value] :
         {std::pair{gk::ReduceFunction::kSum, 0.0f}, std::pair{gk::ReduceFunction::kProd, 1.0f},
          std::pair{gk::ReduceFunction::kMean, kNaN}}) {
      gk::reduce({function, type, shape, reduced}, nullptr, out.data(), nullptr, stream.get());
      stream.synchronize();
      expectClose(decode(out.download(), type), std::vector<float>(12, value), {0.0});
    }
    EXPECT_THROW(gk::reduce({gk::ReduceFunction::kMax, type, shape, reduced}, nullptr, out.data(),
                            nullptr, stream.get()),
                 std::invalid_argument);
  }
  EXPECT_THROW(gk::reduce({gk::ReduceFunction::kMean, gk::ScalarType::kInt32, shape, reduced},
                          nullptr, nullptr, nullptr, stream.get()),
               std::invalid_argument);
  // An empty output needs no value: nothing runs.
  gk::reduce({gk::ReduceFunction::kMax, gk::ScalarType::kFloat32, {0, 5}, {false, true}}, nullptr,
             nullptr, nullptr, stream.get());
  stream.synchronize();
  EXPECT_THROW(gk::reduce({gk::ReduceFunction::kSum, gk::ScalarType::kFloat32, {2, 3}, {true}},
                          nullptr, nullptr, nullptr, stream.get()),
               std::invalid_argument);
}

// ---- softmax ----------------------------------------------------------------------------------

void checkSoftmax(gk::ScalarType type, const Shape& shape, int64_t axis, bool log,
                  std::vector<float> input, size_t inOffset, size_t outOffset,
                  const Stream& stream) {
  input = quantize(input, type);
  std::vector<float> expected(input.size());
  ck::softmax({shape, axis, log}, input.data(), expected.data());
  const size_t elementSize = gk::scalarSize(type);
  const DeviceTensor in(encode(input, type), inOffset * elementSize);
  const DeviceTensor out(input.size() * elementSize, outOffset * elementSize);
  gk::softmax({shape, axis, log, type}, in.data(), out.data(), stream.get());
  stream.synchronize();
  const double rounding = roundingOf(type);
  expectClose(decode(out.download(), type), expected,
              relativeTolerance(expected, rounding,
                                type == gk::ScalarType::kFloat32 ? 1e-6 : rounding * 0.5));
}

TEST(CudaSoftmax, MatchesCpuOnEveryPath) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  struct Case {
    Shape shape;
    int64_t axis;
  };
  const std::vector<Case> cases = {
      {{4, 10}, 1},   {{3, 128}, 1},   {{2, 1000}, 1}, {{2, 1023}, 1}, {{5, 197}, 1},
      {{3, 5000}, 1}, {{2, 40000}, 1}, {{2, 5, 7}, 1}, {{6, 3}, 0},    {{1, 1, 1}, 0},
      {{3, 1}, 1},    {{7}, 0},        {{2, 0, 3}, 1},
  };
  uint32_t seed = 500;
  for (gk::ScalarType type : kFloatTypes) {
    for (const Case& c : cases) {
      for (bool log : {false, true}) {
        // Same alignment phase (vector stores) and different phases (scalar stores).
        for (auto [inOffset, outOffset] : {std::pair<size_t, size_t>{0, 0}, {1, 1}, {0, 1}}) {
          SCOPED_TRACE(std::string(gk::scalarName(type)) + " shape " + shapeName(c.shape) +
                       " axis " + std::to_string(c.axis) + (log ? " log" : "") + " offsets " +
                       std::to_string(inOffset) + "," + std::to_string(outOffset));
          checkSoftmax(type, c.shape, c.axis, log,
                       randomFloats(volumeOf(c.shape), ++seed, -8.0f, 8.0f), inOffset, outOffset,
                       stream);
        }
      }
    }
  }
}

TEST(CudaSoftmax, InfinitiesAndNaNBehaveLikeTheReference) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  // Rows: a leading -inf, all -inf, a NaN, a +inf; for row lengths of each kernel path.
  for (int64_t cols : {6, 300, 3000}) {
    const Shape shape = {4, cols};
    std::vector<float> input = randomFloats(4 * cols, 11, -3.0f, 3.0f);
    input[0] = -kInf;
    for (int64_t i = 0; i < cols; ++i) input[static_cast<size_t>(cols + i)] = -kInf;
    input[static_cast<size_t>(2 * cols + cols / 2)] = kNaN;
    input[static_cast<size_t>(3 * cols + cols - 1)] = kInf;
    for (bool log : {false, true}) {
      SCOPED_TRACE("cols " + std::to_string(cols) + (log ? " log" : ""));
      checkSoftmax(gk::ScalarType::kFloat32, shape, 1, log, input, 0, 0, stream);
    }
    // The same along a non-innermost axis.
    const std::vector<float> transposed = toChannelsLast(input, 1, 4, cols);
    for (bool log : {false, true}) {
      SCOPED_TRACE("columns " + std::to_string(cols) + (log ? " log" : ""));
      checkSoftmax(gk::ScalarType::kFloat32, {cols, 4}, 0, log, transposed, 0, 0, stream);
    }
  }
}

TEST(CudaSoftmax, RejectsIntegersAndBadAxes) {
  KILN_SKIP_WITHOUT_GPU();
  EXPECT_THROW(gk::softmax({{2, 3}, 1, false, gk::ScalarType::kInt32}, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(gk::softmax({{2, 3}, 2, false, gk::ScalarType::kFloat32}, nullptr, nullptr, nullptr),
               std::invalid_argument);
}

// ---- normalization ----------------------------------------------------------------------------

TEST(CudaNormalization, BatchNormMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  struct Case {
    int64_t batch, channels, spatial;
  };
  const std::vector<Case> cases = {{2, 3, 35}, {2, 16, 64},  {3, 6, 1},
                                   {1, 8, 1},  {2, 5, 4096}, {0, 3, 4}};
  uint32_t seed = 900;
  for (gk::ScalarType type : kFloatTypes) {
    for (gk::ScalarType parameterType : {gk::ScalarType::kFloat32, type}) {
      for (const Case& c : cases) {
        for (bool channelsLast : {false, true}) {
          for (bool affine : {true, false}) {
            for (size_t offset : {0, 1}) {
              SCOPED_TRACE(std::string(gk::scalarName(type)) + " params " +
                           gk::scalarName(parameterType) + " " + std::to_string(c.batch) + "x" +
                           std::to_string(c.channels) + "x" + std::to_string(c.spatial) +
                           (channelsLast ? " channels last" : "") + (affine ? " affine" : "") +
                           " offset " + std::to_string(offset));
              const int64_t volume = c.batch * c.channels * c.spatial;
              const std::vector<float> x = quantize(randomFloats(volume, ++seed, -3, 3), type);
              const std::vector<float> scale =
                  quantize(randomFloats(c.channels, ++seed, 0.5f, 2.0f), parameterType);
              const std::vector<float> bias =
                  quantize(randomFloats(c.channels, ++seed), parameterType);
              const std::vector<float> mean =
                  quantize(randomFloats(c.channels, ++seed), parameterType);
              const std::vector<float> var =
                  quantize(randomFloats(c.channels, ++seed, 0.1f, 3.0f), parameterType);
              std::vector<float> expected(x.size());
              ck::batchNorm({c.batch, c.channels, c.spatial, 1e-5}, x.data(),
                            affine ? scale.data() : nullptr, affine ? bias.data() : nullptr,
                            mean.data(), var.data(), expected.data());
              const size_t elementSize = gk::scalarSize(type);
              const DeviceTensor in(
                  encode(channelsLast ? toChannelsLast(x, c.batch, c.channels, c.spatial) : x,
                         type),
                  offset * elementSize);
              const DeviceTensor out(x.size() * elementSize, offset * elementSize);
              const DeviceTensor scaleDevice(encode(scale, parameterType), 0);
              const DeviceTensor biasDevice(encode(bias, parameterType), 0);
              const DeviceTensor meanDevice(encode(mean, parameterType), 0);
              const DeviceTensor varDevice(encode(var, parameterType), 0);
              gk::BatchNormParams params{c.batch, c.channels,    c.spatial,   1e-5,
                                         type,    parameterType, channelsLast};
              gk::batchNorm(params, in.data(), affine ? scaleDevice.data() : nullptr,
                            affine ? biasDevice.data() : nullptr, meanDevice.data(),
                            varDevice.data(), out.data(), stream.get());
              stream.synchronize();
              std::vector<float> actual = decode(out.download(), type);
              if (channelsLast) actual = fromChannelsLast(actual, c.batch, c.channels, c.spatial);
              const double rounding = roundingOf(type);
              expectClose(actual, expected,
                          relativeTolerance(expected, rounding,
                                            type == gk::ScalarType::kFloat32 ? 1e-5 : rounding));
            }
          }
        }
      }
    }
  }
}

// With a residual r, the norm is of quantize(x + r), as an unfused add would store the sum.
void checkLayerNorm(gk::ScalarType type, gk::ScalarType parameterType, int64_t rows, int64_t cols,
                    bool withScale, bool withBias, float center, size_t offset, uint32_t seed,
                    double tolerance, const Stream& stream, bool withResidual = false,
                    size_t parameterOffset = 0) {
  const std::vector<float> x =
      quantize(randomFloats(rows * cols, seed, center - 1.0f, center + 1.0f), type);
  const std::vector<float> residual = quantize(randomFloats(rows * cols, seed + 3), type);
  const std::vector<float> scale =
      quantize(randomFloats(cols, seed + 1, 0.5f, 2.0f), parameterType);
  const std::vector<float> bias = quantize(randomFloats(cols, seed + 2), parameterType);
  std::vector<float> sum = x;
  if (withResidual) {
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += residual[i];
    sum = quantize(sum, type);
  }
  std::vector<float> expected(x.size());
  ck::layerNorm({rows, cols, 1e-5}, sum.data(), withScale ? scale.data() : nullptr,
                withBias ? bias.data() : nullptr, expected.data());
  const size_t elementSize = gk::scalarSize(type);
  const DeviceTensor in(encode(x, type), offset * elementSize);
  const DeviceTensor residualDevice(encode(residual, type), offset * elementSize);
  const DeviceTensor out(x.size() * elementSize, offset * elementSize);
  const size_t parameterSize = gk::scalarSize(parameterType);
  const DeviceTensor scaleDevice(encode(scale, parameterType), parameterOffset * parameterSize);
  const DeviceTensor biasDevice(encode(bias, parameterType), parameterOffset * parameterSize);
  gk::layerNorm({rows, cols, 1e-5, type, parameterType}, in.data(),
                withScale ? scaleDevice.data() : nullptr, withBias ? biasDevice.data() : nullptr,
                withResidual ? residualDevice.data() : nullptr, out.data(), stream.get());
  stream.synchronize();
  expectClose(decode(out.download(), type), expected,
              relativeTolerance(expected, roundingOf(type), tolerance));
}

TEST(CudaNormalization, LayerNormMatchesCpuOnEveryPath) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  uint32_t seed = 1300;
  for (gk::ScalarType type : kFloatTypes) {
    for (gk::ScalarType parameterType : {gk::ScalarType::kFloat32, type}) {
      for (int64_t cols : {1, 7, 64, 200, 768, 1000, 1024, 1030, 4096, 5001}) {
        for (int64_t rows : {1, 3, 33}) {
          for (size_t offset : {0, 1}) {
            for (int affine = 0; affine < 4; ++affine) {
              SCOPED_TRACE(std::string(gk::scalarName(type)) + " params " +
                           gk::scalarName(parameterType) + " " + std::to_string(rows) + "x" +
                           std::to_string(cols) + " affine " + std::to_string(affine) + " offset " +
                           std::to_string(offset));
              checkLayerNorm(type, parameterType, rows, cols, affine & 1, affine & 2, 0.0f, offset,
                             seed += 5,
                             type == gk::ScalarType::kFloat32 ? 2e-5 : roundingOf(type) * 2, stream,
                             /*withResidual=*/affine == 3);
            }
          }
        }
      }
    }
  }
}

// Aligned rows with scale and bias off 16-byte alignment: the element-by-element parameter path.
TEST(CudaNormalization, LayerNormWithUnalignedParametersMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  uint32_t seed = 1900;
  for (gk::ScalarType type : kFloatTypes) {
    for (gk::ScalarType parameterType : {gk::ScalarType::kFloat32, type}) {
      for (int64_t cols : {64, 768}) {
        for (size_t parameterOffset : {1, 4}) {
          SCOPED_TRACE(std::string(gk::scalarName(type)) + " params " +
                       gk::scalarName(parameterType) + " cols " + std::to_string(cols) +
                       " parameter offset " + std::to_string(parameterOffset));
          checkLayerNorm(type, parameterType, 33, cols, true, true, 0.0f, 0, seed += 5,
                         type == gk::ScalarType::kFloat32 ? 2e-5 : roundingOf(type) * 2, stream,
                         /*withResidual=*/true, parameterOffset);
        }
      }
    }
  }
}

TEST(CudaNormalization, LayerNormOfRowsFarFromZeroIsStable) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  // Rows around 1000 with a spread of 1: a one-pass sum of squares would lose most digits.
  for (int64_t cols : {512, 5000}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    checkLayerNorm(gk::ScalarType::kFloat32, gk::ScalarType::kFloat32, 4, cols, true, true, 1000.0f,
                   0, 77, 2e-3, stream);
  }
}

TEST(CudaNormalization, RejectsUnsupportedTypes) {
  KILN_SKIP_WITHOUT_GPU();
  EXPECT_THROW(gk::layerNorm({2, 3, 1e-5, gk::ScalarType::kFloat16, gk::ScalarType::kBFloat16},
                             nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(
      gk::batchNorm({1, 2, 3, 1e-5, gk::ScalarType::kInt32, gk::ScalarType::kFloat32, false},
                    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
      std::invalid_argument);
}

// ---- pooling ----------------------------------------------------------------------------------

// torch's output size along one dim.
int64_t pooledSize(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
                   bool ceilMode) {
  const int64_t span = in + 2 * padding - dilation * (kernel - 1) - 1;
  int64_t out = (span + (ceilMode ? stride - 1 : 0)) / stride + 1;
  if (ceilMode && (out - 1) * stride >= in + padding) --out;
  return out;
}

struct PoolingCase {
  Shape in;
  Shape kernel;
  Shape stride;
  Shape padding;
  Shape dilation;
  bool ceilMode;
};

void runPoolingCase(const PoolingCase& c, int64_t channels, gk::PoolingMode mode,
                    bool countIncludePad, gk::ScalarType type, bool channelsLast, bool withNaN,
                    uint32_t seed, const Stream& stream) {
  const int64_t batch = 2;
  ck::PoolingParams cpu;
  cpu.mode = static_cast<ck::PoolingMode>(mode);
  cpu.batch = batch;
  cpu.channels = channels;
  cpu.inSpatial = c.in;
  cpu.kernel = c.kernel;
  cpu.stride = c.stride;
  cpu.prePadding = c.padding;
  cpu.postPadding = c.padding;
  cpu.dilation = c.dilation;
  cpu.countIncludePad = countIncludePad;
  for (size_t i = 0; i < c.in.size(); ++i) {
    cpu.outSpatial.push_back(
        pooledSize(c.in[i], c.kernel[i], c.stride[i], c.padding[i], c.dilation[i], c.ceilMode));
  }
  const int64_t inPlane = volumeOf(c.in);
  const int64_t outPlane = volumeOf(cpu.outSpatial);
  std::vector<float> x = quantize(randomFloats(batch * channels * inPlane, seed, -4, 4), type);
  if (withNaN) x[x.size() / 3] = kNaN;
  std::vector<float> expected(static_cast<size_t>(batch * channels * outPlane));
  ck::pooling(cpu, x.data(), expected.data());

  gk::PoolingParams params{mode,        batch,     channels,  c.in,       cpu.outSpatial,  c.kernel,
                           c.stride,    c.padding, c.padding, c.dilation, countIncludePad, type,
                           channelsLast};
  const size_t elementSize = gk::scalarSize(type);
  const DeviceTensor in(
      encode(channelsLast ? toChannelsLast(x, batch, channels, inPlane) : x, type), 0);
  const DeviceTensor out(expected.size() * elementSize, 0);
  gk::pooling(params, in.data(), out.data(), stream.get());
  stream.synchronize();
  std::vector<float> actual = decode(out.download(), type);
  if (channelsLast) actual = fromChannelsLast(actual, batch, channels, outPlane);
  const double rounding = mode == gk::PoolingMode::kMax ? 0.0 : roundingOf(type);
  expectClose(actual, expected, relativeTolerance(expected, rounding, rounding * 0.5));
}

TEST(CudaPooling, FixedWindowsMatchCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  const std::vector<PoolingCase> cases = {
      {{9, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},
      {{9, 11}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, true},
      {{112, 112}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, false},  // ResNet's stem
      {{8, 8}, {2, 2}, {2, 2}, {0, 0}, {1, 1}, false},
      {{10, 9}, {3, 2}, {3, 2}, {1, 0}, {2, 1}, true},  // dilation, ceil mode
      {{20}, {4}, {3}, {2}, {1}, true},                 // 1-D
      {{7}, {7}, {1}, {0}, {1}, false},
      {{5, 6, 7}, {2, 3, 3}, {2, 2, 1}, {1, 1, 1}, {1, 1, 1}, true},  // 3-D
  };
  uint32_t seed = 2000;
  for (gk::ScalarType type : kFloatTypes) {
    for (const PoolingCase& c : cases) {
      // 16 channels: channels-last pooling loads each tap's channels in 16-byte lanes.
      for (int64_t channels : {3, 16}) {
        for (bool channelsLast : {false, true}) {
          for (int variant = 0; variant < 3; ++variant) {
            const gk::PoolingMode mode =
                variant == 0 ? gk::PoolingMode::kMax : gk::PoolingMode::kAverage;
            const bool countIncludePad = variant == 1;
            SCOPED_TRACE(std::string(gk::scalarName(type)) + " in " + shapeName(c.in) + " kernel " +
                         shapeName(c.kernel) + " channels " + std::to_string(channels) +
                         (channelsLast ? " last" : "") + " variant " + std::to_string(variant));
            runPoolingCase(c, channels, mode, countIncludePad, type, channelsLast, false, ++seed,
                           stream);
          }
        }
      }
    }
  }
  // NaN wins in max pooling, in scalar and in lane loads.
  for (gk::ScalarType type : kFloatTypes) {
    for (int64_t channels : {3, 16}) {
      for (bool channelsLast : {false, true}) {
        runPoolingCase(cases[0], channels, gk::PoolingMode::kMax, true, type, channelsLast, true,
                       ++seed, stream);
      }
    }
  }
}

void runAdaptiveCase(const Shape& in, const Shape& outSpatial, int64_t channels,
                     gk::PoolingMode mode, gk::ScalarType type, bool channelsLast, uint32_t seed,
                     const Stream& stream) {
  const int64_t batch = 2;
  const int64_t inPlane = volumeOf(in);
  const int64_t outPlane = volumeOf(outSpatial);
  const std::vector<float> x =
      quantize(randomFloats(batch * channels * inPlane, seed, -4, 4), type);
  std::vector<float> expected(static_cast<size_t>(batch * channels * outPlane));
  ck::adaptivePooling({static_cast<ck::PoolingMode>(mode), batch, channels, in, outSpatial},
                      x.data(), expected.data());
  const size_t elementSize = gk::scalarSize(type);
  const DeviceTensor input(
      encode(channelsLast ? toChannelsLast(x, batch, channels, inPlane) : x, type), 0);
  const DeviceTensor out(expected.size() * elementSize, 0);
  const gk::AdaptivePoolingParams params{mode, batch, channels, in, outSpatial, type, channelsLast};
  const DeviceBuffer workspace(gk::adaptivePoolingWorkspaceSize(params));
  gk::adaptivePooling(params, input.data(), out.data(), workspace.data(), stream.get());
  stream.synchronize();
  std::vector<float> actual = decode(out.download(), type);
  if (channelsLast) actual = fromChannelsLast(actual, batch, channels, outPlane);
  const double rounding = mode == gk::PoolingMode::kMax ? 0.0 : roundingOf(type);
  expectClose(actual, expected, relativeTolerance(expected, rounding, rounding * 0.5));
}

TEST(CudaPooling, AdaptiveWindowsMatchCpu) {
  KILN_SKIP_WITHOUT_GPU();
  const Stream stream;
  struct Case {
    Shape in;
    Shape out;
  };
  const std::vector<Case> cases = {
      {{10, 7}, {3, 4}},      {{13}, {5}},        {{4, 4}, {6, 6}}, {{7, 7}, {7, 7}},
      {{7, 7}, {1, 1}},       {{56, 56}, {1, 1}}, {{9}, {1}},       {{3, 4, 5}, {2, 2, 3}},
      {{3, 4, 5}, {1, 1, 1}},
  };
  uint32_t seed = 3000;
  for (gk::ScalarType type : kFloatTypes) {
    for (const Case& c : cases) {
      for (int64_t channels : {5, 16}) {
        for (bool channelsLast : {false, true}) {
          for (gk::PoolingMode mode : {gk::PoolingMode::kMax, gk::PoolingMode::kAverage}) {
            SCOPED_TRACE(std::string(gk::scalarName(type)) + " in " + shapeName(c.in) + " out " +
                         shapeName(c.out) + " channels " + std::to_string(channels) +
                         (channelsLast ? " last" : "") +
                         (mode == gk::PoolingMode::kMax ? " max" : " average"));
            runAdaptiveCase(c.in, c.out, channels, mode, type, channelsLast, ++seed, stream);
          }
        }
      }
    }
  }
}

// A squeeze-and-excitation pool (a large plane, few channels, a small batch) splits the plane
// over blocks through a workspace; the bound an engine reserves at a profile's largest batch
// covers every smaller batch, and every reduction's bound its own size.
TEST(CudaPooling, GlobalPoolingOfALargePlaneSplitsWithinTheBound) {
  gk::AdaptivePoolingParams pool{gk::PoolingMode::kAverage, 8,   96, {56, 56}, {1, 1},
                                 gk::ScalarType::kFloat16,  true};
  const size_t bound = gk::adaptivePoolingWorkspaceBound(pool);
  for (int64_t batch = 1; batch <= 8; ++batch) {
    pool.batch = batch;
    const size_t size = gk::adaptivePoolingWorkspaceSize(pool);
    if (batch == 1) {
      EXPECT_GT(size, 0u);
    }
    EXPECT_LE(size, bound) << "batch " << batch;
  }
  pool.outSpatial = {7, 7};
  EXPECT_EQ(gk::adaptivePoolingWorkspaceSize(pool), 0u);
  for (const Shape& shape : {Shape{3, 50000}, Shape{1, 3136, 96}, Shape{7, 100000, 3}}) {
    for (int64_t outer = 1; outer <= shape[0]; ++outer) {
      gk::ReduceParams reduce;
      reduce.function = gk::ReduceFunction::kSum;
      reduce.type = gk::ScalarType::kFloat32;
      reduce.inShape = shape;
      reduce.inShape[0] = outer;
      reduce.reduced.assign(shape.size(), false);
      reduce.reduced[1] = true;
      gk::ReduceParams largest = reduce;
      largest.inShape[0] = shape[0];
      EXPECT_LE(gk::reduceWorkspaceSize(reduce), gk::reduceWorkspaceBound(largest))
          << shapeName(reduce.inShape);
    }
  }
}

TEST(CudaPooling, RejectsBadParameters) {
  KILN_SKIP_WITHOUT_GPU();
  gk::PoolingParams params;
  params.channels = 1;
  params.inSpatial = {4, 4};
  params.outSpatial = {2, 2};
  params.kernel = {2, 2};
  params.stride = {2, 2};
  params.prePadding = {0, 0};
  params.postPadding = {0};  // wrong rank
  params.dilation = {1, 1};
  EXPECT_THROW(gk::pooling(params, nullptr, nullptr, nullptr), std::invalid_argument);
  params.postPadding = {0, 0};
  params.type = gk::ScalarType::kInt32;
  EXPECT_THROW(gk::pooling(params, nullptr, nullptr, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace kiln

// The CUDA pointwise kernels (binary elementwise with broadcasting, unary functions, activations,
// casts) against the CPU reference kernels, on every scalar type: fp16 and bf16 are checked
// against the CPU kernels run on float32 copies and rounded back, as the CPU backend runs them.
// Exact operations must match bit for bit; transcendental functions within a few ulps of the
// result type.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/cast.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/unary_activation.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/unary_activation.h"
#include "tests/cpp/cuda/cuda_test_util.h"
#include "tests/cpp/cuda/typed_values.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::DeviceBuffer;
using cuda_test::kFloatTypes;
using cuda_test::Stream;
using Shape = std::vector<int64_t>;
using Bytes = std::vector<uint8_t>;

constexpr gk::ScalarType kAllTypes[] = {gk::ScalarType::kFloat32,  gk::ScalarType::kFloat16,
                                        gk::ScalarType::kBFloat16, gk::ScalarType::kInt8,
                                        gk::ScalarType::kInt32,    gk::ScalarType::kInt64,
                                        gk::ScalarType::kBool,     gk::ScalarType::kUInt8};

ck::ScalarType toCpu(gk::ScalarType type) {
  switch (type) {
    case gk::ScalarType::kFloat32:
      return ck::ScalarType::kFloat32;
    case gk::ScalarType::kFloat16:
      return ck::ScalarType::kFloat16;
    case gk::ScalarType::kBFloat16:
      return ck::ScalarType::kBFloat16;
    case gk::ScalarType::kInt8:
      return ck::ScalarType::kInt8;
    case gk::ScalarType::kInt32:
      return ck::ScalarType::kInt32;
    case gk::ScalarType::kInt64:
      return ck::ScalarType::kInt64;
    case gk::ScalarType::kBool:
      return ck::ScalarType::kBool;
    case gk::ScalarType::kUInt8:
      return ck::ScalarType::kUInt8;
  }
  throw std::invalid_argument("unknown scalar type");
}

bool isHalf(gk::ScalarType type) {
  return type == gk::ScalarType::kFloat16 || type == gk::ScalarType::kBFloat16;
}

bool isFloat(gk::ScalarType type) { return type == gk::ScalarType::kFloat32 || isHalf(type); }

size_t sizeOf(gk::ScalarType type) { return gk::scalarSize(type); }

int64_t volumeOf(const Shape& shape) {
  int64_t volume = 1;
  for (int64_t d : shape) volume *= d;
  return volume;
}

std::string shapeText(const Shape& shape) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < shape.size(); ++i) text << (i ? "," : "") << shape[i];
  text << "]";
  return text.str();
}

// ---- host data ----------------------------------------------------------------------------------

// What values a test needs: anything (with float specials), no zeros (divisors), or small
// non-negative integers (integer exponents).
enum class Values { kAny, kNonZero, kSmallNonNegative };

void storeValue(gk::ScalarType type, double value, uint8_t* destination) {
  switch (type) {
    case gk::ScalarType::kFloat32: {
      const float v = static_cast<float>(value);
      std::memcpy(destination, &v, 4);
      return;
    }
    case gk::ScalarType::kFloat16: {
      const uint16_t v = ck::floatToHalf(static_cast<float>(value));
      std::memcpy(destination, &v, 2);
      return;
    }
    case gk::ScalarType::kBFloat16: {
      const uint16_t v = ck::floatToBFloat16(static_cast<float>(value));
      std::memcpy(destination, &v, 2);
      return;
    }
    case gk::ScalarType::kInt8: {
      const int8_t v = static_cast<int8_t>(value);
      std::memcpy(destination, &v, 1);
      return;
    }
    case gk::ScalarType::kInt32: {
      const int32_t v = static_cast<int32_t>(value);
      std::memcpy(destination, &v, 4);
      return;
    }
    case gk::ScalarType::kInt64: {
      const int64_t v = static_cast<int64_t>(value);
      std::memcpy(destination, &v, 8);
      return;
    }
    case gk::ScalarType::kBool:
      *destination = value != 0 ? 1 : 0;
      return;
    case gk::ScalarType::kUInt8: {
      const uint8_t v = static_cast<uint8_t>(value);
      std::memcpy(destination, &v, 1);
      return;
    }
  }
}

// Reads element i as a double (float formats widened exactly).
double loadValue(gk::ScalarType type, const Bytes& data, int64_t i) {
  const uint8_t* p = data.data() + static_cast<size_t>(i) * sizeOf(type);
  switch (type) {
    case gk::ScalarType::kFloat32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case gk::ScalarType::kFloat16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return ck::halfToFloat(v);
    }
    case gk::ScalarType::kBFloat16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return ck::bfloat16ToFloat(v);
    }
    case gk::ScalarType::kInt8:
      return static_cast<int8_t>(*p);
    case gk::ScalarType::kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case gk::ScalarType::kInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
    case gk::ScalarType::kBool:
    case gk::ScalarType::kUInt8:
      return *p;
  }
  return 0;
}

// Integer ranges keep the CPU reference clear of INT_MIN / -1 (a trap on x86) while still
// wrapping in add and mul.
double randomValue(gk::ScalarType type, Values values, std::mt19937& rng) {
  if (type == gk::ScalarType::kBool) {
    return values == Values::kNonZero ? 1 : static_cast<double>(rng() & 1);
  }
  if (values == Values::kSmallNonNegative) return static_cast<double>(rng() % 6);
  double value = 0;
  if (isFloat(type)) {
    value = std::uniform_real_distribution<double>(-4.0, 4.0)(rng);
  } else {
    int64_t low = 0;
    int64_t high = 0;
    switch (type) {
      case gk::ScalarType::kInt8:
        low = -127, high = 127;
        break;
      case gk::ScalarType::kUInt8:
        low = 0, high = 255;
        break;
      case gk::ScalarType::kInt32:
        low = -100000, high = 100000;
        break;
      default:
        low = -(int64_t{1} << 40), high = int64_t{1} << 40;
        break;
    }
    // Small values half of the time, so that division and floor division see small quotients.
    if (rng() & 1) low = std::max<int64_t>(low, -9), high = std::min<int64_t>(high, 9);
    value = static_cast<double>(std::uniform_int_distribution<int64_t>(low, high)(rng));
  }
  if (values == Values::kNonZero && value == 0) value = 3;
  return value;
}

Bytes randomData(gk::ScalarType type, int64_t count, Values values, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes data(static_cast<size_t>(count) * sizeOf(type));
  for (int64_t i = 0; i < count; ++i) {
    storeValue(type, randomValue(type, values, rng), data.data() + i * sizeOf(type));
  }
  // Float specials at fixed spots: NaN, infinities, signed zeros, ties and exact integers.
  if (isFloat(type) && values == Values::kAny) {
    const double specials[] = {std::nan(""), INFINITY, -INFINITY, 0.0, -0.0, 2.5,
                               -2.5,         1.0,      -1.0,      0.5, 3.0};
    int64_t spot = 0;
    for (double special : specials) {
      if (spot >= count) break;
      storeValue(type, special, data.data() + spot * sizeOf(type));
      spot += 5;
    }
  }
  return data;
}

// float32 copies of fp16 / bf16 data, as the CPU backend makes them.
Bytes widen(gk::ScalarType type, const Bytes& data, int64_t count) {
  if (!isHalf(type)) return data;
  Bytes widened(static_cast<size_t>(count) * 4);
  ck::cast(data.data(), toCpu(type), widened.data(), ck::ScalarType::kFloat32, count);
  return widened;
}

Bytes narrow(gk::ScalarType type, const Bytes& floats, int64_t count) {
  if (!isHalf(type)) return floats;
  Bytes narrowed(static_cast<size_t>(count) * sizeOf(type));
  ck::cast(floats.data(), ck::ScalarType::kFloat32, narrowed.data(), toCpu(type), count);
  return narrowed;
}

gk::ScalarType computeType(gk::ScalarType type) {
  return isHalf(type) ? gk::ScalarType::kFloat32 : type;
}

// ---- device side --------------------------------------------------------------------------------

// Device memory holding `bytes` from `offset` bytes into its allocation (an offset that is not a
// multiple of 16 makes the kernels take their unaligned paths). The bytes before the data and a
// guard after it are filled with a pattern, to catch writes out of bounds.
class PlacedBuffer {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr uint8_t kPattern = 0xA5;

  PlacedBuffer(size_t bytes, size_t offset)
      : buffer_(offset + bytes + kGuard), offset_(offset), bytes_(bytes) {
    const Bytes fill(offset + bytes + kGuard, kPattern);
    buffer_.upload(fill.data(), fill.size());
  }
  PlacedBuffer(const Bytes& host, size_t offset) : PlacedBuffer(host.size(), offset) {
    if (!host.empty()) {
      const cudaError_t status =
          cudaMemcpy(data(), host.data(), host.size(), cudaMemcpyHostToDevice);
      if (status != cudaSuccess) throw std::runtime_error("upload failed");
    }
  }
  void* data() const { return static_cast<uint8_t*>(buffer_.data()) + offset_; }
  Bytes download() const { return downloadAll().data; }
  // True when nothing outside [offset, offset + bytes) was written.
  bool guardsIntact() const {
    const Whole whole = downloadAll();
    for (uint8_t byte : whole.before) {
      if (byte != kPattern) return false;
    }
    for (uint8_t byte : whole.after) {
      if (byte != kPattern) return false;
    }
    return true;
  }

 private:
  struct Whole {
    Bytes before;
    Bytes data;
    Bytes after;
  };
  Whole downloadAll() const {
    Bytes all(offset_ + bytes_ + kGuard);
    buffer_.download(all.data(), all.size());
    Whole whole;
    whole.before.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(offset_));
    whole.data.assign(all.begin() + static_cast<std::ptrdiff_t>(offset_),
                      all.begin() + static_cast<std::ptrdiff_t>(offset_ + bytes_));
    whole.after.assign(all.begin() + static_cast<std::ptrdiff_t>(offset_ + bytes_), all.end());
    return whole;
  }

  DeviceBuffer buffer_;
  size_t offset_;
  size_t bytes_;
};

// ---- comparison ---------------------------------------------------------------------------------

// Tolerance on float results: none (bit-exact, NaN matching NaN) or a few ulps of the type.
enum class Match { kExact, kClose };

struct Tolerance {
  double absolute;
  double relative;
};

Tolerance closeTolerance(gk::ScalarType type) {
  switch (type) {
    case gk::ScalarType::kFloat16:
      return {1e-5, 2e-3};  // two ulps of fp16
    case gk::ScalarType::kBFloat16:
      return {1e-4, 1.6e-2};  // two ulps of bf16
    default:
      return {1e-6, 1e-5};
  }
}

void expectMatches(gk::ScalarType type, const Bytes& expected, const Bytes& actual, int64_t count,
                   Match match, const std::string& context) {
  ASSERT_EQ(expected.size(), static_cast<size_t>(count) * sizeOf(type)) << context;
  ASSERT_EQ(actual.size(), expected.size()) << context;
  const size_t size = sizeOf(type);
  int64_t failures = 0;
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* e = expected.data() + i * size;
    const uint8_t* a = actual.data() + i * size;
    bool same = std::memcmp(e, a, size) == 0;
    if (!same && isFloat(type)) {
      const double ev = loadValue(type, expected, i);
      const double av = loadValue(type, actual, i);
      if (std::isnan(ev) || std::isnan(av)) {
        same = std::isnan(ev) && std::isnan(av);
      } else if (match == Match::kClose) {
        const Tolerance tolerance = closeTolerance(type);
        same = ev == av ||
               std::fabs(ev - av) <= tolerance.absolute + tolerance.relative * std::fabs(ev);
      }
    }
    if (!same && ++failures <= 5) {
      ADD_FAILURE() << context << ": element " << i << " is " << loadValue(type, actual, i)
                    << ", expected " << loadValue(type, expected, i);
    }
  }
  EXPECT_EQ(failures, 0) << context << ": " << failures << " of " << count << " elements differ";
}

// ---- binary elementwise -------------------------------------------------------------------------

constexpr gk::BinaryOp kAllBinaryOps[] = {
    gk::BinaryOp::kAdd,   gk::BinaryOp::kSub,  gk::BinaryOp::kMul,     gk::BinaryOp::kDiv,
    gk::BinaryOp::kPow,   gk::BinaryOp::kMax,  gk::BinaryOp::kMin,     gk::BinaryOp::kFloorDiv,
    gk::BinaryOp::kEqual, gk::BinaryOp::kLess, gk::BinaryOp::kGreater, gk::BinaryOp::kAnd,
    gk::BinaryOp::kOr,    gk::BinaryOp::kXor};

const char* binaryName(gk::BinaryOp op) {
  static const char* const names[] = {"add",       "sub",   "mul",  "div",     "pow", "max", "min",
                                      "floor_div", "equal", "less", "greater", "and", "or",  "xor"};
  return names[static_cast<int>(op)];
}

// The CPU kernel's result of `op` on `type`, run as the CPU backend runs it (fp16 and bf16
// through float32); throws what the CPU kernel throws.
Bytes cpuBinary(gk::BinaryOp op, gk::ScalarType type, const Shape& aShape, const Shape& bShape,
                const Shape& outShape, const Bytes& a, const Bytes& b) {
  ck::BinaryParams params;
  params.op = static_cast<ck::BinaryOp>(static_cast<int>(op));
  params.type = toCpu(computeType(type));
  params.aShape = aShape;
  params.bShape = bShape;
  params.outShape = outShape;
  const int64_t outCount = volumeOf(outShape);
  const Bytes wideA = widen(type, a, volumeOf(aShape));
  const Bytes wideB = widen(type, b, volumeOf(bShape));
  const bool comparison = gk::isComparison(op);
  Bytes out(static_cast<size_t>(outCount) * (comparison ? size_t{1} : sizeOf(computeType(type))));
  ck::binaryElementwise(params, wideA.data(), wideB.data(), out.data());
  return comparison ? out : narrow(type, out, outCount);
}

Values divisorValues(gk::BinaryOp op, gk::ScalarType type) {
  if (isFloat(type)) return Values::kAny;
  if (op == gk::BinaryOp::kDiv || op == gk::BinaryOp::kFloorDiv) return Values::kNonZero;
  if (op == gk::BinaryOp::kPow) return Values::kSmallNonNegative;
  return Values::kAny;
}

struct BroadcastCase {
  Shape a;
  Shape b;
  Shape out;
};

// Runs `op` on `type` on the GPU and the CPU and compares; `offsetBytes` misplaces every
// pointer. Returns false when the CPU refuses the op on the type (and checks the GPU does too).
bool checkBinary(gk::BinaryOp op, gk::ScalarType type, const BroadcastCase& shapes,
                 size_t offsetBytes, uint32_t seed, const Stream& stream) {
  const std::string context = std::string(binaryName(op)) + " on " + gk::scalarName(type) + " " +
                              shapeText(shapes.a) + " x " + shapeText(shapes.b) + " -> " +
                              shapeText(shapes.out) + " offset " + std::to_string(offsetBytes);
  const Bytes a = randomData(type, volumeOf(shapes.a), Values::kAny, seed);
  const Bytes b = randomData(type, volumeOf(shapes.b), divisorValues(op, type), seed + 1);
  Bytes expected;
  try {
    expected = cpuBinary(op, type, shapes.a, shapes.b, shapes.out, a, b);
  } catch (const std::invalid_argument&) {
    gk::BinaryParams params{op, type, shapes.a, shapes.b, shapes.out};
    EXPECT_THROW(gk::binaryElementwise(params, nullptr, nullptr, nullptr, stream.get()),
                 std::invalid_argument)
        << context << ": the CPU refuses it, the GPU must too";
    return false;
  }
  const gk::ScalarType outType = gk::isComparison(op) ? gk::ScalarType::kBool : type;
  const int64_t outCount = volumeOf(shapes.out);
  PlacedBuffer deviceA(a, offsetBytes);
  PlacedBuffer deviceB(b, offsetBytes);
  PlacedBuffer deviceOut(static_cast<size_t>(outCount) * sizeOf(outType), offsetBytes);
  DeviceBuffer domainError = DeviceBuffer::from(std::vector<int32_t>{0});
  const gk::BinaryParams params{op, type, shapes.a, shapes.b, shapes.out};
  gk::binaryElementwise(params, deviceA.data(), deviceB.data(), deviceOut.data(), stream.get(),
                        static_cast<int32_t*>(domainError.data()));
  stream.synchronize();
  const Match match = op == gk::BinaryOp::kPow ? Match::kClose : Match::kExact;
  expectMatches(outType, expected, deviceOut.download(), outCount, match, context);
  EXPECT_TRUE(deviceOut.guardsIntact()) << context << ": wrote outside the output";
  EXPECT_EQ(domainError.download<int32_t>()[0], 0) << context << ": no domain error expected";
  return true;
}

const BroadcastCase kBroadcastCases[] = {
    {{1031}, {1031}, {1031}},                       // same shape, odd size
    {{4, 96}, {4, 96}, {4, 96}},                    // same shape, whole packs
    {{33, 65}, {1, 1}, {33, 65}},                   // b a single value
    {{1}, {517}, {517}},                            // a a single value
    {{8, 64}, {1, 64}, {8, 64}},                    // row bias: packs along the row
    {{64, 1}, {1, 64}, {64, 64}},                   // outer product
    {{4, 16, 7, 7}, {1, 16, 1, 1}, {4, 16, 7, 7}},  // channel bias, odd inner dim
    {{2, 3, 1, 5}, {1, 3, 4, 1}, {2, 3, 4, 5}},     // both broadcast, several dims
    {{5, 1, 32}, {1, 6, 32}, {5, 6, 32}},           // both contiguous inner, broadcast outer
    {{3, 1, 2, 1, 4, 1, 2}, {1, 5, 1, 3, 1, 2, 1}, {3, 5, 2, 3, 4, 2, 2}},  // many dims
    {{}, {}, {}},                                                           // rank 0
    {{1, 1}, {1, 1}, {1, 1}},                                               // one element
    {{1}, {1}, {7}},                                                        // both single values
};

TEST(CudaPointwise, BinaryEveryOpTypeAndBroadcast) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  uint32_t seed = 1;
  for (gk::ScalarType type : kAllTypes) {
    for (gk::BinaryOp op : kAllBinaryOps) {
      for (const BroadcastCase& shapes : kBroadcastCases) {
        if (!checkBinary(op, type, shapes, 0, seed++, stream)) break;
      }
    }
  }
}

TEST(CudaPointwise, BinaryMisalignedPointers) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  const BroadcastCase cases[] = {{{1031}, {1031}, {1031}},
                                 {{1}, {517}, {517}},
                                 {{8, 64}, {1, 64}, {8, 64}},
                                 {{64, 1}, {1, 64}, {64, 64}}};
  uint32_t seed = 1000;
  for (gk::ScalarType type : kAllTypes) {
    for (gk::BinaryOp op : {gk::BinaryOp::kAdd, gk::BinaryOp::kMax, gk::BinaryOp::kLess}) {
      for (const BroadcastCase& shapes : cases) {
        // One element in (misaligned for all but 16-byte types) and an odd byte count.
        checkBinary(op, type, shapes, sizeOf(type), seed++, stream);
        checkBinary(op, type, shapes, 3 * sizeOf(type), seed++, stream);
      }
    }
  }
}

TEST(CudaPointwise, BinaryEmptyOutputLaunchesNothing) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  const gk::BinaryParams params{
      gk::BinaryOp::kAdd, gk::ScalarType::kFloat32, {0, 5}, {1, 5}, {0, 5}};
  EXPECT_NO_THROW(gk::binaryElementwise(params, nullptr, nullptr, nullptr, stream.get()));
  stream.synchronize();
  const gk::BinaryParams mismatched{
      gk::BinaryOp::kAdd, gk::ScalarType::kFloat32, {0, 5}, {1, 4}, {0, 5}};
  EXPECT_THROW(gk::binaryElementwise(mismatched, nullptr, nullptr, nullptr, stream.get()),
               std::invalid_argument);
}

TEST(CudaPointwise, BinaryRefusesShapesThatDoNotBroadcast) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  DeviceBuffer a(64), b(64), out(64);
  const gk::BinaryParams wrongDim{
      gk::BinaryOp::kAdd, gk::ScalarType::kFloat32, {2, 3}, {2, 2}, {2, 3}};
  EXPECT_THROW(gk::binaryElementwise(wrongDim, a.data(), b.data(), out.data(), stream.get()),
               std::invalid_argument);
  const gk::BinaryParams wrongRank{
      gk::BinaryOp::kAdd, gk::ScalarType::kFloat32, {6}, {2, 3}, {2, 3}};
  EXPECT_THROW(gk::binaryElementwise(wrongRank, a.data(), b.data(), out.data(), stream.get()),
               std::invalid_argument);
}

// Division by zero and negative integer exponents: the GPU cannot throw, so it flags them.
TEST(CudaPointwise, BinaryIntegerDomainErrorsAreFlagged) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  const std::vector<int32_t> a = {7, -7, 5, 9, 1, -1, -1, 2};
  const std::vector<int32_t> b = {2, 2, 0, -2, -3, -3, -2, -1};
  const Shape shape = {8};
  DeviceBuffer deviceA = DeviceBuffer::from(a);
  DeviceBuffer deviceB = DeviceBuffer::from(b);
  DeviceBuffer out(a.size() * 4);

  auto run = [&](gk::BinaryOp op) {
    DeviceBuffer flag = DeviceBuffer::from(std::vector<int32_t>{0});
    const gk::BinaryParams params{op, gk::ScalarType::kInt32, shape, shape, shape};
    gk::binaryElementwise(params, deviceA.data(), deviceB.data(), out.data(), stream.get(),
                          static_cast<int32_t*>(flag.data()));
    stream.synchronize();
    return std::make_pair(out.download<int32_t>(), flag.download<int32_t>()[0]);
  };

  auto [quotients, divFlag] = run(gk::BinaryOp::kDiv);
  EXPECT_EQ(quotients, (std::vector<int32_t>{3, -3, 0, -4, 0, 0, 0, -2}));
  EXPECT_EQ(divFlag, 1);
  auto [floors, floorFlag] = run(gk::BinaryOp::kFloorDiv);
  EXPECT_EQ(floors, (std::vector<int32_t>{3, -4, 0, -5, -1, 0, 0, -2}));
  EXPECT_EQ(floorFlag, 1);
  // Negative exponents: the truncated exact power, as torch computes on CUDA.
  auto [powers, powFlag] = run(gk::BinaryOp::kPow);
  EXPECT_EQ(powers, (std::vector<int32_t>{49, 49, 1, 0, 1, -1, 1, 0}));
  EXPECT_EQ(powFlag, 1);
  auto [sums, addFlag] = run(gk::BinaryOp::kAdd);
  EXPECT_EQ(sums, (std::vector<int32_t>{9, -5, 5, 7, -2, -4, -3, 1}));
  EXPECT_EQ(addFlag, 0);

  // Without a flag the kernel still runs and writes the same results.
  const gk::BinaryParams params{gk::BinaryOp::kDiv, gk::ScalarType::kInt32, shape, shape, shape};
  gk::binaryElementwise(params, deviceA.data(), deviceB.data(), out.data(), stream.get());
  stream.synchronize();
  EXPECT_EQ(out.download<int32_t>(), quotients);
}

// Enough elements that the grid-stride loops go round more than once, on the flat and on the
// per-element broadcast path.
TEST(CudaPointwise, BinaryLargeTensors) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  checkBinary(
      gk::BinaryOp::kAdd, gk::ScalarType::kInt8,
      {{(1 << 28) + (1 << 24) + 3}, {(1 << 28) + (1 << 24) + 3}, {(1 << 28) + (1 << 24) + 3}}, 0,
      77, stream);
  checkBinary(gk::BinaryOp::kSub, gk::ScalarType::kFloat32, {{4097, 4099}, {4097, 1}, {4097, 4099}},
              0, 78, stream);
  checkBinary(gk::BinaryOp::kMul, gk::ScalarType::kFloat16, {{1, 4099}, {4097, 1}, {4097, 4099}}, 0,
              79, stream);
}

// ---- unary functions ----------------------------------------------------------------------------

constexpr gk::UnaryFunction kAllUnary[] = {
    gk::UnaryFunction::kExp,   gk::UnaryFunction::kLog,   gk::UnaryFunction::kSqrt,
    gk::UnaryFunction::kRsqrt, gk::UnaryFunction::kRecip, gk::UnaryFunction::kAbs,
    gk::UnaryFunction::kNeg,   gk::UnaryFunction::kSin,   gk::UnaryFunction::kCos,
    gk::UnaryFunction::kTan,   gk::UnaryFunction::kErf,   gk::UnaryFunction::kFloor,
    gk::UnaryFunction::kCeil,  gk::UnaryFunction::kRound, gk::UnaryFunction::kSign,
    gk::UnaryFunction::kNot};

// Transcendental functions differ from the C library's in the last ulp.
bool isTranscendental(gk::UnaryFunction function) {
  switch (function) {
    case gk::UnaryFunction::kExp:
    case gk::UnaryFunction::kLog:
    case gk::UnaryFunction::kSin:
    case gk::UnaryFunction::kCos:
    case gk::UnaryFunction::kTan:
    case gk::UnaryFunction::kErf:
      return true;
    default:
      return false;
  }
}

constexpr int64_t kCounts[] = {1, 15, 16, 17, 4099};

TEST(CudaPointwise, UnaryEveryFunctionAndType) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  uint32_t seed = 2000;
  for (gk::ScalarType type : kAllTypes) {
    for (gk::UnaryFunction function : kAllUnary) {
      const std::string name =
          "unary " + std::to_string(static_cast<int>(function)) + " on " + gk::scalarName(type);
      bool supported = true;
      for (int64_t count : kCounts) {
        for (size_t offset : {size_t{0}, sizeOf(type)}) {
          const std::string context =
              name + " count " + std::to_string(count) + " offset " + std::to_string(offset);
          const Bytes input = randomData(type, count, Values::kAny, seed++);
          Bytes expected(static_cast<size_t>(count) * sizeOf(computeType(type)));
          try {
            ck::unary(static_cast<ck::UnaryFunction>(static_cast<int>(function)),
                      toCpu(computeType(type)), widen(type, input, count).data(), expected.data(),
                      count);
          } catch (const std::invalid_argument&) {
            supported = false;
            break;
          }
          expected = narrow(type, expected, count);
          PlacedBuffer deviceIn(input, offset);
          PlacedBuffer deviceOut(input.size(), offset);
          gk::unary(function, type, deviceIn.data(), deviceOut.data(), count, stream.get());
          stream.synchronize();
          expectMatches(type, expected, deviceOut.download(), count,
                        isTranscendental(function) ? Match::kClose : Match::kExact, context);
          EXPECT_TRUE(deviceOut.guardsIntact()) << context << ": wrote outside the output";
        }
        if (!supported) break;
      }
      if (!supported) {
        EXPECT_THROW(gk::unary(function, type, nullptr, nullptr, 4, stream.get()),
                     std::invalid_argument)
            << name << ": the CPU refuses it, the GPU must too";
      }
    }
  }
}

TEST(CudaPointwise, UnaryEmptyLaunchesNothing) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  EXPECT_NO_THROW(gk::unary(gk::UnaryFunction::kExp, gk::ScalarType::kFloat16, nullptr, nullptr, 0,
                            stream.get()));
  stream.synchronize();
}

// ---- activations --------------------------------------------------------------------------------

struct ActivationCase {
  gk::Activation type;
  double alpha;
  double beta;
  bool exact;  // no transcendental function: bit-exact
};

const ActivationCase kActivationCases[] = {
    {gk::Activation::kRelu, 0, 0, true},
    {gk::Activation::kSigmoid, 0, 0, false},
    {gk::Activation::kTanh, 0, 0, false},
    {gk::Activation::kLeakyRelu, 0.1, 0, true},
    {gk::Activation::kElu, 1.3, 0, false},
    {gk::Activation::kSelu, 0, 0, false},
    {gk::Activation::kSoftplus, 1.0, 20.0, false},
    {gk::Activation::kSoftplus, 2.0, 3.0, false},  // beta 2, threshold 3: both branches
    {gk::Activation::kClip, -0.5, 2.0, true},
    {gk::Activation::kClip, 0.0, 6.0, true},
    {gk::Activation::kHardSigmoid, 0, 0, false},
    {gk::Activation::kHardSwish, 0, 0, false},
    {gk::Activation::kGeluErf, 0, 0, false},
    {gk::Activation::kGeluTanh, 0, 0, false},
    {gk::Activation::kSilu, 0, 0, false},
    {gk::Activation::kMish, 0, 0, false},
};

TEST(CudaPointwise, ActivationEveryKindOnFloatTypes) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  uint32_t seed = 3000;
  for (gk::ScalarType type : kFloatTypes) {
    for (const ActivationCase& activation : kActivationCases) {
      for (int64_t count : kCounts) {
        for (size_t offset : {size_t{0}, sizeOf(type)}) {
          const std::string context = "activation " +
                                      std::to_string(static_cast<int>(activation.type)) + " on " +
                                      gk::scalarName(type) + " count " + std::to_string(count) +
                                      " offset " + std::to_string(offset);
          Bytes input = randomData(type, count, Values::kAny, seed++);
          // Spread some inputs wider, past softplus/mish thresholds and into saturation.
          for (int64_t i = 3; i < count; i += 7) {
            storeValue(type, 6.0 * loadValue(type, input, i), input.data() + i * sizeOf(type));
          }
          const Bytes wide = widen(type, input, count);
          std::vector<float> expected(static_cast<size_t>(count));
          ck::activation({static_cast<ck::Activation>(static_cast<int>(activation.type)),
                          activation.alpha, activation.beta},
                         reinterpret_cast<const float*>(wide.data()), expected.data(), count);
          Bytes expectedBytes(expected.size() * 4);
          std::memcpy(expectedBytes.data(), expected.data(), expectedBytes.size());
          expectedBytes = narrow(type, expectedBytes, count);
          PlacedBuffer deviceIn(input, offset);
          PlacedBuffer deviceOut(input.size(), offset);
          gk::activation({activation.type, activation.alpha, activation.beta}, type,
                         deviceIn.data(), deviceOut.data(), count, stream.get());
          stream.synchronize();
          expectMatches(type, expectedBytes, deviceOut.download(), count,
                        activation.exact ? Match::kExact : Match::kClose, context);
          EXPECT_TRUE(deviceOut.guardsIntact()) << context << ": wrote outside the output";
        }
      }
    }
  }
}

TEST(CudaPointwise, ActivationReluAndClipOnIntegers) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  const gk::ScalarType integerTypes[] = {gk::ScalarType::kInt8, gk::ScalarType::kUInt8,
                                         gk::ScalarType::kInt32, gk::ScalarType::kInt64};
  const ActivationCase cases[] = {
      {gk::Activation::kRelu, 0, 0, true},         {gk::Activation::kClip, -5, 7, true},
      {gk::Activation::kClip, -INFINITY, 3, true},  // open below
      {gk::Activation::kClip, -1e30, 1e30, true},   // beyond every range: no clamp
      {gk::Activation::kClip, 2, INFINITY, true},   // open above
  };
  uint32_t seed = 4000;
  for (gk::ScalarType type : integerTypes) {
    for (const ActivationCase& activation : cases) {
      for (int64_t count : kCounts) {
        for (size_t offset : {size_t{0}, sizeOf(type)}) {
          const std::string context = "activation " +
                                      std::to_string(static_cast<int>(activation.type)) + " on " +
                                      gk::scalarName(type) + " count " + std::to_string(count) +
                                      " offset " + std::to_string(offset);
          const Bytes input = randomData(type, count, Values::kAny, seed++);
          Bytes expected(input.size());
          ck::integerActivation({static_cast<ck::Activation>(static_cast<int>(activation.type)),
                                 activation.alpha, activation.beta},
                                toCpu(type), input.data(), expected.data(), count);
          PlacedBuffer deviceIn(input, offset);
          PlacedBuffer deviceOut(input.size(), offset);
          gk::activation({activation.type, activation.alpha, activation.beta}, type,
                         deviceIn.data(), deviceOut.data(), count, stream.get());
          stream.synchronize();
          expectMatches(type, expected, deviceOut.download(), count, Match::kExact, context);
          EXPECT_TRUE(deviceOut.guardsIntact()) << context << ": wrote outside the output";
        }
      }
    }
  }
}

TEST(CudaPointwise, ActivationRefusesWhatTheCpuRefuses) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  // Float-only activations on integers, anything on bool, fractional integer clip bounds.
  EXPECT_THROW(gk::activation({gk::Activation::kSigmoid, 0, 0}, gk::ScalarType::kInt32, nullptr,
                              nullptr, 4, stream.get()),
               std::invalid_argument);
  EXPECT_THROW(gk::activation({gk::Activation::kRelu, 0, 0}, gk::ScalarType::kBool, nullptr,
                              nullptr, 4, stream.get()),
               std::invalid_argument);
  EXPECT_THROW(gk::activation({gk::Activation::kClip, -0.5, 3}, gk::ScalarType::kInt8, nullptr,
                              nullptr, 4, stream.get()),
               std::invalid_argument);
  EXPECT_THROW(gk::activation({gk::Activation::kClip, 0, std::nan("")}, gk::ScalarType::kInt64,
                              nullptr, nullptr, 4, stream.get()),
               std::invalid_argument);
}

// ---- casts --------------------------------------------------------------------------------------

// Values that probe every conversion rule: NaN, infinities, signed zeros, rounding ties of fp16
// and bf16, fractions of both signs, the integer types' bounds and just beyond them, fp16's
// largest finite value, its overflow and its subnormals.
Bytes castProbe(gk::ScalarType type, int64_t count, uint32_t seed) {
  std::vector<double> probes;
  if (isFloat(type)) {
    probes = {std::nan(""), INFINITY,     -INFINITY,     0.0,           -0.0,
              0.4,          -0.6,         1.5,           -1.5,          2.5,
              127.0,        127.9,        128.0,         -128.0,        -128.9,
              -129.0,       255.0,        255.5,         256.0,         -1.0,
              2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0, 9.2233715e18,
              9.3e18,       -9.3e18,      65504.0,       65520.0,       65519.0,
              1e-7,         -3e-8,        6e-8,          1.00048828125, 1.0009765625 * 3,
              1.00390625,   3.0e38,       1e10,          -1e10,         0.1,
              100.5};
  } else if (type == gk::ScalarType::kBool) {
    probes = {0, 1};
  } else {
    const double lowest = type == gk::ScalarType::kInt8    ? -128
                          : type == gk::ScalarType::kUInt8 ? 0
                          : type == gk::ScalarType::kInt32 ? -2147483648.0
                                                           : -9223372036854775808.0;
    probes = {0,    1,    -1,    2,        127,       lowest,     255,       256,
              2049, 4097, 65505, 16777217, -16777217, 2147483647, 123456789, 9007199254740993.0};
  }
  Bytes data = randomData(type, count, Values::kAny, seed);
  for (size_t i = 0; i < probes.size() && static_cast<int64_t>(i) < count; ++i) {
    double value = probes[i];
    // Integers beyond the type wrap into it, as a cast would; store exactly for int64.
    if (type == gk::ScalarType::kInt64) {
      const int64_t v =
          value >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(value);
      std::memcpy(data.data() + i * 8, &v, 8);
      continue;
    }
    if (!isFloat(type) && type != gk::ScalarType::kBool) {
      const int64_t wide = static_cast<int64_t>(value);
      switch (type) {
        case gk::ScalarType::kInt8:
          value = static_cast<int8_t>(wide);
          break;
        case gk::ScalarType::kUInt8:
          value = static_cast<uint8_t>(wide);
          break;
        default:
          value = static_cast<int32_t>(wide);
          break;
      }
    }
    storeValue(type, value, data.data() + i * sizeOf(type));
  }
  return data;
}

TEST(CudaPointwise, CastEveryPairOfTypes) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  uint32_t seed = 5000;
  for (gk::ScalarType from : kAllTypes) {
    for (gk::ScalarType to : kAllTypes) {
      for (int64_t count : {int64_t{1}, int64_t{17}, int64_t{64}, int64_t{4099}}) {
        for (size_t offset : {size_t{0}, size_t{1}}) {
          const std::string context = std::string("cast ") + gk::scalarName(from) + " -> " +
                                      gk::scalarName(to) + " count " + std::to_string(count) +
                                      " offset " + std::to_string(offset);
          const Bytes input = castProbe(from, count, seed++);
          Bytes expected(static_cast<size_t>(count) * sizeOf(to));
          ck::cast(input.data(), toCpu(from), expected.data(), toCpu(to), count);
          PlacedBuffer deviceIn(input, offset * sizeOf(from));
          PlacedBuffer deviceOut(expected.size(), offset * sizeOf(to));
          gk::cast(deviceIn.data(), from, deviceOut.data(), to, count, stream.get());
          stream.synchronize();
          expectMatches(to, expected, deviceOut.download(), count, Match::kExact, context);
          EXPECT_TRUE(deviceOut.guardsIntact()) << context << ": wrote outside the output";
        }
      }
    }
  }
}

TEST(CudaPointwise, CastEmptyLaunchesNothing) {
  KILN_SKIP_WITHOUT_GPU();
  Stream stream;
  EXPECT_NO_THROW(gk::cast(nullptr, gk::ScalarType::kFloat32, nullptr, gk::ScalarType::kFloat16, 0,
                           stream.get()));
  EXPECT_NO_THROW(
      gk::cast(nullptr, gk::ScalarType::kInt8, nullptr, gk::ScalarType::kInt8, 0, stream.get()));
  stream.synchronize();
}

}  // namespace
}  // namespace kiln

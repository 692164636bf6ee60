// What the CPU and CUDA kernel families share: element types, shapes and the operation enums
// their entry points take. kernels/ depends on nothing of Kiln's, so ScalarType mirrors
// kiln::DataType rather than including it; core/engine/kernel_mapping.h maps one to the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::kernels {

enum class ScalarType : uint8_t {
  kFloat32,
  kFloat16,   // IEEE binary16, stored as uint16_t
  kBFloat16,  // bfloat16, stored as uint16_t
  kInt8,
  kInt32,
  kInt64,
  kBool,  // one byte, 0 or 1
  kUInt8,
};

size_t scalarSize(ScalarType type);  // 0 for a value outside the enum
const char* scalarName(ScalarType type);

// Dims of a dense row-major tensor, as the kernels see them.
using Shape = std::vector<int64_t>;
int64_t shapeVolume(const Shape& shape);

enum class UnaryFunction : uint8_t {
  kExp,
  kLog,
  kSqrt,
  kRsqrt,
  kRecip,
  kAbs,  // also integers
  kNeg,  // also integers
  kSin,
  kCos,
  kTan,
  kErf,
  kFloor,
  kCeil,
  kRound,  // half to even, as torch.round
  kSign,   // also integers
  kNot,    // bool and integers: x == 0; float is refused
};

enum class Activation : uint8_t {
  kRelu,
  kSigmoid,
  kTanh,
  kLeakyRelu,  // alpha = negative slope
  kElu,        // alpha
  kSelu,
  kSoftplus,     // alpha = beta, beta = threshold (torch's names)
  kClip,         // alpha = min, beta = max
  kHardSigmoid,  // relu6(x + 3) / 6
  kHardSwish,    // x * relu6(x + 3) / 6
  kGeluErf,
  kGeluTanh,
  kSilu,
  kMish,
};

enum class BinaryOp : uint8_t {
  kAdd,
  kSub,
  kMul,
  kDiv,       // integers: truncates toward zero
  kPow,       // integers: a negative exponent is refused (CPU) or a domain error (CUDA)
  kMax,       // float: NaN propagates
  kMin,       // float: NaN propagates
  kFloorDiv,  // rounds the quotient toward negative infinity
  kEqual,     // comparisons write bool
  kLess,
  kGreater,
  kAnd,  // bool: logical; integers: bitwise
  kOr,
  kXor,
};

enum class ReduceFunction : uint8_t { kSum, kProd, kMax, kMin, kMean };

enum class CumulativeFunction : uint8_t { kSum, kProd };

enum class PoolingMode : uint8_t { kMax, kAverage };

// The most channels plus hidden features a squeeze-and-excitation layer takes: the GPU's MLP
// keeps both vectors in float32 in one block's shared memory (48 KiB).
constexpr int64_t kMaxSqueezeExcitationFeatures = 12 * 1024;

}  // namespace kiln::kernels

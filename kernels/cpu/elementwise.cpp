#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/common/shapes.h"
#include "kernels/cpu/dispatch.h"

namespace kiln::cpu_kernels {
namespace {

using kernels::BroadcastLayout;
using kernels::broadcastLayout;

// The broadcast as the loops walk it: output dims with each input's stride per dim (0 where
// that input is broadcast), adjacent dims merged where both inputs allow it.

// Walks the output in order; the innermost dim is a tight loop, specialized for the common
// stride patterns so that the compiler vectorizes it.
template <typename In, typename Out, typename Fn>
void broadcastLoop(const BroadcastLayout& layout, const In* a, const In* b, Out* out, Fn fn) {
  const size_t rank = layout.dims.size();
  const int64_t inner = layout.dims.back();
  const int64_t aInner = layout.aStrides.back();
  const int64_t bInner = layout.bStrides.back();
  int64_t outer = 1;
  for (size_t i = 0; i + 1 < rank; ++i) outer *= layout.dims[i];
  Shape index(rank, 0);
  int64_t aOffset = 0;
  int64_t bOffset = 0;
  for (int64_t o = 0; o < outer; ++o) {
    const In* aRow = a + aOffset;
    const In* bRow = b + bOffset;
    Out* outRow = out + o * inner;
    if (aInner == 1 && bInner == 1) {
      for (int64_t i = 0; i < inner; ++i) outRow[i] = fn(aRow[i], bRow[i]);
    } else if (aInner == 1 && bInner == 0) {
      const In bValue = bRow[0];
      for (int64_t i = 0; i < inner; ++i) outRow[i] = fn(aRow[i], bValue);
    } else if (aInner == 0 && bInner == 1) {
      const In aValue = aRow[0];
      for (int64_t i = 0; i < inner; ++i) outRow[i] = fn(aValue, bRow[i]);
    } else {
      for (int64_t i = 0; i < inner; ++i) outRow[i] = fn(aRow[i * aInner], bRow[i * bInner]);
    }
    // Advance the odometer over the outer dims.
    for (size_t d = rank - 1; d-- > 0;) {
      aOffset += layout.aStrides[d];
      bOffset += layout.bStrides[d];
      if (++index[d] < layout.dims[d]) break;
      aOffset -= layout.aStrides[d] * layout.dims[d];
      bOffset -= layout.bStrides[d] * layout.dims[d];
      index[d] = 0;
    }
  }
}

[[noreturn]] void unsupported(BinaryOp op, ScalarType type) {
  static const char* const names[] = {"add",       "sub",   "mul",  "div",     "pow", "max", "min",
                                      "floor_div", "equal", "less", "greater", "and", "or",  "xor"};
  throw std::invalid_argument(std::string("elementwise ") + names[static_cast<int>(op)] +
                              " is not defined on " + scalarName(type));
}

template <typename T>
T checkedDivisor(T b) {
  if (b == 0) throw std::domain_error("integer division by zero");
  return b;
}

template <typename T>
T integerPow(T base, T exponent) {
  if constexpr (std::is_signed_v<T>) {
    if (exponent < 0) {
      throw std::domain_error("integers to negative integer powers are not allowed");
    }
  }
  T result = 1;
  while (exponent > 0) {
    // Unsigned arithmetic: overflow wraps as torch's does instead of being undefined.
    using U = std::make_unsigned_t<T>;
    if (exponent & 1) result = static_cast<T>(static_cast<U>(result) * static_cast<U>(base));
    base = static_cast<T>(static_cast<U>(base) * static_cast<U>(base));
    exponent >>= 1;
  }
  return result;
}

template <typename T>
T integerFloorDiv(T a, T b) {
  checkedDivisor(b);
  const T quotient = static_cast<T>(a / b);
  if constexpr (std::is_signed_v<T>) {
    if (a % b != 0 && ((a < 0) != (b < 0))) return static_cast<T>(quotient - 1);
  }
  return quotient;
}

// Calls run(fn) with fn the scalar function of `op` on T.
template <typename T, typename Run>
void withOpFunction(BinaryOp op, ScalarType type, Run&& run) {
  constexpr bool kIsFloat = std::is_floating_point_v<T>;
  constexpr bool kIsBool = std::is_same_v<T, bool>;
  switch (op) {
    case BinaryOp::kEqual:
      return run([](T a, T b) { return a == b; });
    case BinaryOp::kLess:
      return run([](T a, T b) { return a < b; });
    case BinaryOp::kGreater:
      return run([](T a, T b) { return a > b; });
    default:
      break;
  }
  if constexpr (kIsBool) {
    switch (op) {
      case BinaryOp::kAdd:
      case BinaryOp::kMax:
      case BinaryOp::kOr:
        return run([](bool a, bool b) { return a || b; });
      case BinaryOp::kMul:
      case BinaryOp::kMin:
      case BinaryOp::kAnd:
        return run([](bool a, bool b) { return a && b; });
      case BinaryOp::kXor:
        return run([](bool a, bool b) { return a != b; });
      default:
        unsupported(op, type);
    }
  } else {
    switch (op) {
      case BinaryOp::kAdd:
        return run([](T a, T b) { return static_cast<T>(a + b); });
      case BinaryOp::kSub:
        return run([](T a, T b) { return static_cast<T>(a - b); });
      case BinaryOp::kMul:
        return run([](T a, T b) { return static_cast<T>(a * b); });
      case BinaryOp::kMax:
        if constexpr (kIsFloat) {
          return run([](T a, T b) { return (a > b || std::isnan(a)) ? a : b; });
        } else {
          return run([](T a, T b) { return a > b ? a : b; });
        }
      case BinaryOp::kMin:
        if constexpr (kIsFloat) {
          return run([](T a, T b) { return (a < b || std::isnan(a)) ? a : b; });
        } else {
          return run([](T a, T b) { return a < b ? a : b; });
        }
      case BinaryOp::kDiv:
        if constexpr (kIsFloat) {
          return run([](T a, T b) { return a / b; });
        } else {
          return run([](T a, T b) { return static_cast<T>(a / checkedDivisor(b)); });
        }
      case BinaryOp::kFloorDiv:
        if constexpr (kIsFloat) {
          return run([](T a, T b) { return std::floor(a / b); });
        } else {
          return run([](T a, T b) { return integerFloorDiv(a, b); });
        }
      case BinaryOp::kPow:
        if constexpr (kIsFloat) {
          return run([](T a, T b) { return std::pow(a, b); });
        } else {
          return run([](T a, T b) { return integerPow(a, b); });
        }
      case BinaryOp::kAnd:
      case BinaryOp::kOr:
      case BinaryOp::kXor:
        if constexpr (kIsFloat) {
          unsupported(op, type);
        } else if (op == BinaryOp::kAnd) {
          return run([](T a, T b) { return static_cast<T>(a & b); });
        } else if (op == BinaryOp::kOr) {
          return run([](T a, T b) { return static_cast<T>(a | b); });
        } else {
          return run([](T a, T b) { return static_cast<T>(a ^ b); });
        }
      default:
        unsupported(op, type);
    }
  }
}

}  // namespace

bool isComparison(BinaryOp op) {
  return op == BinaryOp::kEqual || op == BinaryOp::kLess || op == BinaryOp::kGreater;
}

void binaryElementwise(const BinaryParams& params, const void* a, const void* b, void* out) {
  if (shapeVolume(params.outShape) == 0) return;
  const BroadcastLayout layout = broadcastLayout(params.aShape, params.bShape, params.outShape);
  visitComputeType(params.type, "elementwise", [&](auto tag) {
    using T = typename decltype(tag)::type;
    withOpFunction<T>(params.op, params.type, [&](auto fn) {
      using Out = decltype(fn(T{}, T{}));
      broadcastLoop(layout, static_cast<const T*>(a), static_cast<const T*>(b),
                    static_cast<Out*>(out), fn);
    });
  });
}

}  // namespace kiln::cpu_kernels

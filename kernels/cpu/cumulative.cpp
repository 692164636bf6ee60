#include "kernels/cpu/cumulative.h"

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace kiln::cpu_kernels {
namespace {

// The accumulator of T: double for float32 (torch's CPU acc_type), the unsigned type of the same
// width for integers, so that overflow wraps around without undefined behaviour.
template <typename T>
struct AccumulatorOf {
  using type = std::make_unsigned_t<T>;
};
template <>
struct AccumulatorOf<float> {
  using type = double;
};
template <typename T>
using Accumulator = typename AccumulatorOf<T>::type;

template <typename T>
void scan(const CumulativeParams& p, const T* x, T* out) {
  using A = Accumulator<T>;
  const bool sum = p.function == CumulativeFunction::kSum;
  std::vector<A> running(static_cast<size_t>(p.inner));
  for (int64_t o = 0; o < p.outer; ++o) {
    const int64_t base = o * p.axisSize * p.inner;
    running.assign(running.size(), sum ? A(0) : A(1));
    for (int64_t a = 0; a < p.axisSize; ++a) {
      const int64_t row = base + a * p.inner;
      for (int64_t i = 0; i < p.inner; ++i) {
        A& acc = running[static_cast<size_t>(i)];
        const A value = static_cast<A>(x[row + i]);
        acc = sum ? static_cast<A>(acc + value) : static_cast<A>(acc * value);
        out[row + i] = static_cast<T>(acc);
      }
    }
  }
}

}  // namespace

void cumulative(const CumulativeParams& params, const void* x, void* out) {
  if (params.outer < 0 || params.axisSize < 0 || params.inner < 0) {
    throw std::invalid_argument("cumulative: sizes must not be negative");
  }
  switch (params.type) {
    case ScalarType::kFloat32:
      return scan(params, static_cast<const float*>(x), static_cast<float*>(out));
    case ScalarType::kInt32:
      return scan(params, static_cast<const int32_t*>(x), static_cast<int32_t*>(out));
    case ScalarType::kInt64:
      return scan(params, static_cast<const int64_t*>(x), static_cast<int64_t*>(out));
    default:
      break;
  }
  throw std::invalid_argument(std::string("cumulative sums and products on the CPU take int32, ") +
                              "int64 and float32, not " + scalarName(params.type));
}

}  // namespace kiln::cpu_kernels

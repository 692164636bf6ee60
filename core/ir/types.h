// Basic value types of Kiln's IR: data types, dims, weights and the error type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln {

// The one error type Kiln throws; messages say what was wrong and what to do.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds an error message from stream-able parts: throw Error(concat("bad axis ", a)).
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

#define KILN_CHECK(cond, ...)                                      \
  do {                                                             \
    if (!(cond)) throw ::kiln::Error(::kiln::concat(__VA_ARGS__)); \
  } while (0)

enum class DataType : uint8_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kInt8 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kBool = 6,
  kUInt8 = 7,
};
constexpr int kNumDataTypes = 8;

size_t elementSize(DataType type);
const char* toString(DataType type);
bool isFloatingPoint(DataType type);
bool isIntegral(DataType type);  // int and bool types

// Dimensions of a tensor; -1 marks a dimension that is only known at run time.
using Dims = std::vector<int64_t>;
constexpr int64_t kDynamic = -1;

bool isStatic(const Dims& dims);
// Product of the dims; 1 for a rank-0 tensor. Requires static dims.
int64_t volume(const Dims& dims);
std::string toString(const Dims& dims);

// Constant data owned by the network and, after building, by the engine.
// The bytes are shared so that copying a network or engine never copies weights.
struct Weights {
  DataType dtype = DataType::kFloat32;
  Dims dims;
  std::shared_ptr<const std::vector<uint8_t>> bytes;

  int64_t count() const { return volume(dims); }
  const void* data() const { return bytes ? bytes->data() : nullptr; }
  static Weights fromBytes(DataType dtype, Dims dims, std::vector<uint8_t> bytes);
  template <typename T>
  static Weights fromValues(DataType dtype, Dims dims, const std::vector<T>& values) {
    std::vector<uint8_t> raw(values.size() * sizeof(T));
    if (!raw.empty()) std::memcpy(raw.data(), values.data(), raw.size());
    return fromBytes(dtype, std::move(dims), std::move(raw));
  }
};

}  // namespace kiln

// Element types the CPU reference kernels know. kernels/ depends on nothing of Kiln's, so this
// mirrors kiln::DataType rather than including it; the CPU backend maps one to the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::cpu_kernels {

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

size_t scalarSize(ScalarType type);
const char* scalarName(ScalarType type);

// Dims of a dense row-major tensor, as the kernels see them.
using Shape = std::vector<int64_t>;

int64_t shapeVolume(const Shape& shape);
// Row-major strides in elements.
Shape contiguousStrides(const Shape& shape);

}  // namespace kiln::cpu_kernels

#include "kernels/common/kernel_types.h"

namespace kiln::kernels {

size_t scalarSize(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat32:
    case ScalarType::kInt32:
      return 4;
    case ScalarType::kFloat16:
    case ScalarType::kBFloat16:
      return 2;
    case ScalarType::kInt8:
    case ScalarType::kBool:
    case ScalarType::kUInt8:
      return 1;
    case ScalarType::kInt64:
      return 8;
  }
  return 0;
}

const char* scalarName(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat32:
      return "float32";
    case ScalarType::kFloat16:
      return "float16";
    case ScalarType::kBFloat16:
      return "bfloat16";
    case ScalarType::kInt8:
      return "int8";
    case ScalarType::kInt32:
      return "int32";
    case ScalarType::kInt64:
      return "int64";
    case ScalarType::kBool:
      return "bool";
    case ScalarType::kUInt8:
      return "uint8";
  }
  return "unknown";
}

int64_t shapeVolume(const Shape& shape) {
  int64_t volume = 1;
  for (int64_t d : shape) volume *= d;
  return volume;
}

}  // namespace kiln::kernels

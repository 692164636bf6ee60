#include "core/ir/types.h"

namespace kiln {

size_t elementSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
    case DataType::kInt32:
      return 4;
    case DataType::kFloat16:
    case DataType::kBFloat16:
      return 2;
    case DataType::kInt8:
    case DataType::kBool:
    case DataType::kUInt8:
      return 1;
    case DataType::kInt64:
      return 8;
  }
  throw Error(concat("unknown data type ", static_cast<int>(type)));
}

const char* toString(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat16:
      return "float16";
    case DataType::kBFloat16:
      return "bfloat16";
    case DataType::kInt8:
      return "int8";
    case DataType::kInt32:
      return "int32";
    case DataType::kInt64:
      return "int64";
    case DataType::kBool:
      return "bool";
    case DataType::kUInt8:
      return "uint8";
  }
  return "unknown data type";
}

bool isFloatingPoint(DataType type) {
  return type == DataType::kFloat32 || type == DataType::kFloat16 || type == DataType::kBFloat16;
}

bool isIntegral(DataType type) {
  return type == DataType::kInt8 || type == DataType::kInt32 || type == DataType::kInt64 ||
         type == DataType::kBool || type == DataType::kUInt8;
}

bool isStatic(const Dims& dims) {
  for (int64_t dim : dims) {
    if (dim < 0) return false;
  }
  return true;
}

int64_t volume(const Dims& dims) {
  int64_t product = 1;
  for (int64_t dim : dims) {
    KILN_CHECK(dim >= 0, "the volume of dims ", toString(dims),
               " is not known until run time (a dim is -1); use concrete dims");
    product *= dim;
  }
  return product;
}

std::string toString(const Dims& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(dims[i]);
  }
  return text + "]";
}

Weights Weights::fromBytes(DataType dtype, Dims dims, std::vector<uint8_t> bytes) {
  KILN_CHECK(isStatic(dims), "weights need static dims, got ", toString(dims));
  const size_t expected = static_cast<size_t>(volume(dims)) * elementSize(dtype);
  KILN_CHECK(bytes.size() == expected, "weights of dims ", toString(dims), " and type ",
             toString(dtype), " need ", expected, " bytes, but ", bytes.size(), " were given");
  Weights weights;
  weights.dtype = dtype;
  weights.dims = std::move(dims);
  weights.bytes = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  return weights;
}

}  // namespace kiln

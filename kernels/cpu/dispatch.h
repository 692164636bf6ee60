// Internal to kernels/cpu: maps a runtime ScalarType to a C++ storage type for templated loops.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

// Storage of the 16-bit float formats; kernels convert them to float before computing.
struct Float16Bits {
  uint16_t bits;
};
struct BFloat16Bits {
  uint16_t bits;
};

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls fn(TypeTag<T>{}) for the storage type T of `type`.
template <typename Fn>
decltype(auto) visitScalarType(ScalarType type, Fn&& fn) {
  switch (type) {
    case ScalarType::kFloat32:
      return fn(TypeTag<float>{});
    case ScalarType::kFloat16:
      return fn(TypeTag<Float16Bits>{});
    case ScalarType::kBFloat16:
      return fn(TypeTag<BFloat16Bits>{});
    case ScalarType::kInt8:
      return fn(TypeTag<int8_t>{});
    case ScalarType::kInt32:
      return fn(TypeTag<int32_t>{});
    case ScalarType::kInt64:
      return fn(TypeTag<int64_t>{});
    case ScalarType::kBool:
      return fn(TypeTag<bool>{});
    case ScalarType::kUInt8:
      return fn(TypeTag<uint8_t>{});
  }
  throw std::invalid_argument("unknown scalar type " + std::to_string(static_cast<int>(type)));
}

// Like visitScalarType, for the types arithmetic kernels compute on: float32, the integers and
// bool (fp16 and bf16 are widened to float32 by the caller).
template <typename Fn>
decltype(auto) visitComputeType(ScalarType type, const char* kernel, Fn&& fn) {
  switch (type) {
    case ScalarType::kFloat32:
      return fn(TypeTag<float>{});
    case ScalarType::kInt8:
      return fn(TypeTag<int8_t>{});
    case ScalarType::kUInt8:
      return fn(TypeTag<uint8_t>{});
    case ScalarType::kInt32:
      return fn(TypeTag<int32_t>{});
    case ScalarType::kInt64:
      return fn(TypeTag<int64_t>{});
    case ScalarType::kBool:
      return fn(TypeTag<bool>{});
    default:
      break;
  }
  throw std::invalid_argument(std::string(kernel) + " does not support " + scalarName(type) +
                              " on the CPU; cast to float32 first");
}

}  // namespace kiln::cpu_kernels

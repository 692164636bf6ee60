// Float values as the kernels' storage types hold them, for tests that compare a CUDA kernel
// with its CPU reference: random inputs, encoding to and decoding from float32/float16/bfloat16
// bytes, and the relative rounding one store in a type allows.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/common/kernel_types.h"
#include "kernels/cpu/cast.h"

namespace kiln::cuda_test {

// The storage types the float kernels take, for tests that loop over each.
inline constexpr kernels::ScalarType kFloatTypes[] = {
    kernels::ScalarType::kFloat32, kernels::ScalarType::kFloat16, kernels::ScalarType::kBFloat16};

inline int64_t volumeOf(const std::vector<int64_t>& shape) {
  int64_t volume = 1;
  for (int64_t d : shape) volume *= d;
  return volume;
}

inline std::string shapeName(const std::vector<int64_t>& shape) {
  std::string name = "[";
  for (size_t i = 0; i < shape.size(); ++i) name += (i ? "," : "") + std::to_string(shape[i]);
  return name + "]";
}

inline std::vector<float> randomFloats(int64_t count, uint32_t seed, float low = -1.0f,
                                       float high = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = distribution(generator);
  return values;
}

// float32, float16 or bfloat16 bytes of `values`.
inline std::vector<uint8_t> encode(const std::vector<float>& values, kernels::ScalarType type) {
  std::vector<uint8_t> bytes(values.size() * kernels::scalarSize(type));
  for (size_t i = 0; i < values.size(); ++i) {
    if (type == kernels::ScalarType::kFloat32) {
      std::memcpy(bytes.data() + i * 4, &values[i], 4);
    } else {
      const uint16_t bits = type == kernels::ScalarType::kFloat16
                                ? cpu_kernels::floatToHalf(values[i])
                                : cpu_kernels::floatToBFloat16(values[i]);
      std::memcpy(bytes.data() + i * 2, &bits, 2);
    }
  }
  return bytes;
}

inline std::vector<float> decode(const std::vector<uint8_t>& bytes, kernels::ScalarType type) {
  std::vector<float> values(bytes.size() / kernels::scalarSize(type));
  for (size_t i = 0; i < values.size(); ++i) {
    if (type == kernels::ScalarType::kFloat32) {
      std::memcpy(&values[i], bytes.data() + i * 4, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + i * 2, 2);
      values[i] = type == kernels::ScalarType::kFloat16 ? cpu_kernels::halfToFloat(bits)
                                                        : cpu_kernels::bfloat16ToFloat(bits);
    }
  }
  return values;
}

// The values as `type` holds them.
inline std::vector<float> quantize(const std::vector<float>& values, kernels::ScalarType type) {
  return decode(encode(values, type), type);
}

// Relative rounding of one store in `type`, with slack for float32 accumulation.
inline double roundingOf(kernels::ScalarType type) {
  switch (type) {
    case kernels::ScalarType::kFloat16:
      return 2e-3;
    case kernels::ScalarType::kBFloat16:
      return 1.6e-2;
    default:
      return 2e-5;
  }
}

}  // namespace kiln::cuda_test

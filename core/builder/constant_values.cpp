#include "core/builder/constant_values.h"

#include "core/engine/kernel_mapping.h"
#include "kernels/cpu/cast.h"

namespace kiln {

std::optional<double> scalarConstant(const Tensor* tensor) {
  while (tensor->producer() != nullptr && tensor->producer()->kind() == LayerKind::kShuffle) {
    tensor = tensor->producer()->input(0);
  }
  const Weights* weights = constantWeights(tensor);
  if (weights == nullptr || weights->count() != 1 || !isFloatingPoint(weights->dtype)) {
    return std::nullopt;
  }
  float value = 0.0f;
  cpu_kernels::cast(weights->data(), toKernelType(weights->dtype), &value,
                    cpu_kernels::ScalarType::kFloat32, 1);
  return value;
}

std::vector<double> toDoubles(const Weights& weights) {
  std::vector<float> floats(static_cast<size_t>(weights.count()));
  cpu_kernels::cast(weights.data(), toKernelType(weights.dtype), floats.data(),
                    cpu_kernels::ScalarType::kFloat32, weights.count());
  return std::vector<double>(floats.begin(), floats.end());
}

Weights fromDoubles(DataType dtype, const Dims& dims, const std::vector<double>& values) {
  const std::vector<float> floats(values.begin(), values.end());
  std::vector<uint8_t> bytes(floats.size() * elementSize(dtype));
  cpu_kernels::cast(floats.data(), cpu_kernels::ScalarType::kFloat32, bytes.data(),
                    toKernelType(dtype), static_cast<int64_t>(floats.size()));
  return Weights::fromBytes(dtype, dims, std::move(bytes));
}

}  // namespace kiln

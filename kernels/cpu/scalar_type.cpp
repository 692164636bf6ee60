#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

Shape contiguousStrides(const Shape& shape) {
  Shape strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

}  // namespace kiln::cpu_kernels

// The values of constant tensors, as the builder's passes read and write them: in double, from
// and to any float type.
#pragma once

#include <optional>
#include <vector>

#include "core/ir/network.h"

namespace kiln {

// The value of a one-element float constant, reshaped or transposed any number of times; else
// none.
std::optional<double> scalarConstant(const Tensor* tensor);

std::vector<double> toDoubles(const Weights& weights);
// `values` stored as `dtype` (rounded to nearest).
Weights fromDoubles(DataType dtype, const Dims& dims, const std::vector<double>& values);

}  // namespace kiln

// Output types and dims of every layer kind, from its inputs' types and dims.
#pragma once

#include <vector>

#include "core/ir/layers.h"
#include "core/ir/types.h"

namespace kiln {

struct TensorType {
  DataType dtype = DataType::kFloat32;
  Dims dims;
};

// Infers a layer's outputs. Works both on declared dims, where -1 (dynamic) propagates to the
// output dims that depend on it, and on the concrete dims seen at run time. An absent optional
// input is null. Throws Error saying what is inconsistent (rank, axis, channel count, dtype);
// callers prefix the layer's name.
std::vector<TensorType> inferOutputTypes(const LayerParams& params,
                                         const std::vector<const TensorType*>& inputs);

}  // namespace kiln

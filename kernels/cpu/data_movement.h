// Layout-only kernels: transpose, strided slice, concat and gather. They move bytes, so they
// work on elements of any size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

// out dim i is in dim permutation[i].
void transpose(const void* input, const Shape& inShape, const std::vector<int64_t>& permutation,
               size_t elementSize, void* output);

// out[i...] = in[start + i * step ...] per dim; starts are within [0, dim) where the output dim
// is not empty, steps are >= 0 (a step of 0 repeats one element: a broadcast).
struct SliceParams {
  Shape inShape;
  Shape starts;
  Shape steps;
  Shape outShape;
};
void slice(const SliceParams& params, size_t elementSize, const void* input, void* output);

// Concatenates along `axis`; the inputs agree on every other dim.
void concat(const std::vector<const void*>& inputs, const std::vector<Shape>& inShapes,
            int64_t axis, size_t elementSize, void* output);

// data viewed as (outer, axisSize, inner), indices (count) of int32 or int64, negative ones
// counting from the end -> out (outer, count, inner). perElement: indices (outer, count, inner),
// one for each output element (torch.gather): out[o, j, c] = data[o, indices[o, j, c], c].
// Throws std::out_of_range for an index outside [-axisSize, axisSize).
struct GatherParams {
  int64_t outer = 1;
  int64_t axisSize = 0;
  int64_t inner = 1;
  int64_t indexCount = 0;
  ScalarType indexType = ScalarType::kInt64;
  bool perElement = false;
};
void gather(const GatherParams& params, size_t elementSize, const void* data, const void* indices,
            void* output);

}  // namespace kiln::cpu_kernels

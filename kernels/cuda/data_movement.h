// Layout-only kernels on the GPU: transpose (and shuffle = transpose, reshape, transpose),
// strided slice, concat and gather. They move bytes, so they work on elements of any size of
// 1, 2, 4 or 8 bytes. Mirrors kernels/cpu/data_movement.h; every launch is asynchronous on
// `stream`, never allocates and never synchronizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

// out dim i is in dim permutation[i]. An identity permutation (after dropping size-1 dims) is
// one device-to-device copy; a permutation that moves the innermost dim uses a tiled
// shared-memory transpose; one that keeps it copies 16-byte vectors where alignment allows.
void transpose(const void* input, const Shape& inShape, const std::vector<int64_t>& permutation,
               size_t elementSize, void* output, cudaStream_t stream);

// The Shuffle layer: out = transpose(reshape(transpose(in, firstPermutation)),
// secondPermutation). An empty permutation is the identity; `reshapedShape` is the shape after
// the reshape (before the second permutation), needed only when secondPermutation is not empty.
struct ShuffleParams {
  Shape inShape;
  std::vector<int64_t> firstPermutation;
  Shape reshapedShape;
  std::vector<int64_t> secondPermutation;
};
// Bytes of scratch `shuffle` needs: the intermediate tensor when both permutations move data,
// else 0.
size_t shuffleWorkspaceSize(const ShuffleParams& params, size_t elementSize);
void shuffle(const ShuffleParams& params, size_t elementSize, const void* input, void* output,
             void* workspace, cudaStream_t stream);

// out[i...] = in[start + i * step ...] per dim; starts are within [0, dim) where the output dim
// is not empty, steps are >= 0 (a step of 0 repeats one element: a broadcast).
struct SliceParams {
  Shape inShape;
  Shape starts;
  Shape steps;
  Shape outShape;
};
void slice(const SliceParams& params, size_t elementSize, const void* input, void* output,
           cudaStream_t stream);

// Concatenates along `axis`; the inputs agree on every other dim. Up to kMaxConcatInputs inputs
// are copied by one launch (more take one launch per group of that many).
constexpr int kMaxConcatInputs = 64;
void concat(const std::vector<const void*>& inputs, const std::vector<Shape>& inShapes,
            int64_t axis, size_t elementSize, void* output, cudaStream_t stream);

// data viewed as (outer, axisSize, inner), indices (count) of int32 or int64, negative ones
// counting from the end -> out (outer, count, inner). perElement: indices (outer, count, inner),
// one for each output element (torch.gather): out[o, j, c] = data[o, indices[o, j, c], c].
struct GatherParams {
  int64_t outer = 1;
  int64_t axisSize = 0;
  int64_t inner = 1;
  int64_t indexCount = 0;
  ScalarType indexType = ScalarType::kInt64;
  bool perElement = false;
};

// Where the GPU reports an index outside [-axisSize, axisSize): the CPU reference throws
// std::out_of_range, which a kernel cannot do without a synchronization. So the kernel fills
// that output row with zeros and records the failure here (device memory, zeroed by the
// caller before the launch, e.g. with cudaMemsetAsync); after synchronizing, the caller copies
// it back and calls throwIfGatherFailed. When several indices are bad, `badIndex` is one of them.
struct GatherStatus {
  int32_t outOfRange = 0;
  int32_t reserved = 0;
  int64_t badIndex = 0;
};
// `status` may be null: out-of-range rows are then zero-filled and not reported.
void gather(const GatherParams& params, size_t elementSize, const void* data, const void* indices,
            void* output, GatherStatus* status, cudaStream_t stream);
// Throws std::out_of_range with the CPU reference's message when `status` (a host copy) holds a
// failure.
void throwIfGatherFailed(const GatherStatus& status, const GatherParams& params);

}  // namespace kiln::cuda_kernels

// Reductions over any set of axes, and softmax / log-softmax along one axis, on the GPU. Mirrors
// kernels/cpu/reduce_softmax.h (same functions, same shape conventions) and adds fp16 and bf16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::ReduceFunction;

// Reduces the axes flagged in `reduced` (one flag per dim of inShape); the output holds the kept
// dims in order (keeping size-1 dims or not is only a matter of the caller's shape). Input and
// output have `type`. Floats (fp32, fp16, bf16) accumulate in float32, integers in int64 (mean
// truncates); on bool, sum and max act as "any", prod and min as "all". Max and min propagate NaN.
// Over zero elements, sum and prod give their identity and a float mean NaN; max, min and an
// integer mean throw std::invalid_argument (an empty output is fine).
struct ReduceParams {
  ReduceFunction function = ReduceFunction::kSum;
  ScalarType type = ScalarType::kFloat32;
  Shape inShape;
  std::vector<bool> reduced;
};

// Bytes of scratch memory reduce() needs for `params` (0 for most shapes: it is only used when
// few outputs each reduce many elements, so that the work is split over more blocks).
size_t reduceWorkspaceSize(const ReduceParams& params);

// At least reduceWorkspaceSize of these params and of any params that keep no more elements
// (the smaller shapes of a dynamic profile), which may split into more blocks: what an engine
// reserves at its profiles' largest shapes. About 1 MiB more than the outputs' accumulators.
size_t reduceWorkspaceBound(const ReduceParams& params);

// Launches the reduction on `stream`. input/output are dense row-major device tensors; workspace
// is a device buffer of at least reduceWorkspaceSize(params) bytes (may be null when that is 0).
void reduce(const ReduceParams& params, const void* input, void* output, void* workspace,
            cudaStream_t stream);

// softmax (or log-softmax) of `shape` along `axis` (0 <= axis < rank; a rank-0 tensor is the
// caller's case), in float32, fp16 or bf16; computed in float32 with the row maximum subtracted.
struct SoftmaxParams {
  Shape shape;
  int64_t axis = 0;
  bool log = false;
  ScalarType type = ScalarType::kFloat32;
};
void softmax(const SoftmaxParams& params, const void* input, void* output, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

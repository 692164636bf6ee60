// Max and average pooling on the GPU, 1 to 3 spatial dims, fixed windows or adaptive. Mirrors
// kernels/cpu/pooling.h (same windows, padding, ceil-mode and count_include_pad rules) and adds
// fp16 and bf16 (averaged in float32) and channels-last tensors.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

using kernels::PoolingMode;

// Input (batch, channels, inSpatial...) -> output (batch, channels, outSpatial...), or
// (batch, spatial..., channels) for both when channelsLast. The spatial vectors have the spatial
// rank (1, 2 or 3); outSpatial comes from the caller (ceil mode only shows there). Windows may
// reach into the padding and, in ceil mode, past it; taps past the padded end never count. Max
// lets NaN win; a window with no tap inside the input gives -inf (max) or 0 (average).
struct PoolingParams {
  PoolingMode mode = PoolingMode::kMax;
  int64_t batch = 1;
  int64_t channels = 0;
  Shape inSpatial;
  Shape outSpatial;
  Shape kernel;
  Shape stride;
  Shape prePadding;
  Shape postPadding;
  Shape dilation;
  // Average: divide by the taps inside input + padding (torch's count_include_pad) rather than
  // by the taps inside the input only.
  bool countIncludePad = true;
  ScalarType type = ScalarType::kFloat32;  // float32, fp16 or bf16
  bool channelsLast = false;
};
void pooling(const PoolingParams& params, const void* x, void* out, cudaStream_t stream);

// torch's adaptive pooling: output index o along a dim of input size in and output size out
// covers [floor(o * in / out), ceil((o + 1) * in / out)). An output of all ones (global pooling)
// runs as a row or column reduction, split along the plane over many blocks (with partial
// results in `workspace`) when the batch and channels alone would leave the GPU mostly idle: a
// squeeze-and-excitation block pools a large plane for a few hundred channels at batch 1.
struct AdaptivePoolingParams {
  PoolingMode mode = PoolingMode::kAverage;
  int64_t batch = 1;
  int64_t channels = 0;
  Shape inSpatial;
  Shape outSpatial;
  ScalarType type = ScalarType::kFloat32;
  bool channelsLast = false;
};
// Bytes of workspace adaptivePooling needs (0 when it runs unsplit), and at least that for any
// params with no more batch and channels (reduceWorkspaceBound's).
size_t adaptivePoolingWorkspaceSize(const AdaptivePoolingParams& params);
size_t adaptivePoolingWorkspaceBound(const AdaptivePoolingParams& params);
// workspace: adaptivePoolingWorkspaceSize(params) bytes (may be null when that is 0).
void adaptivePooling(const AdaptivePoolingParams& params, const void* x, void* out, void* workspace,
                     cudaStream_t stream);

}  // namespace kiln::cuda_kernels

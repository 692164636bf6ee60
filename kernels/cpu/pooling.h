// Max and average pooling on float32, 1 to 3 spatial dims, fixed windows or adaptive.
#pragma once

#include <cstdint>

#include "kernels/cpu/scalar_type.h"

namespace kiln::cpu_kernels {

using kernels::PoolingMode;

// Input (batch, channels, inSpatial...) -> output (batch, channels, outSpatial...). The spatial
// vectors have the spatial rank (1, 2 or 3); outSpatial comes from the caller (ceil mode only
// shows there). Windows may reach into the padding and, in ceil mode, past it.
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
};
void pooling(const PoolingParams& params, const float* x, float* out);

// torch's adaptive pooling: output index o along a dim of input size in and output size out
// covers [floor(o * in / out), ceil((o + 1) * in / out)).
struct AdaptivePoolingParams {
  PoolingMode mode = PoolingMode::kAverage;
  int64_t batch = 1;
  int64_t channels = 0;
  Shape inSpatial;
  Shape outSpatial;
};
void adaptivePooling(const AdaptivePoolingParams& params, const float* x, float* out);

}  // namespace kiln::cpu_kernels

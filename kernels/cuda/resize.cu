#include "kernels/cuda/resize.h"

#include <algorithm>
#include <array>

#include "kernels/cuda/reduce_device.cuh"

namespace kiln::cuda_kernels {
namespace {

using reduce_detail::Divisor;
using reduce_detail::fitsIndex32;
using reduce_detail::fromAccumulator;
using reduce_detail::toFloat;
using reduce_detail::visitFloatType;

constexpr int kBlockThreads = 256;
constexpr int64_t kMaxGridBlocks = 65536;

struct ResizeGeometry {
  kernels::ResizeAxis axes[3];  // depth, height, width
  int64_t channels;
  ResizeMode mode;
  bool alignCorners;
};

// One thread an output element, consecutive threads along the channels (channels-last) or the
// output width, so that writes are coalesced and neighbouring threads read neighbouring input
// elements. Each thread finds its taps with the rules the CPU reference uses and sums innermost
// dim first, as torch nests.
template <typename T, typename Index>
__global__ void __launch_bounds__(kBlockThreads)
    resizeKernel(const T* __restrict__ x, T* __restrict__ y, Index outVolume, ResizeGeometry g,
                 Divisor<Index> channels, Divisor<Index> outWidth, Divisor<Index> outHeight,
                 Divisor<Index> outDepth) {
  const int64_t rowStride = g.axes[2].in * g.channels;
  const int64_t inPlane = g.axes[0].in * g.axes[1].in * rowStride;
  for (Index o = blockIdx.x * blockDim.x + threadIdx.x; o < outVolume;
       o += gridDim.x * blockDim.x) {
    Index rest = o;
    Index position[3];
    Index plane;
    Index channel;
    channels.divmod(rest, rest, channel);
    outWidth.divmod(rest, rest, position[2]);
    outHeight.divmod(rest, rest, position[1]);
    outDepth.divmod(rest, plane, position[0]);
    int64_t index[3][kernels::kMaxResizeTaps];
    float weight[3][kernels::kMaxResizeTaps];
    int taps[3];
#pragma unroll
    for (int d = 0; d < 3; ++d) {
      taps[d] = kernels::resizeTaps(g.mode, g.alignCorners, g.axes[d],
                                    static_cast<int64_t>(position[d]), index[d], weight[d]);
    }
    const T* source = x + static_cast<int64_t>(plane) * inPlane + static_cast<int64_t>(channel);
    float depthSum = 0.0f;
    for (int a = 0; a < taps[0]; ++a) {
      float rowSum = 0.0f;
      for (int b = 0; b < taps[1]; ++b) {
        const T* row = source + (index[0][a] * g.axes[1].in + index[1][b]) * rowStride;
        float sum = 0.0f;
        for (int c = 0; c < taps[2]; ++c) {
          sum += toFloat(row[index[2][c] * g.channels]) * weight[2][c];
        }
        rowSum += sum * weight[1][b];
      }
      depthSum += rowSum * weight[0][a];
    }
    y[o] = fromAccumulator<T>(depthSum);
  }
}

template <typename T, typename Index>
void launchResize(const ResizeGeometry& g, int64_t outVolume, const T* x, T* y,
                  cudaStream_t stream) {
  const auto grid = static_cast<unsigned>(
      std::clamp<int64_t>((outVolume + kBlockThreads - 1) / kBlockThreads, 1, kMaxGridBlocks));
  resizeKernel<T, Index><<<grid, kBlockThreads, 0, stream>>>(
      x, y, static_cast<Index>(outVolume), g, Divisor<Index>(g.channels),
      Divisor<Index>(g.axes[2].out), Divisor<Index>(g.axes[1].out), Divisor<Index>(g.axes[0].out));
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void resize(const ResizeParams& params, const void* x, void* out, cudaStream_t stream) {
  const std::array<kernels::ResizeAxis, 3> axes = kernels::resizeAxes(params);
  ResizeGeometry geometry{};
  std::copy(axes.begin(), axes.end(), geometry.axes);
  geometry.channels = params.channels;
  geometry.mode = params.mode;
  geometry.alignCorners = params.alignCorners;
  const int64_t inVolume = params.planes * axes[0].in * axes[1].in * axes[2].in * params.channels;
  const int64_t outVolume =
      params.planes * axes[0].out * axes[1].out * axes[2].out * params.channels;
  visitFloatType(params.type, "resize", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (outVolume == 0) return;
    const auto* input = static_cast<const T*>(x);
    auto* output = static_cast<T*>(out);
    if (fitsIndex32(std::max(inVolume, outVolume))) {
      launchResize<T, uint32_t>(geometry, outVolume, input, output, stream);
    } else {
      launchResize<T, uint64_t>(geometry, outVolume, input, output, stream);
    }
  });
}

}  // namespace kiln::cuda_kernels

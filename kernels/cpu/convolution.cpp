#include "kernels/cpu/convolution.h"

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/matmul.h"

namespace kiln::cpu_kernels {
namespace {

// Every convolution is run as a 3-D one; missing leading spatial dims have size 1.
using Dims3 = std::array<int64_t, 3>;

struct Geometry {
  Dims3 in;
  Dims3 out;
  Dims3 kernel;
  Dims3 stride;
  Dims3 padding;
  Dims3 dilation;
  int64_t inVolume() const { return in[0] * in[1] * in[2]; }
  int64_t outVolume() const { return out[0] * out[1] * out[2]; }
  int64_t kernelVolume() const { return kernel[0] * kernel[1] * kernel[2]; }
  // A 1x1 convolution reads its input as the im2col matrix itself.
  bool isPointwise() const {
    for (int i = 0; i < 3; ++i) {
      if (kernel[i] != 1 || stride[i] != 1 || padding[i] != 0 || in[i] != out[i]) return false;
    }
    return true;
  }
};

Dims3 toDims3(const Shape& shape, int64_t fill, const char* field) {
  if (shape.empty() || shape.size() > 3) {
    throw std::invalid_argument(std::string("convolution: ") + field + " has " +
                                std::to_string(shape.size()) + " dims; 1 to 3 are supported");
  }
  Dims3 dims = {fill, fill, fill};
  const size_t offset = 3 - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) dims[offset + i] = shape[i];
  return dims;
}

Geometry makeGeometry(const ConvolutionParams& params) {
  const size_t rank = params.kernel.size();
  for (const Shape* shape : {&params.inSpatial, &params.outSpatial, &params.stride,
                             &params.prePadding, &params.dilation}) {
    if (shape->size() != rank) {
      throw std::invalid_argument("convolution: every spatial parameter needs " +
                                  std::to_string(rank) + " dims");
    }
  }
  if (params.groups <= 0 || params.inChannels % params.groups != 0 ||
      params.outChannels % params.groups != 0) {
    throw std::invalid_argument("convolution: groups (" + std::to_string(params.groups) +
                                ") must divide the input and output channels");
  }
  return Geometry{toDims3(params.inSpatial, 1, "input"),   toDims3(params.outSpatial, 1, "output"),
                  toDims3(params.kernel, 1, "kernel"),     toDims3(params.stride, 1, "stride"),
                  toDims3(params.prePadding, 0, "padding"), toDims3(params.dilation, 1, "dilation")};
}

// Input coordinate of output position o and kernel tap k along one dim.
inline int64_t inputCoordinate(const Geometry& g, int dim, int64_t o, int64_t k) {
  return o * g.stride[dim] - g.padding[dim] + k * g.dilation[dim];
}

// col (channels * kernelVolume, outVolume): row (c, kd, kh, kw) holds, for every output
// position, the input value that tap multiplies (0 in the padding).
void im2col(const Geometry& g, const float* x, int64_t channels, float* col) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* plane = x + c * g.inVolume();
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
          for (int64_t od = 0; od < g.out[0]; ++od) {
            const int64_t id = inputCoordinate(g, 0, od, kd);
            for (int64_t oh = 0; oh < g.out[1]; ++oh) {
              const int64_t ih = inputCoordinate(g, 1, oh, kh);
              float* colRow = col;
              col += g.out[2];
              if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
                std::fill(colRow, colRow + g.out[2], 0.0f);
                continue;
              }
              const float* inRow = plane + (id * g.in[1] + ih) * g.in[2];
              for (int64_t ow = 0; ow < g.out[2]; ++ow) {
                const int64_t iw = inputCoordinate(g, 2, ow, kw);
                colRow[ow] = (iw >= 0 && iw < g.in[2]) ? inRow[iw] : 0.0f;
              }
            }
          }
        }
      }
    }
  }
}

// The adjoint of im2col, for transposed convolution: adds col (channels * kernelVolume,
// inVolume) into image (channels, outVolume), input position i and tap k landing on output
// position i * stride - padding + k * dilation.
void col2im(const Geometry& g, const float* col, int64_t channels, float* image) {
  for (int64_t c = 0; c < channels; ++c) {
    float* plane = image + c * g.outVolume();
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
          for (int64_t id = 0; id < g.in[0]; ++id) {
            const int64_t od = inputCoordinate(g, 0, id, kd);
            for (int64_t ih = 0; ih < g.in[1]; ++ih) {
              const int64_t oh = inputCoordinate(g, 1, ih, kh);
              const float* colRow = col;
              col += g.in[2];
              if (od < 0 || od >= g.out[0] || oh < 0 || oh >= g.out[1]) continue;
              float* outRow = plane + (od * g.out[1] + oh) * g.out[2];
              for (int64_t iw = 0; iw < g.in[2]; ++iw) {
                const int64_t ow = inputCoordinate(g, 2, iw, kw);
                if (ow >= 0 && ow < g.out[2]) outRow[ow] += colRow[iw];
              }
            }
          }
        }
      }
    }
  }
}

void fillWithBias(const float* bias, int64_t channels, int64_t planeSize, float* out) {
  for (int64_t c = 0; c < channels; ++c) {
    std::fill(out + c * planeSize, out + (c + 1) * planeSize, bias ? bias[c] : 0.0f);
  }
}

}  // namespace

void convolution(const ConvolutionParams& params, const float* x, const float* weight,
                 const float* bias, float* out) {
  const Geometry g = makeGeometry(params);
  const int64_t groupIn = params.inChannels / params.groups;
  const int64_t groupOut = params.outChannels / params.groups;
  const int64_t depth = groupIn * g.kernelVolume();  // GEMM k
  const int64_t positions = g.outVolume();           // GEMM n
  const bool pointwise = g.isPointwise();
  std::vector<float> col(pointwise ? 0 : static_cast<size_t>(params.inChannels * g.kernelVolume() *
                                                            positions));
  for (int64_t n = 0; n < params.batch; ++n) {
    const float* image = x + n * params.inChannels * g.inVolume();
    float* result = out + n * params.outChannels * positions;
    if (!pointwise) im2col(g, image, params.inChannels, col.data());
    const float* columns = pointwise ? image : col.data();
    if (bias != nullptr) fillWithBias(bias, params.outChannels, positions, result);
    for (int64_t group = 0; group < params.groups; ++group) {
      gemm(groupOut, positions, depth, weight + group * groupOut * depth, depth, false,
           columns + group * depth * positions, positions, false,
           result + group * groupOut * positions, positions, bias != nullptr);
    }
  }
}

void deconvolution(const ConvolutionParams& params, const float* x, const float* weight,
                   const float* bias, float* out) {
  const Geometry g = makeGeometry(params);
  const int64_t groupIn = params.inChannels / params.groups;
  const int64_t groupOut = params.outChannels / params.groups;
  const int64_t rows = groupOut * g.kernelVolume();  // GEMM m: one row per (k, tap)
  const int64_t positions = g.inVolume();            // GEMM n
  std::vector<float> col(static_cast<size_t>(rows * positions));
  for (int64_t n = 0; n < params.batch; ++n) {
    const float* image = x + n * params.inChannels * positions;
    float* result = out + n * params.outChannels * g.outVolume();
    fillWithBias(bias, params.outChannels, g.outVolume(), result);
    for (int64_t group = 0; group < params.groups; ++group) {
      // weight rows of this group: (groupIn) x (groupOut * kernelVolume), used transposed.
      gemm(rows, positions, groupIn, weight + group * groupIn * rows, rows, true,
           image + group * groupIn * positions, positions, false, col.data(), positions, false);
      col2im(g, col.data(), groupOut, result + group * groupOut * g.outVolume());
    }
  }
}

}  // namespace kiln::cpu_kernels

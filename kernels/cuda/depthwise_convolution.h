// Kiln's own kernels for depthwise convolutions (groups == inChannels; outChannels == m *
// inChannels for a channel multiplier m >= 1, output channel o reading input channel o / m, as in
// FastViT's and MobileOne's stride-2 downsampling) in the channels-last layout, timed as
// candidates beside cuDNN's algorithms by ConvolutionPlan::autotune.
// cuDNN runs these on CUDA-core algorithms that move many times the bytes the layer needs; a
// depthwise convolution does k*k multiply-adds per element it reads, so it is bound by memory,
// and these kernels aim at reading each input and writing each output once.
//
// Each thread computes one vector of consecutive output channels at a few consecutive output
// columns of one row, sliding along the input row so that every input vector it loads feeds each
// output that reads it; weights ((K, kh, kw, 1): per output channel its taps) are staged in
// shared memory as fp32, tap-major, so a thread reads its channels' weights as vectors. A vector
// is the widest of 16, 8 or 4 bytes (8, 4 or 2 fp16/bf16, 4, 2 or 1 fp32) that divides the
// output channel count, takes the multiplier and to which x, out and the residual are aligned
// (the weights and the bias are read one element at a time). At m == 1 every vector takes it;
// at m > 1 one-element vectors (fp32's 4-byte ones) take any m, 16-byte vectors take m == 2 (a
// vector reads half as many input channels, each for two outputs), and narrower ones none. Two
// kernels run on vectors:
//   - the row kernel reads its inputs from global memory (widths 3, 5 and 7 at horizontal
//     stride 1 or 2 without horizontal dilation, 1, 2 or 4 columns a thread), for layers with
//     few output pixels;
//   - the tiled kernel stages its block's zero-padded input window in shared memory and reads it
//     at constant offsets without bounds checks (square widths 3, 5 and 7 at stride 1 or 2), for
//     large feature maps.
// Other widths, strides and dilations run a looping kernel with one output a thread, on vectors;
// what no vector fits (an odd fp16/bf16 channel count, buffers not 4-byte aligned, fp16/bf16 at
// m > 2 or at m == 2 on a channel count that is not a multiple of 8) runs it one channel a
// thread, at any m. Bias, residual and the activation run in the epilogue; accumulation is fp32;
// padding may be asymmetric. An input activation (the SiLU or hard swish after an inverted
// residual block's expansion GEMM) runs on each input as it is loaded, inside the image only, so
// the activated tensor is never written: the tiled kernel rounds it to the element type as it
// stages the window, the others keep it in fp32.
#pragma once

#include <string>
#include <vector>

#include "kernels/cuda/convolution.h"

namespace kiln::cuda_kernels {

// Whether Kiln's depthwise kernels compute these params: a forward 1-D or 2-D convolution in
// NHWC with groups == inChannels and outChannels a multiple of them (the channel multiplier), of
// a float type, whose taps fit the staging area in shared memory.
bool depthwiseConvolutionApplies(const ConvolutionParams& params);

// A variant of the kernels: 1, 2 or 4 is the row kernel with that many output columns a thread
// (1 is also the looping kernel); kDepthwiseTiles is the tiled kernel.
constexpr int kDepthwiseTiles = 16;

// The variants worth timing for params (empty when the kernels do not apply): the row and tiled
// kernels where their shapes apply and some vector fits the channel count and multiplier, else
// the looping kernel alone. A launch whose buffers are not aligned to that vector runs a narrower
// one, or the looping kernel one channel a thread.
std::vector<int> depthwiseConvolutionVariants(const ConvolutionParams& params);

// "Kiln depthwise, 2 columns a thread", "Kiln depthwise, shared-memory tiles".
std::string describeDepthwiseVariant(int variant);

// out = activation(depthwise(inputActivation(x), weight) + bias + residual); bias and residual
// may be null.
// variant is one of depthwiseConvolutionVariants(params). Only enqueues work on `stream`; needs
// no workspace. Throws std::invalid_argument when the kernels or the variant do not apply or a
// needed pointer is null.
void depthwiseConvolution(const ConvolutionParams& params, int variant,
                          const ConvolutionTensors& tensors, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

// Kiln's own kernels for depthwise convolutions (groups == inChannels == outChannels) in the
// channels-last layout, timed as candidates beside cuDNN's algorithms by ConvolutionPlan::autotune.
// cuDNN runs these on CUDA-core algorithms that move many times the bytes the layer needs; a
// depthwise convolution does k*k multiply-adds per element it reads, so it is bound by memory,
// and these kernels aim at reading each input and writing each output once.
//
// Each thread computes one 16-byte vector of consecutive channels (8 fp16/bf16 or 4 fp32) at
// `outputsPerThread` consecutive output columns of one row, sliding along the input row so that
// every input vector it loads feeds each output that reads it. The block's weights are staged in
// shared memory as fp32, tap-major, so a thread reads its channels' weights as vectors. Kernel
// widths 3, 5 and 7 at horizontal stride 1 or 2 without horizontal dilation are unrolled;
// other widths, strides and dilations, and channel counts that are not a multiple of a vector
// (or buffers not 16-byte aligned), run a looping kernel with one output a thread. Bias,
// residual and ReLU run in the epilogue, accumulation is fp32, padding may be asymmetric.
#pragma once

#include <vector>

#include "kernels/cuda/convolution.h"

namespace kiln::cuda_kernels {

// Whether Kiln's depthwise kernels compute these params: a forward 1-D or 2-D convolution in
// NHWC with groups == inChannels == outChannels, of a float type, whose taps fit the staging
// area in shared memory.
bool depthwiseConvolutionApplies(const ConvolutionParams& params);

// The outputs-a-thread variants worth timing for params (empty when the kernels do not apply).
std::vector<int> depthwiseConvolutionVariants(const ConvolutionParams& params);

// out = activation(depthwise(x, weight) + bias + residual); bias and residual may be null.
// outputsPerThread is one of depthwiseConvolutionVariants(params). Only enqueues work on
// `stream`; needs no workspace. Throws std::invalid_argument when the kernels do not apply or a
// needed pointer is null.
void depthwiseConvolution(const ConvolutionParams& params, int outputsPerThread,
                          const ConvolutionTensors& tensors, cudaStream_t stream);

}  // namespace kiln::cuda_kernels

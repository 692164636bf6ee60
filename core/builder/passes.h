// The builder's passes, each defined in its own file under core/builder/ and run in order by
// Builder::build. Each takes the network being optimized and rewrites it in place.
#pragma once

#include "core/ir/network.h"

namespace kiln {

// Removes layers whose outputs reach no network output.
void eliminateDeadLayers(Network& network);

// Replaces every layer whose inputs are all constants by a Constant holding its result
// (computed with the CPU backend), then removes what became dead.
void foldConstants(Network& network);

// Drops the mask of each attention layer whose mask is a constant (repeated, reshaped, sliced or
// cast between float types) that masks nothing: all true (bool) or all zero (additive); or a bool
// mask computed from one integer tensor of proven range (arange(seq) under a dynamic length) that
// is true at every value in it.
void removeAttentionMasksThatMaskNothing(Network& network);

// Removes concatenations of one tensor and casts to the tensor's own type, whose readers then
// read the input (unless the output is a network output).
void removeIdentityLayers(Network& network);

// Replaces each matrix multiply by a constant rank-2 matrix (not transposing its first operand)
// by a fully connected layer, with a following add of a constant row (one value per output
// column, the product's only reader) as its bias.
void convertConstantMatMulsToFullyConnected(Network& network);

// Replaces GELU's tanh approximation written out in elementwise, tanh and sigmoid layers over
// one tensor and scalar constants (GPT-2's NewGELUActivation) by one Activation layer, found by
// evaluating the chain rather than by its shape.
void recognizeTanhGelu(Network& network);

// Folds each inference batch norm into the convolution that feeds it (when the convolution has
// no other reader and constant weights): new weights and bias, one layer less.
void foldBatchNormIntoConvolution(Network& network);

// Fuses a convolution's sole reader into its epilogue, repeatedly: an add of a tensor of the
// output's dims (the residual), then a ReLU.
void fuseConvolutionEpilogues(Network& network);

// Runs patch-embedding convolutions (stride = kernel > 1, no padding, at most 4 input channels,
// no residual) as a copy gathering the patches, a fully connected layer over them with the
// convolution's bias and activation, and a transpose back to channels-first.
void convertPatchConvolutionsToFullyConnected(Network& network);

// Fuses an add whose only reader is a layer norm into the norm (as its residual input).
void fuseResidualIntoLayerNorm(Network& network);

// Fuses a fully connected layer's sole reader into its epilogue, repeatedly: an add of a tensor
// of the output's dims (the residual), then a ReLU or GELU (erf GELU only in fp16 and bf16,
// which the GPU computes with the tanh approximation), also one behind a reshape of the output.
void fuseFullyConnectedEpilogues(Network& network);

// Runs each half-precision 2-D convolution channels-last (NHWC) between explicit transposes (on
// both backends: the CPU backend builds the engine the GPU runs).
void convertConvolutionsToChannelsLast(Network& network);

// Runs channels-last 1x1 convolutions (stride 1, no padding, one group) as fully connected
// layers over the channel dim, with their bias, residual and activation.
void convertPointwiseConvolutionsToFullyConnected(Network& network);

// Cancels transposes that undo each other, moving them forward to meet across pooling,
// pointwise layers (constant operands permuted at build time), layer norms and fully connected
// layers that keep their normalized or reduced dims in place, reductions, batch norms,
// concatenations and slices (along the permuted axis): a convolutional trunk, its channel splits
// and concatenations (CSP, DenseNet, GhostNet), and the channels-last norm and MLP of
// ConvNeXt-style blocks, then stay channels-last between the network's edges.
void sinkLayoutTransposes(Network& network);

// Replaces each squeeze of a squeeze-and-excitation block (a global average pool of a
// channels-last tensor, a fully connected layer, its activation, a second fully connected layer,
// each the previous one's only reader) by one SqueezeExcitation layer.
void fuseSqueezeExcitations(Network& network);

// Replaces attention written out as q @ k^T, scalar scaling, an added bias, a softmax over the
// keys and @ v (rank 4, (N, H, L, E)) by one Attention layer with the bias as its additive mask
// (Swin's, LeViT's and EfficientFormer's attention biases, T5's position bias).
void recognizeExplicitAttention(Network& network);
// Moves shuffles that only move rows across fully connected layers, next to the attention
// layers they feed or follow.
void moveRowShufflesTowardAttention(Network& network);

// Has attention layers read their operands through views of the tensors that transposes,
// reshapes and selects copy them from, and write their output through a view of the tensor that
// transposes and reshapes make of it (under dynamic dims, where it is a row view: heads side by
// side in the rows of an (N, L, W) tensor).
void readAttentionOperandsThroughViews(Network& network);

// Merges fully connected layers (and matrix multiplies by a constant B) that read the same tensor
// with constant weights of one input width, type and fused activation, and no residual, into one
// wider GEMM. Attention operands read their block of its columns through views; other readers
// get a Slice, and a group whose copies would cost more than the fusion saves stays as it is.
void fuseSiblingGemms(Network& network);

// Fuses an activation (ReLU, ReLU6, SiLU, hard swish) whose only reader is a channels-last
// depthwise convolution into that convolution, which applies it to x as it reads it: an inverted
// residual block's activation after its expansion GEMM then writes and reads no tensor.
void fuseActivationsIntoDepthwiseInputs(Network& network);
// Replaces each inference batch norm with constant statistics by x * scale + shift per channel
// in fp32 (between casts for fp16 and bf16), for the pointwise fusion to join with the
// activation after it (DenseNet's and pre-activation networks' BN-ReLU).
void convertBatchNormsToPointwise(Network& network);
// Replaces each chain of shuffles (each read only by the next) that moves no element, taken as a
// whole, by one reshape of the chain's input, which aliases it instead of copying; and a chain
// of static dims that copies twice or more, where one copy can move every element to its place
// (window partitions), by that copy. Leaves the chain's earlier shuffles dead.
void foldShuffleChainsIntoReshapes(Network& network);

// Replaces each connected group of two or more elementwise, unary, activation and cast layers
// (float arithmetic, casts to float types) by one Pointwise layer running their program. Runs
// after the epilogue fusions, which take the layers they can first.
void fusePointwiseChains(Network& network);

}  // namespace kiln

// Runs patch-embedding convolutions (stride equal to the kernel, no padding, an image's few
// channels) as one copy that gathers the patches and a GEMM over them: ViT's 16x16 patches, the
// 4x4 stems of Swin and ConvNeXt. cuDNN pads a 3-channel input to 8 channels and reads it through
// an NCHW -> NHWC transpose; ViT-B/16's patch embedding took 1.69 ms of a 23.4 ms forward at batch
// 256 on the H200, where the same work as a (50176 x 768) x (768 x 768) GEMM is about 0.1 ms.
// Patches do not overlap, so gathering them is a permutation of the input, read once.
#include <string>
#include <utility>
#include <vector>

#include "core/builder/passes.h"

namespace kiln {
namespace {

// More input channels than this and the input is a feature map (a downsampling convolution in a
// trunk), which cuDNN reads channels-last without padding or a gathering copy.
constexpr int64_t kMaxImageChannels = 4;

// A per-spatial-dim parameter; an empty one means `fallback` for every dim.
int64_t perDim(const Dims& values, size_t d, int64_t fallback) {
  return values.empty() ? fallback : values[d];
}

bool isPatchEmbedding(const Layer& layer) {
  if (layer.kind() != LayerKind::kConvolution) return false;
  const auto& p = layer.paramsAs<ConvolutionParams>();
  const std::vector<Tensor*>& inputs = layer.inputs();
  // A GEMM's epilogue applies ReLU, not the activations only Kiln's convolution kernels take.
  if (p.channelsLast || p.groups != 1 || (inputs.size() > 3 && inputs[3] != nullptr) ||
      (p.activation != FusedActivation::kNone && p.activation != FusedActivation::kRelu)) {
    return false;
  }
  const Dims& x = layer.input(0)->dims();
  if (x[1] == kDynamic || x[1] > kMaxImageChannels || !isStatic(layer.input(1)->dims())) {
    return false;
  }
  bool hasPatches = false;
  for (size_t d = 0; d < p.kernel.size(); ++d) {
    const int64_t size = x[d + 2];
    if (perDim(p.stride, d, 1) != p.kernel[d] || perDim(p.dilation, d, 1) != 1 ||
        perDim(p.prePadding, d, 0) != 0 || perDim(p.postPadding, d, 0) != 0 || size == kDynamic ||
        size % p.kernel[d] != 0) {
      return false;
    }
    // A kernel of ones is a pointwise convolution, not a patch.
    hasPatches = hasPatches || p.kernel[d] > 1;
  }
  return hasPatches;
}

}  // namespace

void convertPatchConvolutionsToFullyConnected(Network& network) {
  std::vector<Layer*> convolutions;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    if (isPatchEmbedding(*network.layer(i))) convolutions.push_back(network.layer(i));
  }
  for (Layer* conv : convolutions) {
    const auto& p = conv->paramsAs<ConvolutionParams>();
    const std::string name = conv->name();
    Tensor* x = conv->input(0);
    const Dims& dims = x->dims();
    const size_t spatial = p.kernel.size();

    // (N, C, H, W) -> (N, C, H/kh, kh, W/kw, kw) -> (N, H/kh, W/kw, C, kh, kw): one copy.
    Dims split = {0, dims[1]};
    Dims order = {0};
    for (size_t d = 0; d < spatial; ++d) {
      split.push_back(dims[d + 2] / p.kernel[d]);
      split.push_back(p.kernel[d]);
      order.push_back(static_cast<int64_t>(2 + 2 * d));
    }
    order.push_back(1);
    for (size_t d = 0; d < spatial; ++d) order.push_back(static_cast<int64_t>(3 + 2 * d));
    ShuffleParams gather;
    gather.hasReshape = true;
    gather.reshapeDims = std::move(split);
    gather.secondPermutation = std::move(order);
    Layer* patches = network.addShuffle(x, gather);
    patches->setName(concat(name, ".patches"));

    // (N, H/kh, W/kw, C, kh, kw) -> (N, H/kh, W/kw, C*kh*kw): a view of the copy.
    const int64_t patchSize = volume(conv->input(1)->dims()) / p.outChannels;
    ShuffleParams flatten;
    flatten.hasReshape = true;
    flatten.reshapeDims = Dims(spatial + 1, 0);  // 0: keep the batch and patch-grid dims
    flatten.reshapeDims.push_back(patchSize);
    Layer* rows = network.addShuffle(patches->output(0), flatten);
    rows->setName(concat(name, ".patch_rows"));

    // The weight (K, C, kh, kw) is already the GEMM's (K, C*kh*kw), row for row.
    ShuffleParams weightRows;
    weightRows.hasReshape = true;
    weightRows.reshapeDims = Dims{p.outChannels, patchSize};
    Layer* flatWeight = network.addShuffle(conv->input(1), weightRows);
    flatWeight->setName(concat(name, ".weight_2d"));

    FullyConnectedParams params;
    params.activation = p.activation;
    Tensor* bias = conv->inputs().size() > 2 ? conv->input(2) : nullptr;
    Layer* gemm = network.addLayer(params, {rows->output(0), flatWeight->output(0), bias, nullptr});
    gemm->setName(name);

    // (N, H/kh, W/kw, K) -> (N, K, H/kh, W/kw), the convolution's layout. Layout sinking cancels
    // it against a following channels-last transpose (ConvNeXt's stem) where there is one.
    ShuffleParams channelsFirst;
    channelsFirst.firstPermutation = toChannelsFirstPermutation(spatial + 2);
    Layer* output = network.addShuffle(gemm->output(0), channelsFirst);
    const std::string outputName = conv->output(0)->name();
    output->setName(concat(name, ".channels_first"));
    network.replaceAllUsesWith(conv->output(0), output->output(0));
    network.removeLayer(conv);
    output->output(0)->setName(outputName);
  }
}

}  // namespace kiln

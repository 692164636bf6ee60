#include "core/builder/builder.h"

#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/builder/passes.h"
#include "core/engine/execution_context.h"
#ifdef KILN_WITH_CUDA
#include "core/engine/cuda/device.h"
#include "core/engine/cuda/pointwise_kernels.h"
#endif

namespace kiln {
namespace {

std::string inputNames(const Network& network) {
  std::string names;
  for (size_t i = 0; i < network.numInputs(); ++i) {
    if (i > 0) names += ", ";
    names += concat("'", network.input(i)->name(), "'");
  }
  return names;
}

// Checks one shape of a range (min, opt or max) against the input's declared dims.
void checkRangeShape(const Tensor& input, size_t profile, const char* which, const Dims& shape) {
  KILN_CHECK(static_cast<int64_t>(shape.size()) == input.rank(), "profile ", profile, ": ", which,
             " shape ", toString(shape), " of input '", input.name(), "' has rank ", shape.size(),
             ", but the input is declared with rank ", input.rank(), " (", toString(input.dims()),
             ")");
  for (size_t d = 0; d < shape.size(); ++d) {
    KILN_CHECK(shape[d] >= 0, "profile ", profile, ": ", which, " shape ", toString(shape),
               " of input '", input.name(), "' has a negative dim ", d,
               "; give concrete sizes for min, opt and max");
    KILN_CHECK(input.dims()[d] == kDynamic || input.dims()[d] == shape[d], "profile ", profile,
               ": ", which, " shape ", toString(shape), " of input '", input.name(), "' has dim ",
               d, " = ", shape[d], ", but the input declares it fixed at ", input.dims()[d], " (",
               toString(input.dims()), ")");
  }
}

void checkProfile(const Network& network, const OptimizationProfile& profile, size_t index) {
  std::set<std::string> names;
  for (size_t i = 0; i < network.numInputs(); ++i) names.insert(network.input(i)->name());
  for (const auto& [name, range] : profile.ranges) {
    KILN_CHECK(names.count(name) > 0, "profile ", index, " has a range for '", name,
               "', which is not an input of the network (inputs: ", inputNames(network), ")");
  }
  for (size_t i = 0; i < network.numInputs(); ++i) {
    const Tensor& input = *network.input(i);
    auto found = profile.ranges.find(input.name());
    if (found == profile.ranges.end()) {
      KILN_CHECK(isStatic(input.dims()), "profile ", index, " has no range for input '",
                 input.name(), "', whose dims ", toString(input.dims()),
                 " are dynamic. Give every profile a min/opt/max shape for it.");
      continue;
    }
    const ShapeRange& range = found->second;
    checkRangeShape(input, index, "min", range.min);
    checkRangeShape(input, index, "opt", range.opt);
    checkRangeShape(input, index, "max", range.max);
    for (size_t d = 0; d < range.min.size(); ++d) {
      KILN_CHECK(range.min[d] <= range.opt[d] && range.opt[d] <= range.max[d], "profile ", index,
                 ": input '", input.name(), "' dim ", d, " needs min <= opt <= max, got ",
                 range.min[d], ", ", range.opt[d], ", ", range.max[d], " (min ",
                 toString(range.min), ", opt ", toString(range.opt), ", max ", toString(range.max),
                 ")");
    }
  }
}

// The profiles the engine will hold: the given ones after checking, or, for a network whose
// inputs are all static, one implicit profile of those shapes.
std::vector<OptimizationProfile> resolveProfiles(const Network& network,
                                                 const std::vector<OptimizationProfile>& given) {
  if (given.empty()) {
    OptimizationProfile implicit;
    for (size_t i = 0; i < network.numInputs(); ++i) {
      const Tensor& input = *network.input(i);
      KILN_CHECK(isStatic(input.dims()), "input '", input.name(), "' has dynamic dims ",
                 toString(input.dims()), ", but no optimization profile was given. Add a ",
                 "profile with min/opt/max shapes for it to BuilderConfig::profiles.");
      implicit.setRange(input.name(), {input.dims(), input.dims(), input.dims()});
    }
    return {implicit};
  }
  for (size_t p = 0; p < given.size(); ++p) checkProfile(network, given[p], p);
  return given;
}

// The layers of `network` in an order where every producer comes before its consumers,
// staying as close to the network's own order as possible. Passes may append layers (a
// folded constant) after their consumers, so the order is recomputed here.
std::vector<const Layer*> executionOrder(const Network& network) {
  std::vector<const Layer*> order;
  std::set<const Layer*> placed;
  for (size_t i = 0; i < network.numLayers(); ++i) {
    // Depth-first over producers, iteratively: deep networks would overflow a recursion.
    std::vector<std::pair<const Layer*, size_t>> stack = {{network.layer(i), 0}};
    while (!stack.empty()) {
      auto& [layer, next] = stack.back();
      if (placed.count(layer) > 0) {
        stack.pop_back();
        continue;
      }
      if (next < layer->inputs().size()) {
        const Tensor* input = layer->inputs()[next++];
        if (input != nullptr && input->producer() != nullptr &&
            placed.count(input->producer()) == 0) {
          stack.emplace_back(input->producer(), 0);
        }
        continue;
      }
      placed.insert(layer);
      order.push_back(layer);
      stack.pop_back();
    }
  }
  return order;
}

EngineDefinition flatten(const Network& network, std::vector<OptimizationProfile> profiles,
                         const BuildTarget& target) {
  EngineDefinition definition;
  definition.target = target;
  definition.profiles = std::move(profiles);
  std::unordered_map<const Tensor*, int32_t> indices;
  auto addTensor = [&](const Tensor* tensor) {
    indices[tensor] = static_cast<int32_t>(definition.tensors.size());
    definition.tensors.push_back({tensor->name(), tensor->dtype(), tensor->dims()});
  };
  for (size_t i = 0; i < network.numInputs(); ++i) {
    addTensor(network.input(i));
    definition.inputs.push_back(indices.at(network.input(i)));
  }
  for (const Layer* layer : executionOrder(network)) {
    EngineLayer flat;
    flat.name = layer->name();
    flat.params = layer->params();
    for (const Tensor* input : layer->inputs()) {
      flat.inputs.push_back(input == nullptr ? -1 : indices.at(input));
    }
    for (const Tensor* output : layer->outputs()) {
      addTensor(output);
      flat.outputs.push_back(indices.at(output));
    }
    definition.layers.push_back(std::move(flat));
  }
  for (size_t i = 0; i < network.numOutputs(); ++i) {
    definition.outputs.push_back(indices.at(network.output(i)));
  }
  return definition;
}

// Runs shape inference at each profile's min, opt and max shapes, so that a shape the profile
// allows but a layer cannot take fails the build rather than a later run.
void checkShapesOfProfiles(const std::shared_ptr<Engine>& engine) {
  ExecutionContext context(engine);
  const std::vector<OptimizationProfile>& profiles = engine->profiles();
  for (size_t p = 0; p < profiles.size(); ++p) {
    for (const char* which : {"min", "opt", "max"}) {
      std::vector<Dims> shapes;
      for (size_t i = 0; i < engine->numInputs(); ++i) {
        const EngineTensor& input = engine->inputTensor(i);
        auto found = profiles[p].ranges.find(input.name);
        if (found == profiles[p].ranges.end()) {
          shapes.push_back(input.dims);
          continue;
        }
        const ShapeRange& range = found->second;
        const std::string kind = which;
        shapes.push_back(kind == "min" ? range.min : kind == "opt" ? range.opt : range.max);
      }
      try {
        context.setInputShapes(shapes);
      } catch (const Error& error) {
        throw Error(concat("profile ", p, " fails at its ", which, " shapes: ", error.what()));
      }
    }
  }
}

}  // namespace

std::shared_ptr<Engine> Builder::build(const Network& network, const BuilderConfig& config) {
  BuildTarget target;
  if (config.backend == Backend::kCuda) {
#ifdef KILN_WITH_CUDA
    target = currentCudaTarget();
#else
    throw Error(
        "this Kiln was built without CUDA, so it cannot build CUDA engines; install a "
        "Kiln built with CUDA, or build for the CPU backend");
#endif
  } else {
    target.backend = Backend::kCpu;
    target.deviceName = "cpu";
  }
  network.validate();
  std::vector<OptimizationProfile> profiles = resolveProfiles(network, config.profiles);

  std::unique_ptr<Network> optimized = network.clone();
  eliminateDeadLayers(*optimized);
  foldConstants(*optimized);
  removeAttentionMasksThatMaskNothing(*optimized);
  removeIdentityLayers(*optimized);
  convertConstantMatMulsToFullyConnected(*optimized);
  recognizeTanhGelu(*optimized);
  foldBatchNormIntoConvolution(*optimized);
  fuseConvolutionEpilogues(*optimized);
  // After the epilogue fusion, whose bias and activation the GEMM takes over.
  convertPatchConvolutionsToFullyConnected(*optimized);
  fuseResidualIntoLayerNorm(*optimized);
  // Tensor-core convolutions read NHWC. The CPU backend builds the same layout (its reference
  // kernels run a channels-last layer on transposed copies), so that the engines tested without
  // a GPU are the ones a GPU runs.
  convertConvolutionsToChannelsLast(*optimized);
  sinkLayoutTransposes(*optimized);
  convertPointwiseConvolutionsToFullyConnected(*optimized);
  foldConstants(*optimized);
  // After the constants fold, which leaves the scale factors scalar constants.
  recognizeExplicitAttention(*optimized);
  // After the attention recognition, which sums the biases it finds at several views.
  foldConstants(*optimized);
  moveRowShufflesTowardAttention(*optimized);
  // After the row shuffles moved: an output projection then reads the residual add directly.
  fuseFullyConnectedEpilogues(*optimized);
  readAttentionOperandsThroughViews(*optimized);
  // After the views: an attention operand then reads its block of the fused GEMM in place.
  fuseSiblingGemms(*optimized);
  // After the GEMM epilogues, which leave a squeeze's first activation fused or an Activation
  // layer, and before the pointwise fusion, which would take that layer.
  fuseSqueezeExcitations(*optimized);
  // After the GEMM epilogues, which take ReLU first, and the layout passes, which leave the
  // depthwise convolutions channels-last.
  fuseActivationsIntoDepthwiseInputs(*optimized);
  // After the folding of batch norms into convolutions, which costs no pass at all.
  convertBatchNormsToPointwise(*optimized);
  // After the layout passes and the attention views, which leave the shuffles that still copy.
  foldShuffleChainsIntoReshapes(*optimized);
  // Last of the fusions: the epilogue and norm fusions take the pointwise layers they can first.
  fusePointwiseChains(*optimized);
  eliminateDeadLayers(*optimized);
  optimized->validate();

  EngineDefinition definition = flatten(*optimized, std::move(profiles), target);
  definition.tf32 = config.tf32;
  definition.networkLayers = static_cast<uint32_t>(network.numLayers());
#ifdef KILN_WITH_CUDA
  if (config.backend == Backend::kCuda) compilePointwiseKernels(definition);
#endif
  auto engine = std::make_shared<Engine>(std::move(definition));
  checkShapesOfProfiles(engine);
  return engine;
}

}  // namespace kiln

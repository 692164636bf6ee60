#include "core/engine/cuda/pointwise_kernels.h"

#include <iostream>
#include <map>
#include <string>
#include <utility>

#include "core/engine/kernel_mapping.h"

namespace kiln {

namespace ck = cuda_kernels;

void compilePointwiseKernels(EngineDefinition& definition) {
  const std::string architecture = ck::pointwiseArchitecture(
      definition.target.computeCapabilityMajor, definition.target.computeCapabilityMinor);
  std::map<std::string, std::vector<uint8_t>> compiled;  // by source
  for (EngineLayer& layer : definition.layers) {
    auto* params = std::get_if<PointwiseParams>(&layer.params);
    if (params == nullptr) continue;
    try {
      PointwiseKernelCode& code = params->cudaKernel;
      code.source = ck::generatePointwiseSource(toPointwiseProgram(*params));
      code.architecture = architecture;
      auto found = compiled.find(code.source);
      if (found == compiled.end()) {
        found = compiled.emplace(code.source, ck::compilePointwiseKernel(code.source, architecture))
                    .first;
      }
      code.binary = found->second;
    } catch (const std::exception& error) {
      throw Error(concat("layer '", layer.name, "' (", describe(layer.params),
                         "): generating its CUDA kernel failed: ", error.what()));
    }
  }
}

std::vector<std::unique_ptr<ck::PointwiseKernel>> loadPointwiseKernels(
    const EngineDefinition& definition) {
  std::vector<std::unique_ptr<ck::PointwiseKernel>> kernels(definition.layers.size());
  std::string architecture;
  std::map<std::string, std::vector<uint8_t>> recompiled;  // by source
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    const auto* params = std::get_if<PointwiseParams>(&layer.params);
    if (params == nullptr) continue;
    if (architecture.empty()) architecture = ck::currentPointwiseArchitecture();
    const PointwiseKernelCode& code = params->cudaKernel;
    try {
      if (code.architecture == architecture && !code.binary.empty()) {
        kernels[l] = std::make_unique<ck::PointwiseKernel>(code.binary);
        continue;
      }
      const std::string source = code.source.empty()
                                     ? ck::generatePointwiseSource(toPointwiseProgram(*params))
                                     : code.source;
      auto found = recompiled.find(source);
      if (found == recompiled.end()) {
        std::cerr << "kiln: warning: layer '" << layer.name << "' holds a pointwise kernel for "
                  << (code.architecture.empty() ? std::string("no GPU") : code.architecture)
                  << ", not this GPU's " << architecture
                  << "; compiling it again with NVRTC. Rebuild the engine on this GPU to load "
                     "it without compiling.\n";
        found = recompiled.emplace(source, ck::compilePointwiseKernel(source, architecture)).first;
      }
      kernels[l] = std::make_unique<ck::PointwiseKernel>(found->second);
    } catch (const std::exception& error) {
      throw Error(concat("layer '", layer.name, "' (", describe(layer.params),
                         "): loading its CUDA kernel failed: ", error.what()));
    }
  }
  return kernels;
}

}  // namespace kiln

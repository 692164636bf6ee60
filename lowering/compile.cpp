#include "lowering/compile.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "converters/conversion.h"
#include "converters/registry.h"
#include "core/builder/builder.h"
#include "lowering/fold_constants.h"

namespace kiln {

c10::Device engineDevice(Backend backend) {
  if (backend == Backend::kCpu) return c10::Device(c10::kCPU);
  return c10::impl::getDeviceGuardImpl(c10::kCUDA)->getDevice();
}

c10::intrusive_ptr<EngineHolder> buildSegmentEngine(const OpGraph& graph, const Segment& segment,
                                                    const std::string& name, Backend backend,
                                                    bool debug, const Tf32Policy& tf32) {
  try {
    ConvertedSegment converted =
        convertSegment(graph, segment.nodes, segment.inputs, segment.outputs);
    BuilderConfig config;
    config.backend = backend;
    config.debug = debug;
    config.tf32 = tf32;
    config.profiles.push_back(std::move(converted.profile));
    std::shared_ptr<Engine> engine = Builder::build(*converted.network, config);
    return c10::make_intrusive<EngineHolder>(std::move(engine), name);
  } catch (const Error& error) {
    throw Error(concat("building engine '", name, "' (", segment.nodes.size(),
                       " ops) failed: ", error.what()));
  }
}

CompileSummary summarize(const OpGraph& graph, const Partition& partition) {
  CompileSummary summary;
  summary.engines = static_cast<int64_t>(partition.segments.size());
  for (const Segment& segment : partition.segments) {
    summary.opsInKiln += static_cast<int64_t>(segment.nodes.size());
  }
  for (const auto& [node, reason] : partition.fallbackReasons) {
    const std::string op = graph.node(node).qualifiedName();
    if (isPlumbing(graph.node(node).op)) continue;
    ++summary.opsInTorch;
    summary.fallback.emplace_back(op, reason);
  }
  return summary;
}

std::pair<torch::jit::Module, CompileSummary> compileTorchScript(
    const torch::jit::Module& module, const std::vector<InputSpec>& inputs,
    const CompileSettings& settings) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const InputSpec& spec = inputs[i];
    KILN_CHECK(spec.min.size() == spec.opt.size() && spec.opt.size() == spec.max.size(), "input ",
               i, ": min, opt and max shapes must have the same rank");
  }
  torch::jit::Module lowered = lowerTorchScript(module, inputs);
  TorchScriptImport import = importTorchScript(lowered, inputs);
  import.graph.setDevice(engineDevice(settings.backend));
  foldConstants(import.graph);
  Partition partition =
      kiln::partition(import.graph, settings.partition, ConverterRegistry::global());
  std::vector<c10::intrusive_ptr<EngineHolder>> engines;
  for (size_t i = 0; i < partition.segments.size(); ++i) {
    engines.push_back(buildSegmentEngine(import.graph, partition.segments[i], concat("engine_", i),
                                         settings.backend, settings.debug, settings.tf32));
  }
  torch::jit::Module rewritten = rewriteTorchScript(lowered, import, partition, engines);
  return {std::move(rewritten), summarize(import.graph, partition)};
}

}  // namespace kiln

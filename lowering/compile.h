// What both front ends share after import: building a segment's engine and summarizing what
// was converted. And the whole TorchScript path, end to end.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/engine/engine.h"
#include "lowering/op_graph.h"
#include "lowering/partitioner.h"
#include "lowering/ts_frontend.h"
#include "runtime/engine_holder.h"

namespace kiln {

struct CompileSettings {
  PartitionSettings partition;
  Backend backend = Backend::kCpu;
  bool debug = false;
  Tf32Policy tf32;
};

// The torch device an engine built now for `backend` runs on: the CPU, or the current CUDA
// device (engines are built for, and run on, the device current at build time).
c10::Device engineDevice(Backend backend);

// Converts a segment to a Network and builds its engine. Throws Error naming the segment.
c10::intrusive_ptr<EngineHolder> buildSegmentEngine(const OpGraph& graph, const Segment& segment,
                                                    const std::string& name, Backend backend,
                                                    bool debug, const Tf32Policy& tf32);

struct CompileSummary {
  int64_t engines = 0;
  int64_t opsInKiln = 0;
  int64_t opsInTorch = 0;  // ops that compute (plumbing such as list packing is not counted)
  std::vector<std::pair<std::string, std::string>> fallback;  // (op, why it stays in PyTorch)
};
CompileSummary summarize(const OpGraph& graph, const Partition& partition);

std::pair<torch::jit::Module, CompileSummary> compileTorchScript(
    const torch::jit::Module& module, const std::vector<InputSpec>& inputs,
    const CompileSettings& settings);

}  // namespace kiln

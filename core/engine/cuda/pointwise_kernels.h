// The CUDA kernels of an engine's Pointwise layers: generated and compiled with NVRTC when the
// engine is built (kept in the plan with their source), loaded from the kept CUBINs when it runs.
#pragma once

#include <memory>
#include <vector>

#include "core/engine/engine.h"
#include "kernels/cuda/pointwise_codegen.h"

namespace kiln {

// Generates and compiles the kernel of every Pointwise layer for the target's GPU, storing
// source, architecture and CUBIN in the layer's params. Identical programs compile once.
void compilePointwiseKernels(EngineDefinition& definition);

// Loads each Pointwise layer's CUBIN on the current device (null for other layers). A kernel
// compiled for another architecture, which only a plan loaded with allowOtherGpu can hold, is
// compiled again from its source for this GPU, with a warning on stderr.
std::vector<std::unique_ptr<cuda_kernels::PointwiseKernel>> loadPointwiseKernels(
    const EngineDefinition& definition);

}  // namespace kiln

// Lowering pass for the TorchScript front end: folds the rank checks of scripted library code.
#pragma once

#include <torch/csrc/jit/api/module.h>

#include <vector>

#include "lowering/ts_frontend.h"  // InputSpec

namespace kiln {

// Replaces each top-level aten::dim by the rank its tensor has when the lowered module runs on
// inputs of the given specs (ranks never depend on the sizes within a profile), then
// constant-propagates, so that branches on ranks (F.interpolate's `if input.dim() == 4 and
// mode == "bilinear"`) fold and the branch taken is inlined, and lists built in loops over the
// rank become constants; repeats while that exposes more. A graph without aten::dim is left as
// it is.
// Leaves the graph as it is where the module does not run on example inputs (the importer's own
// run reports why).
void foldTensorRanks(torch::jit::Module& lowered, const std::vector<InputSpec>& inputs);

}  // namespace kiln

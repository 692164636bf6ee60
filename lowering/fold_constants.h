// Constant folding on the OpGraph: a node whose inputs are all known at build time and whose op
// is a deterministic, functional aten op is run with torch on the CPU while compiling, and its
// outputs become constants. Weight-only subgraphs, index tables and masks built from factories
// and slice_scatter (swin's shifted-window mask, its relative position index) then reach the
// converters as plain constants.
#pragma once

#include <cstdint>

#include "lowering/op_graph.h"

namespace kiln {

// A folded result larger than this stays computed at run time: folding an expand or a
// broadcasting op could otherwise turn a small weight into a huge constant.
constexpr int64_t kMaxFoldedBytes = int64_t{64} << 20;

// Folds every foldable node, in topological order, and marks it OpNode::folded; returns how
// many were folded. A node is not folded when its op is random (nondeterministic_seeded),
// returns uninitialized memory (empty*), mutates an argument, is not an aten op, or reads a
// value that some op mutates in place (directly or through a view), or when torch throws.
int foldConstants(OpGraph& graph, int64_t maxFoldedBytes = kMaxFoldedBytes);

}  // namespace kiln

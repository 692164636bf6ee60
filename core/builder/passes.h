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

}  // namespace kiln

// Activation memory planning: every intermediate tensor of an engine gets an offset in one
// arena, and tensors whose lifetimes do not overlap share bytes.
//
// Sizes are the largest each tensor reaches over every optimization profile's min, opt and max
// shapes, so one arena, allocated when an execution context is created, serves every run.
#pragma once

#include <cstdint>
#include <vector>

#include "core/engine/engine.h"

namespace kiln {

struct MemoryPlan {
  static constexpr int64_t kNotInArena = -1;
  // Per tensor of the engine: its byte offset in the arena, or kNotInArena for engine inputs,
  // engine outputs and constants, which live elsewhere.
  std::vector<int64_t> offsets;
  // Per tensor: the bytes reserved for it (its largest size over the profiles).
  std::vector<int64_t> bytes;
  // Per tensor: the tensor whose bytes it shares, or kNoAlias. The output of a reshape (a shuffle
  // without a transpose) is its input's bytes under other dims, so the layer does no work.
  static constexpr int32_t kNoAlias = -1;
  std::vector<int32_t> aliasOf;
  int64_t arenaBytes = 0;  // the planned arena
  int64_t naiveBytes = 0;  // every arena tensor in its own buffer, for comparison
};

// Every tensor's dims at each corner (min, opt, max) of each profile, or at the declared dims
// when the engine has no profile: [corner][tensor].
std::vector<std::vector<Dims>> dimsAtProfileCorners(const EngineDefinition& definition);

// Every tensor's largest size in bytes over every profile's min, opt and max shapes.
std::vector<int64_t> largestTensorBytes(const EngineDefinition& definition);

// Lifetimes run from the layer that writes a tensor to the last layer that reads it (layers in
// execution order); a tensor that others alias lives until the last read of any of them. Reshape
// outputs alias their input, except engine outputs (written to the caller's buffer). Tensors are
// placed largest first at the lowest offset that no tensor with an overlapping lifetime occupies;
// offsets are multiples of `alignment`. Whether a shuffle only reshapes (no transpose, or identity
// ones): its output has its input's bytes.
bool isReshapeOnly(const ShuffleParams& shuffle);

MemoryPlan planMemory(const EngineDefinition& definition, const std::vector<int64_t>& tensorBytes,
                      int64_t alignment = 256);

}  // namespace kiln

// Builder: Network + BuilderConfig -> Engine, through the optimizer passes of core/builder.
#pragma once

#include <memory>
#include <vector>

#include "core/engine/engine.h"
#include "core/ir/network.h"

namespace kiln {

struct BuilderConfig {
  Backend backend = Backend::kCpu;
  // One or more profiles. May be empty when every input dim is static.
  std::vector<OptimizationProfile> profiles;
  bool debug = false;
  Tf32Policy tf32;  // recorded in the engine; only the CUDA backend acts on it
};

class Builder {
 public:
  // Validates the network and profiles (each dynamic input dim covered by every profile,
  // min <= opt <= max, static dims equal to the declared ones), runs the passes, checks shape
  // inference at each profile's min, opt and max, and returns the engine. Throws Error.
  static std::shared_ptr<Engine> build(const Network& network, const BuilderConfig& config);
};

}  // namespace kiln

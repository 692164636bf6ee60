// The plan format: how an EngineDefinition is written to bytes and read back.
//
// Layout: a fixed header (magic "KILNPLAN", plan format version, Kiln version, backend, the
// build target: device name, compute capability, CUDA and cuDNN versions), the payload size and
// a checksum of the payload, then the payload (tensors, layers with parameters and weights,
// bindings, profiles). Every read is bounds-checked.
#pragma once

#include <cstdint>
#include <vector>

#include "core/engine/engine.h"

namespace kiln {

// 2: TF32 policy; 3: fused epilogues, attention; 4: channels-last, FC epilogues; 5: element
// gather; 6: slice ends at run-time sizes; 7: resize and cumulative layers; 8: pointwise programs
// and their CUDA kernels; 9: attention row views (dynamic dims), reshape dims from a reference;
// 10: the network's layer count before the builder's passes; 11: ReLU6, SiLU and hard swish fused
// into convolutions; 12: batch norm over the channel axis it names (channels-last); 13: a
// convolution's input activation; 14: squeeze-and-excitation layers; 15: channels-last resize.
constexpr uint32_t kPlanFormatVersion = 15;
extern const char* const kKilnVersion;

// A plan that cannot be loaded; the message says why (truncated, corrupt, not a Kiln plan,
// newer format) and what to do.
class PlanError : public Error {
 public:
  using Error::Error;
};

std::vector<uint8_t> writePlan(const EngineDefinition& definition);
EngineDefinition readPlan(const void* data, size_t size);
// Reads only the header's build target (for a cheap compatibility check before a full read).
BuildTarget readPlanTarget(const void* data, size_t size);

}  // namespace kiln

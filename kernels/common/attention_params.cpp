#include "kernels/common/attention_params.h"

#include <limits>
#include <stdexcept>
#include <string>

namespace kiln::kernels {
namespace {

[[noreturn]] void invalid(const std::string& message) {
  throw std::invalid_argument("attention: " + message);
}

void checkRange(const char* field, int64_t value, int64_t low, int64_t high) {
  if (value < low || value > high) {
    invalid(std::string(field) + " is " + std::to_string(value) +
            "; allowed: " + std::to_string(low) + ".." + std::to_string(high));
  }
}

bool isFloatType(ScalarType type) {
  return type == ScalarType::kFloat32 || type == ScalarType::kFloat16 ||
         type == ScalarType::kBFloat16;
}

void checkPointer(const void* pointer, const char* name) {
  if (pointer == nullptr) invalid(std::string(name) + " is null");
}

}  // namespace

void validateAttention(const AttentionParams& p, const AttentionLimits& limits, const void* q,
                       const void* k, const void* v, const void* mask, const void* out) {
  checkRange("batch", p.batch, 0, std::numeric_limits<int64_t>::max());
  checkRange("heads", p.heads, 1, limits.maxHeads);
  checkRange("kvHeads", p.kvHeads, 1, p.heads);
  if (p.heads % p.kvHeads != 0) {
    invalid("kvHeads (" + std::to_string(p.kvHeads) + ") must divide heads (" +
            std::to_string(p.heads) + ")");
  }
  checkRange("queries", p.queries, 0, limits.maxLength);
  checkRange("keys", p.keys, 0, limits.maxLength);
  checkRange("headDim", p.headDim, 1, kMaxAttentionDim);
  checkRange("valueDim", p.valueDim, 1, kMaxAttentionDim);
  if (limits.halfTypes ? !isFloatType(p.type) : p.type != ScalarType::kFloat32) {
    invalid(std::string("type ") + scalarName(p.type) + " is not supported; allowed: " +
            (limits.halfTypes ? "float32, float16, bfloat16" : "float32"));
  }
  switch (p.mask) {
    case AttentionMask::kNone:
      break;
    case AttentionMask::kBool:
      if (p.maskType != ScalarType::kBool) {
        invalid(std::string("maskType ") + scalarName(p.maskType) +
                " does not fit a bool mask; allowed: bool");
      }
      break;
    case AttentionMask::kAdditive:
      if (!isFloatType(p.maskType)) {
        invalid(std::string("maskType ") + scalarName(p.maskType) +
                " does not fit an additive mask; allowed: float32, float16, bfloat16");
      }
      break;
    default:
      invalid("mask " + std::to_string(static_cast<int>(p.mask)) +
              " is not an AttentionMask; allowed: kNone, kBool, kAdditive");
  }
  if (p.batch == 0 || p.queries == 0) return;
  checkPointer(q, "q");
  checkPointer(out, "out");
  if (p.keys > 0) {
    checkPointer(k, "k");
    checkPointer(v, "v");
    if (p.mask != AttentionMask::kNone) checkPointer(mask, "mask");
  }
}

}  // namespace kiln::kernels

#include "core/engine/memory_plan.h"

#include <algorithm>

#include "core/ir/shape_inference.h"

namespace kiln {

namespace {

// Every tensor's dims when the engine inputs have the given shapes.
std::vector<Dims> inferAllDims(const EngineDefinition& definition,
                               const std::vector<Dims>& inputShapes) {
  std::vector<TensorType> types(definition.tensors.size());
  for (size_t t = 0; t < definition.tensors.size(); ++t) {
    types[t] = {definition.tensors[t].dtype, definition.tensors[t].dims};
  }
  for (size_t i = 0; i < definition.inputs.size(); ++i) {
    types[definition.inputs[i]].dims = inputShapes[i];
  }
  std::vector<const TensorType*> layerInputs;
  for (const EngineLayer& layer : definition.layers) {
    layerInputs.clear();
    for (int32_t t : layer.inputs) layerInputs.push_back(t < 0 ? nullptr : &types[t]);
    std::vector<TensorType> outputs = inferOutputTypes(layer.params, layerInputs);
    for (size_t o = 0; o < layer.outputs.size(); ++o) types[layer.outputs[o]] = outputs.at(o);
  }
  std::vector<Dims> dims;
  dims.reserve(types.size());
  for (TensorType& type : types) dims.push_back(std::move(type.dims));
  return dims;
}

int64_t roundUp(int64_t value, int64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

std::vector<std::vector<Dims>> dimsAtProfileCorners(const EngineDefinition& definition) {
  std::vector<Dims> declared;
  for (int32_t t : definition.inputs) declared.push_back(definition.tensors[t].dims);
  std::vector<std::vector<Dims>> corners;
  if (definition.profiles.empty()) corners.push_back(inferAllDims(definition, declared));
  for (const OptimizationProfile& profile : definition.profiles) {
    for (const Dims ShapeRange::*point : {&ShapeRange::min, &ShapeRange::opt, &ShapeRange::max}) {
      std::vector<Dims> shapes = declared;
      for (size_t i = 0; i < definition.inputs.size(); ++i) {
        auto range = profile.ranges.find(definition.tensors[definition.inputs[i]].name);
        if (range != profile.ranges.end()) shapes[i] = range->second.*point;
      }
      corners.push_back(inferAllDims(definition, shapes));
    }
  }
  return corners;
}

std::vector<int64_t> largestTensorBytes(const EngineDefinition& definition) {
  std::vector<int64_t> largest(definition.tensors.size(), 0);
  for (const std::vector<Dims>& dims : dimsAtProfileCorners(definition)) {
    for (size_t t = 0; t < dims.size(); ++t) {
      const int64_t bytes =
          volume(dims[t]) * static_cast<int64_t>(elementSize(definition.tensors[t].dtype));
      largest[t] = std::max(largest[t], bytes);
    }
  }
  return largest;
}

bool isReshapeOnly(const ShuffleParams& shuffle) {
  return isIdentityPermutation(shuffle.firstPermutation) &&
         isIdentityPermutation(shuffle.secondPermutation);
}

MemoryPlan planMemory(const EngineDefinition& definition, const std::vector<int64_t>& tensorBytes,
                      int64_t alignment) {
  const size_t tensorCount = definition.tensors.size();
  KILN_CHECK(tensorBytes.size() == tensorCount, "planMemory: ", tensorBytes.size(),
             " sizes given for ", tensorCount, " tensors");
  KILN_CHECK(alignment > 0, "planMemory: alignment must be positive");
  MemoryPlan plan;
  plan.offsets.assign(tensorCount, MemoryPlan::kNotInArena);
  plan.bytes = tensorBytes;
  plan.aliasOf.assign(tensorCount, MemoryPlan::kNoAlias);
  std::vector<bool> isEngineOutput(tensorCount, false);
  for (int32_t t : definition.outputs) isEngineOutput[t] = true;

  std::vector<bool> inArena(tensorCount, false);
  std::vector<int64_t> firstUse(tensorCount, -1);
  std::vector<int64_t> lastUse(tensorCount, -1);
  for (size_t l = 0; l < definition.layers.size(); ++l) {
    const EngineLayer& layer = definition.layers[l];
    const bool isConstant = std::holds_alternative<ConstantParams>(layer.params);
    for (int32_t t : layer.outputs) {
      inArena[t] = !isConstant;
      firstUse[t] = static_cast<int64_t>(l);
      lastUse[t] = static_cast<int64_t>(l);
    }
    for (int32_t t : layer.inputs) {
      if (t >= 0) lastUse[t] = std::max(lastUse[t], static_cast<int64_t>(l));
    }
    const auto* shuffle = std::get_if<ShuffleParams>(&layer.params);
    if (shuffle != nullptr && isReshapeOnly(*shuffle) && !isEngineOutput[layer.outputs.at(0)]) {
      const int32_t input = layer.inputs.at(0);
      plan.aliasOf[layer.outputs[0]] =
          plan.aliasOf[input] != MemoryPlan::kNoAlias ? plan.aliasOf[input] : input;
    }
  }
  // Layers run in order, so an alias is read after its root is written: the root's lifetime
  // only needs to reach the aliases' last reads.
  for (size_t t = 0; t < tensorCount; ++t) {
    const int32_t root = plan.aliasOf[t];
    if (root == MemoryPlan::kNoAlias) continue;
    lastUse[root] = std::max(lastUse[root], lastUse[t]);
    inArena[t] = false;
  }
  for (int32_t t : definition.inputs) inArena[t] = false;
  for (int32_t t : definition.outputs) inArena[t] = false;

  std::vector<size_t> order;
  for (size_t t = 0; t < tensorCount; ++t) {
    if (inArena[t] && tensorBytes[t] > 0) order.push_back(t);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return tensorBytes[a] > tensorBytes[b]; });

  struct Placed {
    int64_t offset;
    int64_t end;
    size_t tensor;
  };
  std::vector<Placed> placed;
  for (size_t t : order) {
    const int64_t size = roundUp(tensorBytes[t], alignment);
    plan.naiveBytes += size;
    // Blocks of the tensors alive at the same time, by offset; take the first gap that fits.
    std::vector<Placed> conflicts;
    for (const Placed& p : placed) {
      if (firstUse[p.tensor] <= lastUse[t] && firstUse[t] <= lastUse[p.tensor]) {
        conflicts.push_back(p);
      }
    }
    std::sort(conflicts.begin(), conflicts.end(),
              [](const Placed& a, const Placed& b) { return a.offset < b.offset; });
    int64_t offset = 0;
    for (const Placed& p : conflicts) {
      if (p.offset >= offset + size) break;
      offset = std::max(offset, p.end);
    }
    plan.offsets[t] = offset;
    placed.push_back({offset, offset + size, t});
    plan.arenaBytes = std::max(plan.arenaBytes, offset + size);
  }
  return plan;
}

}  // namespace kiln

// Runs a Network layer by layer on the CPU backend without building it, so that a builder pass's
// effect can be checked on the network itself (before and after the pass, same inputs).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <unordered_map>
#include <vector>

#include "core/engine/cpu_backend.h"
#include "core/ir/network.h"

namespace kiln {

// The raw bytes of each network output, from the raw bytes of each input. Dims must be static.
// Layers are evaluated on demand, so the order passes leave them in does not matter.
inline std::vector<std::vector<uint8_t>> evaluateNetwork(
    const Network& network, const std::vector<std::vector<uint8_t>>& inputs) {
  std::unordered_map<const Tensor*, std::vector<uint8_t>> memory;
  std::unordered_map<const Tensor*, TensorView> views;
  auto bind = [&](const Tensor* tensor) -> TensorView& {
    std::vector<uint8_t>& bytes = memory[tensor];
    bytes.resize(static_cast<size_t>(volume(tensor->dims())) * elementSize(tensor->dtype()));
    views[tensor] = {tensor->dtype(), tensor->dims(), bytes.data()};
    return views[tensor];
  };
  for (size_t i = 0; i < network.numInputs(); ++i) {
    TensorView& view = bind(network.input(i));
    EXPECT_EQ(inputs.at(i).size(), memory[network.input(i)].size()) << "input " << i;
    std::memcpy(view.data, inputs.at(i).data(), inputs[i].size());
  }
  std::function<void(const Layer*)> run = [&](const Layer* layer) {
    if (views.count(layer->output(0)) > 0) return;
    std::vector<const TensorView*> layerInputs;
    for (const Tensor* input : layer->inputs()) {
      if (input != nullptr && input->producer() != nullptr) run(input->producer());
      layerInputs.push_back(input == nullptr ? nullptr : &views.at(input));
    }
    std::vector<TensorView> layerOutputs;
    for (const Tensor* output : layer->outputs()) layerOutputs.push_back(bind(output));
    runLayerOnCpu(layer->params(), layerInputs, layerOutputs);
  };
  std::vector<std::vector<uint8_t>> outputs;
  for (size_t i = 0; i < network.numOutputs(); ++i) {
    const Tensor* output = network.output(i);
    if (output->producer() != nullptr) run(output->producer());
    outputs.push_back(memory.at(output));
  }
  return outputs;
}

// evaluateNetwork on float32 inputs and outputs.
inline std::vector<std::vector<float>> evaluate(const Network& network,
                                                const std::vector<std::vector<float>>& inputs) {
  std::vector<std::vector<uint8_t>> inputBytes;
  for (const std::vector<float>& input : inputs) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(input.data());
    inputBytes.emplace_back(bytes, bytes + input.size() * sizeof(float));
  }
  std::vector<std::vector<float>> outputs;
  for (const std::vector<uint8_t>& bytes : evaluateNetwork(network, inputBytes)) {
    std::vector<float> values(bytes.size() / sizeof(float));
    std::memcpy(values.data(), bytes.data(), bytes.size());
    outputs.push_back(std::move(values));
  }
  return outputs;
}

// count values start + step * (i % period): a ramp that repeats, so that values stay in range.
inline std::vector<float> ramp(size_t count, float start, float step, size_t period = 17) {
  std::vector<float> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = start + step * static_cast<float>(i % period);
  return values;
}

// A Constant layer's output of `dims` holding ramp(volume, start, step, period) as float32,
// cast to `type` by a Cast layer (which constant folding evaluates).
inline Tensor* rampConstant(Network& network, const Dims& dims, float start, float step,
                            DataType type = DataType::kFloat32, size_t period = 13) {
  const auto count = static_cast<size_t>(volume(dims));
  Tensor* values = network
                       .addConstant(Weights::fromValues(DataType::kFloat32, dims,
                                                        ramp(count, start, step, period)))
                       ->output(0);
  return type == DataType::kFloat32 ? values : network.addCast(values, type)->output(0);
}

inline void expectNear(const std::vector<std::vector<float>>& actual,
                       const std::vector<std::vector<float>>& expected, float tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t o = 0; o < actual.size(); ++o) {
    ASSERT_EQ(actual[o].size(), expected[o].size());
    for (size_t i = 0; i < actual[o].size(); ++i) {
      EXPECT_NEAR(actual[o][i], expected[o][i], tolerance) << "output " << o << " element " << i;
    }
  }
}

inline size_t countLayers(const Network& network, LayerKind kind) {
  size_t count = 0;
  for (size_t i = 0; i < network.numLayers(); ++i) count += network.layer(i)->kind() == kind;
  return count;
}

}  // namespace kiln

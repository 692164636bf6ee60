// The Network: Kiln's TensorRT-like definition of a computation, before it is optimized.
//
//   Network net;
//   Tensor* x = net.addInput("x", DataType::kFloat32, {-1, 3, 224, 224});
//   Tensor* w = net.addConstant(weights)->output(0);
//   Tensor* y = net.addConvolution(x, w, nullptr, params)->output(0);
//   net.markOutput(net.addActivation(y, {ActivationType::kRelu})->output(0));
//
// Every add* call validates its inputs and infers the output types and dims at once (dims may
// be -1 where they depend on a dynamic input dim), so a mistake is reported at the layer that
// made it. The Network owns its tensors and layers; pointers stay valid until removed.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/ir/layers.h"
#include "core/ir/types.h"

namespace kiln {

class Layer;

class Tensor {
 public:
  const std::string& name() const { return name_; }
  void setName(std::string name) { name_ = std::move(name); }
  DataType dtype() const { return dtype_; }
  // Declared dims: -1 where the size is only known at run time.
  const Dims& dims() const { return dims_; }
  int64_t rank() const { return static_cast<int64_t>(dims_.size()); }
  // The layer that writes this tensor; null for a network input.
  Layer* producer() const { return producer_; }
  bool isNetworkInput() const { return producer_ == nullptr; }

 private:
  friend class Network;
  std::string name_;
  DataType dtype_ = DataType::kFloat32;
  Dims dims_;
  Layer* producer_ = nullptr;
};

class Layer {
 public:
  const std::string& name() const { return name_; }
  void setName(std::string name) { name_ = std::move(name); }
  LayerKind kind() const { return kindOf(params_); }
  const LayerParams& params() const { return params_; }
  template <typename P>
  const P& paramsAs() const {
    return std::get<P>(params_);
  }
  // Inputs in the order the kind defines; an absent optional input is null.
  const std::vector<Tensor*>& inputs() const { return inputs_; }
  Tensor* input(size_t i) const { return inputs_.at(i); }
  const std::vector<Tensor*>& outputs() const { return outputs_; }
  Tensor* output(size_t i) const { return outputs_.at(i); }

 private:
  friend class Network;
  std::string name_;
  LayerParams params_;
  std::vector<Tensor*> inputs_;
  std::vector<Tensor*> outputs_;
};

// Per network input, the smallest, typical and largest shape the engine must run.
struct ShapeRange {
  Dims min;
  Dims opt;
  Dims max;
};

// One optimization profile: a ShapeRange for every input that has a dynamic dim.
struct OptimizationProfile {
  std::map<std::string, ShapeRange> ranges;
  void setRange(const std::string& input, ShapeRange range) { ranges[input] = std::move(range); }
};

class Network {
 public:
  Network();
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;
  // A deep copy of the graph (weights are shared, not copied), for passes that rewrite it.
  std::unique_ptr<Network> clone() const;

  Tensor* addInput(const std::string& name, DataType dtype, const Dims& dims);
  void markOutput(Tensor* tensor);

  // Every add* below forwards to addLayer, which validates and infers; see layers.h for each
  // kind's inputs.
  Layer* addLayer(LayerParams params, const std::vector<Tensor*>& inputs);

  Layer* addConvolution(Tensor* x, Tensor* weight, Tensor* bias, const ConvolutionParams& p);
  Layer* addDeconvolution(Tensor* x, Tensor* weight, Tensor* bias, const DeconvolutionParams& p);
  Layer* addMatMul(Tensor* a, Tensor* b, const MatMulParams& p = {});
  Layer* addFullyConnected(Tensor* x, Tensor* weight, Tensor* bias);
  Layer* addElementwise(Tensor* a, Tensor* b, ElementwiseOp op);
  Layer* addUnary(Tensor* x, UnaryOp op);
  Layer* addActivation(Tensor* x, const ActivationParams& p);
  Layer* addPooling(Tensor* x, const PoolingParams& p);
  Layer* addReduce(Tensor* x, const ReduceParams& p);
  Layer* addSoftmax(Tensor* x, const SoftmaxParams& p);
  Layer* addNormalization(Tensor* x, Tensor* scale, Tensor* bias, Tensor* mean, Tensor* var,
                          const NormalizationParams& p);
  Layer* addShuffle(Tensor* x, const ShuffleParams& p);
  // A shuffle whose reshapeReferences read `reference`'s dims.
  Layer* addShuffle(Tensor* x, Tensor* reference, const ShuffleParams& p);
  Layer* addConcat(const std::vector<Tensor*>& xs, const ConcatParams& p);
  Layer* addSlice(Tensor* x, const SliceParams& p);
  // A slice whose endReferences read `reference`'s dims.
  Layer* addSlice(Tensor* x, Tensor* reference, const SliceParams& p);
  Layer* addGather(Tensor* data, Tensor* indices, const GatherParams& p);
  Layer* addConstant(const Weights& weights);
  Layer* addCast(Tensor* x, DataType toType);
  Layer* addAttention(Tensor* q, Tensor* k, Tensor* v, Tensor* mask, const AttentionParams& p);
  Layer* addResize(Tensor* x, const ResizeParams& p);
  Layer* addCumulative(Tensor* x, const CumulativeParams& p);

  size_t numInputs() const { return inputs_.size(); }
  Tensor* input(size_t i) const { return inputs_.at(i); }
  size_t numOutputs() const { return outputs_.size(); }
  Tensor* output(size_t i) const { return outputs_.at(i); }
  bool isOutput(const Tensor* tensor) const;
  // The one layer that reads `tensor`, reading it once, when the tensor is not a network output;
  // else null. What a fusion may absorb without another reader losing the tensor.
  Layer* soleReader(const Tensor* tensor) const;
  size_t numLayers() const { return layers_.size(); }
  // Layers are kept in a topological order: a layer comes after the producers of its inputs.
  Layer* layer(size_t i) const { return layers_.at(i).get(); }
  // The layers that read a tensor.
  std::vector<Layer*> consumers(const Tensor* tensor) const;

  // Graph surgery for builder passes.
  void replaceAllUsesWith(Tensor* from, Tensor* to);  // inputs of layers and network outputs
  void removeLayer(Layer* layer);                     // its outputs must be unused
  void unmarkOutput(Tensor* tensor);

  // Re-checks the whole network: every layer's inputs and inferred output types, names unique,
  // at least one output, every output reachable. Throws Error naming the layer at fault.
  void validate() const;

 private:
  Tensor* newTensor(DataType dtype, Dims dims, Layer* producer);
  std::vector<std::unique_ptr<Tensor>> tensors_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Tensor*> inputs_;
  std::vector<Tensor*> outputs_;
  int nextLayerId_ = 0;
};

// The weights `tensor` holds when a Constant layer produces it; null for any other tensor.
const Weights* constantWeights(const Tensor* tensor);

}  // namespace kiln

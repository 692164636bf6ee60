#include "kernels/cpu/reduce_softmax.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cpu/dispatch.h"

namespace kiln::cpu_kernels {
namespace {

// The reduction's dims after merging neighbours that are both reduced or both kept, with the
// output stride of each (0 for a reduced dim).
struct ReduceLayout {
  Shape dims;
  Shape outStrides;
  std::vector<bool> reduced;
};

ReduceLayout makeLayout(const ReduceParams& params) {
  if (params.reduced.size() != params.inShape.size()) {
    throw std::invalid_argument("reduce: one flag per input dim is needed");
  }
  ReduceLayout layout;
  for (size_t i = 0; i < params.inShape.size(); ++i) {
    const int64_t dim = params.inShape[i];
    if (dim == 1) continue;
    if (!layout.dims.empty() && layout.reduced.back() == params.reduced[i]) {
      layout.dims.back() *= dim;
    } else {
      layout.dims.push_back(dim);
      layout.reduced.push_back(params.reduced[i]);
    }
  }
  if (layout.dims.empty()) {
    layout.dims = {1};
    layout.reduced = {false};
  }
  layout.outStrides.assign(layout.dims.size(), 0);
  int64_t stride = 1;
  for (size_t i = layout.dims.size(); i-- > 0;) {
    if (layout.reduced[i]) continue;
    layout.outStrides[i] = stride;
    stride *= layout.dims[i];
  }
  return layout;
}

template <typename Acc>
struct Combine {
  ReduceFunction function;
  Acc identity() const {
    switch (function) {
      case ReduceFunction::kProd:
        return 1;
      case ReduceFunction::kMax:
        if constexpr (std::is_floating_point_v<Acc>) return -std::numeric_limits<Acc>::infinity();
        return std::numeric_limits<Acc>::lowest();
      case ReduceFunction::kMin:
        if constexpr (std::is_floating_point_v<Acc>) return std::numeric_limits<Acc>::infinity();
        return std::numeric_limits<Acc>::max();
      default:
        return 0;
    }
  }
  Acc operator()(Acc acc, Acc value) const {
    switch (function) {
      case ReduceFunction::kProd:
        return acc * value;
      case ReduceFunction::kMax:
        return (value > acc || value != value) ? value : acc;  // value != value: NaN
      case ReduceFunction::kMin:
        return (value < acc || value != value) ? value : acc;
      default:
        return acc + value;
    }
  }
};

template <typename T, typename Acc>
void reduceTyped(const ReduceParams& params, const T* in, T* out) {
  const ReduceLayout layout = makeLayout(params);
  const Combine<Acc> combine{params.function};
  int64_t outVolume = 1;
  int64_t reducedCount = 1;
  for (size_t i = 0; i < layout.dims.size(); ++i) {
    (layout.reduced[i] ? reducedCount : outVolume) *= layout.dims[i];
  }
  std::vector<Acc> acc(static_cast<size_t>(outVolume), combine.identity());
  const size_t rank = layout.dims.size();
  const int64_t inner = layout.dims.back();
  const bool innerReduced = layout.reduced.back();
  int64_t outer = 1;
  for (size_t i = 0; i + 1 < rank; ++i) outer *= layout.dims[i];
  Shape index(rank, 0);
  int64_t outOffset = 0;
  for (int64_t o = 0; o < outer; ++o) {
    const T* row = in + o * inner;
    if (innerReduced) {
      Acc value = acc[outOffset];
      for (int64_t i = 0; i < inner; ++i) value = combine(value, static_cast<Acc>(row[i]));
      acc[outOffset] = value;
    } else {
      Acc* target = acc.data() + outOffset;
      for (int64_t i = 0; i < inner; ++i) target[i] = combine(target[i], static_cast<Acc>(row[i]));
    }
    for (size_t d = rank - 1; d-- > 0;) {
      outOffset += layout.outStrides[d];
      if (++index[d] < layout.dims[d]) break;
      outOffset -= layout.outStrides[d] * layout.dims[d];
      index[d] = 0;
    }
  }
  const bool mean = params.function == ReduceFunction::kMean;
  for (int64_t i = 0; i < outVolume; ++i) {
    const Acc value = mean ? acc[i] / static_cast<Acc>(reducedCount) : acc[i];
    if constexpr (std::is_same_v<T, bool>) {
      out[i] = value != 0;
    } else {
      out[i] = static_cast<T>(value);
    }
  }
}

}  // namespace

void reduce(const ReduceParams& params, const void* input, void* output) {
  // Over nothing, sum and prod give their identity and a float mean NaN, as in torch; max, min
  // and an integer mean have no value to give.
  const bool noIdentity = params.function == ReduceFunction::kMax ||
                          params.function == ReduceFunction::kMin ||
                          (params.function == ReduceFunction::kMean &&
                           params.type != ScalarType::kFloat32);
  if (shapeVolume(params.inShape) == 0 && noIdentity) {
    throw std::invalid_argument("this reduction of an empty tensor has no defined value");
  }
  visitComputeType(params.type, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
    reduceTyped<T, Acc>(params, static_cast<const T*>(input), static_cast<T*>(output));
  });
}

void softmax(const SoftmaxParams& params, const float* input, float* output) {
  const int64_t rank = static_cast<int64_t>(params.shape.size());
  if (params.axis < 0 || params.axis >= rank) {
    throw std::invalid_argument("softmax: axis " + std::to_string(params.axis) +
                                " is out of range for rank " + std::to_string(rank));
  }
  int64_t outer = 1;
  int64_t inner = 1;
  for (int64_t i = 0; i < params.axis; ++i) outer *= params.shape[i];
  for (int64_t i = params.axis + 1; i < rank; ++i) inner *= params.shape[i];
  const int64_t axisSize = params.shape[params.axis];
  // Statistics for `inner` independent softmaxes at once, so that every pass reads rows of
  // contiguous memory.
  std::vector<float> maximum(static_cast<size_t>(inner));
  std::vector<double> sum(static_cast<size_t>(inner));
  for (int64_t o = 0; o < outer; ++o) {
    const float* in = input + o * axisSize * inner;
    float* out = output + o * axisSize * inner;
    std::fill(maximum.begin(), maximum.end(), -std::numeric_limits<float>::infinity());
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int64_t a = 0; a < axisSize; ++a) {
      for (int64_t i = 0; i < inner; ++i) maximum[i] = std::fmax(maximum[i], in[a * inner + i]);
    }
    for (int64_t a = 0; a < axisSize; ++a) {
      for (int64_t i = 0; i < inner; ++i) sum[i] += std::exp(in[a * inner + i] - maximum[i]);
    }
    for (int64_t a = 0; a < axisSize; ++a) {
      for (int64_t i = 0; i < inner; ++i) {
        const float shifted = in[a * inner + i] - maximum[i];
        out[a * inner + i] = params.log
                                 ? static_cast<float>(shifted - std::log(sum[i]))
                                 : static_cast<float>(std::exp(shifted) / sum[i]);
      }
    }
  }
}

}  // namespace kiln::cpu_kernels

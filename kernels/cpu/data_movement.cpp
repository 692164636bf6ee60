#include "kernels/cpu/data_movement.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace kiln::cpu_kernels {
namespace {

// Element-by-element copy; a constant size lets the compiler turn each memcpy into one load
// and one store.
template <size_t kSize>
void copyStrided(const unsigned char* in, int64_t stride, int64_t count, unsigned char* out) {
  for (int64_t i = 0; i < count; ++i) std::memcpy(out + i * kSize, in + i * stride * kSize, kSize);
}

void copyRow(const unsigned char* in, int64_t stride, int64_t count, size_t elementSize,
             unsigned char* out) {
  if (stride == 1) {
    std::memcpy(out, in, static_cast<size_t>(count) * elementSize);
    return;
  }
  switch (elementSize) {
    case 1:
      return copyStrided<1>(in, stride, count, out);
    case 2:
      return copyStrided<2>(in, stride, count, out);
    case 4:
      return copyStrided<4>(in, stride, count, out);
    case 8:
      return copyStrided<8>(in, stride, count, out);
    default:
      for (int64_t i = 0; i < count; ++i) {
        std::memcpy(out + i * elementSize, in + i * stride * elementSize, elementSize);
      }
  }
}

// Fills the dense out (outShape) from in at base offset `offset` with per-dim input strides
// (elements). Dims are merged where the input is contiguous across them.
void stridedCopy(const void* input, int64_t offset, const Shape& inStrides, const Shape& outShape,
                 size_t elementSize, void* output) {
  Shape dims;
  Shape strides;
  for (size_t i = 0; i < outShape.size(); ++i) {
    if (outShape[i] == 0) return;
    if (outShape[i] == 1) continue;
    if (!dims.empty() && strides.back() == inStrides[i] * outShape[i]) {
      dims.back() *= outShape[i];
      strides.back() = inStrides[i];
    } else {
      dims.push_back(outShape[i]);
      strides.push_back(inStrides[i]);
    }
  }
  if (dims.empty()) {
    dims = {1};
    strides = {1};
  }
  const size_t rank = dims.size();
  const int64_t inner = dims.back();
  int64_t outer = 1;
  for (size_t i = 0; i + 1 < rank; ++i) outer *= dims[i];
  const auto* in = static_cast<const unsigned char*>(input);
  auto* out = static_cast<unsigned char*>(output);
  Shape index(rank, 0);
  int64_t inOffset = offset;
  for (int64_t o = 0; o < outer; ++o) {
    copyRow(in + inOffset * elementSize, strides.back(), inner, elementSize,
            out + o * inner * elementSize);
    for (size_t d = rank - 1; d-- > 0;) {
      inOffset += strides[d];
      if (++index[d] < dims[d]) break;
      inOffset -= strides[d] * dims[d];
      index[d] = 0;
    }
  }
}

}  // namespace

void transpose(const void* input, const Shape& inShape, const std::vector<int64_t>& permutation,
               size_t elementSize, void* output) {
  if (permutation.size() != inShape.size()) {
    throw std::invalid_argument("transpose: the permutation needs one entry per dim");
  }
  const Shape strides = contiguousStrides(inShape);
  Shape outShape(inShape.size());
  Shape inStrides(inShape.size());
  for (size_t i = 0; i < permutation.size(); ++i) {
    outShape[i] = inShape.at(permutation[i]);
    inStrides[i] = strides.at(permutation[i]);
  }
  stridedCopy(input, 0, inStrides, outShape, elementSize, output);
}

void slice(const SliceParams& params, size_t elementSize, const void* input, void* output) {
  const Shape strides = contiguousStrides(params.inShape);
  int64_t offset = 0;
  Shape inStrides(strides.size());
  for (size_t i = 0; i < strides.size(); ++i) {
    if (params.outShape[i] > 0) offset += params.starts[i] * strides[i];
    inStrides[i] = strides[i] * params.steps[i];
  }
  stridedCopy(input, offset, inStrides, params.outShape, elementSize, output);
}

void concat(const std::vector<const void*>& inputs, const std::vector<Shape>& inShapes,
            int64_t axis, size_t elementSize, void* output) {
  if (inputs.size() != inShapes.size() || inputs.empty()) {
    throw std::invalid_argument("concat: one shape per input, and at least one input");
  }
  int64_t outer = 1;
  int64_t inner = 1;
  const Shape& first = inShapes[0];
  for (int64_t i = 0; i < axis; ++i) outer *= first[i];
  for (size_t i = static_cast<size_t>(axis) + 1; i < first.size(); ++i) inner *= first[i];
  auto* out = static_cast<unsigned char*>(output);
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t t = 0; t < inputs.size(); ++t) {
      const size_t bytes = static_cast<size_t>(inShapes[t][axis] * inner) * elementSize;
      std::memcpy(out, static_cast<const unsigned char*>(inputs[t]) + o * bytes, bytes);
      out += bytes;
    }
  }
}

void gather(const GatherParams& params, size_t elementSize, const void* data, const void* indices,
            void* output) {
  const size_t rowBytes = static_cast<size_t>(params.inner) * elementSize;
  const auto* in = static_cast<const unsigned char*>(data);
  auto* out = static_cast<unsigned char*>(output);
  if (params.indexType != ScalarType::kInt32 && params.indexType != ScalarType::kInt64) {
    throw std::invalid_argument(std::string("gather: indices must be int32 or int64, not ") +
                                scalarName(params.indexType));
  }
  auto indexAt = [&](int64_t position) {
    const int64_t index = params.indexType == ScalarType::kInt32
                              ? static_cast<const int32_t*>(indices)[position]
                              : static_cast<const int64_t*>(indices)[position];
    if (index < -params.axisSize || index >= params.axisSize) {
      throw std::out_of_range("gather: index " + std::to_string(index) +
                              " is out of range for a dim of size " +
                              std::to_string(params.axisSize));
    }
    return index < 0 ? index + params.axisSize : index;
  };
  if (params.perElement) {
    int64_t position = 0;
    for (int64_t o = 0; o < params.outer; ++o) {
      for (int64_t i = 0; i < params.indexCount; ++i) {
        for (int64_t c = 0; c < params.inner; ++c, ++position) {
          const int64_t source = (o * params.axisSize + indexAt(position)) * params.inner + c;
          std::memcpy(out, in + source * static_cast<int64_t>(elementSize), elementSize);
          out += elementSize;
        }
      }
    }
    return;
  }
  for (int64_t o = 0; o < params.outer; ++o) {
    for (int64_t i = 0; i < params.indexCount; ++i) {
      std::memcpy(out, in + (o * params.axisSize + indexAt(i)) * rowBytes, rowBytes);
      out += rowBytes;
    }
  }
}

}  // namespace kiln::cpu_kernels

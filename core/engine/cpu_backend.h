// The CPU backend: runs any layer with the plain reference kernels of kernels/cpu.
#pragma once

#include <vector>

#include "core/ir/layers.h"
#include "core/ir/types.h"

namespace kiln {

// A tensor in host memory, dense and row-major.
struct TensorView {
  DataType dtype = DataType::kFloat32;
  Dims dims;  // concrete
  void* data = nullptr;
};

// Runs one layer. Inputs follow the layer kind's order (null for an absent optional input);
// outputs are allocated by the caller with the dims inferOutputTypes gives.
void runLayerOnCpu(const LayerParams& params, const std::vector<const TensorView*>& inputs,
                   const std::vector<TensorView>& outputs);

}  // namespace kiln

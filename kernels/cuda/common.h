// What every CUDA kernel family of Kiln shares: element types, shapes, status checking.
// kernels/ depends on nothing of Kiln's, so ScalarType mirrors kiln::DataType rather than
// including it; the CUDA backend maps one to the other.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::cuda_kernels {

enum class ScalarType : uint8_t {
  kFloat32,
  kFloat16,
  kBFloat16,
  kInt8,
  kInt32,
  kInt64,
  kBool,  // one byte, 0 or 1
  kUInt8,
};

size_t scalarSize(ScalarType type);
const char* scalarName(ScalarType type);

// Dims of a dense row-major tensor.
using Shape = std::vector<int64_t>;
int64_t shapeVolume(const Shape& shape);

// A failed CUDA, cuBLAS(Lt) or cuDNN call. The backend prefixes the layer's name.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws CudaError naming the call, the file and the status.
void throwCudaError(cudaError_t status, const char* call, const char* file, int line);

#define KILN_CUDA_CHECK(call)                                                          \
  do {                                                                                 \
    cudaError_t kiln_status_ = (call);                                                 \
    if (kiln_status_ != cudaSuccess)                                                   \
      ::kiln::cuda_kernels::throwCudaError(kiln_status_, #call, __FILE__, __LINE__);   \
  } while (0)

// Checks that the last kernel launch was accepted (bad configuration, no kernel image).
#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())

}  // namespace kiln::cuda_kernels

#include "kernels/cuda/cudnn_common.h"

#include <stdexcept>
#include <string>

namespace kiln::cuda_kernels {

void throwCudnnError(cudnnStatus_t status, const char* call, const char* file, int line) {
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string message = std::string(call) + " failed with " + cudnnGetErrorString(status);
  if (detail[0] != '\0') message += std::string(" (") + detail + ")";
  throw CudaError(message + " at " + file + ":" + std::to_string(line));
}

cudnnDataType_t cudnnTypeOf(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat32:
      return CUDNN_DATA_FLOAT;
    case ScalarType::kFloat16:
      return CUDNN_DATA_HALF;
    case ScalarType::kBFloat16:
      return CUDNN_DATA_BFLOAT16;
    case ScalarType::kInt8:
      return CUDNN_DATA_INT8;
    case ScalarType::kInt32:
      return CUDNN_DATA_INT32;
    case ScalarType::kInt64:
      return CUDNN_DATA_INT64;
    case ScalarType::kBool:
      return CUDNN_DATA_BOOLEAN;
    case ScalarType::kUInt8:
      return CUDNN_DATA_UINT8;
  }
  throw std::invalid_argument("cuDNN has no type for scalar type " +
                              std::to_string(static_cast<int>(type)));
}

CudnnHandle::CudnnHandle() { KILN_CUDNN_CHECK(cudnnCreate(&handle_)); }

CudnnHandle::~CudnnHandle() {
  if (handle_ != nullptr) cudnnDestroy(handle_);
}

void CudnnHandle::setStream(cudaStream_t stream) const {
  KILN_CUDNN_CHECK(cudnnSetStream(handle_, stream));
}

}  // namespace kiln::cuda_kernels

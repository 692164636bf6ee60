// cuDNN plumbing shared by the kernel families that call cuDNN: status checking and RAII owners
// of the handle and the descriptors (each created once, by the caller, not per launch).
#pragma once

#include <cudnn.h>

#include "kernels/cuda/common.h"

namespace kiln::cuda_kernels {

// Throws CudaError naming the call, the file, the status and cuDNN's last error message.
void throwCudnnError(cudnnStatus_t status, const char* call, const char* file, int line);

#define KILN_CUDNN_CHECK(call)                                                              \
  do {                                                                                      \
    cudnnStatus_t kiln_cudnn_status_ = (call);                                              \
    if (kiln_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                         \
      ::kiln::cuda_kernels::throwCudnnError(kiln_cudnn_status_, #call, __FILE__, __LINE__); \
  } while (0)

// The cuDNN type of a Kiln scalar type; throws std::invalid_argument for types cuDNN lacks.
cudnnDataType_t cudnnTypeOf(ScalarType type);

// One cuDNN context on the device current at construction. Owned by an execution context (one
// per stream user); launches set its stream each time, so it is not for concurrent use.
class CudnnHandle {
 public:
  CudnnHandle();
  ~CudnnHandle();
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;

  cudnnHandle_t get() const { return handle_; }
  void setStream(cudaStream_t stream) const;

 private:
  cudnnHandle_t handle_ = nullptr;
};

// Owner of one cuDNN descriptor: Create at construction, Destroy at destruction.
template <typename Descriptor, cudnnStatus_t (*Create)(Descriptor*),
          cudnnStatus_t (*Destroy)(Descriptor)>
class CudnnDescriptor {
 public:
  CudnnDescriptor() { KILN_CUDNN_CHECK(Create(&descriptor_)); }
  ~CudnnDescriptor() {
    if (descriptor_ != nullptr) Destroy(descriptor_);
  }
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;

  Descriptor get() const { return descriptor_; }

 private:
  Descriptor descriptor_ = nullptr;
};

using TensorDescriptor = CudnnDescriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor,
                                         cudnnDestroyTensorDescriptor>;
using FilterDescriptor = CudnnDescriptor<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor,
                                         cudnnDestroyFilterDescriptor>;
using ConvolutionDescriptor =
    CudnnDescriptor<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                    cudnnDestroyConvolutionDescriptor>;
using ActivationDescriptor =
    CudnnDescriptor<cudnnActivationDescriptor_t, cudnnCreateActivationDescriptor,
                    cudnnDestroyActivationDescriptor>;

}  // namespace kiln::cuda_kernels

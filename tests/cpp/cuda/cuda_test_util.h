// Shared by the CUDA kernel tests: skip without a GPU, and device memory that frees itself.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln::cuda_test {

// True when the CUDA runtime sees at least one device (the CI machine has none).
inline bool cudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status for later calls
    return false;
  }
  return count > 0;
}

// Device memory of `bytes` bytes, freed when it goes out of scope.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    // cudaMalloc of 0 bytes returns null; a one-byte allocation keeps the pointer valid.
    check(cudaMalloc(&data_, bytes == 0 ? 1 : bytes), "cudaMalloc");
  }
  template <typename T>
  static DeviceBuffer from(const std::vector<T>& host) {
    DeviceBuffer buffer(host.size() * sizeof(T));
    buffer.upload(host.data(), buffer.bytes_);
    return buffer;
  }
  ~DeviceBuffer() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : data_(other.data_), bytes_(other.bytes_) {
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      if (data_ != nullptr) cudaFree(data_);
      data_ = other.data_;
      bytes_ = other.bytes_;
      other.data_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

  void upload(const void* host, size_t bytes) {
    if (bytes > bytes_) throw std::out_of_range("DeviceBuffer::upload: more bytes than allocated");
    check(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  void download(void* host, size_t bytes) const {
    if (bytes > bytes_)
      throw std::out_of_range("DeviceBuffer::download: more bytes than allocated");
    check(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
  }
  // The whole buffer as `bytes / sizeof(T)` elements of T.
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> host(bytes_ / sizeof(T));
    download(host.data(), host.size() * sizeof(T));
    return host;
  }

 private:
  static void check(cudaError_t status, const char* call) {
    if (status != cudaSuccess) {
      throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorString(status));
    }
  }

  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A stream of the test's own, so that kernels are seen to honour the stream they are given. It
// is a blocking stream: it orders after the tests' synchronous cudaMemcpy uploads.
// synchronize() throws on an asynchronous kernel error.
class Stream {
 public:
  Stream() {
    if (cudaStreamCreate(&stream_) != cudaSuccess) throw std::runtime_error("cudaStreamCreate");
  }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const {
    const cudaError_t status = cudaStreamSynchronize(stream_);
    if (status != cudaSuccess) {
      throw std::runtime_error(std::string("cudaStreamSynchronize: ") + cudaGetErrorString(status));
    }
  }

 private:
  cudaStream_t stream_ = nullptr;
};

// A device tensor that starts `offset` bytes into its allocation, so that tests can hand the
// kernels pointers that are not 16-byte aligned.
class DeviceTensor {
 public:
  DeviceTensor(size_t bytes, size_t offset)
      : buffer_(bytes + offset), offset_(offset), bytes_(bytes) {}
  DeviceTensor(const std::vector<uint8_t>& host, size_t offset)
      : DeviceTensor(host.size(), offset) {
    std::vector<uint8_t> padded(offset, 0);
    padded.insert(padded.end(), host.begin(), host.end());
    buffer_.upload(padded.data(), padded.size());
  }
  void* data() const { return static_cast<uint8_t*>(buffer_.data()) + offset_; }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> padded(offset_ + bytes_);
    buffer_.download(padded.data(), padded.size());
    return std::vector<uint8_t>(padded.begin() + static_cast<std::ptrdiff_t>(offset_),
                                padded.end());
  }

 private:
  DeviceBuffer buffer_;
  size_t offset_;
  size_t bytes_;
};

}  // namespace kiln::cuda_test

// First statement of every GPU test: skips it on machines without a CUDA device.
#define KILN_SKIP_WITHOUT_GPU()                      \
  do {                                               \
    if (!::kiln::cuda_test::cudaDeviceAvailable()) { \
      GTEST_SKIP() << "no CUDA device";              \
    }                                                \
  } while (0)

// The CUDA data movement kernels against the CPU reference: they move bytes, so results must be
// bit-identical, for every element size, odd shapes, size-1 and empty dims and misaligned pointers.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/data_movement.h"
#include "kernels/cuda/data_movement.h"
#include "tests/cpp/cuda/cuda_test_util.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::DeviceBuffer;
using Shape = std::vector<int64_t>;

constexpr size_t kElementSizes[] = {1, 2, 4, 8};

std::vector<uint8_t> randomBytes(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> bytes(count);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(generator));
  return bytes;
}

int64_t volumeOf(const Shape& shape) {
  int64_t volume = 1;
  for (int64_t d : shape) volume *= d;
  return volume;
}

// A device copy of `host` that starts `offsetBytes` into its allocation, so that tests can hand
// the kernels pointers with less than 16-byte alignment.
struct OffsetBuffer {
  DeviceBuffer buffer;
  size_t offset = 0;

  OffsetBuffer(size_t bytes, size_t offsetBytes)
      : buffer(bytes + offsetBytes), offset(offsetBytes) {}
  static OffsetBuffer from(const std::vector<uint8_t>& host, size_t offsetBytes) {
    OffsetBuffer device(host.size(), offsetBytes);
    std::vector<uint8_t> padded(offsetBytes, 0);
    padded.insert(padded.end(), host.begin(), host.end());
    device.buffer.upload(padded.data(), padded.size());
    return device;
  }
  void* data() const { return static_cast<uint8_t*>(buffer.data()) + offset; }
  std::vector<uint8_t> download(size_t bytes) const {
    std::vector<uint8_t> padded(offset + bytes);
    buffer.download(padded.data(), padded.size());
    return std::vector<uint8_t>(padded.begin() + static_cast<std::ptrdiff_t>(offset), padded.end());
  }
};

void synchronize() { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); }

void checkTranspose(const Shape& shape, const std::vector<int64_t>& permutation, size_t elementSize,
                    size_t misalignment) {
  SCOPED_TRACE(testing::Message() << "element size " << elementSize << ", misalignment "
                                  << misalignment << ", rank " << shape.size());
  const size_t bytes = static_cast<size_t>(volumeOf(shape)) * elementSize;
  const auto input = randomBytes(bytes, 7);
  std::vector<uint8_t> expected(bytes);
  ck::transpose(input.data(), shape, permutation, elementSize, expected.data());

  OffsetBuffer in = OffsetBuffer::from(input, misalignment);
  OffsetBuffer out(bytes, misalignment);
  gk::transpose(in.data(), shape, permutation, elementSize, out.data(), nullptr);
  synchronize();
  EXPECT_EQ(out.download(bytes), expected);
}

TEST(CudaDataMovement, TransposeMatchesCpuForEveryShapeAndElementSize) {
  KILN_SKIP_WITHOUT_GPU();
  struct Case {
    Shape shape;
    std::vector<int64_t> permutation;
  };
  const std::vector<Case> cases = {
      {{37, 53}, {1, 0}},                        // tiled, odd sizes
      {{3, 64, 50}, {0, 2, 1}},                  // batched last-two swap
      {{2, 32, 7, 9}, {0, 2, 3, 1}},             // NCHW -> NHWC, tiled
      {{2, 3, 17, 19}, {0, 2, 3, 1}},            // NCHW -> NHWC with 3 channels (generic path)
      {{2, 7, 9, 32}, {0, 3, 1, 2}},             // NHWC -> NCHW
      {{4, 5, 6, 7}, {2, 0, 3, 1}},              // generic permutation
      {{6, 10, 16}, {1, 0, 2}},                  // innermost dim kept: vectorized copy
      {{3, 4, 5}, {0, 1, 2}},                    // identity: one memcpy
      {{1, 40, 1, 33}, {3, 1, 0, 2}},            // size-1 dims dropped
      {{5, 1, 1}, {2, 1, 0}},                    // only size-1 dims move: a plain copy
      {{2, 3, 4, 5, 6, 7}, {5, 3, 1, 4, 2, 0}},  // rank 6, nothing merges
      {{0, 5}, {1, 0}},                          // empty
      {{}, {}},                                  // rank 0
      {{129, 2, 65}, {2, 1, 0}},                 // tiled with a batch dim between
  };
  for (const Case& c : cases) {
    for (size_t elementSize : kElementSizes) {
      checkTranspose(c.shape, c.permutation, elementSize, 0);
      checkTranspose(c.shape, c.permutation, elementSize, elementSize);
    }
  }
}

TEST(CudaDataMovement, TransposeOfALargeTensorUsesTheWholeGrid) {
  KILN_SKIP_WITHOUT_GPU();
  checkTranspose({3, 700, 1100}, {0, 2, 1}, 2, 0);
  checkTranspose({64, 56, 56, 64}, {0, 3, 1, 2}, 4, 0);
}

TEST(CudaDataMovement, TransposeRejectsABadPermutation) {
  KILN_SKIP_WITHOUT_GPU();
  DeviceBuffer buffer(64);
  EXPECT_THROW(gk::transpose(buffer.data(), {2, 3}, {0, 0}, 4, buffer.data(), nullptr),
               std::invalid_argument);
  EXPECT_THROW(gk::transpose(buffer.data(), {2, 3}, {0}, 4, buffer.data(), nullptr),
               std::invalid_argument);
  EXPECT_THROW(gk::transpose(buffer.data(), {2, 3}, {1, 0}, 3, buffer.data(), nullptr),
               std::invalid_argument);
}

TEST(CudaDataMovement, ShuffleComposesBothTransposesAndTheReshape) {
  KILN_SKIP_WITHOUT_GPU();
  // (2, 6, 4, 5) -> permute (0, 2, 1, 3) -> (2, 4, 6, 5) -> reshape (8, 3, 10) -> permute (2, 0,
  // 1).
  gk::ShuffleParams params;
  params.inShape = {2, 6, 4, 5};
  params.firstPermutation = {0, 2, 1, 3};
  params.reshapedShape = {8, 3, 10};
  params.secondPermutation = {2, 0, 1};
  for (size_t elementSize : kElementSizes) {
    SCOPED_TRACE(testing::Message() << "element size " << elementSize);
    const size_t bytes = static_cast<size_t>(volumeOf(params.inShape)) * elementSize;
    const auto input = randomBytes(bytes, 11);
    std::vector<uint8_t> transposed(bytes);
    std::vector<uint8_t> expected(bytes);
    ck::transpose(input.data(), params.inShape, params.firstPermutation, elementSize,
                  transposed.data());
    ck::transpose(transposed.data(), params.reshapedShape, params.secondPermutation, elementSize,
                  expected.data());

    ASSERT_EQ(gk::shuffleWorkspaceSize(params, elementSize), bytes);
    DeviceBuffer in = DeviceBuffer::from(input);
    DeviceBuffer out(bytes);
    DeviceBuffer workspace(bytes);
    gk::shuffle(params, elementSize, in.data(), out.data(), workspace.data(), nullptr);
    synchronize();
    EXPECT_EQ(out.download<uint8_t>(), expected);

    // One permutation only, and none (a reshape): no workspace.
    gk::ShuffleParams firstOnly = params;
    firstOnly.secondPermutation.clear();
    EXPECT_EQ(gk::shuffleWorkspaceSize(firstOnly, elementSize), 0u);
    gk::shuffle(firstOnly, elementSize, in.data(), out.data(), nullptr, nullptr);
    synchronize();
    EXPECT_EQ(out.download<uint8_t>(), transposed);

    gk::ShuffleParams secondOnly = params;
    secondOnly.firstPermutation = {0, 1, 2, 3};
    std::vector<uint8_t> secondExpected(bytes);
    ck::transpose(input.data(), params.reshapedShape, params.secondPermutation, elementSize,
                  secondExpected.data());
    EXPECT_EQ(gk::shuffleWorkspaceSize(secondOnly, elementSize), 0u);
    gk::shuffle(secondOnly, elementSize, in.data(), out.data(), nullptr, nullptr);
    synchronize();
    EXPECT_EQ(out.download<uint8_t>(), secondExpected);

    gk::ShuffleParams reshapeOnly;
    reshapeOnly.inShape = params.inShape;
    reshapeOnly.reshapedShape = {240};
    gk::shuffle(reshapeOnly, elementSize, in.data(), out.data(), nullptr, nullptr);
    synchronize();
    EXPECT_EQ(out.download<uint8_t>(), input);
  }
}

TEST(CudaDataMovement, SliceMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  struct Case {
    Shape inShape;
    Shape starts;
    Shape steps;
    Shape outShape;
  };
  const std::vector<Case> cases = {
      {{10, 37}, {2, 5}, {1, 1}, {7, 30}},            // contiguous rows at an odd offset
      {{10, 64}, {0, 16}, {1, 1}, {10, 32}},          // aligned inner run: vectorized
      {{4, 9, 13}, {1, 2, 3}, {2, 3, 4}, {2, 3, 3}},  // steps everywhere
      {{8, 6, 5}, {0, 0, 0}, {1, 1, 1}, {8, 6, 5}},   // everything: one copy
      {{8, 6, 5}, {3, 0, 0}, {1, 1, 1}, {2, 6, 5}},   // a block of whole rows
      {{5, 7}, {0, 6}, {1, 1}, {5, 1}},               // one column
      {{5, 7}, {0, 0}, {1, 1}, {0, 7}},               // empty output
      {{1000, 33}, {1, 1}, {3, 2}, {333, 16}},        // many rows, strided columns
      {{1, 64}, {0, 0}, {0, 1}, {9, 64}},             // step 0: a row broadcast 9 times
      {{6, 1}, {0, 0}, {1, 0}, {6, 40}},              // step 0 innermost: each element 40 times
      {{3, 1, 5}, {1, 0, 2}, {1, 0, 1}, {2, 7, 3}},   // step 0 between strided dims
  };
  for (const Case& c : cases) {
    for (size_t elementSize : kElementSizes) {
      SCOPED_TRACE(testing::Message()
                   << "element size " << elementSize << ", rank " << c.inShape.size());
      const ck::SliceParams cpuParams{c.inShape, c.starts, c.steps, c.outShape};
      const gk::SliceParams gpuParams{c.inShape, c.starts, c.steps, c.outShape};
      const size_t inBytes = static_cast<size_t>(volumeOf(c.inShape)) * elementSize;
      const size_t outBytes = static_cast<size_t>(volumeOf(c.outShape)) * elementSize;
      const auto input = randomBytes(inBytes, 3);
      std::vector<uint8_t> expected(outBytes);
      ck::slice(cpuParams, elementSize, input.data(), expected.data());
      for (size_t misalignment : {size_t{0}, elementSize}) {
        OffsetBuffer in = OffsetBuffer::from(input, misalignment);
        OffsetBuffer out(outBytes, misalignment);
        gk::slice(gpuParams, elementSize, in.data(), out.data(), nullptr);
        synchronize();
        EXPECT_EQ(out.download(outBytes), expected);
      }
    }
  }
}

TEST(CudaDataMovement, SliceRejectsARangeOutsideTheInput) {
  KILN_SKIP_WITHOUT_GPU();
  DeviceBuffer buffer(256);
  const gk::SliceParams params{{4, 5}, {0, 2}, {1, 2}, {4, 3}};  // columns 2, 4, 6 of 5
  EXPECT_THROW(gk::slice(params, 4, buffer.data(), buffer.data(), nullptr), std::invalid_argument);
}

void checkConcat(const std::vector<Shape>& shapes, int64_t axis, size_t elementSize,
                 size_t misalignment) {
  SCOPED_TRACE(testing::Message() << shapes.size() << " inputs, axis " << axis << ", element size "
                                  << elementSize << ", misalignment " << misalignment);
  std::vector<std::vector<uint8_t>> inputs;
  std::vector<const void*> hostPointers;
  std::vector<OffsetBuffer> devices;
  std::vector<const void*> devicePointers;
  size_t outBytes = 0;
  for (size_t t = 0; t < shapes.size(); ++t) {
    const size_t bytes = static_cast<size_t>(volumeOf(shapes[t])) * elementSize;
    inputs.push_back(randomBytes(bytes, static_cast<uint32_t>(100 + t)));
    outBytes += bytes;
  }
  for (size_t t = 0; t < shapes.size(); ++t) {
    hostPointers.push_back(inputs[t].data());
    // Every other input misaligned, so that the kernel must find the common access width.
    devices.push_back(OffsetBuffer::from(inputs[t], t % 2 == 1 ? misalignment : 0));
  }
  for (const OffsetBuffer& device : devices) devicePointers.push_back(device.data());
  std::vector<uint8_t> expected(outBytes);
  ck::concat(hostPointers, shapes, axis, elementSize, expected.data());

  OffsetBuffer out(outBytes, 0);
  gk::concat(devicePointers, shapes, axis, elementSize, out.data(), nullptr);
  synchronize();
  EXPECT_EQ(out.download(outBytes), expected);
}

TEST(CudaDataMovement, ConcatMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  for (size_t elementSize : kElementSizes) {
    for (size_t misalignment : {size_t{0}, elementSize}) {
      checkConcat({{2, 3, 8}, {2, 5, 8}, {2, 1, 8}}, 1, elementSize, misalignment);
      checkConcat({{4, 7}, {4, 9}}, 1, elementSize, misalignment);             // odd widths
      checkConcat({{3, 16}, {5, 16}, {1, 16}}, 0, elementSize, misalignment);  // axis 0
      checkConcat({{2, 3, 4}, {2, 3, 0}, {2, 3, 5}}, 2, elementSize,
                  misalignment);                                           // an empty input
      checkConcat({{300, 64}, {300, 128}}, 1, elementSize, misalignment);  // vectorized rows
    }
  }
}

TEST(CudaDataMovement, ConcatOfMoreInputsThanOneLaunchTakes) {
  KILN_SKIP_WITHOUT_GPU();
  std::vector<Shape> shapes;
  for (int t = 0; t < gk::kMaxConcatInputs * 2 + 5; ++t) shapes.push_back({3, 1 + t % 4, 5});
  checkConcat(shapes, 1, 4, 0);
  checkConcat(shapes, 1, 2, 2);
}

TEST(CudaDataMovement, ConcatOfEmptyOutputDoesNothing) {
  KILN_SKIP_WITHOUT_GPU();
  gk::concat({nullptr, nullptr}, {{0, 3}, {0, 4}}, 1, 4, nullptr, nullptr);
  synchronize();
  EXPECT_THROW(gk::concat({nullptr}, {{2, 3}, {2, 3}}, 0, 4, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(gk::concat({nullptr, nullptr}, {{2, 3}, {3, 3}}, 1, 4, nullptr, nullptr),
               std::invalid_argument);
}

template <typename IndexValue>
void checkGather(const ck::GatherParams& cpuParams, const std::vector<IndexValue>& indices,
                 size_t elementSize) {
  SCOPED_TRACE(testing::Message() << "outer " << cpuParams.outer << ", axis " << cpuParams.axisSize
                                  << ", inner " << cpuParams.inner << ", element size "
                                  << elementSize << ", index bytes " << sizeof(IndexValue));
  const size_t dataBytes =
      static_cast<size_t>(cpuParams.outer * cpuParams.axisSize * cpuParams.inner) * elementSize;
  const size_t outBytes =
      static_cast<size_t>(cpuParams.outer * cpuParams.indexCount * cpuParams.inner) * elementSize;
  const auto data = randomBytes(dataBytes, 5);
  std::vector<uint8_t> expected(outBytes);
  ck::gather(cpuParams, elementSize, data.data(), indices.data(), expected.data());

  gk::GatherParams params;
  params.outer = cpuParams.outer;
  params.axisSize = cpuParams.axisSize;
  params.inner = cpuParams.inner;
  params.indexCount = cpuParams.indexCount;
  params.indexType = sizeof(IndexValue) == 4 ? gk::ScalarType::kInt32 : gk::ScalarType::kInt64;
  params.perElement = cpuParams.perElement;
  DeviceBuffer deviceData = DeviceBuffer::from(data);
  DeviceBuffer deviceIndices = DeviceBuffer::from(indices);
  DeviceBuffer out(outBytes);
  DeviceBuffer status(sizeof(gk::GatherStatus));
  ASSERT_EQ(cudaMemset(status.data(), 0, sizeof(gk::GatherStatus)), cudaSuccess);
  gk::gather(params, elementSize, deviceData.data(), deviceIndices.data(), out.data(),
             static_cast<gk::GatherStatus*>(status.data()), nullptr);
  synchronize();
  EXPECT_EQ(out.download<uint8_t>(), expected);
  gk::GatherStatus hostStatus;
  status.download(&hostStatus, sizeof(hostStatus));
  EXPECT_EQ(hostStatus.outOfRange, 0);
  EXPECT_NO_THROW(gk::throwIfGatherFailed(hostStatus, params));
}

TEST(CudaDataMovement, GatherMatchesCpuWithBothIndexTypes) {
  KILN_SKIP_WITHOUT_GPU();
  for (size_t elementSize : kElementSizes) {
    // Embedding-style: rows of 24 elements, negative indices counting from the end.
    checkGather<int64_t>({1, 10, 24, 6, ck::ScalarType::kInt64}, {3, 0, -1, 9, -10, 3},
                         elementSize);
    checkGather<int32_t>({1, 10, 24, 6, ck::ScalarType::kInt32}, {3, 0, -1, 9, -10, 3},
                         elementSize);
    // Gathering single elements (inner 1) along a middle axis, odd sizes.
    checkGather<int32_t>({7, 5, 1, 4, ck::ScalarType::kInt32}, {4, 4, 0, -2}, elementSize);
    checkGather<int64_t>({3, 6, 7, 2, ck::ScalarType::kInt64}, {5, 1}, elementSize);
    // Nothing to gather.
    checkGather<int64_t>({3, 6, 7, 0, ck::ScalarType::kInt64}, {}, elementSize);
  }
  // Many rows, enough to fill the grid.
  std::vector<int32_t> many(5000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<int32_t>((i * 7919) % 1000);
  checkGather<int32_t>({2, 1000, 64, 5000, ck::ScalarType::kInt32}, many, 2);
}

// torch.gather: one index for each output element, (outer, count, inner).
TEST(CudaDataMovement, ElementGatherMatchesCpu) {
  KILN_SKIP_WITHOUT_GPU();
  auto perElement = [](int64_t outer, int64_t axisSize, int64_t inner, int64_t count,
                       ck::ScalarType type) {
    ck::GatherParams p{outer, axisSize, inner, count, type};
    p.perElement = true;
    return p;
  };
  auto indicesFor = [](int64_t n, int64_t axisSize) {
    std::vector<int64_t> indices(static_cast<size_t>(n));
    for (size_t i = 0; i < indices.size(); ++i) {
      indices[i] = static_cast<int64_t>((i * 7919) % static_cast<size_t>(2 * axisSize)) - axisSize;
    }
    return indices;
  };
  for (size_t elementSize : kElementSizes) {
    // Along the last axis (inner 1), a middle one, and the first.
    checkGather<int64_t>(perElement(6, 10, 1, 4, ck::ScalarType::kInt64), indicesFor(24, 10),
                         elementSize);
    checkGather<int64_t>(perElement(3, 5, 7, 9, ck::ScalarType::kInt64), indicesFor(189, 5),
                         elementSize);
    const std::vector<int64_t> wide = indicesFor(2 * 33, 4);
    checkGather<int32_t>(perElement(1, 4, 33, 2, ck::ScalarType::kInt32),
                         std::vector<int32_t>(wide.begin(), wide.end()), elementSize);
  }
  // Enough elements to fill the grid.
  checkGather<int64_t>(perElement(64, 512, 128, 300, ck::ScalarType::kInt64),
                       indicesFor(64 * 300 * 128, 512), 2);
}

TEST(CudaDataMovement, GatherReportsAnOutOfRangeIndex) {
  KILN_SKIP_WITHOUT_GPU();
  gk::GatherParams params;
  params.outer = 2;
  params.axisSize = 4;
  params.inner = 3;
  params.indexCount = 3;
  params.indexType = gk::ScalarType::kInt64;
  const std::vector<float> data(24, 1.0f);
  const std::vector<int64_t> indices = {1, 4, -5};
  DeviceBuffer deviceData = DeviceBuffer::from(data);
  DeviceBuffer deviceIndices = DeviceBuffer::from(indices);
  DeviceBuffer out(2 * 3 * 3 * sizeof(float));
  DeviceBuffer status(sizeof(gk::GatherStatus));
  ASSERT_EQ(cudaMemset(status.data(), 0, sizeof(gk::GatherStatus)), cudaSuccess);
  gk::gather(params, sizeof(float), deviceData.data(), deviceIndices.data(), out.data(),
             static_cast<gk::GatherStatus*>(status.data()), nullptr);
  synchronize();
  gk::GatherStatus hostStatus;
  status.download(&hostStatus, sizeof(hostStatus));
  EXPECT_EQ(hostStatus.outOfRange, 1);
  EXPECT_TRUE(hostStatus.badIndex == 4 || hostStatus.badIndex == -5) << hostStatus.badIndex;
  EXPECT_THROW(gk::throwIfGatherFailed(hostStatus, params), std::out_of_range);
  // The valid rows are gathered, the bad ones zero-filled.
  const auto result = out.download<float>();
  for (int64_t o = 0; o < 2; ++o) {
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t c = 0; c < 3; ++c) {
        EXPECT_EQ(result[static_cast<size_t>((o * 3 + i) * 3 + c)], i == 0 ? 1.0f : 0.0f);
      }
    }
  }
  // Without a status the kernel still runs and zero-fills.
  gk::gather(params, sizeof(float), deviceData.data(), deviceIndices.data(), out.data(), nullptr,
             nullptr);
  synchronize();
  EXPECT_EQ(out.download<float>()[3], 0.0f);
}

TEST(CudaDataMovement, GatherRejectsFloatIndices) {
  KILN_SKIP_WITHOUT_GPU();
  gk::GatherParams params;
  params.indexType = gk::ScalarType::kFloat32;
  EXPECT_THROW(gk::gather(params, 4, nullptr, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace kiln

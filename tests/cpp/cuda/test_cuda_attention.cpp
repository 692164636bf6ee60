// The CUDA attention kernels against the CPU reference kernel: fp32, fp16 and bf16; every
// head-dim instance (and valueDim != headDim); sequence lengths around the 64-row and 64-key
// tiles; many key tiles through the two-stage pipeline; causal with L != S; bool and additive masks
// with broadcast dims and fully masked rows; permuted and padded strides (the vector and the
// element-wise load paths); grouped-query heads; empty sizes; batches past one grid's limit; CUDA
// graph capture; validation. fp16/bf16 inputs are rounded first so that both sides see the same
// values. Slots of a tensor's storage that are not elements hold NaN (inputs: reading one would
// show) or a sentinel (output: writing one would show).
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "tests/cpp/cuda/cuda_test_util.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;
namespace gk = kiln::cuda_kernels;
using cuda_test::DeviceBuffer;
using cuda_test::DeviceTensor;
using cuda_test::Stream;
using gk::ScalarType;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint8_t kSentinelByte = 0xA5;

// How a (batch, heads, rows, dim) tensor lies in memory.
enum class Layout {
  kContiguous,     // (B, H, R, D)
  kSequenceMajor,  // (B, R, H, D): a head split of (B, R, H * D)
  kPackedQkv,      // one third of (B, R, 3, H, D): q, k or v of a fused projection
  kPaddedRows,     // (B, H, R, D) with rows of D + 3 elements: no 16-byte vectors
  kAlignedPadding  // (B, H, R, D) with rows of D + 8 elements
};

struct TensorShape {
  int64_t batch, heads, rows, dim;
};

gk::AttentionStrides stridesOf(Layout layout, const TensorShape& s) {
  switch (layout) {
    case Layout::kSequenceMajor:
      return {s.rows * s.heads * s.dim, s.dim, s.heads * s.dim};
    case Layout::kPackedQkv:
      return {s.rows * 3 * s.heads * s.dim, s.dim, 3 * s.heads * s.dim};
    case Layout::kPaddedRows:
      return {s.heads * s.rows * (s.dim + 3), s.rows * (s.dim + 3), s.dim + 3};
    case Layout::kAlignedPadding:
      return {s.heads * s.rows * (s.dim + 8), s.rows * (s.dim + 8), s.dim + 8};
    default:
      return {s.heads * s.rows * s.dim, s.rows * s.dim, s.dim};
  }
}

// A tensor's elements inside its storage, as float; the other slots hold `filler`.
struct HostTensor {
  TensorShape shape;
  gk::AttentionStrides strides;
  std::vector<float> storage;
  std::vector<bool> isElement;

  HostTensor(Layout layout, const TensorShape& s, float filler)
      : shape(s), strides(stridesOf(layout, s)) {
    const int64_t size = s.batch == 0 || s.rows == 0
                             ? 0
                             : (s.batch - 1) * strides.batch + (s.heads - 1) * strides.head +
                                   (s.rows - 1) * strides.row + s.dim;
    storage.assign(static_cast<size_t>(std::max<int64_t>(size, 0)), filler);
    isElement.assign(storage.size(), false);
    forEach([&](size_t at) { isElement[at] = true; });
  }
  template <typename Fn>
  void forEach(Fn&& fn) const {
    for (int64_t b = 0; b < shape.batch; ++b)
      for (int64_t h = 0; h < shape.heads; ++h)
        for (int64_t r = 0; r < shape.rows; ++r)
          for (int64_t d = 0; d < shape.dim; ++d)
            fn(static_cast<size_t>(b * strides.batch + h * strides.head + r * strides.row + d));
  }
};

float roundTo(float value, ScalarType type) {
  switch (type) {
    case ScalarType::kFloat16:
      return __half2float(__float2half(value));
    case ScalarType::kBFloat16:
      return __bfloat162float(__float2bfloat16(value));
    default:
      return value;
  }
}

std::vector<uint8_t> encode(const std::vector<float>& values, ScalarType type) {
  std::vector<uint8_t> bytes(values.size() * gk::scalarSize(type));
  for (size_t i = 0; i < values.size(); ++i) {
    if (type == ScalarType::kFloat16) {
      const __half h = __float2half(values[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else if (type == ScalarType::kBFloat16) {
      const __nv_bfloat16 h = __float2bfloat16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    } else {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    }
  }
  return bytes;
}

float decodeAt(const std::vector<uint8_t>& bytes, size_t i, ScalarType type) {
  if (type == ScalarType::kFloat16) {
    __half h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return __half2float(h);
  }
  if (type == ScalarType::kBFloat16) {
    __nv_bfloat16 h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return __bfloat162float(h);
  }
  float value;
  std::memcpy(&value, bytes.data() + 4 * i, 4);
  return value;
}

struct Case {
  ScalarType type = ScalarType::kFloat16;
  int64_t batch = 1, heads = 2, kvHeads = 2;
  int64_t queries = 64, keys = 64, headDim = 64, valueDim = 64;
  bool causal = false;
  gk::AttentionMask mask = gk::AttentionMask::kNone;
  ScalarType maskType = ScalarType::kFloat32;
  bool maskPerBatch = true, maskPerHead = true, maskPerRow = true;  // false: stride 0
  std::vector<int64_t> fullyMaskedRows;  // query rows whose mask excludes every key
  Layout qLayout = Layout::kContiguous, kvLayout = Layout::kContiguous,
         outLayout = Layout::kContiguous;
  size_t misalignElements = 0;  // every tensor's pointer is this many elements past alignment
  uint32_t seed = 1;

  std::string name() const {
    std::string mask = this->mask == gk::AttentionMask::kNone   ? "none"
                       : this->mask == gk::AttentionMask::kBool ? "bool"
                                                                : gk::scalarName(maskType);
    return std::string(gk::scalarName(type)) + " B" + std::to_string(batch) + " H" +
           std::to_string(heads) + "/" + std::to_string(kvHeads) + " L" + std::to_string(queries) +
           " S" + std::to_string(keys) + " E" + std::to_string(headDim) + " Ev" +
           std::to_string(valueDim) + (causal ? " causal" : "") + " mask " + mask + " layouts " +
           std::to_string(static_cast<int>(qLayout)) + std::to_string(static_cast<int>(kvLayout)) +
           std::to_string(static_cast<int>(outLayout)) + " misalign " +
           std::to_string(misalignElements);
  }
};

// Relative error of one rounding to the output type (and of P to it), against max|out|.
double relativeTolerance(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat16:
      return 2e-3;
    case ScalarType::kBFloat16:
      return 1.6e-2;
    default:
      return 1e-5;
  }
}

void expectSuccess(cudaError_t status) {
  ASSERT_EQ(status, cudaSuccess) << cudaGetErrorString(status);
}

// Everything a run needs: inputs on both sides and the parameters.
struct Prepared {
  HostTensor q, k, v, out;
  std::vector<uint8_t> maskBytes;
  gk::AttentionParams params;
};

Prepared prepare(const Case& c) {
  std::mt19937 generator(c.seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  Prepared p{HostTensor(c.qLayout, {c.batch, c.heads, c.queries, c.headDim}, kNaN),
             HostTensor(c.kvLayout, {c.batch, c.kvHeads, c.keys, c.headDim}, kNaN),
             HostTensor(c.kvLayout, {c.batch, c.kvHeads, c.keys, c.valueDim}, kNaN),
             HostTensor(c.outLayout, {c.batch, c.heads, c.queries, c.valueDim}, 0.0f),
             {},
             {}};
  for (HostTensor* t : {&p.q, &p.k, &p.v}) {
    t->forEach([&](size_t at) { t->storage[at] = roundTo(uniform(generator), c.type); });
  }
  gk::AttentionParams& params = p.params;
  params.batch = c.batch;
  params.heads = c.heads;
  params.kvHeads = c.kvHeads;
  params.queries = c.queries;
  params.keys = c.keys;
  params.headDim = c.headDim;
  params.valueDim = c.valueDim;
  params.type = c.type;
  params.scale = 1.0f / std::sqrt(static_cast<float>(c.headDim));
  params.causal = c.causal;
  params.q = p.q.strides;
  params.k = p.k.strides;
  params.v = p.v.strides;
  params.out = p.out.strides;
  params.mask = c.mask;
  params.maskType = c.mask == gk::AttentionMask::kBool ? ScalarType::kBool : c.maskType;
  if (c.mask != gk::AttentionMask::kNone) {
    const int64_t rows = c.maskPerRow ? c.queries : 1;
    const int64_t heads = c.maskPerHead ? c.heads : 1;
    const int64_t batches = c.maskPerBatch ? c.batch : 1;
    params.maskRowStride = c.maskPerRow ? c.keys : 0;
    params.maskHeadStride = c.maskPerHead ? rows * c.keys : 0;
    params.maskBatchStride = c.maskPerBatch ? heads * rows * c.keys : 0;
    std::vector<float> values(static_cast<size_t>(batches * heads * rows * c.keys));
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (size_t i = 0; i < values.size(); ++i) {
      const int64_t row = static_cast<int64_t>(i) / c.keys % rows;
      const bool fullyMasked =
          c.maskPerRow && std::count(c.fullyMaskedRows.begin(), c.fullyMaskedRows.end(), row) > 0;
      const bool excluded = fullyMasked || unit(generator) < 0.25f;
      if (c.mask == gk::AttentionMask::kBool) {
        values[i] = excluded ? 0.0f : 1.0f;
      } else {
        values[i] = excluded ? -kInf : roundTo(2.0f * uniform(generator), c.maskType);
      }
    }
    if (c.mask == gk::AttentionMask::kBool) {
      p.maskBytes.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i) p.maskBytes[i] = values[i] != 0.0f ? 1 : 0;
    } else {
      p.maskBytes = encode(values, c.maskType);
    }
  }
  return p;
}

ck::AttentionParams toCpu(const gk::AttentionParams& g) {
  ck::AttentionParams c;
  c.batch = g.batch;
  c.heads = g.heads;
  c.kvHeads = g.kvHeads;
  c.queries = g.queries;
  c.keys = g.keys;
  c.headDim = g.headDim;
  c.valueDim = g.valueDim;
  c.type = ck::ScalarType::kFloat32;
  c.scale = g.scale;
  c.causal = g.causal;
  c.q = {g.q.batch, g.q.head, g.q.row};
  c.k = {g.k.batch, g.k.head, g.k.row};
  c.v = {g.v.batch, g.v.head, g.v.row};
  c.out = {g.out.batch, g.out.head, g.out.row};
  c.mask = static_cast<ck::AttentionMask>(g.mask);
  c.maskType = static_cast<ck::ScalarType>(g.maskType);
  c.maskBatchStride = g.maskBatchStride;
  c.maskHeadStride = g.maskHeadStride;
  c.maskRowStride = g.maskRowStride;
  return c;
}

// Launches `run(q, k, v, mask, out, stream)` on device copies of `p` and checks the output's
// elements against the CPU kernel and its other slots against the sentinel.
template <typename Run>
void checkWith(const Case& c, Run&& run) {
  SCOPED_TRACE(c.name());
  Prepared p = prepare(c);
  std::vector<float> expected(p.out.storage.size(), 0.0f);
  ck::attention(toCpu(p.params), p.q.storage.data(), p.k.storage.data(), p.v.storage.data(),
                p.maskBytes.data(), expected.data());

  const size_t offset = c.misalignElements * gk::scalarSize(c.type);
  DeviceTensor q(encode(p.q.storage, c.type), offset);
  DeviceTensor k(encode(p.k.storage, c.type), offset);
  DeviceTensor v(encode(p.v.storage, c.type), offset);
  DeviceTensor mask(p.maskBytes, c.misalignElements * gk::scalarSize(p.params.maskType));
  DeviceTensor out(
      std::vector<uint8_t>(p.out.storage.size() * gk::scalarSize(c.type), kSentinelByte), offset);
  Stream stream;
  run(p.params, q.data(), k.data(), v.data(), mask.data(), out.data(), stream.get());
  expectSuccess(cudaStreamSynchronize(stream.get()));
  const std::vector<uint8_t> actual = out.download();

  double maxAbs = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (p.out.isElement[i]) maxAbs = std::max(maxAbs, std::fabs(static_cast<double>(expected[i])));
  }
  const double tolerance = relativeTolerance(c.type) * maxAbs + 1e-5;
  int failures = 0;
  const size_t elementSize = gk::scalarSize(c.type);
  for (size_t i = 0; i < expected.size() && failures < 8; ++i) {
    if (!p.out.isElement[i]) {
      for (size_t byte = 0; byte < elementSize; ++byte) {
        if (actual[i * elementSize + byte] != kSentinelByte) {
          ADD_FAILURE() << "storage slot " << i << " is not an element but was written";
          ++failures;
          break;
        }
      }
      continue;
    }
    const float got = decodeAt(actual, i, c.type);
    // Rows with no key must be exact zeros, not NaN and not a near-zero.
    const bool ok = expected[i] == 0.0f
                        ? got == 0.0f
                        : std::fabs(static_cast<double>(got) - expected[i]) <= tolerance;
    if (!ok) {
      ADD_FAILURE() << "element at " << i << ": got " << got << ", expected " << expected[i]
                    << " (tolerance " << tolerance << ")";
      ++failures;
    }
  }
}

void check(const Case& c) {
  checkWith(c, [](const gk::AttentionParams& params, const void* q, const void* k, const void* v,
                  const void* mask, void* out,
                  cudaStream_t stream) { gk::attention(params, q, k, v, mask, out, stream); });
}

constexpr ScalarType kTypes[] = {ScalarType::kFloat32, ScalarType::kFloat16, ScalarType::kBFloat16};
constexpr ScalarType kHalfTypes[] = {ScalarType::kFloat16, ScalarType::kBFloat16};

TEST(CudaAttention, EveryHeadDimInstance) {
  KILN_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<int64_t, int64_t>> dims = {
      {1, 1},     {8, 8},     {32, 32},   {64, 64}, {80, 80},  {96, 96}, {128, 128}, {160, 160},
      {192, 192}, {224, 224}, {256, 256}, {64, 32}, {40, 128}, {256, 8}, {24, 200}};
  for (ScalarType type : kTypes) {
    for (const auto& [headDim, valueDim] : dims) {
      Case c;
      c.type = type;
      c.queries = 70;
      c.keys = 90;
      c.headDim = headDim;
      c.valueDim = valueDim;
      check(c);
    }
  }
}

TEST(CudaAttention, SequenceLengthsAroundTheTiles) {
  KILN_SKIP_WITHOUT_GPU();
  const int64_t lengths[] = {1, 7, 64, 128, 197, 300};
  for (int64_t queries : lengths) {
    for (int64_t keys : lengths) {
      Case c;
      c.queries = queries;
      c.keys = keys;
      check(c);
      if (queries == keys || queries == 1 || keys == 1) {
        for (ScalarType type : {ScalarType::kFloat32, ScalarType::kBFloat16}) {
          c.type = type;
          check(c);
        }
      }
    }
  }
}

// Head dims up to 96 keep two key tiles in flight, each stage reused every other tile: walk
// five tiles (the last partial) with each of those instances, causal, masked and element-wise.
TEST(CudaAttention, TwoStageKeyPipelineOverManyTiles) {
  KILN_SKIP_WITHOUT_GPU();
  for (ScalarType type : kHalfTypes) {
    for (int64_t dim : {8, 32, 64, 80, 96}) {
      Case c;
      c.type = type;
      c.headDim = c.valueDim = dim;
      c.queries = 130;
      c.keys = 300;
      check(c);
      c.queries = 300;
      c.causal = true;
      check(c);
      c.causal = false;
      c.mask = gk::AttentionMask::kBool;
      c.fullyMaskedRows = {5, 299};
      check(c);
      c.mask = gk::AttentionMask::kNone;
      c.fullyMaskedRows.clear();
      c.misalignElements = 1;
      check(c);
    }
  }
}

TEST(CudaAttention, CausalWithMoreOrFewerKeysThanQueries) {
  KILN_SKIP_WITHOUT_GPU();
  const std::vector<std::pair<int64_t, int64_t>> lengths = {{64, 64},   {7, 64},    {64, 7},
                                                            {128, 197}, {197, 128}, {300, 64},
                                                            {1, 300},   {300, 1},   {300, 300}};
  for (ScalarType type : kTypes) {
    for (const auto& [queries, keys] : lengths) {
      Case c;
      c.type = type;
      c.queries = queries;
      c.keys = keys;
      c.causal = true;
      check(c);
    }
  }
  Case wide;
  wide.causal = true;
  wide.queries = wide.keys = 150;
  wide.headDim = wide.valueDim = 128;
  check(wide);
}

TEST(CudaAttention, BoolMasksWithBroadcastDimsAndFullyMaskedRows) {
  KILN_SKIP_WITHOUT_GPU();
  struct Broadcast {
    bool perBatch, perHead, perRow;
  };
  const Broadcast broadcasts[] = {
      {true, true, true},   {true, false, true},  {false, true, true},
      {false, false, true}, {true, false, false},  // (B, 1, 1, S): a padding mask
      {false, false, false}};
  for (ScalarType type : kTypes) {
    for (const Broadcast& broadcast : broadcasts) {
      Case c;
      c.type = type;
      c.batch = 2;
      c.queries = 100;
      c.keys = 77;
      c.mask = gk::AttentionMask::kBool;
      c.maskPerBatch = broadcast.perBatch;
      c.maskPerHead = broadcast.perHead;
      c.maskPerRow = broadcast.perRow;
      c.fullyMaskedRows = {0, 5, 63, 64, 99};
      check(c);
    }
  }
}

TEST(CudaAttention, AdditiveMasksOfEachType) {
  KILN_SKIP_WITHOUT_GPU();
  for (ScalarType type : kTypes) {
    for (ScalarType maskType : kTypes) {
      Case c;
      c.type = type;
      c.batch = 2;
      c.queries = 80;
      c.keys = 130;
      c.mask = gk::AttentionMask::kAdditive;
      c.maskType = maskType;
      c.maskPerBatch = false;
      c.fullyMaskedRows = {3, 79};
      check(c);
      c.maskPerBatch = true;
      c.maskPerHead = false;
      c.causal = true;
      check(c);
    }
  }
}

TEST(CudaAttention, BertHeadSplitLayouts) {
  KILN_SKIP_WITHOUT_GPU();
  // BERT: q, k, v are thirds of the fused projection (B, L, 3, H, E), the output merges the
  // heads back as (B, L, H, E), and the padding mask is (B, 1, 1, S) additive.
  for (ScalarType type : kTypes) {
    Case c;
    c.type = type;
    c.batch = 3;
    c.heads = c.kvHeads = 12;
    c.queries = c.keys = 128;
    c.qLayout = c.kvLayout = Layout::kPackedQkv;
    c.outLayout = Layout::kSequenceMajor;
    c.mask = gk::AttentionMask::kAdditive;
    c.maskType = type;
    c.maskPerHead = c.maskPerRow = false;
    check(c);
    // ViT: no mask, 197 tokens.
    c.queries = c.keys = 197;
    c.mask = gk::AttentionMask::kNone;
    check(c);
  }
}

TEST(CudaAttention, ElementWiseLoadsForUnalignedData) {
  KILN_SKIP_WITHOUT_GPU();
  for (ScalarType type : kHalfTypes) {
    for (int64_t dim : {36, 64, 80}) {
      Case c;
      c.type = type;
      c.headDim = c.valueDim = dim;
      c.queries = 90;
      c.keys = 100;
      c.misalignElements = 1;  // pointers off 16 bytes
      check(c);
      c.misalignElements = 0;
      c.qLayout = c.kvLayout = c.outLayout = Layout::kPaddedRows;  // row strides off 8 elements
      c.causal = true;
      check(c);
      c.qLayout = Layout::kContiguous;  // only some tensors fall back
      c.outLayout = Layout::kAlignedPadding;
      check(c);
    }
  }
  Case f;
  f.type = ScalarType::kFloat32;
  f.misalignElements = 1;
  f.qLayout = f.kvLayout = f.outLayout = Layout::kPaddedRows;
  check(f);
}

TEST(CudaAttention, GroupedQueryHeads) {
  KILN_SKIP_WITHOUT_GPU();
  for (ScalarType type : kTypes) {
    for (int64_t kvHeads : {2, 1}) {
      Case c;
      c.type = type;
      c.heads = 8;
      c.kvHeads = kvHeads;
      c.queries = 65;
      c.keys = 130;
      check(c);
      c.causal = true;
      c.mask = gk::AttentionMask::kBool;
      c.maskPerBatch = false;
      check(c);
    }
  }
}

TEST(CudaAttention, BatchesPastOneGrid) {
  KILN_SKIP_WITHOUT_GPU();
  // 70000 batches need two launches (gridDim.z <= 65535); the mask's batch stride moves too.
  for (ScalarType type : {ScalarType::kFloat32, ScalarType::kFloat16}) {
    Case c;
    c.type = type;
    c.batch = 70000;
    c.heads = c.kvHeads = 1;
    c.queries = 1;
    c.keys = 3;
    c.headDim = c.valueDim = 8;
    c.mask = gk::AttentionMask::kBool;
    c.maskPerHead = c.maskPerRow = false;
    check(c);
  }
}

TEST(CudaAttention, EmptySizes) {
  KILN_SKIP_WITHOUT_GPU();
  for (ScalarType type : kTypes) {
    // No keys: zeros everywhere (k, v and the mask pointers are not needed).
    Case c;
    c.type = type;
    c.keys = 0;
    check(c);
    gk::AttentionParams params = prepare(c).params;
    params.mask = gk::AttentionMask::kBool;
    params.maskType = ScalarType::kBool;
    const size_t bytes = static_cast<size_t>(2 * 64 * 64) * gk::scalarSize(type);
    DeviceBuffer q(bytes);
    DeviceBuffer out(bytes);
    expectSuccess(cudaMemset(out.data(), 0x7f, bytes));
    gk::attention(params, q.data(), nullptr, nullptr, nullptr, out.data(), nullptr);
    expectSuccess(cudaDeviceSynchronize());
    for (uint8_t byte : out.download<uint8_t>()) ASSERT_EQ(byte, 0);
    // No batch or no queries: nothing to do, and no pointer is needed.
    params.keys = 5;
    params.batch = 0;
    EXPECT_NO_THROW(gk::attention(params, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr));
    params.batch = 1;
    params.queries = 0;
    EXPECT_NO_THROW(gk::attention(params, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr));
  }
}

TEST(CudaAttention, CapturedInACudaGraph) {
  KILN_SKIP_WITHOUT_GPU();
  // Head dims whose kernels need more than 48 KiB of shared memory (the opt-in happens during
  // the capture when this runs first) and the float32 kernel.
  for (const auto& [type, dim] :
       std::vector<std::pair<ScalarType, int64_t>>{{ScalarType::kFloat16, 256},
                                                   {ScalarType::kBFloat16, 128},
                                                   {ScalarType::kFloat32, 256}}) {
    Case c;
    c.type = type;
    c.headDim = c.valueDim = dim;
    c.queries = 100;
    c.keys = 150;
    c.causal = true;
    checkWith(c, [](const gk::AttentionParams& params, const void* q, const void* k, const void* v,
                    const void* mask, void* out, cudaStream_t stream) {
      cudaGraph_t graph = nullptr;
      expectSuccess(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      gk::attention(params, q, k, v, mask, out, stream);
      expectSuccess(cudaStreamEndCapture(stream, &graph));
      cudaGraphExec_t exec = nullptr;
      expectSuccess(cudaGraphInstantiate(&exec, graph, 0));
      expectSuccess(cudaGraphLaunch(exec, stream));
      expectSuccess(cudaStreamSynchronize(stream));
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
    });
  }
}

// Expects std::invalid_argument whose message names `field`.
void expectInvalid(const gk::AttentionParams& params, const std::string& field,
                   const void* mask = nullptr) {
  DeviceBuffer data(1 << 16);
  try {
    gk::attention(params, data.data(), data.data(), data.data(), mask, data.data(), nullptr);
    ADD_FAILURE() << "no error for " << field;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
  }
}

TEST(CudaAttention, RejectsInvalidParameters) {
  KILN_SKIP_WITHOUT_GPU();
  Case c;
  c.heads = 4;
  c.queries = c.keys = 4;
  c.headDim = c.valueDim = 8;
  const gk::AttentionParams good = prepare(c).params;
  gk::AttentionParams p = good;
  p.headDim = 257;
  expectInvalid(p, "headDim");
  p = good;
  p.valueDim = 0;
  expectInvalid(p, "valueDim");
  p = good;
  p.kvHeads = 3;
  expectInvalid(p, "kvHeads");
  p = good;
  p.heads = 70000;
  expectInvalid(p, "heads");
  p = good;
  p.queries = int64_t{1} << 32;
  expectInvalid(p, "queries");
  p = good;
  p.type = ScalarType::kInt32;
  expectInvalid(p, "type");
  p = good;
  p.mask = gk::AttentionMask::kBool;
  p.maskType = ScalarType::kUInt8;
  expectInvalid(p, "maskType");
  p = good;
  p.mask = gk::AttentionMask::kAdditive;
  p.maskType = ScalarType::kBool;
  expectInvalid(p, "maskType");
  p = good;
  p.mask = gk::AttentionMask::kAdditive;
  expectInvalid(p, "mask is null");
  DeviceBuffer data(1 << 16);
  EXPECT_THROW(
      gk::attention(good, nullptr, data.data(), data.data(), nullptr, data.data(), nullptr),
      std::invalid_argument);
  EXPECT_THROW(
      gk::attention(good, data.data(), nullptr, data.data(), nullptr, data.data(), nullptr),
      std::invalid_argument);
  EXPECT_THROW(
      gk::attention(good, data.data(), data.data(), data.data(), nullptr, nullptr, nullptr),
      std::invalid_argument);
}

}  // namespace
}  // namespace kiln

// The CPU attention kernel against the formula computed naively here (scores matrix, softmax,
// weighted sum), on tiny cases: masks of both kinds with broadcast dims, causal with L != S,
// fully masked rows (zeros), grouped-query heads, strided inputs, empty sizes and validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/cast.h"

namespace kiln {
namespace {

namespace ck = kiln::cpu_kernels;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<float> randomFloats(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(-1.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& value : values) value = distribution(generator);
  return values;
}

ck::AttentionStrides contiguous(int64_t heads, int64_t rows, int64_t dim) {
  return {heads * rows * dim, rows * dim, dim};
}

// Attention of dense (B, H, L, E) q, (B, Hkv, S, E) k and (B, Hkv, S, Ev) v, written as the
// definition reads. `bias(b, h, i, j)` is what the mask adds to the scaled score (0, a value, or
// -inf to exclude).
struct Naive {
  int64_t batch, heads, kvHeads, queries, keys, headDim, valueDim;
  double scale;
  bool causal;
  std::function<double(int64_t, int64_t, int64_t, int64_t)> bias;

  std::vector<float> operator()(const std::vector<float>& q, const std::vector<float>& k,
                                const std::vector<float>& v) const {
    std::vector<float> out(static_cast<size_t>(batch * heads * queries * valueDim));
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t kh = h * kvHeads / heads;
        for (int64_t i = 0; i < queries; ++i) {
          std::vector<double> score(static_cast<size_t>(keys), -kInf);
          for (int64_t j = 0; j < keys; ++j) {
            if (causal && j > i) continue;
            double dot = 0;
            for (int64_t e = 0; e < headDim; ++e) {
              dot += q[static_cast<size_t>(((b * heads + h) * queries + i) * headDim + e)] *
                     static_cast<double>(
                         k[static_cast<size_t>(((b * kvHeads + kh) * keys + j) * headDim + e)]);
            }
            score[static_cast<size_t>(j)] = scale * dot + (bias ? bias(b, h, i, j) : 0.0);
          }
          double maximum = -kInf;
          for (double s : score) maximum = std::max(maximum, s);
          for (int64_t e = 0; e < valueDim; ++e) {
            double numerator = 0, denominator = 0;
            for (int64_t j = 0; j < keys && maximum > -kInf; ++j) {
              const double weight = std::exp(score[static_cast<size_t>(j)] - maximum);
              denominator += weight;
              numerator +=
                  weight * v[static_cast<size_t>(((b * kvHeads + kh) * keys + j) * valueDim + e)];
            }
            out[static_cast<size_t>(((b * heads + h) * queries + i) * valueDim + e)] =
                denominator > 0 ? static_cast<float>(numerator / denominator) : 0.0f;
          }
        }
      }
    }
    return out;
  }
};

// Parameters of `naive`'s shapes with contiguous tensors.
ck::AttentionParams paramsOf(const Naive& naive) {
  ck::AttentionParams p;
  p.batch = naive.batch;
  p.heads = naive.heads;
  p.kvHeads = naive.kvHeads;
  p.queries = naive.queries;
  p.keys = naive.keys;
  p.headDim = naive.headDim;
  p.valueDim = naive.valueDim;
  p.scale = static_cast<float>(naive.scale);
  p.causal = naive.causal;
  p.q = contiguous(naive.heads, naive.queries, naive.headDim);
  p.k = contiguous(naive.kvHeads, naive.keys, naive.headDim);
  p.v = contiguous(naive.kvHeads, naive.keys, naive.valueDim);
  p.out = contiguous(naive.heads, naive.queries, naive.valueDim);
  return p;
}

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs inputsFor(const Naive& n, uint32_t seed) {
  return {randomFloats(n.batch * n.heads * n.queries * n.headDim, seed),
          randomFloats(n.batch * n.kvHeads * n.keys * n.headDim, seed + 1),
          randomFloats(n.batch * n.kvHeads * n.keys * n.valueDim, seed + 2)};
}

void expectNear(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], 1e-6) << "element " << i;
  }
}

// Runs the kernel on contiguous tensors and checks it against the naive formula.
void checkAgainstNaive(const Naive& naive, const ck::AttentionParams& params, const void* mask,
                       uint32_t seed) {
  const Inputs in = inputsFor(naive, seed);
  std::vector<float> out(
      static_cast<size_t>(naive.batch * naive.heads * naive.queries * naive.valueDim), -7.0f);
  ck::attention(params, in.q.data(), in.k.data(), in.v.data(), mask, out.data());
  expectNear(out, naive(in.q, in.k, in.v));
}

TEST(CpuAttention, MatchesTheFormula) {
  const Naive naive{2, 3, 3, 4, 5, 6, 3, 0.4, false, nullptr};
  checkAgainstNaive(naive, paramsOf(naive), nullptr, 1);
}

TEST(CpuAttention, EqualScoresAverageTheValues) {
  // Zero queries give every key the same weight: each output is the mean of v over the keys.
  const Naive naive{1, 1, 1, 2, 4, 3, 2, 1.0, false, nullptr};
  const std::vector<float> q(6, 0.0f), k = randomFloats(12, 3);
  const std::vector<float> v = {1, 10, 2, 20, 3, 30, 4, 40};
  std::vector<float> out(4);
  ck::attention(paramsOf(naive), q.data(), k.data(), v.data(), nullptr, out.data());
  expectNear(out, {2.5f, 25.0f, 2.5f, 25.0f});
}

TEST(CpuAttention, CausalWithMoreOrFewerKeysThanQueries) {
  for (const auto& [queries, keys] :
       std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {5, 3}, {2, 6}}) {
    SCOPED_TRACE("L " + std::to_string(queries) + ", S " + std::to_string(keys));
    const Naive naive{2, 2, 2, queries, keys, 4, 5, 0.5, true, nullptr};
    checkAgainstNaive(naive, paramsOf(naive), nullptr, 7);
  }
}

TEST(CpuAttention, BoolMaskBroadcastOverHeadsWithAFullyMaskedRow) {
  // Mask (B, 1, L, S): batch 0 row 1 attends nothing (zeros), the rest a pattern.
  const int64_t batch = 2, queries = 3, keys = 4;
  std::vector<uint8_t> mask(static_cast<size_t>(batch * queries * keys));
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i * 7 % 3) != 0;
  for (int64_t j = 0; j < keys; ++j) mask[static_cast<size_t>(keys + j)] = 0;
  mask[static_cast<size_t>(2 * queries * keys - 1)] = 5;  // any nonzero byte attends
  Naive naive{batch, 2, 1, queries, keys, 3, 2, 0.7, false, nullptr};
  naive.bias = [&](int64_t b, int64_t, int64_t i, int64_t j) {
    return mask[static_cast<size_t>((b * queries + i) * keys + j)] != 0 ? 0.0 : -kInf;
  };
  ck::AttentionParams params = paramsOf(naive);
  params.mask = ck::AttentionMask::kBool;
  params.maskType = ck::ScalarType::kBool;
  params.maskBatchStride = queries * keys;
  params.maskRowStride = keys;
  const Inputs in = inputsFor(naive, 11);
  std::vector<float> out(static_cast<size_t>(batch * 2 * queries * 2), -7.0f);
  ck::attention(params, in.q.data(), in.k.data(), in.v.data(), mask.data(), out.data());
  expectNear(out, naive(in.q, in.k, in.v));
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t e = 0; e < 2; ++e) {
      EXPECT_EQ(out[static_cast<size_t>((h * queries + 1) * 2 + e)], 0.0f);
    }
  }
}

TEST(CpuAttention, AdditiveMasksOfEachTypeWithCausal) {
  // Mask (1, H, 1, S): broadcast over batch and rows; -inf excludes, the key 0 too (so that with
  // causal the first row attends nothing).
  const int64_t heads = 2, keys = 5;
  std::vector<float> bias = randomFloats(heads * keys, 13);
  bias[0] = -std::numeric_limits<float>::infinity();
  bias[3] = -std::numeric_limits<float>::infinity();
  bias[keys] = -std::numeric_limits<float>::infinity();
  for (ck::ScalarType type :
       {ck::ScalarType::kFloat32, ck::ScalarType::kFloat16, ck::ScalarType::kBFloat16}) {
    SCOPED_TRACE(ck::scalarName(type));
    std::vector<uint8_t> bytes(bias.size() * ck::scalarSize(type));
    std::vector<float> stored(bias.size());
    for (size_t i = 0; i < bias.size(); ++i) {
      if (type == ck::ScalarType::kFloat32) {
        std::memcpy(bytes.data() + 4 * i, &bias[i], 4);
        stored[i] = bias[i];
      } else {
        const uint16_t bits = type == ck::ScalarType::kFloat16 ? ck::floatToHalf(bias[i])
                                                               : ck::floatToBFloat16(bias[i]);
        std::memcpy(bytes.data() + 2 * i, &bits, 2);
        stored[i] =
            type == ck::ScalarType::kFloat16 ? ck::halfToFloat(bits) : ck::bfloat16ToFloat(bits);
      }
    }
    Naive naive{2, heads, heads, 4, keys, 3, 3, 0.9, true, nullptr};
    naive.bias = [&](int64_t, int64_t h, int64_t, int64_t j) {
      return static_cast<double>(stored[static_cast<size_t>(h * keys + j)]);
    };
    ck::AttentionParams params = paramsOf(naive);
    params.mask = ck::AttentionMask::kAdditive;
    params.maskType = type;
    params.maskHeadStride = keys;
    checkAgainstNaive(naive, params, bytes.data(), 17);
  }
}

TEST(CpuAttention, GroupedQueryHeads) {
  const Naive naive{2, 8, 2, 3, 4, 5, 6, 0.3, false, nullptr};
  checkAgainstNaive(naive, paramsOf(naive), nullptr, 19);
}

TEST(CpuAttention, StridedInputsAndOutput) {
  // q and out laid out (B, L, H, E), as a head split of (B, L, H * E) leaves them.
  const Naive naive{2, 3, 3, 4, 5, 6, 4, 0.4, false, nullptr};
  const Inputs in = inputsFor(naive, 23);
  const int64_t b = naive.batch, h = naive.heads, l = naive.queries, e = naive.headDim,
                ev = naive.valueDim;
  std::vector<float> qSequenceMajor(in.q.size());
  for (int64_t n = 0; n < b; ++n)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < l; ++i)
        for (int64_t d = 0; d < e; ++d)
          qSequenceMajor[static_cast<size_t>(((n * l + i) * h + hh) * e + d)] =
              in.q[static_cast<size_t>(((n * h + hh) * l + i) * e + d)];
  ck::AttentionParams params = paramsOf(naive);
  params.q = {l * h * e, e, h * e};
  params.out = {l * h * ev, ev, h * ev};
  std::vector<float> out(static_cast<size_t>(b * l * h * ev));
  ck::attention(params, qSequenceMajor.data(), in.k.data(), in.v.data(), nullptr, out.data());
  const std::vector<float> expected = naive(in.q, in.k, in.v);
  for (int64_t n = 0; n < b; ++n)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < l; ++i)
        for (int64_t d = 0; d < ev; ++d)
          EXPECT_NEAR(out[static_cast<size_t>(((n * l + i) * h + hh) * ev + d)],
                      expected[static_cast<size_t>(((n * h + hh) * l + i) * ev + d)], 1e-6);
}

TEST(CpuAttention, EmptySizes) {
  Naive naive{1, 2, 2, 3, 0, 4, 2, 1.0, false, nullptr};
  // No keys: zeros (k, v and the mask may be null).
  ck::AttentionParams params = paramsOf(naive);
  params.mask = ck::AttentionMask::kBool;
  params.maskType = ck::ScalarType::kBool;
  const std::vector<float> q = randomFloats(2 * 3 * 4, 29);
  std::vector<float> out(12, -7.0f);
  ck::attention(params, q.data(), nullptr, nullptr, nullptr, out.data());
  expectNear(out, std::vector<float>(12, 0.0f));
  // No batch or no queries: nothing to do, nothing touched.
  params.keys = 3;
  params.batch = 0;
  EXPECT_NO_THROW(ck::attention(params, nullptr, nullptr, nullptr, nullptr, nullptr));
  params.batch = 1;
  params.queries = 0;
  EXPECT_NO_THROW(ck::attention(params, nullptr, nullptr, nullptr, nullptr, nullptr));
}

// Expects std::invalid_argument whose message names `field`.
void expectInvalid(const ck::AttentionParams& params, const std::string& field,
                   const float* q = nullptr, const void* mask = nullptr) {
  const std::vector<float> data(4096, 0.0f);
  std::vector<float> out(4096);
  const float* valid = data.data();
  try {
    ck::attention(params, q != nullptr ? q : valid, valid, valid, mask, out.data());
    ADD_FAILURE() << "no error for " << field;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
  }
}

TEST(CpuAttention, RejectsInvalidParameters) {
  const Naive naive{1, 4, 2, 3, 3, 4, 4, 1.0, false, nullptr};
  const ck::AttentionParams good = paramsOf(naive);
  ck::AttentionParams p = good;
  p.headDim = 257;
  expectInvalid(p, "headDim");
  p = good;
  p.headDim = 0;
  expectInvalid(p, "headDim");
  p = good;
  p.valueDim = 300;
  expectInvalid(p, "valueDim");
  p = good;
  p.kvHeads = 3;
  expectInvalid(p, "kvHeads");
  p = good;
  p.heads = 0;
  expectInvalid(p, "heads");
  p = good;
  p.keys = -1;
  expectInvalid(p, "keys");
  p = good;
  p.type = ck::ScalarType::kFloat16;
  expectInvalid(p, "type");
  p = good;
  p.mask = ck::AttentionMask::kBool;
  p.maskType = ck::ScalarType::kFloat32;
  expectInvalid(p, "maskType");
  p = good;
  p.mask = ck::AttentionMask::kAdditive;
  p.maskType = ck::ScalarType::kInt32;
  expectInvalid(p, "maskType");
  p = good;
  p.mask = ck::AttentionMask::kAdditive;
  expectInvalid(p, "mask is null");
  const std::vector<float> q(64);
  std::vector<float> out(64);
  EXPECT_THROW(ck::attention(good, nullptr, q.data(), q.data(), nullptr, out.data()),
               std::invalid_argument);
  EXPECT_THROW(ck::attention(good, q.data(), q.data(), q.data(), nullptr, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace kiln

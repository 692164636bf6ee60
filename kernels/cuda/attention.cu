// Fused scaled-dot-product attention.
//
// fp16 / bf16: a FlashAttention-2 style forward pass on tensor cores. One CTA of 4 warps takes
// 64 query rows of one (batch, head), each warp 16 of them; the CTA walks the keys in tiles of
// 64 staged in shared memory with cp.async. Head dims up to 96 keep two tiles of K and V in
// flight (the next tile loads while this one is used, so a CTA waits on memory about once rather
// than once per operand: BERT's and ViT's CTAs walk only 2 and 4 tiles); larger head dims, whose
// tiles would cost occupancy, keep one of each (loading V overlaps Q·K^T and loading the next K
// overlaps P·V). S = Q·K^T and O += P·V are mma.sync.m16n8k16 (fp16/bf16 in, fp32 accumulate)
// with ldmatrix fragments; S stays in registers, the softmax is online (running max and sum per
// row, exp2 of log2(e)-prescaled scores) and P becomes the A operand of P·V without leaving
// registers. The kernel is templated on the head dim padded to a multiple of 32 (zeros in shared
// memory beyond headDim/valueDim). float32: one warp per query row, 8 rows per CTA sharing key
// chunks of 32 in shared memory.
//
// Roofline. FLOPs = 4·B·H·L·S·E (2·L·S·E for Q·K^T, 2·L·S·Ev for P·V, E = Ev). Bytes (fp16) =
// 2·(B·H·L·(E + Ev) + B·Hkv·S·(E + Ev)), so the arithmetic intensity is about L·S/(L + S)
// FLOP/byte for Hkv = H: 64 for BERT-base (L = S = 128, E = 64), 98 for ViT-B/16 (197), well
// under the H100's ridge (~990 TFLOP/s dense fp16 / ~3.35 TB/s HBM3 ~ 300). Those models are
// therefore bandwidth-bound: BERT-base at batch 128 moves 100 MB for 6.4 GFLOP (>= 30 us at HBM
// speed), ViT-B/16 at batch 128 155 MB for 15 GFLOP (>= 46 us); the kernel is expected to reach
// 60-80% of that bound. Long sequences (L = S >= 1024) are compute-bound, where mma.sync reaches
// about half of the dense fp16 peak (going further needs Hopper's wgmma, as FlashAttention-3).
#include "kernels/cuda/attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace kiln::cuda_kernels {
namespace {

constexpr int64_t kMaxDim = kernels::kMaxAttentionDim;
constexpr int64_t kMaxGridYZ = 65535;
constexpr float kLog2e = 1.4426950408889634f;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // more needs an opt-in per kernel

// Tensor-core kernel tiling: 4 warps of 16 query rows, key tiles of 64.
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockM = kWarps * 16;
constexpr int kBlockN = 64;

// float32 kernel: one warp per query row, key chunks of one key per lane.
constexpr int kRowWarps = 8;
constexpr int kKeyChunk = 32;
constexpr int kMaxDimPerLane = kMaxDim / 32;

// The mask's kind and element type in one value, switched on once per key tile.
enum class MaskKind : uint8_t { kNone, kBool, kFloat32, kFloat16, kBFloat16 };

// What the kernels need of AttentionParams, with 32-bit sizes (validated to fit).
struct KernelArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* mask;
  void* out;
  AttentionStrides qStrides, kStrides, vStrides, outStrides;
  int64_t maskBatchStride, maskHeadStride, maskRowStride;
  int queries, keys, headDim, valueDim;
  int group;        // query heads per kv head
  float scaleLog2;  // scale * log2(e): exp(x * scale) = exp2(x * scaleLog2)
  bool causal;
  MaskKind maskKind;
  // 16-byte vector access per tensor: aligned pointer, dims and strides multiples of 8 elements.
  bool vectorQ, vectorK, vectorV, vectorOut;
};

__device__ __forceinline__ float fastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The additive value of mask element `index` in the log2 domain; bool false gives -inf.
template <MaskKind kMask>
__device__ __forceinline__ float maskValue(const void* mask, int64_t index) {
  if constexpr (kMask == MaskKind::kBool) {
    return static_cast<const uint8_t*>(mask)[index] != 0 ? 0.0f : -INFINITY;
  } else if constexpr (kMask == MaskKind::kFloat32) {
    return static_cast<const float*>(mask)[index] * kLog2e;
  } else if constexpr (kMask == MaskKind::kFloat16) {
    return __half2float(static_cast<const __half*>(mask)[index]) * kLog2e;
  } else {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(mask)[index]) * kLog2e;
  }
}

// ---- tensor-core kernel (fp16, bf16) ----------------------------------------------------------

template <typename T>
struct MmaTraits;

template <>
struct MmaTraits<__half> {
  static __device__ __forceinline__ uint32_t pack(float low, float high) {
    const __half2 pair = __floats2half2_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
  // d += a (16x16, row-major) * b (16x8, column-major)
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <>
struct MmaTraits<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float low, float high) {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ __forceinline__ uint32_t sharedAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// volatile: the loads must stay between the barriers that publish the tile. Addresses are
// shared-space byte addresses (sharedAddress), 32 bits where a generic pointer takes 64.
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void cpAsync16(uint16_t* shared, const uint16_t* global) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sharedAddress(shared)),
               "l"(global));
}

__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;"); }

__device__ __forceinline__ void cpAsyncWaitAll() {
  asm volatile("cp.async.wait_group 0;" ::: "memory");
}

// Waits for all but the most recently committed group.
__device__ __forceinline__ void cpAsyncWaitAllButLast() {
  asm volatile("cp.async.wait_group 1;" ::: "memory");
}

// Shared tiles have rows of kDim + 8 elements: the 16-byte skew puts the 8 rows that one
// ldmatrix phase reads in 8 different bank groups.
template <int kDim>
constexpr int kPitch = kDim + 8;

// Copies rows [0, rows) x columns [0, cols) of a global matrix (row stride `stride`) into a
// kRows x kDim shared tile, zero-filling the rest so that padding adds nothing to the products
// and never holds NaN. Vector copies are asynchronous (cp.async; the caller commits and waits),
// element copies are plain loads and stores.
template <int kRows, int kDim>
__device__ __forceinline__ void loadTile(uint16_t* tile, const uint16_t* source, int64_t stride,
                                         int rows, int cols, bool vector) {
  if (vector) {
    // Each thread keeps one 16-byte column and steps down the rows; when the row's chunks do
    // not divide the CTA, the threads past the last whole row sit out.
    constexpr int kChunks = kDim / 8;
    constexpr int kRowsPerPass = kThreads / kChunks;
    const int column = static_cast<int>(threadIdx.x) % kChunks * 8;
    const int firstRow = static_cast<int>(threadIdx.x) / kChunks;
    if (firstRow >= kRowsPerPass) return;
    const bool columnValid = column < cols;
    const uint16_t* from = source + firstRow * stride + column;
    uint16_t* to = tile + firstRow * kPitch<kDim> + column;
#pragma unroll 1
    for (int row = firstRow; row < kRows; row += kRowsPerPass) {
      if (columnValid && row < rows) {
        cpAsync16(to, from);
      } else {
        *reinterpret_cast<uint4*>(to) = make_uint4(0, 0, 0, 0);
      }
      from += kRowsPerPass * stride;
      to += kRowsPerPass * kPitch<kDim>;
    }
  } else {
    static_assert(kRows * kDim % kThreads == 0, "whole passes of the CTA");
#pragma unroll 4
    for (int pass = 0; pass < kRows * kDim / kThreads; ++pass) {
      const int index = pass * kThreads + static_cast<int>(threadIdx.x);
      const int row = index / kDim;
      const int column = index % kDim;
      tile[row * kPitch<kDim> + column] =
          row < rows && column < cols ? source[row * stride + column] : uint16_t{0};
    }
  }
}

// Sets the scores of excluded keys (past the end, causal, bool mask false) to -inf and adds an
// additive mask, both in the log2 domain. Element (tile, c) of a thread's fragment is query row
// query[c / 2], key keyBase + tile * 8 + 2 * (lane % 4) + c % 2.
template <MaskKind kMask>
__device__ __forceinline__ void maskScores(float (&x)[kBlockN / 8][4], const KernelArgs& args,
                                           int keyBase, const int (&query)[2],
                                           const int64_t (&maskRow)[2]) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
  for (int tile = 0; tile < kBlockN / 8; ++tile) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int side = c / 2;
      const int key = keyBase + tile * 8 + 2 * (lane % 4) + c % 2;
      if (key >= args.keys || (args.causal && key > query[side])) {
        x[tile][c] = -INFINITY;
      } else if constexpr (kMask != MaskKind::kNone) {
        // Rows past the end have no mask row to read; their output is never stored.
        if (query[side] < args.queries)
          x[tile][c] += maskValue<kMask>(args.mask, maskRow[side] + key);
      }
    }
  }
}

// CTAs per SM that the register allocation must allow (4: at most 128 registers a thread, 3: at
// most 168), so that 12 to 16 warps hide the load latency; ptxas fits these without spilling.
// Larger head dims need their registers for the output accumulators.
template <int kDim>
constexpr int kMinBlocksPerSm = kDim <= 64    ? 4
                                : kDim <= 128 ? 3
                                              : 1;

// Key tiles of K and V in shared memory at once (see the top of the file): two stages of each
// for head dims up to 96, where an SM still holds the CTAs that kMinBlocksPerSm asks for (4 of
// 46 KB for 64, 3 of 67 KB for 96, of its 228 KB); one beyond, where two would hold fewer.
template <int kDim>
constexpr int kKeyStages = kDim <= 96 ? 2 : 1;

// Shared memory of one CTA: Q and the stages of K and V, rows padded to kPitch.
template <int kDim>
constexpr size_t kTensorCoreSharedBytes =
    sizeof(uint16_t) * static_cast<size_t>(kBlockM + 2 * kKeyStages<kDim> * kBlockN) * kPitch<kDim>;

template <typename T, int kDim>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<kDim>)
    attentionTensorCoreKernel(KernelArgs args) {
  static_assert(kDim % 32 == 0 && kDim <= kMaxDim, "head dims are padded to multiples of 32");
  using Mma = MmaTraits<T>;
  constexpr int kPitchElems = kPitch<kDim>;
  constexpr int kKSlices = kDim / 16;
  constexpr int kScoreTiles = kBlockN / 8;
  constexpr int kOutTiles = kDim / 8;

  constexpr int kStages = kKeyStages<kDim>;
  constexpr int kStageElems = kBlockN * kPitchElems;

  extern __shared__ uint4 attentionShared[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(attentionShared);
  uint16_t* sKStages = sQ + kBlockM * kPitchElems;        // kStages tiles of K
  uint16_t* sVStages = sKStages + kStages * kStageElems;  // then kStages tiles of V

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  // Causal CTAs with more query rows have more keys: start those first.
  const int rowStart = (static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x)) * kBlockM;
  const int head = static_cast<int>(blockIdx.y);
  const int batch = static_cast<int>(blockIdx.z);
  const int kvHead = head / args.group;
  const int rows = min(kBlockM, args.queries - rowStart);
  const int keyEnd = args.causal ? min(args.keys, rowStart + rows) : args.keys;
  const int keyTiles = (keyEnd + kBlockN - 1) / kBlockN;

  const uint16_t* q = static_cast<const uint16_t*>(args.q) + batch * args.qStrides.batch +
                      head * args.qStrides.head + rowStart * args.qStrides.row;
  // Key tile `tile`'s K and V into stage `tile % kStages`. The addresses are worked out from the
  // kernel's arguments at each load rather than held across the loop: registers are the bound
  // on the CTAs an SM holds.
  const auto loadKeyTile = [&](uint16_t* stages, const void* tensor,
                               const AttentionStrides& strides, int cols, bool vector, int tile) {
    const int keyBase = tile * kBlockN;
    const uint16_t* source = static_cast<const uint16_t*>(tensor) + batch * strides.batch +
                             kvHead * strides.head + keyBase * strides.row;
    loadTile<kBlockN, kDim>(stages + tile % kStages * kStageElems, source, strides.row,
                            min(kBlockN, args.keys - keyBase), cols, vector);
  };
  const auto loadK = [&](int tile) {
    loadKeyTile(sKStages, args.k, args.kStrides, args.headDim, args.vectorK, tile);
  };
  const auto loadV = [&](int tile) {
    loadKeyTile(sVStages, args.v, args.vStrides, args.valueDim, args.vectorV, tile);
  };

  // Two stages: one group with Q and tile 0, one with tile 1 (empty when there is none), so that
  // every tile's group is followed by exactly one later group when the tile is waited for.
  loadTile<kBlockM, kDim>(sQ, q, args.qStrides.row, rows, args.headDim, args.vectorQ);
  if (keyTiles > 0) {
    loadK(0);
    if constexpr (kStages == 2) loadV(0);
  }
  cpAsyncCommit();
  if constexpr (kStages == 2) {
    if (keyTiles > 1) {
      loadK(1);
      loadV(1);
    }
    cpAsyncCommit();
  }

  // This thread's two rows of every m16n8 fragment: lane / 4 and lane / 4 + 8 of its warp's 16.
  const int fragmentRow = warp * 16 + lane / 4;
  const int query[2] = {rowStart + fragmentRow, rowStart + fragmentRow + 8};
  int64_t maskRow[2] = {0, 0};
  if (args.maskKind != MaskKind::kNone) {
    for (int side = 0; side < 2; ++side) {
      maskRow[side] = batch * args.maskBatchStride + head * args.maskHeadStride +
                      query[side] * args.maskRowStride;
    }
  }

  // ldmatrix.x4 row addresses: lane l gives row l % 8 of matrix l / 8.
  const int matrixRow = lane % 8;
  const int matrix = lane / 8;
  // Q (A operand, 16x16): matrices (rows 0-7 | 8-15) x (columns 0-7 | 8-15), column-major order.
  // Shared byte addresses; kBytes turns element offsets into byte offsets.
  constexpr uint32_t kBytes = sizeof(uint16_t);
  const uint32_t qFragment =
      sharedAddress(sQ) +
      kBytes * ((warp * 16 + matrixRow + (matrix % 2) * 8) * kPitchElems + (matrix / 2) * 8);
  // K (B operand of two n8 tiles): matrices (keys 0-7 | 8-15) x (dims 0-7 | 8-15), row-major.
  const uint32_t kFragments =
      sharedAddress(sKStages) +
      kBytes * ((matrixRow + (matrix / 2) * 8) * kPitchElems + (matrix % 2) * 8);
  // V (B operand of two n8 tiles, transposed): (keys 0-7 | 8-15) x (dims 0-7 | 8-15), keys first.
  const uint32_t vFragments =
      sharedAddress(sVStages) +
      kBytes * ((matrixRow + (matrix % 2) * 8) * kPitchElems + (matrix / 2) * 8);

  // Work this warp can skip, decided per warp so that no lane diverges: all of it when its 16
  // rows are past the last query (ViT's 197 queries leave 3 of the last CTA's 4 warps idle), and
  // 16-key groups past the last key or, causal, past its last row (197 keys fill 5 of the last
  // tile's 64). Their scores stay 0 until masking makes them -inf, as before.
  const int warpRowStart = rowStart + warp * 16;
  const bool warpHasRows = warpRowStart < args.queries;
  const int warpKeyEnd = args.causal ? min(args.keys, warpRowStart + 16) : args.keys;

  float o[kOutTiles][4] = {};
  float rowMax[2] = {-INFINITY, -INFINITY};
  float rowSum[2] = {0.0f, 0.0f};  // this thread's part; the quad's parts are added at the end

  for (int tile = 0; tile < keyTiles; ++tile) {
    const int keyBase = tile * kBlockN;
    const uint32_t stageOffset = kBytes * (tile % kStages) * kStageElems;
    const uint32_t kFragment = kFragments + stageOffset;
    const uint32_t vFragment = vFragments + stageOffset;
    if constexpr (kStages == 2) {
      cpAsyncWaitAllButLast();  // K and V of this tile; the next tile's may still be landing
      __syncthreads();          // ... visible to all
    } else {
      cpAsyncWaitAll();  // K of this tile
      __syncthreads();   // ... visible to all, and every warp is done with the last tile's V
      loadV(tile);
      cpAsyncCommit();
    }

    float s[kScoreTiles][4] = {};
    if (warpHasRows) {
#pragma unroll
      for (int slice = 0; slice < kKSlices; ++slice) {
        // Q fragments are read again for every tile: holding them in registers instead would
        // cost the occupancy that kMinBlocksPerSm asks for.
        uint32_t a[4];
        ldmatrixX4(a, qFragment + kBytes * slice * 16);
#pragma unroll
        for (int pair = 0; pair < kScoreTiles / 2; ++pair) {
          if (keyBase + pair * 16 >= warpKeyEnd) break;
          uint32_t b[4];
          ldmatrixX4(b, kFragment + kBytes * (pair * 16 * kPitchElems + slice * 16));
          Mma::mma(s[2 * pair], a, b[0], b[1]);
          Mma::mma(s[2 * pair + 1], a, b[2], b[3]);
        }
      }
    }

#pragma unroll
    for (int t = 0; t < kScoreTiles; ++t) {
#pragma unroll
      for (int c = 0; c < 4; ++c) s[t][c] *= args.scaleLog2;
    }
    const bool partial = keyBase + kBlockN > args.keys;
    const bool diagonal = args.causal && keyBase + kBlockN - 1 > rowStart;
    if (partial || diagonal || args.maskKind != MaskKind::kNone) {
      switch (args.maskKind) {
        case MaskKind::kNone:
          maskScores<MaskKind::kNone>(s, args, keyBase, query, maskRow);
          break;
        case MaskKind::kBool:
          maskScores<MaskKind::kBool>(s, args, keyBase, query, maskRow);
          break;
        case MaskKind::kFloat32:
          maskScores<MaskKind::kFloat32>(s, args, keyBase, query, maskRow);
          break;
        case MaskKind::kFloat16:
          maskScores<MaskKind::kFloat16>(s, args, keyBase, query, maskRow);
          break;
        case MaskKind::kBFloat16:
          maskScores<MaskKind::kBFloat16>(s, args, keyBase, query, maskRow);
          break;
      }
    }

    // Online softmax: each row's four owners (a quad of lanes) agree on the new maximum.
#pragma unroll
    for (int side = 0; side < 2; ++side) {
      float tileMax = rowMax[side];
#pragma unroll
      for (int t = 0; t < kScoreTiles; ++t) {
        tileMax = fmaxf(tileMax, fmaxf(s[t][2 * side], s[t][2 * side + 1]));
      }
      tileMax = fmaxf(tileMax, __shfl_xor_sync(0xffffffffu, tileMax, 1));
      tileMax = fmaxf(tileMax, __shfl_xor_sync(0xffffffffu, tileMax, 2));
      // A row with no key yet keeps -inf; subtracting 0 then keeps exp2 at 0 instead of NaN.
      const float base = tileMax == -INFINITY ? 0.0f : tileMax;
      const float correction = fastExp2(rowMax[side] - base);
      rowMax[side] = tileMax;
      float sum = 0.0f;
#pragma unroll
      for (int t = 0; t < kScoreTiles; ++t) {
        s[t][2 * side] = fastExp2(s[t][2 * side] - base);
        s[t][2 * side + 1] = fastExp2(s[t][2 * side + 1] - base);
        sum += s[t][2 * side] + s[t][2 * side + 1];
      }
      rowSum[side] = rowSum[side] * correction + sum;
#pragma unroll
      for (int t = 0; t < kOutTiles; ++t) {
        o[t][2 * side] *= correction;
        o[t][2 * side + 1] *= correction;
      }
    }

    if constexpr (kStages == 1) {
      cpAsyncWaitAll();  // V of this tile
      __syncthreads();   // ... visible to all, and every warp is done with this tile's K
      if (tile + 1 < keyTiles) loadK(tile + 1);
      cpAsyncCommit();
    }

    // P (fp32 C fragments of two n8 tiles) is the A fragment of a 16-key slice as it stands.
#pragma unroll
    for (int slice = 0; slice < kBlockN / 16; ++slice) {
      if (!warpHasRows || keyBase + slice * 16 >= warpKeyEnd) break;
      const uint32_t a[4] = {Mma::pack(s[2 * slice][0], s[2 * slice][1]),
                             Mma::pack(s[2 * slice][2], s[2 * slice][3]),
                             Mma::pack(s[2 * slice + 1][0], s[2 * slice + 1][1]),
                             Mma::pack(s[2 * slice + 1][2], s[2 * slice + 1][3])};
#pragma unroll
      for (int pair = 0; pair < kOutTiles / 2; ++pair) {
        uint32_t b[4];
        ldmatrixX4Trans(b, vFragment + kBytes * (slice * 16 * kPitchElems + pair * 16));
        Mma::mma(o[2 * pair], a, b[0], b[1]);
        Mma::mma(o[2 * pair + 1], a, b[2], b[3]);
      }
    }

    if constexpr (kStages == 2) {
      __syncthreads();  // every warp is done with this tile's stage: load the tile after next
      if (tile + 2 < keyTiles) {
        loadK(tile + 2);
        loadV(tile + 2);
      }
      cpAsyncCommit();
    }
  }

  // Normalize, stage this warp's 16 rows in sQ (free once every copy landed and every warp is
  // past its last Q·K^T) and store them as whole rows.
  cpAsyncWaitAll();
  __syncthreads();
#pragma unroll
  for (int side = 0; side < 2; ++side) {
    float sum = rowSum[side];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inverse = sum == 0.0f ? 0.0f : 1.0f / sum;  // all keys excluded: zeros
    uint16_t* stage = sQ + (fragmentRow + side * 8) * kPitchElems + 2 * (lane % 4);
#pragma unroll
    for (int t = 0; t < kOutTiles; ++t) {
      *reinterpret_cast<uint32_t*>(stage + t * 8) =
          Mma::pack(o[t][2 * side] * inverse, o[t][2 * side + 1] * inverse);
    }
  }
  __syncwarp();
  uint16_t* out = static_cast<uint16_t*>(args.out) + batch * args.outStrides.batch +
                  head * args.outStrides.head;
  const uint16_t* staged = sQ + warp * 16 * kPitchElems;
  if (args.vectorOut) {
    constexpr int kChunks = kDim / 8;
#pragma unroll
    for (int pass = 0; pass < 16 * kChunks / 32; ++pass) {
      const int index = pass * 32 + lane;
      const int row = index / kChunks;
      const int column = index % kChunks * 8;
      if (warpRowStart + row < args.queries && column < args.valueDim) {
        *reinterpret_cast<uint4*>(out + (warpRowStart + row) * args.outStrides.row + column) =
            *reinterpret_cast<const uint4*>(staged + row * kPitchElems + column);
      }
    }
  } else {
#pragma unroll 4
    for (int pass = 0; pass < 16 * kDim / 32; ++pass) {
      const int index = pass * 32 + lane;
      const int row = index / kDim;
      const int column = index % kDim;
      if (warpRowStart + row < args.queries && column < args.valueDim) {
        out[(warpRowStart + row) * args.outStrides.row + column] =
            staged[row * kPitchElems + column];
      }
    }
  }
}

// ---- float32 kernel ---------------------------------------------------------------------------

template <MaskKind kMask>
__device__ __forceinline__ float floatScore(const KernelArgs& args, const float* qRow,
                                            const float* kRow, int64_t maskIndex) {
  float dot = 0.0f;
  for (int e = 0; e < args.headDim; ++e) dot = fmaf(qRow[e], kRow[e], dot);
  float x = dot * args.scaleLog2;
  if constexpr (kMask != MaskKind::kNone) x += maskValue<kMask>(args.mask, maskIndex);
  return x;
}

// Shared memory: K chunk (kKeyChunk rows of an odd pitch >= headDim, so that the lanes' rows
// fall in different banks), V chunk (kKeyChunk x valueDim), one q row per warp.
size_t floatSharedBytes(int headDim, int valueDim) {
  return sizeof(float) *
         (static_cast<size_t>(kKeyChunk) * ((headDim | 1) + valueDim) + kRowWarps * headDim);
}

__global__ void __launch_bounds__(kRowWarps * 32) attentionFloatKernel(KernelArgs args) {
  extern __shared__ uint4 attentionShared[];
  const int kPitchFloats = args.headDim | 1;
  float* sK = reinterpret_cast<float*>(attentionShared);
  float* sV = sK + kKeyChunk * kPitchFloats;
  float* sQ = sV + kKeyChunk * args.valueDim;

  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int rowStart = (static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x)) * kRowWarps;
  const int head = static_cast<int>(blockIdx.y);
  const int batch = static_cast<int>(blockIdx.z);
  const int kvHead = head / args.group;
  const int query = rowStart + warp;
  const bool rowValid = query < args.queries;
  const int keyEnd =
      args.causal ? min(args.keys, rowStart + min(kRowWarps, args.queries - rowStart)) : args.keys;

  const float* k =
      static_cast<const float*>(args.k) + batch * args.kStrides.batch + kvHead * args.kStrides.head;
  const float* v =
      static_cast<const float*>(args.v) + batch * args.vStrides.batch + kvHead * args.vStrides.head;
  float* qRow = sQ + warp * args.headDim;
  if (rowValid) {
    const float* q = static_cast<const float*>(args.q) + batch * args.qStrides.batch +
                     head * args.qStrides.head + query * args.qStrides.row;
    for (int e = lane; e < args.headDim; e += 32) qRow[e] = q[e];
  }
  const int64_t maskRow =
      batch * args.maskBatchStride + head * args.maskHeadStride + query * args.maskRowStride;

  float o[kMaxDimPerLane] = {};
  float rowMax = -INFINITY;
  float rowSum = 0.0f;  // this lane's part
  for (int keyBase = 0; keyBase < keyEnd; keyBase += kKeyChunk) {
    __syncthreads();  // every warp is done with the last chunk (and q rows are in place)
    for (int row = warp; row < kKeyChunk; row += kRowWarps) {
      const int key = keyBase + row;
      float* kDestination = sK + row * kPitchFloats;
      float* vDestination = sV + row * args.valueDim;
      if (key < args.keys) {
        const float* kSource = k + key * args.kStrides.row;
        const float* vSource = v + key * args.vStrides.row;
        for (int e = lane; e < args.headDim; e += 32) kDestination[e] = kSource[e];
        for (int e = lane; e < args.valueDim; e += 32) vDestination[e] = vSource[e];
      } else {
        // Zeros, not garbage: a NaN times a zero weight would still be NaN.
        for (int e = lane; e < args.headDim; e += 32) kDestination[e] = 0.0f;
        for (int e = lane; e < args.valueDim; e += 32) vDestination[e] = 0.0f;
      }
    }
    __syncthreads();

    // Lane l scores key keyBase + l.
    const int key = keyBase + lane;
    float x = -INFINITY;
    if (rowValid && key < args.keys && !(args.causal && key > query)) {
      const float* kRow = sK + lane * kPitchFloats;
      switch (args.maskKind) {
        case MaskKind::kNone:
          x = floatScore<MaskKind::kNone>(args, qRow, kRow, 0);
          break;
        case MaskKind::kBool:
          x = floatScore<MaskKind::kBool>(args, qRow, kRow, maskRow + key);
          break;
        case MaskKind::kFloat32:
          x = floatScore<MaskKind::kFloat32>(args, qRow, kRow, maskRow + key);
          break;
        case MaskKind::kFloat16:
          x = floatScore<MaskKind::kFloat16>(args, qRow, kRow, maskRow + key);
          break;
        case MaskKind::kBFloat16:
          x = floatScore<MaskKind::kBFloat16>(args, qRow, kRow, maskRow + key);
          break;
      }
    }
    float chunkMax = fmaxf(rowMax, x);
    for (int offset = 16; offset > 0; offset /= 2) {
      chunkMax = fmaxf(chunkMax, __shfl_xor_sync(0xffffffffu, chunkMax, offset));
    }
    const float base = chunkMax == -INFINITY ? 0.0f : chunkMax;
    const float correction = exp2f(rowMax - base);
    rowMax = chunkMax;
    const float p = exp2f(x - base);
    rowSum = rowSum * correction + p;
#pragma unroll
    for (int i = 0; i < kMaxDimPerLane; ++i) o[i] *= correction;
#pragma unroll 4
    for (int j = 0; j < kKeyChunk; ++j) {
      const float weight = __shfl_sync(0xffffffffu, p, j);
      const float* vRow = sV + j * args.valueDim;
#pragma unroll
      for (int i = 0; i < kMaxDimPerLane; ++i) {
        const int e = lane + 32 * i;
        if (e < args.valueDim) o[i] = fmaf(weight, vRow[e], o[i]);
      }
    }
  }

  for (int offset = 16; offset > 0; offset /= 2) {
    rowSum += __shfl_xor_sync(0xffffffffu, rowSum, offset);
  }
  if (!rowValid) return;
  const float inverse = rowSum == 0.0f ? 0.0f : 1.0f / rowSum;  // all keys excluded: zeros
  float* out = static_cast<float*>(args.out) + batch * args.outStrides.batch +
               head * args.outStrides.head + query * args.outStrides.row;
#pragma unroll
  for (int i = 0; i < kMaxDimPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < args.valueDim) out[e] = o[i] * inverse;
  }
}

// ---- host side --------------------------------------------------------------------------------

// The kernel's mask template argument for validated params.
MaskKind maskKindOf(const AttentionParams& p) {
  switch (p.mask) {
    case AttentionMask::kBool:
      return MaskKind::kBool;
    case AttentionMask::kAdditive:
      return p.maskType == ScalarType::kFloat32   ? MaskKind::kFloat32
             : p.maskType == ScalarType::kFloat16 ? MaskKind::kFloat16
                                                  : MaskKind::kBFloat16;
    default:
      return MaskKind::kNone;
  }
}

// 16-byte vectors need the pointer, the row length and every stride in whole vectors.
bool vectorizable(const void* pointer, const AttentionStrides& strides, int64_t rowLength) {
  constexpr int64_t kVector = 8;  // fp16/bf16 elements in 16 bytes
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0 && rowLength % kVector == 0 &&
         strides.batch % kVector == 0 && strides.head % kVector == 0 && strides.row % kVector == 0;
}

template <typename Kernel>
void launch(Kernel kernel, dim3 grid, int threads, size_t sharedBytes, cudaStream_t stream,
            const KernelArgs& args) {
  if (sharedBytes > kDefaultSharedBytes) {
    // A function attribute, not stream work: allowed while a graph is being captured.
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(sharedBytes)));
  }
  kernel<<<grid, threads, sharedBytes, stream>>>(args);
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launchTensorCore(int64_t dim, dim3 grid, cudaStream_t stream, const KernelArgs& args) {
  const auto run = [&](auto paddedDim) {
    constexpr int kDim = decltype(paddedDim)::value;
    launch(attentionTensorCoreKernel<T, kDim>, grid, kThreads, kTensorCoreSharedBytes<kDim>, stream,
           args);
  };
  // The smallest instance that holds both head dims.
  switch ((dim + 31) / 32) {
    case 1:
      return run(std::integral_constant<int, 32>{});
    case 2:
      return run(std::integral_constant<int, 64>{});
    case 3:
      return run(std::integral_constant<int, 96>{});
    case 4:
      return run(std::integral_constant<int, 128>{});
    case 5:
      return run(std::integral_constant<int, 160>{});
    case 6:
      return run(std::integral_constant<int, 192>{});
    case 7:
      return run(std::integral_constant<int, 224>{});
    default:
      return run(std::integral_constant<int, 256>{});
  }
}

}  // namespace

void attention(const AttentionParams& params, const void* q, const void* k, const void* v,
               const void* mask, void* out, cudaStream_t stream) {
  kernels::validateAttention(params,
                             {kMaxGridYZ, std::numeric_limits<int32_t>::max(), /*halfTypes=*/true},
                             q, k, v, mask, out);
  if (params.batch == 0 || params.queries == 0) return;
  const MaskKind maskKind = maskKindOf(params);

  KernelArgs args{};
  args.qStrides = params.q;
  args.kStrides = params.k;
  args.vStrides = params.v;
  args.outStrides = params.out;
  args.maskBatchStride = params.maskBatchStride;
  args.maskHeadStride = params.maskHeadStride;
  args.maskRowStride = params.maskRowStride;
  args.queries = static_cast<int>(params.queries);
  args.keys = static_cast<int>(params.keys);
  args.headDim = static_cast<int>(params.headDim);
  args.valueDim = static_cast<int>(params.valueDim);
  args.group = static_cast<int>(params.heads / params.kvHeads);
  args.scaleLog2 = params.scale * kLog2e;
  args.causal = params.causal;
  args.maskKind = maskKind;
  const bool tensorCores = params.type != ScalarType::kFloat32;
  if (tensorCores) {
    args.vectorQ = vectorizable(q, params.q, params.headDim);
    args.vectorK = vectorizable(k, params.k, params.headDim);
    args.vectorV = vectorizable(v, params.v, params.valueDim);
    args.vectorOut = vectorizable(out, params.out, params.valueDim);
  }

  // gridDim.z takes at most 65535 batches; larger batches go in slices.
  const size_t elementSize = scalarSize(params.type);
  const size_t maskElementSize = maskKind == MaskKind::kNone ? 0 : scalarSize(params.maskType);
  const int64_t rowsPerCta = tensorCores ? kBlockM : kRowWarps;
  // Null stays null (k, v and mask may be when there are no keys or no mask).
  const auto offset = [](const void* pointer, int64_t elements, size_t size) -> const void* {
    if (pointer == nullptr) return nullptr;
    return static_cast<const uint8_t*>(pointer) + elements * static_cast<int64_t>(size);
  };
  for (int64_t first = 0; first < params.batch; first += kMaxGridYZ) {
    const int64_t batches = std::min(kMaxGridYZ, params.batch - first);
    args.q = offset(q, first * params.q.batch, elementSize);
    args.k = offset(k, first * params.k.batch, elementSize);
    args.v = offset(v, first * params.v.batch, elementSize);
    args.mask = offset(mask, first * params.maskBatchStride, maskElementSize);
    args.out =
        static_cast<uint8_t*>(out) + first * params.out.batch * static_cast<int64_t>(elementSize);
    const dim3 grid(static_cast<unsigned>((params.queries + rowsPerCta - 1) / rowsPerCta),
                    static_cast<unsigned>(params.heads), static_cast<unsigned>(batches));
    const int64_t dim = std::max(params.headDim, params.valueDim);
    switch (params.type) {
      case ScalarType::kFloat16:
        launchTensorCore<__half>(dim, grid, stream, args);
        break;
      case ScalarType::kBFloat16:
        launchTensorCore<__nv_bfloat16>(dim, grid, stream, args);
        break;
      default:
        launch(attentionFloatKernel, grid, kRowWarps * 32,
               floatSharedBytes(args.headDim, args.valueDim), stream, args);
        break;
    }
  }
}

}  // namespace kiln::cuda_kernels

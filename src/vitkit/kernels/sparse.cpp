// The unstructured-sparse linear kernel (sparse.h).
//
// Y (M, out) = act(X (M, in) W^T + b), W (out, in) in CSR. X's rows are taken
// in blocks of R vectors of VW rows (R <= kMaxR: 128 rows with AVX-512, 64 with
// AVX2; M split evenly so that no block is a small remainder); each block is
// transposed into XT (in, ld) (ld = R * VW, padded with zeros past M), so that a
// nonzero w = W[o, j] is one AXPY over a contiguous run of m:
//     YT[o, 0:ld] += w * XT[j, 0:ld]
// with YT's row (R vectors) held in registers over all of row o's nonzeros.
// XT's rows are read from L2 for in > 128 (L1 below): that bandwidth, not the
// FMAs, bounds the kernel (about a third of the FMA peak; see
// docs/pruning-sparse-kernel.md for the variants measured).
// Sixteen rows o at a time go to a small tile T and are transposed back into Y
// eight at a time with the epilogue (bias, the previous Y when accumulating);
// then the activation runs over the rows of Y the thread wrote (act_forward).
//
// Work items are (m block, tile of 16 outputs), m block major; threads take
// contiguous runs of items of about equal cost (nonzeros times vectors), so a
// thread transposes each m block it touches once, and every element is
// computed the same way whatever the split: the same bits on 1 or n threads.
#include "vitkit/kernels/sparse.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"

namespace vitkit::kernels {

namespace {

// One vector of floats: AVX-512 where the build has it (the dense oneDNN GEMM
// uses it there too), else AVX2. kMaxR: the most accumulator vectors per output
// row (with the broadcast weight, 9 of AVX2's 16 or AVX-512's 32 registers).
#ifdef __AVX512F__
constexpr int VW = 16;
#else
constexpr int VW = 8;
#endif
constexpr int kMaxR = 8;
constexpr int64_t kL1Floats = 8192;  // XT blocks up to this size (32 KB) stay in L1
constexpr int64_t kMaxMB = int64_t(VW) * kMaxR;  // the most rows of X per block
constexpr int kOG = 8;                        // outputs per 8x8 transposition in the epilogue
constexpr int kOT = 16;                       // outputs per work item (tile)
constexpr int64_t kRowCost = 4;         // a row's fixed cost in nonzeros (for the partition)
constexpr int64_t kParallelWork = 1 << 18;  // multiply-adds (vector lanes) below which one thread runs

// A vector of VW floats (GCC vector extension: kept in registers, FMA-fused),
// loaded and stored unaligned.
typedef float vf __attribute__((vector_size(VW * sizeof(float)), aligned(4), may_alias));

// r0..r7 (8 rows of 8 floats) transposed in place.
inline void transpose8(__m256& r0, __m256& r1, __m256& r2, __m256& r3, __m256& r4, __m256& r5, __m256& r6,
                       __m256& r7) {
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r0 = _mm256_permute2f128_ps(s0, s4, 0x20);
  r1 = _mm256_permute2f128_ps(s1, s5, 0x20);
  r2 = _mm256_permute2f128_ps(s2, s6, 0x20);
  r3 = _mm256_permute2f128_ps(s3, s7, 0x20);
  r4 = _mm256_permute2f128_ps(s0, s4, 0x31);
  r5 = _mm256_permute2f128_ps(s1, s5, 0x31);
  r6 = _mm256_permute2f128_ps(s2, s6, 0x31);
  r7 = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// dst (8, ldd)[r, c] = src (8, lds)[c, r]: one 8x8 tile.
inline void transpose8_tile(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds), r2 = _mm256_loadu_ps(src + 2 * lds),
         r3 = _mm256_loadu_ps(src + 3 * lds), r4 = _mm256_loadu_ps(src + 4 * lds),
         r5 = _mm256_loadu_ps(src + 5 * lds), r6 = _mm256_loadu_ps(src + 6 * lds),
         r7 = _mm256_loadu_ps(src + 7 * lds);
  transpose8(r0, r1, r2, r3, r4, r5, r6, r7);
  _mm256_storeu_ps(dst, r0);
  _mm256_storeu_ps(dst + ldd, r1);
  _mm256_storeu_ps(dst + 2 * ldd, r2);
  _mm256_storeu_ps(dst + 3 * ldd, r3);
  _mm256_storeu_ps(dst + 4 * ldd, r4);
  _mm256_storeu_ps(dst + 5 * ldd, r5);
  _mm256_storeu_ps(dst + 6 * ldd, r6);
  _mm256_storeu_ps(dst + 7 * ldd, r7);
}

// XT (in, ld) = X (mb, in) transposed, XT[j, i] = 0 for mb <= i < ld.
void transpose_block(const float* X, int64_t in, int64_t mb, float* XT, int64_t ld) {
  int64_t i = 0;
  for (; i + 8 <= mb; i += 8) {
    const float* x = X + i * in;
    int64_t j = 0;
    for (; j + 8 <= in; j += 8) transpose8_tile(x + j, in, XT + j * ld + i, ld);
    for (; j < in; ++j)
      for (int64_t r = 0; r < 8; ++r) XT[j * ld + i + r] = x[r * in + j];
  }
  if (i < ld)
    for (int64_t j = 0; j < in; ++j)
      for (int64_t r = i; r < ld; ++r) XT[j * ld + r] = r < mb ? X[r * in + j] : 0.f;
}

// out (R * VW) = sum over k < n of val[k] * XT[col[k], 0 : R * VW]; XT (in, ld).
template <int R>
void row_times(const int32_t* col, const float* val, int64_t n, const float* XT, int64_t ld, float* out) {
  vf acc[R];
  for (int r = 0; r < R; ++r) acc[r] = vf{};
#pragma GCC unroll 2
  for (int64_t k = 0; k < n; ++k) {
    const float w = val[k];
    const float* x = XT + int64_t(col[k]) * ld;
    for (int r = 0; r < R; ++r) acc[r] += w * *reinterpret_cast<const vf*>(x + r * VW);
  }
  for (int r = 0; r < R; ++r) *reinterpret_cast<vf*>(out + r * VW) = acc[r];
}

using RowFn = void (*)(const int32_t*, const float*, int64_t, const float*, int64_t, float*);

// row_times<R> for R = 1 .. kMaxR (index 0 unused).
template <int... R>
constexpr auto row_fns(std::integer_sequence<int, R...>) {
  return std::array<RowFn, sizeof...(R) + 1>{nullptr, &row_times<R + 1>...};
}
constexpr auto kRowFns = row_fns(std::make_integer_sequence<int, kMaxR>{});

// T (nr, ld) = W's rows o0 .. o0+nr times XT (in, ld) (R = ld / VW vectors).
void tile_times(const CsrRef& W, int64_t o0, int nr, int R, const float* XT, int64_t ld, float* T) {
  const RowFn fn = kRowFns[R];
  for (int r = 0; r < nr; ++r) {
    const int32_t b = W.row_ptr[o0 + r], e = W.row_ptr[o0 + r + 1];
    fn(W.col + b, W.val + b, e - b, XT, ld, T + r * ld);
  }
}

// Y[i, r] = T[r, i] + b[r] (+ Y[i, r] when accumulate) for i < mb, r < ng:
// T (ng, ld), Y (mb, ldy) (the group's first column), b (ng) or null.
void store_group(const float* T, int64_t ld, int ng, int64_t mb, const float* b, bool accumulate, float* Y,
                 int64_t ldy) {
  int64_t i = 0;
  if (ng == kOG) {
    const __m256 bv = b ? _mm256_loadu_ps(b) : _mm256_setzero_ps();
    alignas(32) float t[8 * 8];
    for (; i + 8 <= mb; i += 8) {
      transpose8_tile(T + i, ld, t, 8);
      for (int q = 0; q < 8; ++q) {
        float* y = Y + (i + q) * ldy;
        __m256 v = _mm256_add_ps(_mm256_load_ps(t + 8 * q), bv);
        if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
        _mm256_storeu_ps(y, v);
      }
    }
  }
  for (; i < mb; ++i)
    for (int r = 0; r < ng; ++r) {
      float v = T[r * ld + i] + (b ? b[r] : 0.f);
      if (accumulate) v += Y[i * ldy + r];
      Y[i * ldy + r] = v;
    }
}

// One call's operands and its work items: (m block, tile of kOT outputs), block major.
struct Job {
  const float* X;
  CsrRef W;
  const float* bias;
  float* Y;
  int64_t M, in, out;
  Activation act;
  bool accumulate;
  int64_t tiles;
  std::vector<int64_t> tcum;  // tiles + 1: cost of the tiles before t (nonzeros + kRowCost per row)
  // M's rows as vectors of VW (the last one partial), split evenly into blocks
  // of at most rmax vectors: block b has q or q + 1 (the first rem blocks).
  int64_t vectors = 0, blocks = 0, q = 0, rem = 0;

  int64_t block_first_vector(int64_t b) const { return b * q + std::min(b, rem); }
  int64_t block_vectors(int64_t b) const { return q + (b < rem); }
  int64_t block_first_row(int64_t b) const { return VW * block_first_vector(b); }
  int64_t block_rows(int64_t b) const { return std::min(VW * block_vectors(b), M - block_first_row(b)); }
  // Cost of all items before block b.
  int64_t block_start_cost(int64_t b) const { return block_first_vector(b) * tcum[tiles]; }
  int64_t total_cost() const { return vectors * tcum[tiles]; }
  int64_t items() const { return blocks * tiles; }
};

Job make_job(const float* X, const CsrRef& W, const float* bias, float* Y, int64_t M, Activation act, bool accumulate) {
  Job j{X, W, bias, Y, M, W.cols, W.rows, act, accumulate, (W.rows + kOT - 1) / kOT, {}};
  // Blocks of kMaxR vectors, or half as many where XT's block then fits L1
  // (64 < in <= 128 with AVX-512): L1-resident rows are read about twice as fast.
  const int64_t half = kMaxR / 2, in = W.cols;
  const bool fits_half = in * half * VW <= kL1Floats, fits_full = in * kMaxR * VW <= kL1Floats;
  const int64_t rmax = fits_half && !fits_full ? half : kMaxR;
  j.vectors = (M + VW - 1) / VW;
  j.blocks = (j.vectors + rmax - 1) / rmax;
  j.q = j.vectors / j.blocks;
  j.rem = j.vectors % j.blocks;
  j.tcum.resize(size_t(j.tiles) + 1);
  j.tcum[0] = 0;
  for (int64_t t = 0; t < j.tiles; ++t) {
    const int64_t o0 = t * kOT, o1 = std::min(j.out, o0 + kOT);
    j.tcum[t + 1] = j.tcum[t] + (W.row_ptr[o1] - W.row_ptr[o0]) + kRowCost * (o1 - o0);
  }
  return j;
}

// The first item whose cost before it, S, has S * nt >= t * C (C the total):
// thread t of nt runs the items from first_item(t) to first_item(t + 1).
int64_t first_item(const Job& j, int t, int nt) {
  if (t == 0) return 0;
  if (t >= nt) return j.items();
  const int64_t target = int64_t(t) * j.total_cost();
  for (int64_t b = 0; b < j.blocks; ++b) {
    const int64_t need = target - j.block_start_cost(b) * nt;  // S - block start must reach need / nt
    if (need <= 0) return b * j.tiles;
    const int64_t per = j.block_vectors(b) * nt;
    const int64_t i = std::lower_bound(j.tcum.begin(), j.tcum.end() - 1, (need + per - 1) / per) - j.tcum.begin();
    if (i < j.tiles) return b * j.tiles + i;
  }
  return j.items();
}

// This thread's block of transposed X (in, kMaxMB), 64-byte aligned.
float* thread_xt(int64_t in) {
  thread_local std::vector<float> buf;
  const size_t need = size_t(in) * kMaxMB + 16;
  if (buf.size() < need) buf.resize(need);
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
}

// Y[r, o0:o1] = act(Y[r, o0:o1]) for r < mb; Y (mb, out). act_forward's
// serial loop gives each element the same bits wherever it lies (its parallel
// loop, above 65536 elements, rounds GELU differently), so it is called on at
// most kActChunk elements at once: the result then does not depend on how the
// work was split over threads. Whole rows are contiguous: few calls (each one
// reads the thread count).
constexpr int64_t kActChunk = 65536;
void apply_act(Activation act, float* Y, int64_t mb, int64_t out, int64_t o0, int64_t o1) {
  if (o0 == 0 && o1 == out) {
    for (int64_t i = 0; i < mb * out; i += kActChunk) act_forward(act, Y + i, Y + i, std::min(kActChunk, mb * out - i));
    return;
  }
  for (int64_t r = 0; r < mb; ++r)
    for (int64_t o = o0; o < o1; o += kActChunk) {
      float* y = Y + r * out + o;
      act_forward(act, y, y, std::min(kActChunk, o1 - o));
    }
}

// Runs items [begin, end) on this thread: per m block, the tiles in range.
void run_items(const Job& j, int64_t begin, int64_t end) {
  if (begin >= end) return;
  float* XT = thread_xt(j.in);
  alignas(64) float T[kOT * kMaxMB];
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / j.tiles, t0 = i % j.tiles, t1 = std::min(j.tiles, end - b * j.tiles);
    const int64_t m0 = j.block_first_row(b), mb = j.block_rows(b);
    const int R = int(j.block_vectors(b));
    const int64_t ld = int64_t(R) * VW;
    transpose_block(j.X + m0 * j.in, j.in, mb, XT, ld);
    float* Yb = j.Y + m0 * j.out;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o0 = t * kOT;
      const int nr = int(std::min<int64_t>(kOT, j.out - o0));
      tile_times(j.W, o0, nr, R, XT, ld, T);
      for (int g = 0; g < nr; g += kOG)
        store_group(T + g * ld, ld, std::min(kOG, nr - g), mb, j.bias ? j.bias + o0 + g : nullptr, j.accumulate,
                    Yb + o0 + g, j.out);
    }
    if (j.act != Activation::None) apply_act(j.act, Yb, mb, j.out, t0 * kOT, std::min(j.out, t1 * kOT));
    i = (b + 1) * j.tiles;
  }
}

}  // namespace

Csr csr_from_dense(const float* W, int rows, int cols) {
  check(rows >= 0 && cols >= 0, "csr_from_dense: negative size (", rows, "x", cols, ")");
  Csr c;
  c.rows = rows;
  c.cols = cols;
  c.row_ptr.resize(size_t(rows) + 1);
  int64_t nnz = 0;
  for (int64_t i = 0; i < int64_t(rows) * cols; ++i) nnz += W[i] != 0.f;
  check(nnz <= std::numeric_limits<int32_t>::max(), "csr_from_dense: ", nnz,
        " nonzeros do not fit 32-bit row pointers");
  c.col.reserve(size_t(nnz));
  c.val.reserve(size_t(nnz));
  for (int64_t o = 0; o < rows; ++o) {
    const float* w = W + o * cols;
    for (int j = 0; j < cols; ++j)
      if (w[j] != 0.f) {
        c.col.push_back(j);
        c.val.push_back(w[j]);
      }
    c.row_ptr[size_t(o) + 1] = int32_t(c.col.size());
  }
  return c;
}

void csr_to_dense(const Csr& W, float* out) {
  std::fill(out, out + int64_t(W.rows) * W.cols, 0.f);
  for (int64_t o = 0; o < W.rows; ++o)
    for (int32_t k = W.row_ptr[o]; k < W.row_ptr[o + 1]; ++k) out[o * W.cols + W.col[k]] = W.val[k];
}

void sparse_linear(const float* X, const Csr& W, const float* bias, float* Y, int64_t M, Activation act,
                   bool accumulate) {
  check(W.rows >= 0 && W.cols >= 0 && W.row_ptr.size() == size_t(W.rows) + 1 && W.col.size() == W.val.size(),
        "sparse_linear: inconsistent CSR weight (", W.rows, "x", W.cols, ", ", W.row_ptr.size(), " row pointers, ",
        W.col.size(), " columns, ", W.val.size(), " values)");
  sparse_linear(X, csr_ref(W), bias, Y, M, act, accumulate);
}

void sparse_linear(const float* X, const CsrRef& W, const float* bias, float* Y, int64_t M, Activation act,
                   bool accumulate) {
  check(W.rows >= 0 && W.cols >= 0 && W.row_ptr && W.row_ptr[0] == 0 && W.row_ptr[W.rows] == W.nnz,
        "sparse_linear: inconsistent CSR weight (", W.rows, "x", W.cols, ", ", W.nnz, " values, row pointers from ",
        W.row_ptr ? W.row_ptr[0] : -1, " to ", W.row_ptr ? W.row_ptr[W.rows] : -1, ")");
  for (int64_t o = 0; o < W.rows; ++o)
    check(W.row_ptr[o] <= W.row_ptr[o + 1], "sparse_linear: CSR row pointers decrease at row ", o);
  if (M <= 0 || W.rows == 0) return;
  const Job j = make_job(X, W, bias, Y, M, act, accumulate);
  // Multiply-adds over vector lanes (a row's epilogue counted as kRowCost nonzeros).
  const int64_t work = j.total_cost() * VW;
  const int nt = omp_in_parallel() || work < kParallelWork ? 1 : int(std::min<int64_t>(num_threads(), j.items()));
  if (nt <= 1) {
    run_items(j, 0, j.items());
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    run_items(j, first_item(j, t, n), first_item(j, t + 1, n));
  }
}

// The crossover measured by bench/sparse_bench.cpp on the 2-core AMD EPYC
// (Zen 4, AVX-512; oneDNN's f32 matmul there runs near the FMA peak at ViT-B
// shapes), docs/pruning-sparse-kernel.md, as a density threshold by `in` (which
// decides where XT's block lives: L1 for in <= 128, L2 up to 768, beyond L2 at
// 3072), with M >= 50:
//   AVX-512 build: sparse won at <= 0.4 for in <= 128 (1.2-1.8x at 0.4), at
//     <= 0.3 for in <= 768 (1.2-2.1x at 0.3; about even at 0.4), at <= 0.2 for
//     in 3072 (1.1-1.8x at 0.2; even or lost at 0.3).
//   AVX2 build (VITKIT_NATIVE=OFF) on the same CPU, against the same AVX-512
//     oneDNN: at <= 0.3 for in <= 256, at <= 0.2 above.
// Below 16 rows (fewer than a vector's lanes busy) it won only from 0.1.
bool sparse_is_faster(double density, int64_t M, int in, int out) {
  if (M <= 0 || in <= 0 || out <= 0) return false;  // nothing to multiply: no kernel to choose
  double threshold;
  if (M < 16)
    threshold = 0.1;
  else if (VW == 16)
    threshold = in <= 128 ? 0.4 : in <= 1024 ? 0.3 : 0.2;
  else
    threshold = in <= 256 ? 0.3 : 0.2;
  return density <= threshold;
}

}  // namespace vitkit::kernels

#include "vitkit/kernels/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/vecmath.h"

namespace vitkit::kernels {

namespace {

// Register blocking: RB query rows at a time against VW keys (or head-dim
// columns) at a time; fixed sizes so that the compiler keeps the RB x VW
// accumulators in vector registers.
// One vector of floats: RB x VW accumulators take 8 of the 32 AVX-512
// registers, or 8 of AVX2's 16 (VW = 16 on AVX2 spilled: 2.5x slower).
#ifdef __AVX512F__
constexpr int64_t VW = 16;
#else
constexpr int64_t VW = 8;
#endif
constexpr int64_t RB = 8;     // rows per micro-block
constexpr int64_t kQTile = 32;   // query rows per work item (forward)
constexpr int64_t kKTile = 256;  // keys per online-softmax step (forward)

inline int64_t pad(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A vector of VW floats (GCC vector extension: kept in registers, FMA-fused),
// loaded and stored unaligned.
typedef float vf __attribute__((vector_size(VW * sizeof(float)), aligned(4), may_alias));
inline vf vload(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void vstore(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
#ifdef __AVX512F__
inline vf vbroadcast(float x) { return (vf)_mm512_set1_ps(x); }
#else
inline vf vbroadcast(float x) { return (vf)_mm256_set1_ps(x); }
#endif

// S (RB, ncols) = A (RB, d) . Bt[:, c0 .. c0+ncols) where Bt is (d, ldb) and
// ncols a multiple of VW. S has leading dimension lds.
inline void rows_times_cols(const float* A, int64_t lda, const float* Bt, int64_t ldb, int64_t d, int64_t c0,
                            int64_t ncols, float* S, int64_t lds) {
  for (int64_t c = 0; c < ncols; c += VW) {
    vf acc[RB] = {};
    for (int64_t k = 0; k < d; ++k) {
      const vf b = vload(Bt + k * ldb + c0 + c);
      for (int64_t r = 0; r < RB; ++r) acc[r] += vbroadcast(A[r * lda + k]) * b;
    }
    for (int64_t r = 0; r < RB; ++r) vstore(S + r * lds + c, acc[r]);
  }
}

// C (RB, dp) += P (RB, n) . Bp (n, dp), dp a multiple of VW; P has leading
// dimension ldp, Bp ldb (>= dp), C dp.
inline void rows_times_rows(const float* P, int64_t ldp, const float* Bp, int64_t ldb, int64_t n, int64_t dp,
                            float* C) {
  for (int64_t c = 0; c < dp; c += VW) {
    vf acc[RB];
    for (int64_t r = 0; r < RB; ++r) acc[r] = vload(C + r * dp + c);
    for (int64_t j = 0; j < n; ++j) {
      const vf b = vload(Bp + j * ldb + c);
      for (int64_t r = 0; r < RB; ++r) acc[r] += vbroadcast(P[r * ldp + j]) * b;
    }
    for (int64_t r = 0; r < RB; ++r) vstore(C + r * dp + c, acc[r]);
  }
}

// Acc (n, dp) += P^T (n, RB) . A (RB, dp): Acc[j] += sum_r P[r][j] A[r].
// Two output rows at a time, each summed in two chains (FMA latency).
inline void cols_times_rows(const float* P, int64_t ldp, const float* A, int64_t n, int64_t dp, float* Acc) {
  for (int64_t c = 0; c < dp; c += VW) {
    vf a[RB];
    for (int64_t r = 0; r < RB; ++r) a[r] = vload(A + r * dp + c);
    int64_t j = 0;
    for (; j + 1 < n; j += 2) {
      float* o0 = Acc + j * dp + c;
      float* o1 = o0 + dp;
      vf x0 = vload(o0), x1 = {}, y0 = vload(o1), y1 = {};
      for (int64_t r = 0; r < RB; r += 2) {
        x0 += vbroadcast(P[r * ldp + j]) * a[r];
        y0 += vbroadcast(P[r * ldp + j + 1]) * a[r];
        x1 += vbroadcast(P[(r + 1) * ldp + j]) * a[r + 1];
        y1 += vbroadcast(P[(r + 1) * ldp + j + 1]) * a[r + 1];
      }
      vstore(o0, x0 + x1);
      vstore(o1, y0 + y1);
    }
    for (; j < n; ++j) {
      float* o = Acc + j * dp + c;
      vf x = vload(o);
      for (int64_t r = 0; r < RB; ++r) x += vbroadcast(P[r * ldp + j]) * a[r];
      vstore(o, x);
    }
  }
}

// dst (8, ldd) = src (8, lds)^T for an 8 x 8 block, through eight AVX registers.
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));      // a0 b0 c0 d0 | a4 ..
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));  // a1 b1 c1 d1 | a5 ..
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}

// dst (d, Tp) = src (T, d)^T (src rows ld apart), zero in columns T .. Tp-1:
// whole 8 x 8 blocks through registers, the edges element by element.
inline void pack_transposed(const float* src, int64_t ld, int64_t T, int64_t d, int64_t Tp, float* dst) {
  for (int64_t k = 0; k < d; ++k) std::fill(dst + k * Tp + T, dst + (k + 1) * Tp, 0.f);
  int64_t j0 = 0;
  for (; j0 + 8 <= T; j0 += 8) {
    int64_t k0 = 0;
    for (; k0 + 8 <= d; k0 += 8) transpose8x8(src + j0 * ld + k0, ld, dst + k0 * Tp + j0, Tp);
    for (; k0 < d; ++k0)
      for (int64_t j = j0; j < j0 + 8; ++j) dst[k0 * Tp + j] = src[j * ld + k0];
  }
  for (; j0 < T; ++j0)
    for (int64_t k = 0; k < d; ++k) dst[k * Tp + j0] = src[j0 * ld + k];
}

// dst (Tp, dp) = src (T, d) (rows ld apart), zero-padded to Tp rows and dp columns.
inline void pack_rows(const float* src, int64_t ld, int64_t T, int64_t d, int64_t Tp, int64_t dp, float* dst) {
  std::fill(dst, dst + Tp * dp, 0.f);
  for (int64_t j = 0; j < T; ++j) std::memcpy(dst + j * dp, src + j * ld, sizeof(float) * d);
}

// One head of one image for the backward pass, packed once per work item:
// qs (Tp, dp) = Q, kt (d, Tp) = K^T, vp (Tp, dp) = V, kp (Tp, dp) = K and
// vt (d, Tp) = V^T; zero-padded to Tp rows/keys and dp columns.
struct HeadPack {
  std::vector<float> qs, kt, vp, kp, vt;
  void pack(const float* qkv, int64_t b, int64_t h, int64_t T, int64_t D, int64_t d, int64_t Tp, int64_t dp) {
    const int64_t ld = 3 * D;
    const float* base = qkv + b * T * ld + h * d;
    for (auto* v : {&qs, &vp, &kp}) v->resize(static_cast<size_t>(Tp * dp));
    for (auto* v : {&kt, &vt}) v->resize(static_cast<size_t>(d * Tp));
    pack_rows(base, ld, T, d, Tp, dp, qs.data());
    pack_rows(base + D, ld, T, d, Tp, dp, kp.data());
    pack_rows(base + 2 * D, ld, T, d, Tp, dp, vp.data());
    pack_transposed(base + D, ld, T, d, Tp, kt.data());
    pack_transposed(base + 2 * D, ld, T, d, Tp, vt.data());
  }
};

// Largest of x[0 .. n).
inline float row_max(const float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t c = 0;
  if (n >= VW) {
    vf m = vload(x);
    for (c = VW; c + VW <= n; c += VW) {
      const vf v = vload(x + c);
      m = m > v ? m : v;
    }
    for (int64_t i = 0; i < VW; ++i) mx = std::max(mx, m[i]);
  }
  for (; c < n; ++c) mx = std::max(mx, x[c]);
  return mx;
}

// Each thread's packed head and work buffers, kept between calls: they only
// grow, so after the first call of a shape the hot path allocates nothing.
struct Scratch {
  HeadPack hp;
  std::vector<float> buf[7];
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

void attention_forward(const float* qkv, float* out, float* lse, int64_t B, int64_t T, int64_t H, int64_t d,
                       int64_t q_rows) {
  check(H > 0 && d > 0, "attention_forward: heads ", H, ", head_dim ", d);
  const int64_t D = H * d, ld = 3 * D, dp = pad(d, VW), Tp = pad(T, VW);
  const int64_t Tq = q_rows < 0 ? T : q_rows;
  check(Tq >= 1 && Tq <= T, "attention_forward: q_rows ", q_rows, " outside 1..", T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t nq = (Tq + kQTile - 1) / kQTile, items = B * H * nq;
  const int64_t tile = std::min(kKTile, Tp);
  // V's rows are read in place when a head's d columns are whole vectors;
  // otherwise packed (Tp, dp) with zero columns.
  const bool v_in_place = d == dp;
  int nt = static_cast<int>(std::min<int64_t>(num_threads(), items));
#pragma omp parallel num_threads(nt)
  {
    Scratch& w = scratch();
    std::vector<float>&kt = w.buf[0], &vp = w.buf[1], &acc = w.buf[2], &s = w.buf[3], &qt = w.buf[4];
    kt.resize(static_cast<size_t>(d * Tp));
    if (!v_in_place) vp.resize(static_cast<size_t>(Tp * dp));
    acc.resize(static_cast<size_t>(RB * dp));
    s.resize(static_cast<size_t>(RB * tile));
    qt.resize(static_cast<size_t>(RB * d));
    int64_t cached = -1;  // the (image, head) whose K^T (and V) are packed
    float m[RB], l[RB];   // per row: running max of the unscaled scores, sum of exps
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t bh = it / nq, qb = it % nq, b = bh / H, h = bh % H;
      const float* base = qkv + b * T * ld + h * d;  // row j: q at base + j*ld, k at +D, v at +2D
      if (cached != bh) {
        pack_transposed(base + D, ld, T, d, Tp, kt.data());
        if (!v_in_place) pack_rows(base + 2 * D, ld, T, d, Tp, dp, vp.data());
        cached = bh;
      }
      const float* v = v_in_place ? base + 2 * D : vp.data();
      const int64_t ldv = v_in_place ? ld : dp;
      const int64_t i_end = std::min(Tq, (qb + 1) * kQTile);
      for (int64_t r0 = qb * kQTile; r0 < i_end; r0 += RB) {
        const int64_t rows = std::min(RB, i_end - r0);
        // q (RB, d): the rows in place, or a partial block copied with zero rows
        const float* q = base + r0 * ld;
        int64_t ldq = ld;
        if (rows < RB) {
          pack_rows(q, ld, rows, d, RB, d, qt.data());
          q = qt.data(), ldq = d;
        }
        for (int64_t j0 = 0; j0 < T; j0 += tile) {
          const int64_t nc = std::min(tile, T - j0);
          // s (RB, nc) = q . K^T of this key tile (unscaled)
          rows_times_cols(q, ldq, kt.data(), Tp, d, j0, pad(nc, VW), s.data(), tile);
          // online softmax of scale * s: rescale what was accumulated for the new running max
          for (int64_t r = 0; r < RB; ++r) {
            float* sr = s.data() + r * tile;
            const float mx = j0 == 0 ? row_max(sr, nc) : std::max(m[r], row_max(sr, nc));
            float sum = 0.f;
#pragma omp simd reduction(+ : sum)
            for (int64_t c = 0; c < nc; ++c) {
              sr[c] = exp_inline((sr[c] - mx) * scale);
              sum += sr[c];
            }
            if (j0 == 0) {
              l[r] = sum;
              std::fill(acc.data() + r * dp, acc.data() + (r + 1) * dp, 0.f);
            } else {
              const float corr = exp_inline((m[r] - mx) * scale);
              l[r] = l[r] * corr + sum;
              float* ar = acc.data() + r * dp;
#pragma omp simd
              for (int64_t k = 0; k < dp; ++k) ar[k] *= corr;
            }
            m[r] = mx;
          }
          // acc (RB, dp) += p (RB, nc) . V of this key tile
          rows_times_rows(s.data(), tile, v + j0 * ldv, ldv, nc, dp, acc.data());
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* o = out + (b * Tq + r0 + r) * D + h * d;
          const float inv = 1.0f / l[r];
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) o[k] = acc[r * dp + k] * inv;
          if (lse) lse[(b * H + h) * Tq + r0 + r] = m[r] * scale + std::log(l[r]);
        }
      }
    }
  }
}

void attention_backward(const float* dout, const float* qkv, const float* out, const float* lse, float* dqkv,
                        int64_t B, int64_t T, int64_t H, int64_t d) {
  check(H > 0 && d > 0, "attention_backward: heads ", H, ", head_dim ", d);
  const int64_t D = H * d, ld = 3 * D, dp = pad(d, VW), Tp = pad(T, VW);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t items = B * H;
  int nt = static_cast<int>(std::min<int64_t>(num_threads(), items));
#pragma omp parallel num_threads(nt)
  {
    Scratch& w = scratch();
    HeadPack& hp = w.hp;  // qs (Tp, dp) = Q, kt (d, Tp), vp (Tp, dp), kp (Tp, dp), vt (d, Tp)
    std::vector<float>&dk = w.buf[0], &dv = w.buf[1], &ga = w.buf[2], &oa = w.buf[3], &dq = w.buf[4],
                      &p = w.buf[5], &ds = w.buf[6];
    for (auto* v : {&dk, &dv}) v->resize(static_cast<size_t>(Tp * dp));
    for (auto* v : {&ga, &oa, &dq}) v->resize(static_cast<size_t>(RB * dp));
    for (auto* v : {&p, &ds}) v->resize(static_cast<size_t>(RB * Tp));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / H, h = it % H;
      hp.pack(qkv, b, h, T, D, d, Tp, dp);
      std::fill(dk.begin(), dk.end(), 0.f);
      std::fill(dv.begin(), dv.end(), 0.f);
      for (int64_t r0 = 0; r0 < T; r0 += RB) {
        const int64_t rows = std::min(RB, T - r0);
        const float* qa = hp.qs.data() + r0 * dp;  // (RB, dp); rows past T are zero
        pack_rows(dout + (b * T + r0) * D + h * d, D, rows, d, RB, dp, ga.data());
        pack_rows(out + (b * T + r0) * D + h * d, D, rows, d, RB, dp, oa.data());
        // p = exp(scale q.K^T - lse); dp = dO . V^T; ds = p (dp - sum(dO o)) scale
        rows_times_cols(qa, dp, hp.kt.data(), Tp, d, 0, Tp, p.data(), Tp);
        rows_times_cols(ga.data(), dp, hp.vt.data(), Tp, d, 0, Tp, ds.data(), Tp);
        for (int64_t r = 0; r < RB; ++r) {
          float* pr = p.data() + r * Tp;
          float* sr = ds.data() + r * Tp;
          if (r >= rows) {
            std::fill(pr, pr + Tp, 0.f);
            std::fill(sr, sr + Tp, 0.f);
            continue;
          }
          float di = 0.f;
          for (int64_t k = 0; k < d; ++k) di += ga[r * dp + k] * oa[r * dp + k];
          const float li = lse[(b * H + h) * T + r0 + r];
#pragma omp simd
          for (int64_t j = 0; j < T; ++j) {
            pr[j] = exp_inline(pr[j] * scale - li);
            sr[j] = pr[j] * (sr[j] - di) * scale;
          }
          for (int64_t j = T; j < Tp; ++j) pr[j] = sr[j] = 0.f;
        }
        cols_times_rows(p.data(), Tp, ga.data(), T, dp, dv.data());   // dV += p^T dO
        cols_times_rows(ds.data(), Tp, qa, T, dp, dk.data());  // dK += ds^T Q
        std::fill(dq.begin(), dq.end(), 0.f);
        rows_times_rows(ds.data(), Tp, hp.kp.data(), dp, T, dp, dq.data());  // dQ = ds K
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(dqkv + (b * T + r0 + r) * ld + h * d, dq.data() + r * dp, sizeof(float) * d);
      }
      float* dbase = dqkv + b * T * ld;
      for (int64_t j = 0; j < T; ++j) {
        std::memcpy(dbase + j * ld + D + h * d, dk.data() + j * dp, sizeof(float) * d);
        std::memcpy(dbase + j * ld + 2 * D + h * d, dv.data() + j * dp, sizeof(float) * d);
      }
    }
  }
}

void attention_forward_reference(const float* qkv, float* out, int64_t B, int64_t T, int64_t H, int64_t d) {
  const int64_t D = H * d, ld = 3 * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<float> s(static_cast<size_t>(T * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const float* base = qkv + b * T * ld;
      for (int64_t i = 0; i < T; ++i) {
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          float acc = 0.f;
          for (int64_t k = 0; k < d; ++k) acc += base[i * ld + h * d + k] * base[j * ld + D + h * d + k];
          s[i * T + j] = acc * scale;
          mx = std::max(mx, s[i * T + j]);
        }
        float sum = 0.f;
        for (int64_t j = 0; j < T; ++j) sum += (s[i * T + j] = std::exp(s[i * T + j] - mx));
        for (int64_t j = 0; j < T; ++j) s[i * T + j] /= sum;
      }
      for (int64_t i = 0; i < T; ++i)
        for (int64_t k = 0; k < d; ++k) {
          float acc = 0.f;
          for (int64_t j = 0; j < T; ++j) acc += s[i * T + j] * base[j * ld + 2 * D + h * d + k];
          out[(b * T + i) * D + h * d + k] = acc;
        }
    }
}

void attention_probs(const float* qkv, int64_t B, int64_t T, int64_t H, int64_t d, float* probs) {
  const int64_t A = H * d;
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> s(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const float* q = qkv + (b * T + i) * 3 * A + h * d;
        double mx = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          const float* k = qkv + (b * T + j) * 3 * A + A + h * d;
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += double(q[e]) * double(k[e]);
          s[size_t(j)] = dot * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (int64_t j = 0; j < T; ++j) sum += (s[size_t(j)] = std::exp(s[size_t(j)] - mx));
        float* p = probs + ((b * T + i) * H + h) * T;
        for (int64_t j = 0; j < T; ++j) p[j] = float(s[size_t(j)] / sum);
      }
}

}  // namespace vitkit::kernels

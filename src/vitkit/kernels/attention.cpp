#include "vitkit/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/vecmath.h"

namespace vitkit::kernels {

namespace {
constexpr int64_t kQTile = 32;   // query rows per work item
constexpr int64_t kKTile = 128;  // keys per online-softmax step
}  // namespace

void attention_forward(const float* qkv, float* out, float* lse, int64_t B, int64_t T, int64_t D, int64_t H) {
  const int64_t d = D / H, ld = 3 * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t nq = (T + kQTile - 1) / kQTile;
  const int64_t items = B * H * nq;
  int nt = static_cast<int>(std::min<int64_t>(num_threads(), items));
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> kt(static_cast<size_t>(d * T));      // K of one head, transposed: (d, T)
    std::vector<float> q(static_cast<size_t>(kQTile * d));  // scaled query tile
    std::vector<float> acc(static_cast<size_t>(kQTile * d));
    std::vector<float> s(static_cast<size_t>(kKTile));
    int64_t cached = -1;
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t bh = it / nq, qb = it % nq, b = bh / H, h = bh % H;
      const float* base = qkv + b * T * ld;
      if (cached != bh) {  // transpose this head's keys once per thread
        for (int64_t j = 0; j < T; ++j) {
          const float* kj = base + j * ld + D + h * d;
          for (int64_t k = 0; k < d; ++k) kt[k * T + j] = kj[k];
        }
        cached = bh;
      }
      const int64_t i0 = qb * kQTile, rows = std::min(kQTile, T - i0);
      for (int64_t r = 0; r < rows; ++r) {
        const float* qi = base + (i0 + r) * ld + h * d;
        for (int64_t k = 0; k < d; ++k) q[r * d + k] = qi[k] * scale;
      }
      for (int64_t r = 0; r < rows; ++r) {
        float m = -std::numeric_limits<float>::infinity(), l = 0.f;
        float* a = acc.data() + r * d;
        std::fill(a, a + d, 0.f);
        const float* qr = q.data() + r * d;
        for (int64_t j0 = 0; j0 < T; j0 += kKTile) {
          const int64_t nc = std::min(kKTile, T - j0);
          float* sp = s.data();
          std::fill(sp, sp + nc, 0.f);
          for (int64_t k = 0; k < d; ++k) {  // s = q_r . K^T, vectorised over keys
            const float qk = qr[k];
            const float* kr = kt.data() + k * T + j0;
#pragma omp simd
            for (int64_t c = 0; c < nc; ++c) sp[c] += qk * kr[c];
          }
          float mx = m;
          for (int64_t c = 0; c < nc; ++c) mx = std::max(mx, sp[c]);
          const float corr = exp_inline(m - mx);  // 0 on the first tile (m = -inf)
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < nc; ++c) {
            sp[c] = exp_inline(sp[c] - mx);
            sum += sp[c];
          }
          l = l * corr + sum;
          m = mx;
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) a[k] *= corr;
          for (int64_t c = 0; c < nc; ++c) {  // a += p_c * v_c, vectorised over the head dim
            const float p = sp[c];
            const float* vc = base + (j0 + c) * ld + 2 * D + h * d;
#pragma omp simd
            for (int64_t k = 0; k < d; ++k) a[k] += p * vc[k];
          }
        }
        float* o = out + (b * T + i0 + r) * D + h * d;
        const float inv = 1.0f / l;
#pragma omp simd
        for (int64_t k = 0; k < d; ++k) o[k] = a[k] * inv;
        if (lse) lse[(b * H + h) * T + i0 + r] = m + std::log(l);
      }
    }
  }
}

void attention_backward(const float* dout, const float* qkv, const float* out, const float* lse, float* dqkv,
                        int64_t B, int64_t T, int64_t D, int64_t H) {
  const int64_t d = D / H, ld = 3 * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t items = B * H;
  int nt = static_cast<int>(std::min<int64_t>(num_threads(), items));
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> kt(static_cast<size_t>(d * T)), vt(static_cast<size_t>(d * T));
    std::vector<float> dk(static_cast<size_t>(T * d)), dv(static_cast<size_t>(T * d));
    std::vector<float> p(static_cast<size_t>(T)), dp(static_cast<size_t>(T)), dq(static_cast<size_t>(d));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / H, h = it % H;
      const float* base = qkv + b * T * ld;
      float* dbase = dqkv + b * T * ld;
      for (int64_t j = 0; j < T; ++j)
        for (int64_t k = 0; k < d; ++k) {
          kt[k * T + j] = base[j * ld + D + h * d + k];
          vt[k * T + j] = base[j * ld + 2 * D + h * d + k];
        }
      std::fill(dk.begin(), dk.end(), 0.f);
      std::fill(dv.begin(), dv.end(), 0.f);
      for (int64_t i = 0; i < T; ++i) {
        const float* qi = base + i * ld + h * d;
        const float* doi = dout + (b * T + i) * D + h * d;
        const float* oi = out + (b * T + i) * D + h * d;
        const float li = lse[(b * H + h) * T + i];
        float di = 0.f;
        for (int64_t k = 0; k < d; ++k) di += doi[k] * oi[k];
        std::fill(p.begin(), p.end(), 0.f);
        std::fill(dp.begin(), dp.end(), 0.f);
        for (int64_t k = 0; k < d; ++k) {
          const float qk = qi[k] * scale, gk = doi[k];
          const float* kr = kt.data() + k * T;
          const float* vr = vt.data() + k * T;
#pragma omp simd
          for (int64_t j = 0; j < T; ++j) {
            p[j] += qk * kr[j];
            dp[j] += gk * vr[j];
          }
        }
#pragma omp simd
        for (int64_t j = 0; j < T; ++j) {
          p[j] = exp_inline(p[j] - li);
          dp[j] = p[j] * (dp[j] - di) * scale;  // dS, with the score scale folded in
        }
        std::fill(dq.begin(), dq.end(), 0.f);
        for (int64_t j = 0; j < T; ++j) {
          const float pj = p[j], sj = dp[j];
          const float* kj = base + j * ld + D + h * d;
          float* dkj = dk.data() + j * d;
          float* dvj = dv.data() + j * d;
#pragma omp simd
          for (int64_t k = 0; k < d; ++k) {
            dq[k] += sj * kj[k];
            dkj[k] += sj * qi[k];
            dvj[k] += pj * doi[k];
          }
        }
        float* dqi = dbase + i * ld + h * d;
        for (int64_t k = 0; k < d; ++k) dqi[k] = dq[k];
      }
      for (int64_t j = 0; j < T; ++j)
        for (int64_t k = 0; k < d; ++k) {
          dbase[j * ld + D + h * d + k] = dk[j * d + k];
          dbase[j * ld + 2 * D + h * d + k] = dv[j * d + k];
        }
    }
  }
}

void attention_forward_reference(const float* qkv, float* out, int64_t B, int64_t T, int64_t D, int64_t H) {
  const int64_t d = D / H, ld = 3 * D;
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

}  // namespace vitkit::kernels

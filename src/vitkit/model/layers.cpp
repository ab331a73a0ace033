#include "vitkit/model/layers.h"

#include <omp.h>

#include <cstring>
#include <vector>

#include "vitkit/core/threads.h"

namespace vitkit {

void im2col_forward(const float* img, float* cols, int64_t B, int64_t C, int64_t S, int64_t p) {
  const int64_t G = S / p, P = G * G, K = C * p * p;
  int nt = num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (B * P * K > 65536)
  for (int64_t bp = 0; bp < B * P; ++bp) {
    const int64_t b = bp / P, gy = (bp % P) / G, gx = bp % G;
    float* row = cols + bp * K;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ky = 0; ky < p; ++ky) {
        const float* src = img + ((b * C + c) * S + gy * p + ky) * S + gx * p;
        std::memcpy(row + (c * p + ky) * p, src, sizeof(float) * p);
      }
  }
}

void tokens_forward(const float* emb, const float* cls, const float* pos, float* x, int64_t B, int64_t P,
                    int64_t D) {
  const int64_t T = P + (cls ? 1 : 0);
  for (int64_t b = 0; b < B; ++b) {
    float* xb = x + b * T * D;
    const float* eb = emb + b * P * D;
    int64_t t0 = 0;
    if (cls) {
      for (int64_t k = 0; k < D; ++k) xb[k] = cls[k] + pos[k];
      t0 = 1;
    }
    for (int64_t i = 0; i < P; ++i) {
      float* xi = xb + (t0 + i) * D;
      const float* ei = eb + i * D;
      const float* pi = pos + (t0 + i) * D;
#pragma omp simd
      for (int64_t k = 0; k < D; ++k) xi[k] = ei[k] + pi[k];
    }
  }
}

void tokens_backward(const float* dx, float* demb, float* dcls, float* dpos, int64_t B, int64_t P, int64_t D,
                     bool has_cls) {
  const int64_t t0 = has_cls ? 1 : 0, T = P + t0;
  for (int64_t b = 0; b < B; ++b) {
    const float* db = dx + b * T * D;
    if (has_cls)
      for (int64_t k = 0; k < D; ++k) dcls[k] += db[k];
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < D; ++k) dpos[t * D + k] += db[t * D + k];
    std::memcpy(demb + b * P * D, db + t0 * D, sizeof(float) * P * D);
  }
}

void pool_forward(Pooling pool, const float* x, float* out, int64_t B, int64_t T, int64_t D, bool has_cls) {
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * T * D;
    float* ob = out + b * D;
    if (pool == Pooling::Cls) {
      std::memcpy(ob, xb, sizeof(float) * D);
      continue;
    }
    const int64_t first = has_cls ? 1 : 0;
    std::vector<double> acc(D, 0.0);
    for (int64_t t = first; t < T; ++t)
      for (int64_t k = 0; k < D; ++k) acc[k] += xb[t * D + k];
    for (int64_t k = 0; k < D; ++k) ob[k] = static_cast<float>(acc[k] / static_cast<double>(T - first));
  }
}

void pool_backward(Pooling pool, const float* dout, float* dx, int64_t B, int64_t T, int64_t D, bool has_cls) {
  std::memset(dx, 0, sizeof(float) * B * T * D);
  for (int64_t b = 0; b < B; ++b) {
    float* xb = dx + b * T * D;
    const float* g = dout + b * D;
    if (pool == Pooling::Cls) {
      std::memcpy(xb, g, sizeof(float) * D);
      continue;
    }
    const int64_t first = has_cls ? 1 : 0;
    const float inv = 1.0f / static_cast<float>(T - first);
    for (int64_t t = first; t < T; ++t)
      for (int64_t k = 0; k < D; ++k) xb[t * D + k] = g[k] * inv;
  }
}

void add_forward(const float* a, const float* b, float* out, int64_t n) {
  int nt = num_threads();
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace vitkit

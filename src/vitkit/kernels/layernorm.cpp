#include "vitkit/kernels/layernorm.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "vitkit/core/threads.h"

namespace vitkit::kernels {

void layernorm_forward(const float* x, const float* w, const float* b, float* out, float* mean, float* rstd,
                       int64_t N, int64_t D, float eps) {
  int nt = num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (N * D > 32768)
  for (int64_t i = 0; i < N; ++i) {
    const float* xi = x + i * D;
    float* oi = out + i * D;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < D; ++k) s += xi[k];
    float m = s / static_cast<float>(D);
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int64_t k = 0; k < D; ++k) v += (xi[k] - m) * (xi[k] - m);
    float r = 1.0f / std::sqrt(v / static_cast<float>(D) + eps);
#pragma omp simd
    for (int64_t k = 0; k < D; ++k) oi[k] = (xi[k] - m) * r * w[k] + b[k];
    if (mean) mean[i] = m;
    if (rstd) rstd[i] = r;
  }
}

void layernorm_backward(const float* dout, const float* x, const float* mean, const float* rstd, const float* w,
                        float* dx, float* dw, float* db, int64_t N, int64_t D, bool accumulate) {
  int nt = num_threads();
  if (N * D <= 32768) nt = 1;
  std::vector<float> part(static_cast<size_t>(nt) * 2 * D, 0.f);  // per-thread dw, db
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    float* pdw = part.data() + static_cast<size_t>(t) * 2 * D;
    float* pdb = pdw + D;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const float* g = dout + i * D;
      const float* xi = x + i * D;
      float* dxi = dx + i * D;
      float m = mean[i], r = rstd[i];
      float sum_dn = 0.f, sum_dn_n = 0.f;
#pragma omp simd reduction(+ : sum_dn, sum_dn_n)
      for (int64_t k = 0; k < D; ++k) {
        float n = (xi[k] - m) * r;
        float dn = g[k] * w[k];
        sum_dn += dn;
        sum_dn_n += dn * n;
        pdw[k] += g[k] * n;
        pdb[k] += g[k];
      }
      float a = sum_dn / static_cast<float>(D), c = sum_dn_n / static_cast<float>(D);
      if (accumulate) {
#pragma omp simd
        for (int64_t k = 0; k < D; ++k) dxi[k] += r * (g[k] * w[k] - a - (xi[k] - m) * r * c);
      } else {
#pragma omp simd
        for (int64_t k = 0; k < D; ++k) dxi[k] = r * (g[k] * w[k] - a - (xi[k] - m) * r * c);
      }
    }
  }
  for (int t = 0; t < nt; ++t)
    for (int64_t k = 0; k < D; ++k) {
      dw[k] += part[static_cast<size_t>(t) * 2 * D + k];
      db[k] += part[static_cast<size_t>(t) * 2 * D + D + k];
    }
}

}  // namespace vitkit::kernels

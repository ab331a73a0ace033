#include "vitkit/kernels/attention_int.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"

namespace vitkit::kernels {

namespace {

// codes (code_rows, d) of the first rows of x (stride ld), with the scale of
// all `rows`: s = max|x| / qmax (1 when all zero).
float quantize_rows(const float* x, int64_t ld, int64_t rows, int64_t code_rows, int64_t d, int qmax,
                    int16_t* codes) {
  float amax = 0.f;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < d; ++k) amax = std::max(amax, std::fabs(x[i * ld + k]));
  const float s = amax > 0.f ? amax / float(qmax) : 1.f;
  for (int64_t i = 0; i < code_rows; ++i)
    for (int64_t k = 0; k < d; ++k)
      codes[i * d + k] = int16_t(std::clamp(std::nearbyint(x[i * ld + k] / s), float(-qmax), float(qmax)));
  return s;
}

// One (image, head): Qc (Tq, d), Kc and Vc (T, d) -> out rows (Tq, d) at stride ldo.
// Acc: int32 where every sum fits it, else int64.
template <typename Acc>
void head_int(const int16_t* Qc, const int16_t* Kc, const int16_t* Vc, int64_t Tq, int64_t T, int64_t d, float c,
              float out_scale, int pmax, float* z, int32_t* Pc, Acc* acc, float* out, int64_t ldo) {
  for (int64_t i = 0; i < Tq; ++i) {
    const int16_t* q = Qc + i * d;
    float mx = -INFINITY;
    for (int64_t j = 0; j < T; ++j) {
      const int16_t* k = Kc + j * d;
      Acc S = 0;
#pragma omp simd reduction(+ : S)
      for (int64_t t = 0; t < d; ++t) S += Acc(q[t]) * Acc(k[t]);
      z[j] = float(S) * c;
      mx = std::max(mx, z[j]);
    }
    float sum = 0.f;
    for (int64_t j = 0; j < T; ++j) sum += (z[j] = std::exp(z[j] - mx));
    for (int64_t j = 0; j < T; ++j) Pc[j] = int32_t(std::nearbyint(z[j] / sum * float(pmax)));
    std::fill(acc, acc + d, Acc(0));
    for (int64_t j = 0; j < T; ++j) {
      const Acc p = Acc(Pc[j]);
      if (p == 0) continue;
      const int16_t* v = Vc + j * d;
#pragma omp simd
      for (int64_t t = 0; t < d; ++t) acc[t] += p * Acc(v[t]);
    }
    for (int64_t t = 0; t < d; ++t) out[i * ldo + t] = float(acc[t]) * out_scale;
  }
}

}  // namespace

void attention_forward_int(const float* qkv, float* out, int64_t B, int64_t T, int64_t H, int64_t d,
                           const AttentionQuant& q, int64_t q_rows) {
  check(q.bits >= 2 && q.bits <= 16, "attention_forward_int: bits ", q.bits, " outside 2..16");
  check(q.pbits >= 2 && q.pbits <= 16, "attention_forward_int: pbits ", q.pbits, " outside 2..16");
  const int64_t D = H * d, ld = 3 * D, Tq = q_rows < 0 ? T : q_rows;
  check(Tq >= 1 && Tq <= T, "attention_forward_int: q_rows ", q_rows, " outside 1..", T);
  const int qmax = (1 << (q.bits - 1)) - 1, pmax = (1 << q.pbits) - 1;
  const float inv_sqrt_d = 1.0f / std::sqrt(float(d));
  // Bits of the largest sums: QK^T d qmax^2, P.V T pmax qmax.
  const double qk = double(d) * qmax * qmax, pv = double(T) * pmax * qmax;
  const bool wide = std::max(qk, pv) >= 2147483647.0;
  const int64_t items = B * H;
  const int nt = int(std::min<int64_t>(num_threads(), items));
#pragma omp parallel num_threads(nt)
  {
    std::vector<int16_t> Qc(size_t(Tq * d)), Kc(size_t(T * d)), Vc(size_t(T * d));
    std::vector<float> z(static_cast<size_t>(T));
    std::vector<int32_t> Pc(static_cast<size_t>(T));
    std::vector<int64_t> acc64(wide ? size_t(d) : 0);
    std::vector<int32_t> acc32(wide ? 0 : size_t(d));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / H, h = it % H;
      const float* base = qkv + b * T * ld + h * d;
      // Q's scale over all T rows, whatever q_rows: the same codes as the full attention's.
      const float sq = quantize_rows(base, ld, T, Tq, d, qmax, Qc.data());
      const float sk = quantize_rows(base + D, ld, T, T, d, qmax, Kc.data());
      const float sv = quantize_rows(base + 2 * D, ld, T, T, d, qmax, Vc.data());
      const float c = (sq * sk) * inv_sqrt_d, os = sv / float(pmax);
      float* o = out + b * Tq * D + h * d;
      if (wide)
        head_int(Qc.data(), Kc.data(), Vc.data(), Tq, T, d, c, os, pmax, z.data(), Pc.data(), acc64.data(), o, D);
      else
        head_int(Qc.data(), Kc.data(), Vc.data(), Tq, T, d, c, os, pmax, z.data(), Pc.data(), acc32.data(), o, D);
    }
  }
}

}  // namespace vitkit::kernels

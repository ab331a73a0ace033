#include "vitkit/train/losses.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace vitkit {

// Softmax of one row in double: p (C) and log-sum-exp.
static double softmax_row(const float* x, int64_t C, double* p, double scale = 1.0) {
  double mx = -INFINITY;
  for (int64_t c = 0; c < C; ++c) mx = std::max(mx, double(x[c]) * scale);
  double s = 0;
  for (int64_t c = 0; c < C; ++c) s += (p[c] = std::exp(double(x[c]) * scale - mx));
  for (int64_t c = 0; c < C; ++c) p[c] /= s;
  return mx + std::log(s);
}

float cross_entropy_forward_backward(const float* logits, const int* labels, int64_t B, int64_t C, float eps,
                                     float* dlogits, int64_t* correct) {
  std::vector<double> p(C);
  double total = 0;
  int64_t hits = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float* x = logits + b * C;
    const double lse = softmax_row(x, C, p.data());
    const int y = labels[b];
    // loss = -sum_c t_c log p_c, t = (1-eps) onehot(y) + eps/C
    double sum_logp = 0;
    for (int64_t c = 0; c < C; ++c) sum_logp += double(x[c]) - lse;
    total += -(1.0 - eps) * (double(x[y]) - lse) - eps / double(C) * sum_logp;
    int64_t arg = std::max_element(x, x + C) - x;
    hits += arg == y;
    if (dlogits)
      for (int64_t c = 0; c < C; ++c) {
        double t = eps / double(C) + (c == y ? 1.0 - eps : 0.0);
        dlogits[b * C + c] = static_cast<float>((p[c] - t) / double(B));
      }
  }
  if (correct) *correct = hits;
  return static_cast<float>(total / double(B));
}

float distill_kl_forward_backward(const float* student, const float* teacher, int64_t B, int64_t C, float T,
                                  float alpha, float* dlogits) {
  std::vector<double> ps(C), pt(C);
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    const double lse_s = softmax_row(student + b * C, C, ps.data(), 1.0 / T);
    const double lse_t = softmax_row(teacher + b * C, C, pt.data(), 1.0 / T);
    double kl = 0;
    for (int64_t c = 0; c < C; ++c) {
      if (pt[c] <= 0) continue;
      const double log_pt = double(teacher[b * C + c]) / T - lse_t;
      const double log_ps = double(student[b * C + c]) / T - lse_s;
      kl += pt[c] * (log_pt - log_ps);
    }
    total += kl * T * T;
    if (dlogits)  // d/dz_s of T^2 KL = T (ps - pt)
      for (int64_t c = 0; c < C; ++c)
        dlogits[b * C + c] += static_cast<float>(alpha * T * (ps[c] - pt[c]) / double(B));
  }
  return static_cast<float>(total / double(B));
}

}  // namespace vitkit

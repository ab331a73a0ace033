#include "vitkit/train/adamw.h"

#include <cmath>

#include "vitkit/core/threads.h"

namespace vitkit {

AdamW::AdamW(const ParamTable& params, AdamWConfig cfg)
    : cfg_(cfg), m_(params.zeros_like()), v_(params.zeros_like()) {}

void AdamW::step(ParamTable& params, const float* grads, float lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(double(cfg_.beta1), double(t_));
  const double bc2 = 1.0 - std::pow(double(cfg_.beta2), double(t_));
  const float step_size = static_cast<float>(lr / bc1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
  float* M = m_.f32();
  float* V = v_.f32();
  int nt = num_threads();
  for (int i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params.info(i);
    if (p.offset < 0) continue;  // frozen
    float* w = params.ptr(i);
    const float* g = grads + p.offset;
    float* m = M + p.offset;
    float* v = V + p.offset;
    const float decay = p.decay ? 1.0f - lr * cfg_.weight_decay : 1.0f;
#pragma omp parallel for simd num_threads(nt) if (p.numel > 65536)
    for (int64_t i = 0; i < p.numel; ++i) {
      w[i] *= decay;
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
      const float denom = std::sqrt(v[i]) / sqrt_bc2 + eps;
      w[i] -= step_size * m[i] / denom;
    }
  }
}

float clip_grad_norm(const ParamTable& params, float* grads, float max_norm) {
  double ss = 0;
  for (const ParamInfo& p : params.entries()) {
    if (p.offset < 0) continue;
    const float* g = grads + p.offset;
    for (int64_t i = 0; i < p.numel; ++i) ss += double(g[i]) * g[i];
  }
  const float norm = static_cast<float>(std::sqrt(ss));
  if (max_norm > 0 && norm > max_norm) {
    const float s = max_norm / (norm + 1e-6f);
    for (const ParamInfo& p : params.entries()) {
      if (p.offset < 0) continue;
      float* g = grads + p.offset;
      for (int64_t i = 0; i < p.numel; ++i) g[i] *= s;
    }
  }
  return norm;
}

}  // namespace vitkit

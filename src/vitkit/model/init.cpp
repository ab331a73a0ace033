#include "vitkit/model/init.h"

#include <cmath>
#include <cstring>

namespace vitkit {

static void fill_uniform(float* w, int64_t n, float bound, Rng& rng) {
  for (int64_t i = 0; i < n; ++i) w[i] = (2.f * rng.uniform() - 1.f) * bound;
}

static void fill_normal(float* w, int64_t n, float std, Rng& rng) {
  for (int64_t i = 0; i < n; ++i) w[i] = rng.normal() * std;
}

static void xavier_uniform(ViT& m, const Linear& l, Rng& rng) {
  fill_uniform(m.W(l), int64_t(l.in) * l.out, std::sqrt(6.f / float(l.in + l.out)), rng);
}

void init_weights(ViT& m, Rng& rng) {
  for (int i = 0; i < m.params.size(); ++i)
    std::memset(m.params.ptr(i), 0, sizeof(float) * size_t(m.params.info(i).numel));
  const int D = m.cfg.dim;
  {
    float* w = m.W(m.patch);
    const float std = std::sqrt(1.f / float(m.patch.in));
    for (int64_t i = 0; i < int64_t(m.patch.in) * m.patch.out; ++i) w[i] = rng.trunc_normal(std, -2.f / std, 2.f / std);
  }
  fill_normal(m.params.ptr(m.pos), m.params.info(m.pos).numel, 0.02f, rng);
  auto ones = [&](const Norm& n) {
    if (n.w < 0) return;
    for (int k = 0; k < D; ++k) m.params.ptr(n.w)[k] = 1.f;
  };
  for (auto& b : m.blocks) {
    ones(b.ln1);
    ones(b.ln2);
    xavier_uniform(m, b.qkv, rng);
    fill_uniform(m.W(b.proj), int64_t(b.proj.in) * b.proj.out, 1.f / std::sqrt(float(b.proj.in)), rng);
    xavier_uniform(m, b.fc1, rng);
    fill_normal(m.B(b.fc1), b.fc1.out, 1e-6f, rng);
    xavier_uniform(m, b.fc2, rng);
    fill_normal(m.B(b.fc2), b.fc2.out, 1e-6f, rng);
  }
  ones(m.ln);
}

}  // namespace vitkit

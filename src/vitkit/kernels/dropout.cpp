#include "vitkit/kernels/dropout.h"

#include "vitkit/core/threads.h"

namespace vitkit::kernels {

static inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void dropout_forward(float* x, uint8_t* mask, int64_t n, float p, uint64_t seed, uint64_t site) {
  const uint64_t base = mix(seed * 0x9e3779b97f4a7c15ull + site);
  const uint64_t threshold = static_cast<uint64_t>(double(p) * 16777216.0);  // 24-bit uniform
  const float scale = 1.0f / (1.0f - p);
  int nt = num_threads();
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t keep = (mix(base + static_cast<uint64_t>(i)) >> 40) >= threshold;
    mask[i] = keep;
    x[i] = keep ? x[i] * scale : 0.f;
  }
}

void dropout_backward(float* dx, const uint8_t* mask, int64_t n, float p) {
  const float scale = 1.0f / (1.0f - p);
  int nt = num_threads();
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dx[i] = mask[i] ? dx[i] * scale : 0.f;
}

}  // namespace vitkit::kernels

#include "vitkit/train/augment.h"

#include <cstring>

#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"

namespace vitkit {

void augment_batch(const float* src, float* dst, int64_t B, int64_t C, int64_t S, const AugmentParams& p,
                   uint64_t seed, const int64_t* sample_ids) {
  const int64_t plane = S * S;
  int nt = num_threads();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    Rng rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(sample_ids[b]));
    const int64_t dy = p.pad > 0 ? int64_t(rng.below(2 * p.pad + 1)) - p.pad : 0;
    const int64_t dx = p.pad > 0 ? int64_t(rng.below(2 * p.pad + 1)) - p.pad : 0;
    const bool flip = p.hflip > 0 && rng.uniform() < p.hflip;
    for (int64_t c = 0; c < C; ++c) {
      const float* s = src + (b * C + c) * plane;
      float* d = dst + (b * C + c) * plane;
      const float fill = c < int64_t(p.fill.size()) ? p.fill[c] : 0.f;
      for (int64_t y = 0; y < S; ++y) {
        const int64_t sy = y + dy;
        float* row = d + y * S;
        if (sy < 0 || sy >= S) {
          for (int64_t x = 0; x < S; ++x) row[x] = fill;
          continue;
        }
        for (int64_t x = 0; x < S; ++x) {
          const int64_t sx = (flip ? S - 1 - x : x) + dx;
          row[x] = (sx < 0 || sx >= S) ? fill : s[sy * S + sx];
        }
      }
    }
  }
}

}  // namespace vitkit

// Deterministic random numbers: splitmix64-seeded xoshiro256**. The same seed
// gives the same stream on every machine (no std:: distributions, whose output
// differs between standard libraries).
#pragma once
#include <cstdint>

namespace vitkit {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64();
  // Uniform in [0, 1) with 24 random bits (float) or 53 bits (double).
  float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  double uniform_double() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n);
  // Standard normal (Box-Muller, one value per call).
  float normal();
  // Normal truncated to [lo, hi] standard deviations (rejection), times std.
  float trunc_normal(float std, float lo = -2.f, float hi = 2.f);

  // The whole state, for checkpoints.
  uint64_t s[4];
};

}  // namespace vitkit

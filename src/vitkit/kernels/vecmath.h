// Branch-free float math that compilers vectorise (no libm calls): exp, erf,
// tanh. Measured: exp relative error < 1e-7 on [-87, 88] (clamped: about 1e-38
// below -87.3, +inf from 88.38); erf absolute error < 1.5e-7; tanh absolute < 2e-7.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace vitkit::kernels {

// Cephes-style expf: exp(x) = 2^n * exp(r), r = x - n ln2 in [-ln2/2, ln2/2],
// exp(r) by a degree-6 polynomial; 2^n built in the exponent bits.
inline float exp_inline(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}

// erf: for |x| < 1, x * P(x^2) with Cephes erff's coefficients; above, 1 - erfc
// with the Numerical-Recipes erfc fit (whose exponent polynomial cancels badly
// near 0 in float, hence the split). Both computed, one selected: vectorisable.
inline float erf_inline(float x) {
  const float z = std::fabs(x), x2 = x * x;
  float p = 7.853861353153693e-5f;
  p = p * x2 - 8.010193625184903e-4f;
  p = p * x2 + 5.188327685732524e-3f;
  p = p * x2 - 2.685381193529856e-2f;
  p = p * x2 + 1.128358514861418e-1f;
  p = p * x2 - 3.761262582423300e-1f;
  p = p * x2 + 1.128379165726710f;
  const float small = x * p;
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float poly = -z * z - 1.26551223f +
                     t * (1.00002368f +
                          t * (0.37409196f +
                               t * (0.09678418f +
                                    t * (-0.18628806f +
                                         t * (0.27886807f +
                                              t * (-1.13520398f +
                                                   t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  const float r = 1.0f - t * exp_inline(poly);
  const float large = x < 0 ? -r : r;
  return z < 1.0f ? small : large;
}

// tanh(x) = 1 - 2 / (exp(2x) + 1): absolute error below 2e-7 (relative error is
// large only for |x| < 1e-6, where tanh(x) ~ x is itself tiny).
inline float tanh_inline(float x) {
  return 1.0f - 2.0f / (exp_inline(2.0f * x) + 1.0f);
}

}  // namespace vitkit::kernels

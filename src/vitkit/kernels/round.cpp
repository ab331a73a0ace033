#include "vitkit/kernels/round.h"

#include <cmath>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"

namespace vitkit::kernels {

static constexpr double kPow10[kMaxDecimals + 1] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7};

double pow10_exact(int d) {
  check(d >= 0 && d <= kMaxDecimals, "decimals ", d, " is outside 0..", kMaxDecimals,
        " (x * 10^d is exact in double only up to 7 decimals)");
  return kPow10[d];
}

double decimal_units(float x, int d) { return decimal_units_at(x, pow10_exact(d)); }

float round_decimal(float x, int d) {
  const double p = pow10_exact(d);
  return float(decimal_units_at(x, p) / p);
}

void round_decimal(const float* x, float* y, int64_t n, int d) {
  const double p = pow10_exact(d);
#pragma omp parallel for schedule(static) if (n > (int64_t(1) << 18)) num_threads(num_threads())
  for (int64_t i = 0; i < n; ++i) y[i] = float(decimal_units_at(x[i], p) / p);
}

uint64_t magnitude_code(float x, int d, const char* what) {
  const double u = std::fabs(decimal_units(x, d));
  if (!(u < kMaxMagnitudeCode)) fail(what, " ", x, " cannot be counted at ", d, " decimals (not finite or too large)");
  return uint64_t(u);
}

}  // namespace vitkit::kernels

// Rounding to d decimal places, exactly (halves away from zero, on the
// float's exact binary value): the round pass, the round representation and
// the reuse counting (kernels/reuse.h) all round through these.
#pragma once
#include <cmath>
#include <cstdint>

namespace vitkit::kernels {

inline constexpr int kMaxDecimals = 7;

// 10^d as a double (exact), d in [0, kMaxDecimals].
double pow10_exact(int d);

// k = round-half-away-from-zero(x * 10^d), computed on the float's exact binary
// value: x * 10^d is exact in double for d <= 7 (24 + 17 significant bits), so
// std::round sees the true product. Returned as an integer-valued double; -0
// becomes +0. Non-finite x give non-finite results.
double decimal_units(float x, int d);

// The same with p = pow10_exact(d) given: inline, for loops over many values.
// round() rounds halves away from zero; + 0.0 turns -0 into +0.
inline double decimal_units_at(float x, double p) { return std::round(double(x) * p) + 0.0; }

// The float nearest k / 10^d (exact: for |value| < 2^24 the double quotient is
// never a float rounding tie, so converting it to float rounds once). Halves
// round away from zero: 0.125 -> 0.13, -0.125 -> -0.13 at d = 2. -0.0 -> +0.0.
float round_decimal(float x, int d);

// y[i] = round_decimal(x[i], d) for n values; y may alias x. OpenMP.
void round_decimal(const float* x, float* y, int64_t n, int d);

// magnitude_code's limit: |k| below 2^62.
inline constexpr double kMaxMagnitudeCode = 4611686018427387904.0;

// |k| as an integer: the identity of a rounded magnitude (two operands are the
// same value exactly when their codes are equal). Throws Error for non-finite
// x or |k| >= 2^62; `what` names the operand in the message.
uint64_t magnitude_code(float x, int d, const char* what = "value");

}  // namespace vitkit::kernels

#include "vitkit/kernels/int_exact.h"

#include <Eigen/Dense>
#include <cmath>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"

namespace vitkit::kernels {

static inline float clampq(float v, float qmax) {
  v = v > 0.f ? v : 0.f;
  return v < qmax ? v : qmax;
}

void quantize_input_row(const float* x, int64_t K, const InputQuant& xq, float* scale, int32_t* zero,
                        int32_t* codes) {
  const int qmax = (1 << xq.bits) - 1;
  float s;
  int32_t z;
  if (xq.mode == InputQuant::Mode::Static) {
    s = xq.scale;
    z = xq.zero;
  } else {
    float lo = 0.f, hi = 0.f;
    for (int64_t k = 0; k < K; ++k) {
      lo = std::min(lo, x[k]);
      hi = std::max(hi, x[k]);
    }
    s = (hi - lo) / float(qmax);
    if (s == 0.f) {
      s = 1.f;
      z = 0;
    } else {
      z = int32_t(clampq(std::nearbyint(-lo / s), float(qmax)));
    }
  }
  *scale = s;
  *zero = z;
  if (codes)
    for (int64_t k = 0; k < K; ++k) codes[k] = int32_t(clampq(std::nearbyint(x[k] / s) + float(z), float(qmax)));
}

void linear_int_exact(const float* X, const IntWeights& W, const float* bias, float* Y, int64_t M, Activation act,
                      bool accumulate, const InputQuant& xq) {
  const int64_t N = W.N, K = W.K;
  check(N > 0 && K > 0 && W.codes && W.scales, "linear_int_exact: an empty weight or no scales (", N, "x", K, ")");
  check(xq.bits >= 2 && xq.bits <= 16, "linear_int_exact: input bits ", xq.bits, " outside 2..16");
  check(xq.mode != InputQuant::Mode::Static || (xq.scale > 0 && std::isfinite(xq.scale)),
        "linear_int_exact: static input scale ", xq.scale, " must be positive");
  const bool grouped = W.granularity == ScaleGranularity::Group;
  const int64_t L = grouped ? W.group : K;
  check(L > 0 && K % L == 0, "linear_int_exact: group ", W.group, " does not divide K = ", K);
  check(K <= (int64_t(1) << 20), "linear_int_exact: K = ", K, " above 2^20 (the double sums would not be exact)");
  const int64_t G = K / L;
  auto idx = [&](int64_t n, int64_t g) -> int64_t {
    return W.granularity == ScaleGranularity::Tensor ? 0 : W.granularity == ScaleGranularity::Channel ? n : n * G + g;
  };
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  // q - z per row (M, K) and w - zw (N, K), exact in double.
  Mat Xd(M, K), Wd(N, K);
  std::vector<float> s(static_cast<size_t>(M));
  std::vector<int32_t> codes(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    int32_t z;
    quantize_input_row(X + m * K, K, xq, &s[size_t(m)], &z, codes.data());
    for (int64_t k = 0; k < K; ++k) Xd(m, k) = double(codes[size_t(k)] - z);
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      Wd(n, k) = double(W.codes[n * K + k]) - (W.zeros ? double(W.zeros[idx(n, k / L)]) : 0.0);
  // A[m, n] = scales[n,0] * T_0, then fma(scales[n,g], T_g, A) per later group.
  Mat A(M, N);
  std::vector<float> Af(size_t(M * N));
  for (int64_t g = 0; g < G; ++g) {
    A.noalias() = Xd.middleCols(g * L, L) * Wd.middleCols(g * L, L).transpose();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        float& a = Af[size_t(m * N + n)];
        const float sw = W.scales[idx(n, g)], t = float(A(m, n));
        a = g == 0 ? sw * t : std::fma(sw, t, a);
      }
  }
  // Y = act(fma(s, A, bias (+ Y)))
  for (int64_t m = 0; m < M; ++m) {
    float* y = Y + m * N;
    for (int64_t n = 0; n < N; ++n) {
      float c = bias ? bias[n] : 0.f;
      if (accumulate) c = c + y[n];
      y[n] = std::fma(s[size_t(m)], Af[size_t(m * N + n)], c);
    }
    linear_activation(act, y, y, N);
  }
}

}  // namespace vitkit::kernels

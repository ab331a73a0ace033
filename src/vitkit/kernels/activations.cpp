#include "vitkit/kernels/activations.h"

#include <cmath>
#include <cstring>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/vecmath.h"

namespace vitkit::kernels {

float exp_approx(float x) { return exp_inline(x); }
float erf_approx(float x) { return erf_inline(x); }

void exp_inplace(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = exp_inline(x[i]);
}

static constexpr float kInvSqrt2 = 0.70710678118654752f;
static constexpr float kInvSqrt2Pi = 0.39894228040143268f;
static constexpr float kSqrt2OverPi = 0.79788456080286536f;


void act_forward(Activation a, const float* x, float* out, int64_t n) {
  int nt = num_threads();
  switch (a) {
    case Activation::Relu:
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) out[i] = x[i] > 0 ? x[i] : 0.f;
      return;
    case Activation::Gelu:
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) out[i] = 0.5f * x[i] * (1.0f + erf_inline(x[i] * kInvSqrt2));
      return;
    case Activation::GeluTanh:
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanh_inline(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
      }
      return;
  }
}

// Runs dx[i] = g(i) or dx[i] += g(i) over n elements, in parallel for large n.
template <typename G>
static void store_grad(float* dx, int64_t n, bool accumulate, G g) {
  int nt = num_threads();
  if (accumulate) {
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dx[i] += g(i);
  } else {
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dx[i] = g(i);
  }
}

void act_backward(Activation a, const float* x, const float* dout, float* dx, int64_t n, bool accumulate) {
  switch (a) {
    case Activation::Relu:
      store_grad(dx, n, accumulate, [=](int64_t i) { return x[i] > 0 ? dout[i] : 0.f; });
      return;
    case Activation::Gelu:  // d/dx x*Phi(x) = Phi(x) + x*phi(x)
      store_grad(dx, n, accumulate, [=](int64_t i) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erf_inline(v * kInvSqrt2));
        float pdf = kInvSqrt2Pi * exp_inline(-0.5f * v * v);
        return dout[i] * (cdf + v * pdf);
      });
      return;
    case Activation::GeluTanh:
      store_grad(dx, n, accumulate, [=](int64_t i) {
        float v = x[i];
        float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
        float t = tanh_inline(u);
        float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * v * v);
        return dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
      });
      return;
  }
}

}  // namespace vitkit::kernels

#include "vitkit/kernels/activations.h"

#include <cmath>
#include <omp.h>

#include <cstring>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/vecmath.h"

namespace vitkit {

const char* to_string(Activation a) {
  switch (a) {
    case Activation::None: return "none";
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::Relu: return "relu";
  }
  return "?";
}

}  // namespace vitkit

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
    case Activation::None:
      if (out != x) std::memcpy(out, x, sizeof(float) * size_t(n));
      return;
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

// Derivatives act'(x) as plain functions, so that the loops below vectorise
// (a capturing lambda would reload its pointers on every iteration).
struct IdentityGrad {
  static float d(float) { return 1.f; }
};
struct ReluGrad {
  static float d(float v) { return v > 0 ? 1.f : 0.f; }
};
struct GeluGrad {  // d/dx x*Phi(x) = Phi(x) + x*phi(x)
  static float d(float v) {
    return 0.5f * (1.0f + erf_inline(v * kInvSqrt2)) + v * kInvSqrt2Pi * exp_inline(-0.5f * v * v);
  }
};
struct GeluTanhGrad {
  static float d(float v) {
    const float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
    const float t = tanh_inline(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * v * v);
    return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
  }
};

// dx[i] (+)= dout[i] * F::d(x[i]), in parallel for large n.
template <typename F>
static void act_grad(const float* x, const float* dout, float* dx, int64_t n, bool accumulate) {
  int nt = num_threads();
  if (n <= 65536) nt = 1;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t lo = n * t / k, hi = n * (t + 1) / k;
    if (accumulate) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dx[i] += dout[i] * F::d(x[i]);
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dx[i] = dout[i] * F::d(x[i]);
    }
  }
}

void act_backward(Activation a, const float* x, const float* dout, float* dx, int64_t n, bool accumulate) {
  switch (a) {
    case Activation::None: return act_grad<IdentityGrad>(x, dout, dx, n, accumulate);
    case Activation::Relu: return act_grad<ReluGrad>(x, dout, dx, n, accumulate);
    case Activation::Gelu: return act_grad<GeluGrad>(x, dout, dx, n, accumulate);
    case Activation::GeluTanh: return act_grad<GeluTanhGrad>(x, dout, dx, n, accumulate);
  }
}

}  // namespace vitkit::kernels

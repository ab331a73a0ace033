// Element-wise activations as forward/backward pairs, and the fast exp/erf
// they and the softmax kernels use (vectorisable: no branches, no libm calls).
#pragma once
#include <cstdint>


namespace vitkit {

// The element-wise activations: the MLP's (Gelu, GeluTanh, Relu) and what a
// GEMM may apply to its output (None: nothing). One enum for both.
enum class Activation { None, Gelu, GeluTanh, Relu };
const char* to_string(Activation a);  // "none", "gelu", "gelu_tanh", "relu"

}  // namespace vitkit

namespace vitkit::kernels {

// out[n] = act(x[n]); out may alias x.
void act_forward(Activation a, const float* x, float* out, int64_t n);
// dx[n] (+)= dout[n] * act'(x[n]), x the activation's input. accumulate: dx += instead of =.
void act_backward(Activation a, const float* x, const float* dout, float* dx, int64_t n, bool accumulate = false);

// exp(x) with relative error below 1e-7 for x in [-87, 88]; clamped: about 1e-38
// below -87.3, +inf from 88.38.
float exp_approx(float x);
// erf(x) with absolute error below 1.5e-7.
float erf_approx(float x);
// out[i] = exp(x[i]).
void exp_inplace(float* x, int64_t n);

}  // namespace vitkit::kernels

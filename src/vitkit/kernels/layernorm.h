// LayerNorm over the last dimension, forward/backward pair.
#pragma once
#include <cstdint>

namespace vitkit::kernels {

// x, out: (N, D); w, b: (D); mean, rstd: (N) or null (inference). out may alias x.
void layernorm_forward(const float* x, const float* w, const float* b, float* out, float* mean, float* rstd,
                       int64_t N, int64_t D, float eps);

// dout, x: (N, D); mean, rstd from the forward. dx (N, D) is accumulated into
// (dx += ...) when accumulate, else overwritten. dw, db (D) are accumulated into.
void layernorm_backward(const float* dout, const float* x, const float* mean, const float* rstd, const float* w,
                        float* dx, float* dw, float* db, int64_t N, int64_t D, bool accumulate);

}  // namespace vitkit::kernels

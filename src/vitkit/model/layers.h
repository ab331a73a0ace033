// The ViT's layers as forward/backward pairs (the linear layer's pair is kernels/linear.h) on plain float buffers (llm.c
// style). Shapes in the comments: B batch, C channels, S image side, p patch,
// G = S/p grid side, P = G*G patches, T tokens (P, plus 1 with a class token),
// D model width, K = C*p*p inputs per patch.
#pragma once
#include <cstdint>

#include "vitkit/kernels/linear.h"
#include "vitkit/model/config.h"

namespace vitkit {

// img (B, C, S, S) -> cols (B*P, K): each row one patch in (c, ky, kx) order,
// the order of conv_proj.weight (D, C, p, p) flattened.
void im2col_forward(const float* img, float* cols, int64_t B, int64_t C, int64_t S, int64_t p);

// x (B, T, D) = [cls; emb (B, P, D)] + pos (T, D); cls (D) or null (T = P).
void tokens_forward(const float* emb, const float* cls, const float* pos, float* x, int64_t B, int64_t P,
                    int64_t D);
// dx (B, T, D) -> demb (B, P, D) (overwritten), dcls (D) and dpos (T, D) accumulated.
void tokens_backward(const float* dx, float* demb, float* dcls, float* dpos, int64_t B, int64_t P, int64_t D,
                     bool has_cls);

// x (B, T, D) -> out (B, D): the class token (row 0) or the mean of the patch
// tokens (rows first..T-1, first = 1 with a class token, else 0).
void pool_forward(Pooling pool, const float* x, float* out, int64_t B, int64_t T, int64_t D, bool has_cls);
// dout (B, D) -> dx (B, T, D), overwritten (zero where the pooling did not look).
void pool_backward(Pooling pool, const float* dout, float* dx, int64_t B, int64_t T, int64_t D, bool has_cls);

// out (n) = a (n) + b (n); out may alias a or b.
void add_forward(const float* a, const float* b, float* out, int64_t n);

}  // namespace vitkit

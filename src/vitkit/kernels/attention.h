// Multi-head self-attention on a packed qkv tensor, forward/backward pair.
//
// H heads of d values each, D = H * d (which need not be the model's width,
// as vit-pytorch's dim_head):
// qkv: (B, T, 3D) rows [q | k | v], head h uses columns h*d .. h*d+d-1 of each
// part, as PyTorch's nn.MultiheadAttention packs in_proj.
// out: (B, T, D), heads concatenated. lse: (B, H, T) log-sum-exp of each
// softmax row (saved for the backward pass; null for inference).
#pragma once
#include <cstdint>

namespace vitkit::kernels {

// Fused, flash-style: query tiles against key tiles with an online softmax; no
// T x T matrix is ever stored. Parallel over batch, heads and query tiles.
// q_rows (0 < q_rows <= T; default T): only the first q_rows queries of each
// image attend (every key still counts); out is then (B, q_rows, D) and lse
// (B, H, q_rows). Inference's last block uses q_rows = 1 (the class token).
void attention_forward(const float* qkv, float* out, float* lse, int64_t B, int64_t T, int64_t H, int64_t d,
                       int64_t q_rows = -1);

// dqkv (B, T, 3D) is overwritten. Recomputes the probabilities from lse.
void attention_backward(const float* dout, const float* qkv, const float* out, const float* lse, float* dqkv,
                        int64_t B, int64_t T, int64_t H, int64_t d);

// softmax(q k^T / sqrt(d)) of packed qkv (B, T, 3 H d) as probs (B, T, H, T):
// row (b, query), columns (head, key); in double, then f32. For analysis
// (activation statistics, attention entropy) and tests.
void attention_probs(const float* qkv, int64_t B, int64_t T, int64_t H, int64_t d, float* probs);

// Plain reference: full score matrix, std::exp softmax. For tests.
void attention_forward_reference(const float* qkv, float* out, int64_t B, int64_t T, int64_t H, int64_t d);

}  // namespace vitkit::kernels

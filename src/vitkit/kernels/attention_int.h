// Multi-head self-attention with integer products (quantize:attention=true):
// QK^T and P·V in integers, the softmax in f32.
//
// qkv (B, T, 3D) as attention.h packs it (H heads of d values, D = H d).
// Per image b and head h, with Q, K, V that head's (T, d) slices:
//   s_q = max|Q| / qmax (all T rows, whatever q_rows), qmax = 2^(bits-1) - 1 (1 when Q is all zero); so s_k, s_v
//   Qc = clamp(round(Q / s_q), -qmax, qmax), and Kc, Vc alike (int codes)
//   S_ij = sum_k Qc_ik Kc_jk (exact integers), c = (s_q * s_k) * (1 / sqrt(d)) in f32
//   z_ij = float(S_ij) * c, m_i = max_j z_ij, e_ij = exp(z_ij - m_i), sum_i = sum_j e_ij (j in order)
//   p_ij = e_ij / sum_i, Pc_ij = round(p_ij * pmax), pmax = 2^pbits - 1 (unsigned codes)
//   out_ik = float(sum_j Pc_ij Vc_jk) * (s_v / pmax)
// (round: to nearest, ties to even; exp: std::exp). Every step is defined, so
// a scalar reference reproduces the result bit for bit. q_rows as attention.h.
#pragma once
#include <cstdint>

namespace vitkit::kernels {

struct AttentionQuant {
  int bits = 8;   // Q, K, V codes: signed, 2..16
  int pbits = 8;  // probabilities: unsigned, 2..16
};

void attention_forward_int(const float* qkv, float* out, int64_t B, int64_t T, int64_t H, int64_t d,
                           const AttentionQuant& q, int64_t q_rows = -1);

}  // namespace vitkit::kernels

// GEMM over oneDNN's matmul: plain operands, or a weight packed once for
// inference. Primitives are created once per shape, layout and epilogue and cached.
#pragma once
#include <cstdint>
#include <memory>

#include "vitkit/kernels/activations.h"

namespace vitkit::kernels {

// C[M,N] = act(alpha * op(A) * op(B) + bias[N] + beta * C)
//   op(A) is M x K: A row-major M x K with leading dimension lda, or (ta) K x M.
//   op(B) is K x N: B row-major K x N with leading dimension ldb, or (tb) N x K.
// bias may be null; beta may be 0 (C is then only written).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr,
          Activation act = Activation::None);

// Whether oneDNN has bf16 matmuls on this CPU (not on AVX2-only CPUs).
bool gemm_bf16_native();

// The same with bf16 inputs (uint16_t bit patterns) and f32 accumulation and output.
// Without gemm_bf16_native(), the bf16 values are widened to f32 (exactly) and
// multiplied by the f32 GEMM: the same numerics, no speed-up.
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr,
               Activation act = Activation::None);

// Y[M,N] = act(X[M,K] W^T + b), W is N x K (a PyTorch Linear's weight).
inline void linear(const float* X, const float* W, const float* b, float* Y, int64_t M, int64_t K, int64_t N,
                   Activation act = Activation::None) {
  gemm(false, true, M, N, K, 1.f, X, K, W, K, 0.f, Y, N, b, act);
}

// A Linear's weight W (N, K) reordered once into the blocked layout oneDNN's
// f32 matmul reads fastest on this CPU, for inference. On AVX-512 (oneDNN's
// brgemm kernels) a product with it takes 0.94-0.98x the time of W as stored
// (bench/gemm_layouts_bench.cpp, ViT shapes); on AVX2 oneDNN's blocked choice
// gained nothing and was once 1.74x slower, so nothing is packed there.
class PackedWeight;

// The packed weight, or null where packing gains nothing (not an AVX-512 CPU).
// in_place: when the packed layout is exactly W's size (no padding: N a multiple
// of oneDNN's block), the packed bytes overwrite W itself (W as a plain matrix
// is then gone) and the result refers to it; otherwise it owns a packed copy.
std::shared_ptr<const PackedWeight> pack_weight(float* W, int64_t N, int64_t K, bool in_place);

// bf16 weights (bit patterns) packed into oneDNN's bf16 layout (an own copy;
// bf16 brgemm reads pairs of k interleaved): null without native bf16 matmuls.
std::shared_ptr<const PackedWeight> pack_weight_bf16(const uint16_t* W, int64_t N, int64_t K);

// Whether the packed bytes live in the W given to pack_weight (and own nothing).
bool packed_in_place(const PackedWeight& w);

// out (N, K) = the plain f32 weight back from a pack_weight result (reordered:
// exact). in_place_data as for linear_packed.
void unpack_weight(const PackedWeight& W, const float* in_place_data, float* out);

// out (N, K) = the bf16 weight back from a pack_weight_bf16 result (exact).
void unpack_weight_bf16(const PackedWeight& W, uint16_t* out);

// Bytes of the packed layout (what a packed weight holds in memory).
size_t packed_bytes(const PackedWeight& W);

// Y[M,N] = act(X[M,K] W^T + bias (+ Y when accumulate)) with a packed W.
//   in_place_data: where the packed bytes are when packed_in_place(W) (the W
//   given to pack_weight, or a copy of its bytes); ignored otherwise.
void linear_packed(const float* X, const PackedWeight& W, const float* in_place_data, const float* bias, float* Y,
                   int64_t M, Activation act = Activation::None, bool accumulate = false);
// The same with bf16 inputs X (bit patterns) and a pack_weight_bf16 weight.
void linear_packed_bf16(const uint16_t* X, const PackedWeight& W, const float* bias, float* Y, int64_t M,
                        Activation act = Activation::None, bool accumulate = false);

// Number of cached primitives (for tests and --verbose).
int gemm_cache_size();

}  // namespace vitkit::kernels

// GEMM: one entry point over oneDNN's matmul. Primitives are created once per
// shape, layout and epilogue and cached.
#pragma once
#include <cstdint>

namespace vitkit::kernels {

enum class Epilogue { None, Gelu, GeluTanh, Relu };

// C[M,N] = act(alpha * op(A) * op(B) + bias[N] + beta * C)
//   op(A) is M x K: A row-major M x K with leading dimension lda, or (ta) K x M.
//   op(B) is K x N: B row-major K x N with leading dimension ldb, or (tb) N x K.
// bias may be null; beta may be 0 (C is then only written).
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr,
          Epilogue act = Epilogue::None);

// Whether oneDNN has bf16 matmuls on this CPU (not on AVX2-only CPUs).
bool gemm_bf16_native();

// The same with bf16 inputs (uint16_t bit patterns) and f32 accumulation and output.
// Without gemm_bf16_native(), the bf16 values are widened to f32 (exactly) and
// multiplied by the f32 GEMM: the same numerics, no speed-up.
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias = nullptr,
               Epilogue act = Epilogue::None);

// Y[M,N] = act(X[M,K] W^T + b), W is N x K (a PyTorch Linear's weight).
inline void linear(const float* X, const float* W, const float* b, float* Y, int64_t M, int64_t K, int64_t N,
                   Epilogue act = Epilogue::None) {
  gemm(false, true, M, N, K, 1.f, X, K, W, K, 0.f, Y, N, b, act);
}

// Number of cached primitives (for tests and --verbose).
int gemm_cache_size();

}  // namespace vitkit::kernels

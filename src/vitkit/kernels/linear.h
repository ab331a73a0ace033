// A linear layer Y = X W^T + b as a forward/backward pair on plain float
// buffers (W (N, K), a PyTorch Linear's weight), through the GEMM of kernels/gemm.h.
#pragma once
#include <cstdint>

#include "vitkit/kernels/activations.h"

namespace vitkit {

// Y (M, N) = act(X (M, K) W^T + b), W (N, K), b (N) or null.
void linear_forward(const float* X, const float* W, const float* b, float* Y, int64_t M, int64_t K, int64_t N,
                    Activation act = Activation::None);
// dY (M, N), X (M, K), W (N, K):
//   dX (M, K) = dY W (overwritten, or added to when accumulate; skipped when null)
//   dW (N, K) += dY^T X (skipped when null: a frozen weight);  db (N) += column sums of dY (skipped when null)
void linear_backward(const float* dY, const float* X, const float* W, float* dX, float* dW, float* db, int64_t M,
                     int64_t K, int64_t N, bool accumulate = false);

// Column sums: out (N) += sum over rows of X (M, N).
void colsum_accumulate(const float* X, float* out, int64_t M, int64_t N);

}  // namespace vitkit

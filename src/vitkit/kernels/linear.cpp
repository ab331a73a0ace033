#include "vitkit/kernels/linear.h"

#include <omp.h>

#include <vector>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"

namespace vitkit {

void linear_forward(const float* X, const float* W, const float* b, float* Y, int64_t M, int64_t K, int64_t N,
                    Activation act) {
  kernels::linear(X, W, b, Y, M, K, N, act);
}

void colsum_accumulate(const float* X, float* out, int64_t M, int64_t N) {
  int nt = num_threads();
  if (M * N < 65536) nt = 1;
  std::vector<float> part(static_cast<size_t>(nt) * N, 0.f);
#pragma omp parallel num_threads(nt)
  {
    float* acc = part.data() + static_cast<size_t>(omp_get_thread_num()) * N;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < M; ++i) {
      const float* x = X + i * N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) acc[j] += x[j];
    }
  }
  for (int t = 0; t < nt; ++t)
    for (int64_t j = 0; j < N; ++j) out[j] += part[static_cast<size_t>(t) * N + j];
}

void linear_backward(const float* dY, const float* X, const float* W, float* dX, float* dW, float* db, int64_t M,
                     int64_t K, int64_t N, bool accumulate) {
  if (dX) kernels::gemm(false, false, M, K, N, 1.f, dY, N, W, K, accumulate ? 1.f : 0.f, dX, K);
  if (dW) kernels::gemm(true, false, N, K, M, 1.f, dY, N, X, K, 1.f, dW, K);
  if (db) colsum_accumulate(dY, db, M, N);
}

}  // namespace vitkit

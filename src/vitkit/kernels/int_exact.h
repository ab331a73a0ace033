// The integer linear layer of any width, evaluated exactly: weights of 2..16
// bits (int32 codes), inputs quantized to 2..16 bits, with kernels::linear's
// S8/U8 formula (gemm.h: the same input quantization, integer sums, and the
// same order of f32 dequantization operations). vitkit runs widths its integer
// kernels do not take (9..16 bits) through it; where both apply (8 bits and
// fewer) it gives the kernels' bits (tests/gemm_test.cpp). The integer sums
// are computed as double products (exact: |sum| < 2^53 for K <= 2^20 at 16
// bits) through Eigen's GEMM.
#pragma once
#include <cstdint>

#include "vitkit/kernels/gemm.h"

namespace vitkit::kernels {

struct IntWeights {
  int64_t N = 0, K = 0;
  const int32_t* codes = nullptr;  // (N, K) row-major
  ScaleGranularity granularity = ScaleGranularity::Channel;
  int64_t group = 0;               // Group: consecutive k per scale
  const float* scales = nullptr;   // Tensor 1, Channel N, Group N * (K / group)
  const int32_t* zeros = nullptr;  // laid out as scales; null: 0
};

// Y (M, N) = act(dequantized integer product + bias (+ Y when accumulate)).
// xq.bits in 2..16.
void linear_int_exact(const float* X, const IntWeights& W, const float* bias, float* Y, int64_t M, Activation act,
                      bool accumulate, const InputQuant& xq);

// Row x (K values) quantized as the kernels do: scale, zero point, and the
// codes q (clamp(round(x / s) + z, 0, 2^bits - 1)) when codes is not null.
void quantize_input_row(const float* x, int64_t K, const InputQuant& xq, float* scale, int32_t* zero,
                        int32_t* codes);

}  // namespace vitkit::kernels

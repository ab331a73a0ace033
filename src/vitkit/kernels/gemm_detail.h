// Internal to kernels/gemm*.cpp: the PackedWeight they share, and what
// gemm_int8.cpp uses of gemm.cpp's oneDNN machinery. Not for other code.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <dnnl.hpp>
#include <memory>
#include <vector>

#include "vitkit/kernels/gemm.h"

namespace vitkit::kernels {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<void, FreeDeleter>;
// 64-byte aligned, size rounded up to 64 (throws std::bad_alloc).
AlignedBytes aligned_bytes(size_t bytes);

// An S8/U8 weight prepared by pack_weight_int8 (see gemm_int8.cpp for the layouts).
struct Int8Packed {
  enum class Form { Panels, OneDnn } form = Form::Panels;
  WeightType type = WeightType::S8;
  ScaleGranularity granularity = ScaleGranularity::Tensor;
  int64_t group = 0;
  int input_bits = 8;           // OneDnn: exact only for inputs of at most these bits
  AlignedBytes bytes;           // Panels: the panels; OneDnn: W as s8 (U8: W - 128), (N, K) row-major
  size_t size = 0;              // bytes' size
  std::vector<int32_t> rowsum;  // OneDnn: sum_k of W's s8 values per output n
};

class PackedWeight {
 public:
  int64_t N = 0, K = 0;
  dnnl::memory::data_type type = dnnl::memory::data_type::f32;  // f32, bf16; s8 for integer weights
  dnnl::memory::desc desc;           // f32/bf16: the (K, N) matrix W^T in oneDNN's blocked layout
  AlignedBytes own;                  // f32/bf16: the packed bytes, null when they were written over W
  std::unique_ptr<Int8Packed> int8;  // integer weights
};

// Threads a GEMM called here runs on: 1 inside a parallel region, else OpenMP's count.
int gemm_threads();

// C (M, N) s32 = A (M, K) u8 row-major x W^T, W (N, K) s8 row-major, through a
// cached oneDNN matmul (exact only where int8_kernel says so).
void matmul_u8s8s32(const uint8_t* A, const int8_t* W, int32_t* C, int64_t M, int64_t N, int64_t K);

// The integer paths of linear (gemm_int8.cpp).
void linear_int8(const float* X, const WeightOperand& W, const float* bias, float* Y, int64_t M, Activation act,
                 bool accumulate, const InputQuant& xq);

}  // namespace vitkit::kernels

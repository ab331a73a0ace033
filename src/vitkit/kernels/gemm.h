// GEMM over oneDNN's matmul: plain operands, or a weight packed once for
// inference. Primitives are created once per shape, layout and epilogue and cached.
// linear(X, WeightOperand, ...) is the one entry point for every linear layer
// representation: f32, bf16 and integer (S8/U8) weights, plain or packed.
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

// ---- the one entry point for linear layers -----------------------------------

enum class WeightType { F32, BF16, S8, U8 };
enum class ScaleGranularity { Tensor, Channel, Group };

// A Linear's weight W (N, K) as one representation stores it (a view: nothing is
// owned or copied).
struct WeightOperand {
  WeightType type = WeightType::F32;
  int64_t N = 0, K = 0;                  // W is (N, K): N outputs, K inputs (a PyTorch Linear weight)
  const void* data = nullptr;            // row-major (N, K) elements of `type`, or the packed bytes
  const PackedWeight* packed = nullptr;  // non-null: data is in this packed layout
  //   F32: pack_weight's result; data = the in-place bytes (packed_in_place), else ignored.
  //   BF16: pack_weight_bf16's result (data ignored). S8/U8: pack_weight_int8's (data ignored).
  // Integer types only: W_real[n,k] = scales[g] * (W[n,k] - zeros[g]), g = the scale group of (n,k)
  ScaleGranularity granularity = ScaleGranularity::Tensor;
  int64_t group = 0;               // Group: consecutive k per group (K % group == 0)
  const float* scales = nullptr;   // Tensor: 1 value; Channel: N; Group: N * (K / group), row-major
  const int32_t* zeros = nullptr;  // asymmetric weights' zero points, laid out as scales; null: all 0
                                   // (S8: in [-128, 127], U8: in [0, 255])
};

// How f32 inputs are quantized when the weight is integer.
struct InputQuant {
  enum class Mode { DynamicPerRow, Static } mode = Mode::DynamicPerRow;
  int bits = 8;       // 2..8: inputs are unsigned codes 0 .. 2^bits - 1 (asymmetric)
  float scale = 0.f;  // Static: x_q = clamp(round(x / scale) + zero, 0, 2^bits - 1)
  int32_t zero = 0;   // Static
};

// Y (M, N) = act(X (M, K) W^T + bias (+ Y's previous content when accumulate)):
// as gemm, the previous Y is added before the activation. bias (N) may be null.
//   F32: gemm / linear_packed. BF16: X rounded to bf16 (nearest even) into this
//   thread's buffer, then gemm_bf16 / linear_packed_bf16 (their widening fallback
//   without native bf16).
//   S8/U8: integer product, exact, then f32 dequantization, in this order
//   (qmax = 2^bits - 1; round = nearest, ties to even; every float op in f32;
//   fma = one rounding; x > 0 ? x : 0 and x < q ? x : q are the clamps):
//     input scale and zero per row m:
//       Static:  s = xq.scale, z = xq.zero
//       Dynamic: lo = min(0, min_k X[m,k]), hi = max(0, max_k X[m,k]),
//                s = (hi - lo) / qmax; s == 0 ? (s = 1, z = 0) : z = clamp(round(-lo / s), 0, qmax)
//     code:   q[m,k] = (int) clamp(round(X[m,k] / s) + (float) z, 0, qmax)
//     T_g[m,n] = sum over k of group g (exact integer) of (q[m,k] - z) * (W[n,k] - zeros[n,g])
//     A   = scales[n,0] * (float) T_0;  A = fma(scales[n,g], (float) T_g, A) for g = 1 .. G-1
//           (Tensor/Channel: G = 1, one group of all K; Tensor's scale and zero serve every n)
//     c   = bias ? bias[n] : 0;  if accumulate: c = c + Y[m,n]
//     Y[m,n] = act(fma(s, A, c))   (act: linear_activation, element by element)
//   Inputs must be finite. K <= 33025 (sums of 255 * 255 products then fit in s32).
// Throws vitkit::Error for inconsistent operands (null data or scales, bad group,
// bits or zero points out of range, a packed weight of another type or grouping).
// Thread-safe: callers inside an OpenMP parallel region each run on their own thread.
void linear(const float* X, const WeightOperand& W, const float* bias, float* Y, int64_t M,
            Activation act = Activation::None, bool accumulate = false, const InputQuant& xq = {});

// An S8/U8 weight prepared once for linear (WeightOperand::packed; data is then
// not read): reordered for the kernel that will multiply it, row sums computed.
// The operand's scales and zero points are still read per call; its type, N, K,
// granularity and group must be those it was packed with. input_bits: the most
// input bits calls will use (fewer let more weights use oneDNN's kernel, see
// int8_kernel; a call with more bits than packed for then throws).
std::shared_ptr<const PackedWeight> pack_weight_int8(const WeightOperand& W, int input_bits = 8);
// out (N, K) = the S8/U8 weight back from a pack_weight_int8 result (exact).
void unpack_weight_int8(const PackedWeight& W, void* out);

// The activation linear applies to integer weights' outputs: out[i] = act(x[i])
// by vecmath.h's approximations (within a few 1e-7 of act_forward), every element
// through the same AVX2 instructions, so that a value's result depends on nothing
// else (act_forward's serial and parallel loops round differently, so its
// result depends on n). out may alias x.
void linear_activation(Activation a, const float* x, float* out, int64_t n);

// Which integer kernel linear uses for W and xq (for tests, benchmarks and --verbose):
//   "onednn": oneDNN's u8 x s8 -> s32 matmul, where it is exact on this CPU. With
//             VNNI (vpdpbusd) always; without it oneDNN's kernel sums pairs of
//             u8 * s8 products in saturating s16 (vpmaddubsw), so only when
//             2 * qmax * max(W) <= 32767 and 2 * qmax * min(W) >= -32768 (7-bit inputs,
//             or 8-bit inputs with |W| <= 64), W as s8 (U8: W - 128). Checked once
//             against exact sums at the bound (never used if that check fails).
//   "s16":    vitkit's AVX2 kernel: q - z and W widened to s16, vpmaddwd (exact);
//             the only one for Group scales (oneDNN 2.x matmul has none).
const char* int8_kernel(const WeightOperand& W, const InputQuant& xq = {});

// Number of cached primitives (for tests and --verbose).
int gemm_cache_size();

}  // namespace vitkit::kernels

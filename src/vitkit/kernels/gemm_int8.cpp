// The integer (S8/U8 weight) paths of kernels::linear: input quantization, an
// exact integer product, and the f32 dequantization gemm.h documents.
//
// Two integer kernels:
//   oneDNN's u8 x s8 -> s32 matmul, where it is exact on this CPU (int8_kernel);
//     zero points are then corrected in integers:
//       T = C - zw * sum_k q - z * sum_k w + K * z * zw   (w, zw: W and its zero as s8)
//   vitkit's AVX2 kernel ("s16"), exact for every 8-bit value: x' = q - z is
//     stored as s16, W's bytes are widened to s16 in registers (vpmovsx/zxbw),
//     vpmaddwd multiplies pairs into s32 (|a*b + c*d| <= 2 * 255 * 255: no
//     saturation); per scale group g the s32 sums are corrected for W's zero
//     points (T_g = sum x' w - zw_g * sum_g x') and folded into f32 with the
//     group's scale before the next group starts.
// Every s32 sum is exact: K <= 33025 bounds |T| by 33025 * 255 * 255 < 2^31,
// and the corrections are computed in wrapping 32-bit arithmetic (their exact
// result fits, so the wrapped one is it).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/kernels/gemm_detail.h"

namespace vitkit::kernels {

namespace {

constexpr int64_t kMaxK = 33025;  // 33025 * 255 * 255 < 2^31
constexpr int NR = 16;            // s16 kernel: columns per panel (two ymm of s32)
constexpr int MR = 6;             // s16 kernel: rows per tile (12 accumulators)

const char* type_name(WeightType t) { return t == WeightType::S8 ? "S8" : "U8"; }
const char* gran_name(ScaleGranularity g) {
  return g == ScaleGranularity::Tensor ? "Tensor" : g == ScaleGranularity::Channel ? "Channel" : "Group";
}

// The scale grouping of a (N, K) weight, and the s16 kernel's padded k layout:
// each group of L consecutive k is followed by one zero slot when L is odd, so
// that vpmaddwd's pairs (k, k+1) never straddle two groups.
struct Geometry {
  int64_t N = 0, K = 0;
  int64_t L = 0;       // k per scale group (Tensor, Channel: K)
  int64_t G = 0;       // groups along k (Tensor, Channel: 1)
  int64_t Lp = 0;      // L rounded up to even
  int64_t Kp = 0;      // G * Lp: a row's length in the padded layout
  int64_t panels = 0;  // ceil(N / NR)
};

Geometry geometry(const WeightOperand& W) {
  Geometry g;
  g.N = W.N;
  g.K = W.K;
  g.L = W.granularity == ScaleGranularity::Group ? W.group : W.K;
  g.G = W.K / g.L;
  g.Lp = g.L + (g.L & 1);
  g.Kp = g.G * g.Lp;
  g.panels = (W.N + NR - 1) / NR;
  return g;
}

int64_t scale_count(const WeightOperand& W, const Geometry& g) {
  return W.granularity == ScaleGranularity::Tensor ? 1 : W.granularity == ScaleGranularity::Channel ? W.N : W.N * g.G;
}

// Checks what pack_weight_int8 and linear both need of W.
Geometry check_weight(const WeightOperand& W, const char* where) {
  check(W.type == WeightType::S8 || W.type == WeightType::U8, where, ": not an S8/U8 weight");
  const char* t = type_name(W.type);
  check(W.N > 0 && W.K > 0, where, ": empty ", t, " weight (", W.N, "x", W.K, ")");
  check(W.K <= kMaxK, where, ": ", t, " weight (", W.N, "x", W.K, ") has K = ", W.K, " inputs; integer weights ",
        "support K <= ", kMaxK, " (the most whose sums of 255 * 255 products fit in s32)");
  if (W.granularity == ScaleGranularity::Group)
    check(W.group > 0 && W.K % W.group == 0, where, ": ", t, " weight (", W.N, "x", W.K,
          ") with Group scales: ", "group = ", W.group, " does not divide K = ", W.K,
          " (each group is `group` consecutive k, K % group == 0)");
  return geometry(W);
}

// Checks a linear call's W (scales, zero points, packed) and xq.
Geometry check_call(const WeightOperand& W, const InputQuant& xq) {
  const Geometry g = check_weight(W, "linear");
  const char* t = type_name(W.type);
  check(W.scales != nullptr, "linear: ", t, " weight (", W.N, "x", W.K, ") has no scales (WeightOperand::scales is ",
        "null); ", gran_name(W.granularity), " needs ", scale_count(W, g), " value(s)");
  if (W.zeros) {
    const int32_t lo = W.type == WeightType::S8 ? -128 : 0, hi = W.type == WeightType::S8 ? 127 : 255;
    const int64_t n = scale_count(W, g);
    for (int64_t i = 0; i < n; ++i)
      check(W.zeros[i] >= lo && W.zeros[i] <= hi, "linear: ", t, " weight (", W.N, "x", W.K, ") zero point [", i,
            "] = ", W.zeros[i], " is outside [", lo, ", ", hi, "]");
  }
  check(xq.bits >= 2 && xq.bits <= 8, "linear: InputQuant::bits = ", xq.bits, " is outside 2..8 (inputs are ",
        "unsigned codes 0 .. 2^bits - 1)");
  if (xq.mode == InputQuant::Mode::Static) {
    const int qmax = (1 << xq.bits) - 1;
    check(xq.scale > 0.f && std::isfinite(xq.scale), "linear: static input quantization needs a finite scale > 0, ",
          "got ", xq.scale);
    check(xq.zero >= 0 && xq.zero <= qmax, "linear: static input zero point ", xq.zero, " is outside 0..", qmax, " (",
          xq.bits, " bits)");
  }
  if (W.packed) {
    const Int8Packed* P = W.packed->int8.get();
    if (!P || P->type != W.type || W.packed->N != W.N || W.packed->K != W.K || P->granularity != W.granularity ||
        (W.granularity == ScaleGranularity::Group && P->group != W.group))
      fail("linear: the packed weight is not a pack_weight_int8 of this ", t, " ", W.N, "x", W.K, " weight with ",
           gran_name(W.granularity), " scales",
           W.granularity == ScaleGranularity::Group ? cat(" (group ", W.group, ")") : std::string(),
           "; a packed integer weight is used with the type, shape and grouping it was packed with");
    check(P->form != Int8Packed::Form::OneDnn || xq.bits <= P->input_bits, "linear: the ", t, " weight (", W.N, "x",
          W.K, ") was packed for inputs of at most ", P->input_bits, " bits (oneDNN's kernel is exact only for ",
          "those here), called with ", xq.bits, "; pack it with input_bits = ", xq.bits);
  } else {
    check(W.data != nullptr, "linear: ", t, " weight (", W.N, "x", W.K, ") has no data");
  }
  return g;
}

// ---- where oneDNN's u8 x s8 -> s32 matmul is exact ----------------------------

enum class Regime {
  None,         // never (its check failed)
  PairBounded,  // without VNNI: pairs of products are summed in saturating s16
  Any           // VNNI: vpdpbusd sums four products in s32
};

bool exact_in(Regime r, int qmax, int wmin, int wmax) {
  if (r == Regime::Any) return true;
  if (r == Regime::None) return false;
  return 2 * qmax * std::max(wmax, 0) <= 32767 && 2 * qmax * std::min(wmin, 0) >= -32768;
}

// The regime this CPU's oneDNN claims, checked once against exact int64 sums at
// its bounds (without VNNI: 128 x -128 pairs sum to -32768 exactly, 255 x 64 to
// 32640; constant and random operands, GEMV and odd shapes, sums beyond 2^24).
// If anything differs, oneDNN's int8 matmul is not used at all.
Regime onednn_regime() {
  static const Regime r = [] {
    const bool vnni = __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
    const Regime claim = vnni ? Regime::Any : Regime::PairBounded;
    struct Case {
      int xlo, xhi, wlo, whi;
    };
    std::vector<Case> cases;
    if (vnni)
      cases = {{255, 255, -128, -128}, {255, 255, 127, 127}, {0, 255, -128, 127}};
    else
      cases = {{128, 128, -128, -128}, {128, 128, 127, 127}, {255, 255, 64, 64},
               {255, 255, -64, -64},   {0, 127, -128, 127},  {127, 127, 127, 127}};
    const int64_t shapes[][3] = {{1, 1, 1},     {1, 64, 37},  {5, 33, 1},  {3, 7, 10},
                                 {17, 300, 40}, {2, 2100, 3}, {64, 64, 64}};
    std::mt19937 rng(7);
    try {
      for (const Case& c : cases)
        for (const auto& s : shapes) {
          const int64_t M = s[0], K = s[1], N = s[2];
          std::vector<uint8_t> x(size_t(M * K));
          std::vector<int8_t> w(size_t(N * K));
          std::vector<int32_t> y(size_t(M * N));
          for (auto& v : x) v = uint8_t(c.xlo + int(rng() % uint32_t(c.xhi - c.xlo + 1)));
          for (auto& v : w) v = int8_t(c.wlo + int(rng() % uint32_t(c.whi - c.wlo + 1)));
          matmul_u8s8s32(x.data(), w.data(), y.data(), M, N, K);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              int64_t e = 0;
              for (int64_t k = 0; k < K; ++k) e += int64_t(x[size_t(m * K + k)]) * w[size_t(n * K + k)];
              if (e != y[size_t(m * N + n)]) return Regime::None;
            }
        }
    } catch (const std::exception&) {
      return Regime::None;
    }
    return claim;
  }();
  return r;
}

// Whether oneDNN's kernel multiplies W (as s8: U8 as W - 128) exactly with
// inputs up to qmax: W's range row by row, stopping at the first row outside.
bool weight_fits_onednn(const WeightOperand& W, int qmax) {
  const Regime r = onednn_regime();
  if (r == Regime::None) return false;
  if (r == Regime::Any) return true;
  const int64_t N = W.N, K = W.K;
  const int off = W.type == WeightType::U8 ? -128 : 0;
  for (int64_t n = 0; n < N; ++n) {
    int lo = 127, hi = -128;
    if (W.type == WeightType::S8) {
      const int8_t* w = static_cast<const int8_t*>(W.data) + n * K;
      for (int64_t k = 0; k < K; ++k) {
        lo = std::min<int>(lo, w[k]);
        hi = std::max<int>(hi, w[k]);
      }
    } else {
      const uint8_t* w = static_cast<const uint8_t*>(W.data) + n * K;
      for (int64_t k = 0; k < K; ++k) {
        lo = std::min<int>(lo, w[k] + off);
        hi = std::max<int>(hi, w[k] + off);
      }
    }
    if (!exact_in(r, qmax, lo, hi)) return false;
  }
  return true;
}

// W as s8 into w8 (U8: W - 128; S8: not copied, w8 unused) and its row sums.
const int8_t* weight_s8(const WeightOperand& W, std::vector<int8_t>& w8, std::vector<int32_t>& rowsum) {
  const int64_t N = W.N, K = W.K;
  rowsum.resize(size_t(N));
  const int8_t* out = static_cast<const int8_t*>(W.data);
  if (W.type == WeightType::U8) {
    w8.resize(size_t(N * K));
    const uint8_t* u = static_cast<const uint8_t*>(W.data);
    for (int64_t i = 0; i < N * K; ++i) w8[size_t(i)] = int8_t(int(u[i]) - 128);
    out = w8.data();
  }
  for (int64_t n = 0; n < N; ++n) {
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += out[n * K + k];
    rowsum[size_t(n)] = s;
  }
  return out;
}

// ---- input quantization -------------------------------------------------------

struct RowQ {
  float s;
  int32_t z;
};

inline float clampf(float v, float qmax) {
  v = v > 0.f ? v : 0.f;       // as _mm256_max_ps(v, 0)
  return v < qmax ? v : qmax;  // as _mm256_min_ps(v, qmax)
}

// Row m's scale and zero point (gemm.h's formula).
RowQ row_params(const float* x, int64_t K, const InputQuant& xq, int qmax) {
  if (xq.mode == InputQuant::Mode::Static) return {xq.scale, xq.zero};
  __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, vlo);
  _mm256_store_ps(h, vhi);
  float lo = 0.f, hi = 0.f;
  for (int i = 0; i < 8; ++i) {
    lo = std::min(lo, l[i]);
    hi = std::max(hi, h[i]);
  }
  for (; k < K; ++k) {
    lo = std::min(lo, x[k]);
    hi = std::max(hi, x[k]);
  }
  const float s = (hi - lo) / float(qmax);
  if (s == 0.f) return {1.f, 0};
  return {s, int32_t(clampf(std::nearbyint(-lo / s), float(qmax)))};
}

// Codes of 8 inputs as s32: clamp(round(x / s) + z, 0, qmax).
inline __m256i codes8(const float* x, __m256 s, __m256 zf, __m256 qm) {
  __m256 v = _mm256_div_ps(_mm256_loadu_ps(x), s);
  v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_add_ps(v, zf);
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), qm);
  return _mm256_cvttps_epi32(v);
}
inline int32_t code1(float x, float s, float zf, float qm) { return int32_t(clampf(std::nearbyint(x / s) + zf, qm)); }

inline int32_t hsum(__m256i v) {
  __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0x4e));
  a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0xb1));
  return _mm_cvtsi128_si32(a);
}

// s16 kernel's row: out[kk] = q - z in the padded layout (Kp values), gsum[g] =
// sum of group g's q - z (when gsum is not null).
void quant_row_s16(const float* x, const Geometry& g, RowQ rq, int qmax, int16_t* out, int32_t* gsum) {
  const __m256 s = _mm256_set1_ps(rq.s), zf = _mm256_set1_ps(float(rq.z)), qm = _mm256_set1_ps(float(qmax));
  const __m256i zi = _mm256_set1_epi32(rq.z);
  for (int64_t gi = 0; gi < g.G; ++gi) {
    const float* xs = x + gi * g.L;
    int16_t* o = out + gi * g.Lp;
    __m256i acc = _mm256_setzero_si256();
    int64_t j = 0;
    for (; j + 8 <= g.L; j += 8) {
      const __m256i d = _mm256_sub_epi32(codes8(xs + j, s, zf, qm), zi);
      acc = _mm256_add_epi32(acc, d);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + j),
                       _mm_packs_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1)));
    }
    int32_t sum = hsum(acc);
    for (; j < g.L; ++j) {
      const int32_t d = code1(xs[j], rq.s, float(rq.z), float(qmax)) - rq.z;
      o[j] = int16_t(d);
      sum += d;
    }
    if (g.L & 1) o[g.L] = 0;
    if (gsum) gsum[gi] = sum;
  }
}

// oneDNN's row: out[k] = q (u8); returns sum_k q.
int32_t quant_row_u8(const float* x, int64_t K, RowQ rq, int qmax, uint8_t* out) {
  const __m256 s = _mm256_set1_ps(rq.s), zf = _mm256_set1_ps(float(rq.z)), qm = _mm256_set1_ps(float(qmax));
  __m256i acc = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256i c = codes8(x + k, s, zf, qm);
    acc = _mm256_add_epi32(acc, c);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + k), _mm_packus_epi16(w, w));
  }
  int32_t sum = hsum(acc);
  for (; k < K; ++k) {
    const int32_t c = code1(x[k], rq.s, float(rq.z), float(qmax));
    out[k] = uint8_t(c);
    sum += c;
  }
  return sum;
}

// ---- per-thread scratch ---------------------------------------------------------

// A buffer that only grows (so calls after the first allocate nothing).
struct Scratch {
  AlignedBytes p;
  size_t size = 0;
  template <typename T>
  T* get(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes > size) {
      p = aligned_bytes(bytes);
      size = (bytes + 63) / 64 * 64;
    }
    return static_cast<T*>(p.get());
  }
};

// ---- the epilogue's activation --------------------------------------------------
// vecmath.h's exp, erf and tanh written out in AVX2 with explicit fma, so that
// every element goes through the same instructions (tails through a padded
// vector): a value's result does not depend on where it sits.

inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 erf8(__m256 x) {
  const __m256 z = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x), x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(7.853861353153693e-5f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.010193625184903e-4f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.188327685732524e-3f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.685381193529856e-2f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.128358514861418e-1f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-3.761262582423300e-1f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.128379165726710f));
  const __m256 small = _mm256_mul_ps(x, p);
  const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.f), _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.f)));
  __m256 q = _mm256_set1_ps(0.17087277f);
  for (float c :
       {-0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f})
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(c));
  const __m256 poly = _mm256_fmadd_ps(q, t, _mm256_fnmadd_ps(z, z, _mm256_set1_ps(-1.26551223f)));
  const __m256 r = _mm256_fnmadd_ps(t, exp8(poly), _mm256_set1_ps(1.f));
  const __m256 large =
      _mm256_blendv_ps(r, _mm256_sub_ps(_mm256_setzero_ps(), r), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
  return _mm256_blendv_ps(large, small, _mm256_cmp_ps(z, _mm256_set1_ps(1.f), _CMP_LT_OQ));
}

inline __m256 act8(Activation a, __m256 x) {
  switch (a) {
    case Activation::None: return x;
    case Activation::Relu: return _mm256_max_ps(x, _mm256_setzero_ps());  // x > 0 ? x : 0
    case Activation::Gelu: {
      const __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
      return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.f), e));
    }
    case Activation::GeluTanh: {
      const __m256 a3 = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), x), x);
      const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f), _mm256_fmadd_ps(a3, x, x));
      const __m256 e = exp8(_mm256_mul_ps(_mm256_set1_ps(2.f), u));
      const __m256 t =
          _mm256_sub_ps(_mm256_set1_ps(1.f), _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(e, _mm256_set1_ps(1.f))));
      return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.f), t));
    }
  }
  return x;
}

void act_span(Activation a, const float* x, float* out, int64_t n) {
  if (a == Activation::None) {
    if (out != x) std::memmove(out, x, size_t(n) * sizeof(float));
    return;
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, act8(a, _mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float t[8] = {};
    std::memcpy(t, x + i, size_t(n - i) * sizeof(float));
    _mm256_store_ps(t, act8(a, _mm256_load_ps(t)));
    std::memcpy(out + i, t, size_t(n - i) * sizeof(float));
  }
}

// ---- the s16 kernel -------------------------------------------------------------

// Panel j holds columns n0 = 16 j .. n0 + 15 of W, k in the padded layout, as
// 32-byte rows per pair p of k slots: byte p*32 + c*2 + e is W[n0 + c, slot 2p + e]
// (0 for columns >= N and for padding slots). Its first 16 bytes widen to the
// s16 pairs of columns 0..7, the next 16 to those of columns 8..15.
void pack_panel(const uint8_t* W, const Geometry& g, int64_t j, uint8_t* out) {
  const int64_t n0 = j * NR, cols = std::min<int64_t>(NR, g.N - n0), pairs = g.Kp / 2;
  if (g.L % 2 == 0) {
    // Slot = k: a 16 x (K/2) transpose of 2-byte elements, 8 pairs x 8 columns at a time.
    int64_t p = 0;
    for (; p + 8 <= pairs; p += 8)
      for (int h = 0; h < 2; ++h) {
        __m128i r[8];
        for (int c = 0; c < 8; ++c)
          r[c] = h * 8 + c < cols
                     ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(W + (n0 + h * 8 + c) * g.K + 2 * p))
                     : _mm_setzero_si128();
        const __m128i t0 = _mm_unpacklo_epi16(r[0], r[1]), t1 = _mm_unpackhi_epi16(r[0], r[1]);
        const __m128i t2 = _mm_unpacklo_epi16(r[2], r[3]), t3 = _mm_unpackhi_epi16(r[2], r[3]);
        const __m128i t4 = _mm_unpacklo_epi16(r[4], r[5]), t5 = _mm_unpackhi_epi16(r[4], r[5]);
        const __m128i t6 = _mm_unpacklo_epi16(r[6], r[7]), t7 = _mm_unpackhi_epi16(r[6], r[7]);
        const __m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2);
        const __m128i u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);
        const __m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6);
        const __m128i u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);
        const __m128i v[8] = {_mm_unpacklo_epi64(u0, u4), _mm_unpackhi_epi64(u0, u4), _mm_unpacklo_epi64(u1, u5),
                              _mm_unpackhi_epi64(u1, u5), _mm_unpacklo_epi64(u2, u6), _mm_unpackhi_epi64(u2, u6),
                              _mm_unpacklo_epi64(u3, u7), _mm_unpackhi_epi64(u3, u7)};
        for (int q = 0; q < 8; ++q) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + (p + q) * 32 + h * 16), v[q]);
      }
    for (; p < pairs; ++p)
      for (int c = 0; c < NR; ++c)
        for (int e = 0; e < 2; ++e) out[p * 32 + c * 2 + e] = c < cols ? W[(n0 + c) * g.K + 2 * p + e] : 0;
    return;
  }
  std::memset(out, 0, size_t(g.Kp) * NR);
  for (int64_t c = 0; c < cols; ++c) {
    const uint8_t* w = W + (n0 + c) * g.K;
    for (int64_t gi = 0; gi < g.G; ++gi)
      for (int64_t i = 0; i < g.L; ++i) {
        const int64_t slot = gi * g.Lp + i;
        out[(slot >> 1) * 32 + c * 2 + (slot & 1)] = w[gi * g.L + i];
      }
  }
}

// The pair of s16 at p in all 8 lanes (vbroadcastss; the A buffer is only
// written through intrinsics and int16 stores in other functions).
inline __m256i bcast_pair(const int16_t* p) {
  return _mm256_castps_si256(_mm256_broadcast_ss(reinterpret_cast<const float*>(p)));
}

// s32 sums of R rows of A (row stride lda, s16 pairs) times gp pairs of the
// panel B into acc (R x 16). Its own function: inlined into the group loop,
// GCC kept the 12 accumulators on the stack.
template <int R, bool U8W>
__attribute__((noinline)) void kloop(const int16_t* a, int64_t lda, const uint8_t* b, int64_t gp, int32_t* acc) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
          c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < gp; ++p) {
    const __m128i* bp = reinterpret_cast<const __m128i*>(b + p * 32);
    const __m256i b0 = U8W ? _mm256_cvtepu8_epi16(_mm_loadu_si128(bp)) : _mm256_cvtepi8_epi16(_mm_loadu_si128(bp));
    const __m256i b1 =
        U8W ? _mm256_cvtepu8_epi16(_mm_loadu_si128(bp + 1)) : _mm256_cvtepi8_epi16(_mm_loadu_si128(bp + 1));
#define VK_ROW(i, x0, x1)                                 \
  if constexpr (R > i) {                                  \
    const __m256i av = bcast_pair(a + i * lda + 2 * p);   \
    x0 = _mm256_add_epi32(x0, _mm256_madd_epi16(av, b0)); \
    x1 = _mm256_add_epi32(x1, _mm256_madd_epi16(av, b1)); \
  }
    VK_ROW(0, c00, c01)
    VK_ROW(1, c10, c11) VK_ROW(2, c20, c21) VK_ROW(3, c30, c31) VK_ROW(4, c40, c41) VK_ROW(5, c50, c51)
#undef VK_ROW
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
#define VK_OUT(i, x0, x1)                  \
  if constexpr (R > i) {                   \
    _mm256_store_si256(o + 2 * i, x0);     \
    _mm256_store_si256(o + 2 * i + 1, x1); \
  }
  VK_OUT(0, c00, c01)
  VK_OUT(1, c10, c11) VK_OUT(2, c20, c21) VK_OUT(3, c30, c31) VK_OUT(4, c40, c41) VK_OUT(5, c50, c51)
#undef VK_OUT
}

// One tile: R rows (A: row stride lda, padded layout) times one panel B, for
// every group g: s32 sums, corrected for the zero points zt (16 per group, if
// ZP; gs: the rows' group sums of x', row stride G), folded into fa (R x 16 f32):
// fa = st_0 * T_0, then fa = fma(st_g, T_g, fa).
template <int R, bool U8W, bool ZP>
void tile(const int16_t* A, int64_t lda, const uint8_t* B, int64_t G, int64_t gp, const float* st, const int32_t* zt,
          const int32_t* gs, float* fa) {
  alignas(32) int32_t acc[MR * NR];
  for (int64_t g = 0; g < G; ++g) {
    kloop<R, U8W>(A + g * gp * 2, lda, B + g * gp * 32, gp, acc);
    const __m256 s0 = _mm256_loadu_ps(st + g * NR), s1 = _mm256_loadu_ps(st + g * NR + 8);
    __m256i z0 = _mm256_setzero_si256(), z1 = z0;
    if constexpr (ZP) {
      z0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zt + g * NR));
      z1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zt + g * NR + 8));
    }
    for (int i = 0; i < R; ++i) {
      __m256i t0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * NR));
      __m256i t1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc + i * NR + 8));
      if constexpr (ZP) {
        const __m256i sv = _mm256_set1_epi32(gs[i * G + g]);
        t0 = _mm256_sub_epi32(t0, _mm256_mullo_epi32(z0, sv));
        t1 = _mm256_sub_epi32(t1, _mm256_mullo_epi32(z1, sv));
      }
      const __m256 f0 = _mm256_cvtepi32_ps(t0), f1 = _mm256_cvtepi32_ps(t1);
      float* o = fa + i * NR;
      if (g == 0) {
        _mm256_store_ps(o, _mm256_mul_ps(s0, f0));
        _mm256_store_ps(o + 8, _mm256_mul_ps(s1, f1));
      } else {
        _mm256_store_ps(o, _mm256_fmadd_ps(s0, f0, _mm256_load_ps(o)));
        _mm256_store_ps(o + 8, _mm256_fmadd_ps(s1, f1, _mm256_load_ps(o + 8)));
      }
    }
  }
}

// Y[i, j] = act(fma(sx[i], fa[i, j], c)), c = bias[j] or 0, + Y[i, j] when
// accumulate; columns j < nv of R rows.
template <int R>
void finish(const float* fa, const float* sx, const float* bias, float* Y, int64_t ldy, bool accumulate, int nv,
            Activation act) {
  if (nv == NR) {
    for (int i = 0; i < R; ++i)
      for (int h = 0; h < NR; h += 8) {
        __m256 c = bias ? _mm256_loadu_ps(bias + h) : _mm256_setzero_ps();
        float* y = Y + i * ldy + h;
        if (accumulate) c = _mm256_add_ps(c, _mm256_loadu_ps(y));
        _mm256_storeu_ps(y, act8(act, _mm256_fmadd_ps(_mm256_set1_ps(sx[i]), _mm256_loadu_ps(fa + i * NR + h), c)));
      }
    return;
  }
  for (int i = 0; i < R; ++i) {
    float* y = Y + i * ldy;
    for (int j = 0; j < nv; ++j) {
      float c = bias ? bias[j] : 0.f;
      if (accumulate) c = c + y[j];
      y[j] = std::fma(sx[i], fa[i * NR + j], c);
    }
    act_span(act, y, y, nv);
  }
}

using TileFn = void (*)(const int16_t*, int64_t, const uint8_t*, int64_t, int64_t, const float*, const int32_t*,
                        const int32_t*, float*);

template <bool U8W, bool ZP>
TileFn tile_fn(int rows) {
  switch (rows) {
    case 1: return tile<1, U8W, ZP>;
    case 2: return tile<2, U8W, ZP>;
    case 3: return tile<3, U8W, ZP>;
    case 4: return tile<4, U8W, ZP>;
    case 5: return tile<5, U8W, ZP>;
    default: return tile<6, U8W, ZP>;
  }
}
TileFn tile_fn(bool u8w, bool zp, int rows) {
  return u8w ? (zp ? tile_fn<true, true>(rows) : tile_fn<true, false>(rows))
             : (zp ? tile_fn<false, true>(rows) : tile_fn<false, false>(rows));
}

void finish_rows(int rows, const float* fa, const float* sx, const float* bias, float* Y, int64_t ldy, bool accumulate,
                 int nv, Activation act) {
  switch (rows) {
    case 1: return finish<1>(fa, sx, bias, Y, ldy, accumulate, nv, act);
    case 2: return finish<2>(fa, sx, bias, Y, ldy, accumulate, nv, act);
    case 3: return finish<3>(fa, sx, bias, Y, ldy, accumulate, nv, act);
    case 4: return finish<4>(fa, sx, bias, Y, ldy, accumulate, nv, act);
    case 5: return finish<5>(fa, sx, bias, Y, ldy, accumulate, nv, act);
    default: return finish<6>(fa, sx, bias, Y, ldy, accumulate, nv, act);
  }
}

// Work below this many multiply-adds runs on the calling thread alone (a parallel
// region costs more than it saves).
constexpr int64_t kSerialMacs = int64_t(1) << 18;

int threads_for(int64_t M, int64_t N, int64_t K) { return M * N * K < kSerialMacs ? 1 : gemm_threads(); }

void run_s16(const float* X, const WeightOperand& W, const Geometry& g, const uint8_t* panels, const float* bias,
             float* Y, int64_t M, Activation act, bool accumulate, const InputQuant& xq) {
  const int qmax = (1 << xq.bits) - 1;
  const bool zp = W.zeros != nullptr, u8w = W.type == WeightType::U8;
  const int64_t P = g.panels, mtiles = (M + MR - 1) / MR, tsize = g.G * NR;
  thread_local Scratch a_buf, gs_buf, sx_buf, w_buf, st_buf, zt_buf;
  int16_t* A = a_buf.get<int16_t>(size_t(M * g.Kp));
  int32_t* gs = zp ? gs_buf.get<int32_t>(size_t(M * g.G)) : nullptr;
  float* sx = sx_buf.get<float>(size_t(M));
  uint8_t* packing = panels ? nullptr : w_buf.get<uint8_t>(size_t(P * g.Kp * NR));
  const uint8_t* B = panels ? panels : packing;
  // Per panel j, group gi: its 16 columns' scales (and zero points), st[(j G + gi) 16 + c].
  float* st = st_buf.get<float>(size_t(P * tsize));
  int32_t* zt = zp ? zt_buf.get<int32_t>(size_t(P * tsize)) : nullptr;

  // Quantized rows, packed panels (plain W) and the tables, split among threads.
  auto prepare = [&](int t, int n) {
    for (int64_t m = M * t / n; m < M * (t + 1) / n; ++m) {
      const RowQ rq = row_params(X + m * g.K, g.K, xq, qmax);
      sx[m] = rq.s;
      quant_row_s16(X + m * g.K, g, rq, qmax, A + m * g.Kp, zp ? gs + m * g.G : nullptr);
    }
    for (int64_t j = P * t / n; j < P * (t + 1) / n; ++j) {
      if (packing) pack_panel(static_cast<const uint8_t*>(W.data), g, j, packing + j * g.Kp * NR);
      for (int64_t gi = 0; gi < g.G; ++gi)
        for (int c = 0; c < NR; ++c) {
          const int64_t n = j * NR + c, i = (j * g.G + gi) * NR + c;
          const int64_t idx = W.granularity == ScaleGranularity::Tensor    ? 0
                              : W.granularity == ScaleGranularity::Channel ? n
                                                                           : n * g.G + gi;
          st[i] = n < g.N ? W.scales[idx] : 0.f;
          if (zp) zt[i] = n < g.N ? W.zeros[idx] : 0;
        }
    }
  };
  auto tile_at = [&](int64_t j, int64_t mt, float* fa) {
    const int64_t n0 = j * NR, m0 = mt * MR;
    const int nv = int(std::min<int64_t>(NR, g.N - n0)), rows = int(std::min<int64_t>(MR, M - m0));
    tile_fn(u8w, zp, rows)(A + m0 * g.Kp, g.Kp, B + j * g.Kp * NR, g.G, g.Lp / 2, st + j * tsize,
                           zp ? zt + j * tsize : nullptr, zp ? gs + m0 * g.G : nullptr, fa);
    finish_rows(rows, fa, sx + m0, bias ? bias + n0 : nullptr, Y + m0 * g.N + n0, g.N, accumulate, nv, act);
  };
  // Thread t of n: with enough panels, its share of them against every row
  // tile (a panel stays in L1/L2 while x' streams by); otherwise its share of
  // the row tiles against every panel.
  auto compute = [&](int t, int n) {
    alignas(32) float fa[MR * NR];
    if (P >= n) {
      for (int64_t j = P * t / n; j < P * (t + 1) / n; ++j)
        for (int64_t mt = 0; mt < mtiles; ++mt) tile_at(j, mt, fa);
    } else {
      for (int64_t j = 0; j < P; ++j)
        for (int64_t mt = mtiles * t / n; mt < mtiles * (t + 1) / n; ++mt) tile_at(j, mt, fa);
    }
  };

  const int nt = threads_for(M, g.N, g.K);
  if (nt == 1) {
    prepare(0, 1);
    compute(0, 1);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    prepare(t, n);
#pragma omp barrier
    compute(t, n);
  }
}

// ---- oneDNN's kernel ------------------------------------------------------------

// Row m of the dequantization after oneDNN's product C (s32): corrections for
// the zero points (z: the row's, zw: W's as s8 values), then gemm.h's formula.
template <bool PerChannel>
void dequant_row(const int32_t* C, int64_t N, int64_t K, uint32_t sq, RowQ rq, const float* scales,
                 const int32_t* zeros, int32_t zoff, const int32_t* rowsum, const float* bias, float* Y,
                 bool accumulate) {
  const uint32_t z = uint32_t(rq.z), Ku = uint32_t(K);
  const float s = rq.s;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t i = PerChannel ? n : 0;
    const uint32_t zw = uint32_t((zeros ? zeros[i] : 0) + zoff);
    const uint32_t t = uint32_t(C[n]) - zw * sq - z * uint32_t(rowsum[n]) + Ku * z * zw;
    const float a = scales[i] * float(int32_t(t));
    float c = bias ? bias[n] : 0.f;
    if (accumulate) c = c + Y[n];
    Y[n] = std::fma(s, a, c);
  }
}

void run_onednn(const float* X, const WeightOperand& W, const int8_t* w8, const int32_t* rowsum, const float* bias,
                float* Y, int64_t M, Activation act, bool accumulate, const InputQuant& xq) {
  const int64_t N = W.N, K = W.K;
  const int qmax = (1 << xq.bits) - 1;
  thread_local Scratch q_buf, c_buf, r_buf, s_buf;
  uint8_t* q = q_buf.get<uint8_t>(size_t(M * K));
  int32_t* C = c_buf.get<int32_t>(size_t(M * N));
  RowQ* rq = r_buf.get<RowQ>(size_t(M));
  uint32_t* sq = s_buf.get<uint32_t>(size_t(M));
  const int nt = threads_for(M, N, K);
#pragma omp parallel for num_threads(nt) if (nt > 1 && M > 1)
  for (int64_t m = 0; m < M; ++m) {
    rq[m] = row_params(X + m * K, K, xq, qmax);
    sq[m] = uint32_t(quant_row_u8(X + m * K, K, rq[m], qmax, q + m * K));
  }
  matmul_u8s8s32(q, w8, C, M, N, K);
  const int32_t zoff = W.type == WeightType::U8 ? -128 : 0;
  const bool channel = W.granularity == ScaleGranularity::Channel;
#pragma omp parallel for num_threads(nt) if (nt > 1 && M > 1)
  for (int64_t m = 0; m < M; ++m) {
    if (channel)
      dequant_row<true>(C + m * N, N, K, sq[m], rq[m], W.scales, W.zeros, zoff, rowsum, bias, Y + m * N, accumulate);
    else
      dequant_row<false>(C + m * N, N, K, sq[m], rq[m], W.scales, W.zeros, zoff, rowsum, bias, Y + m * N, accumulate);
    act_span(act, Y + m * N, Y + m * N, N);
  }
}

enum class Kernel { OneDnn, S16 };

// The kernel for a plain (not packed) W.
Kernel plain_kernel(const WeightOperand& W, const InputQuant& xq) {
  if (W.granularity == ScaleGranularity::Group) return Kernel::S16;
  return weight_fits_onednn(W, (1 << xq.bits) - 1) ? Kernel::OneDnn : Kernel::S16;
}

}  // namespace

void linear_int8(const float* X, const WeightOperand& W, const float* bias, float* Y, int64_t M, Activation act,
                 bool accumulate, const InputQuant& xq) {
  const Geometry g = check_call(W, xq);
  if (M == 0) return;
  if (W.packed) {
    const Int8Packed& P = *W.packed->int8;
    if (P.form == Int8Packed::Form::OneDnn)
      run_onednn(X, W, static_cast<const int8_t*>(P.bytes.get()), P.rowsum.data(), bias, Y, M, act, accumulate, xq);
    else
      run_s16(X, W, g, static_cast<const uint8_t*>(P.bytes.get()), bias, Y, M, act, accumulate, xq);
  } else if (plain_kernel(W, xq) == Kernel::OneDnn) {
    thread_local std::vector<int8_t> w8;
    thread_local std::vector<int32_t> rowsum;
    const int8_t* w = weight_s8(W, w8, rowsum);
    run_onednn(X, W, w, rowsum.data(), bias, Y, M, act, accumulate, xq);
  } else {
    run_s16(X, W, g, nullptr, bias, Y, M, act, accumulate, xq);
  }
}

void linear_activation(Activation a, const float* x, float* out, int64_t n) { act_span(a, x, out, n); }

std::shared_ptr<const PackedWeight> pack_weight_int8(const WeightOperand& W, int input_bits) {
  const Geometry g = check_weight(W, "pack_weight_int8");
  check(W.data != nullptr && W.packed == nullptr, "pack_weight_int8: the ", type_name(W.type), " weight (", W.N, "x",
        W.K, ") needs its plain data (and no packed weight)");
  check(input_bits >= 2 && input_bits <= 8, "pack_weight_int8: input_bits = ", input_bits, " is outside 2..8");
  auto P = std::make_unique<Int8Packed>();
  P->type = W.type;
  P->granularity = W.granularity;
  P->group = W.granularity == ScaleGranularity::Group ? W.group : 0;
  P->input_bits = input_bits;
  if (W.granularity != ScaleGranularity::Group && weight_fits_onednn(W, (1 << input_bits) - 1)) {
    P->form = Int8Packed::Form::OneDnn;
    std::vector<int8_t> w8;
    const int8_t* w = weight_s8(W, w8, P->rowsum);
    P->size = size_t(W.N * W.K);
    P->bytes = aligned_bytes(P->size);
    std::memcpy(P->bytes.get(), w, size_t(W.N * W.K));
  } else {
    P->form = Int8Packed::Form::Panels;
    P->size = size_t(g.panels * g.Kp * NR);
    P->bytes = aligned_bytes(P->size);
    uint8_t* out = static_cast<uint8_t*>(P->bytes.get());
    for (int64_t j = 0; j < g.panels; ++j) pack_panel(static_cast<const uint8_t*>(W.data), g, j, out + j * g.Kp * NR);
  }
  auto p = std::make_shared<PackedWeight>();
  p->N = W.N;
  p->K = W.K;
  p->type = dnnl::memory::data_type::s8;
  p->int8 = std::move(P);
  return p;
}

void unpack_weight_int8(const PackedWeight& P, void* out) {
  check(P.int8 != nullptr, "unpack_weight_int8: not an integer packed weight");
  const Int8Packed& I = *P.int8;
  uint8_t* w = static_cast<uint8_t*>(out);
  const uint8_t* b = static_cast<const uint8_t*>(I.bytes.get());
  if (I.form == Int8Packed::Form::OneDnn) {  // W as s8; U8 stored as W - 128
    for (int64_t i = 0; i < P.N * P.K; ++i) w[i] = I.type == WeightType::U8 ? uint8_t(b[i] + 128) : b[i];
    return;
  }
  WeightOperand W;
  W.type = I.type;
  W.N = P.N;
  W.K = P.K;
  W.granularity = I.granularity;
  W.group = I.group;
  const Geometry g = geometry(W);
  // Panel j, padded slot s (pairs of k, 16 columns of 2 bytes each): k = (s / Lp) * L + s % Lp.
  for (int64_t j = 0; j < g.panels; ++j) {
    const uint8_t* panel = b + j * g.Kp * NR;
    for (int64_t c = 0; c < NR && j * NR + c < g.N; ++c)
      for (int64_t s = 0; s < g.Kp; ++s) {
        if (s % g.Lp >= g.L) continue;  // the padding slot of an odd group
        const int64_t k = (s / g.Lp) * g.L + s % g.Lp;
        w[(j * NR + c) * g.K + k] = panel[(s / 2) * 2 * NR + c * 2 + s % 2];
      }
  }
}

const char* int8_kernel(const WeightOperand& W, const InputQuant& xq) {
  check_call(W, xq);
  if (W.packed) return W.packed->int8->form == Int8Packed::Form::OneDnn ? "onednn" : "s16";
  return plain_kernel(W, xq) == Kernel::OneDnn ? "onednn" : "s16";
}

}  // namespace vitkit::kernels

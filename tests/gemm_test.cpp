// kernels::linear over a WeightOperand.
//
// Integer weights (S8, U8) are checked bit for bit against a scalar reference
// written here from gemm.h's formula: int64 sums, then the documented float
// operations in the documented order (std::fma where it says fma,
// linear_activation element by element, itself checked against act_forward).
// Both integer kernels (oneDNN's, where it is exact, and vitkit's s16 kernel)
// must match it exactly; the sweeps count which ran.
// F32 and BF16 through linear must equal the existing entry points exactly.
#include "vitkit/kernels/gemm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <dnnl.hpp>

#include "vitkit/core/error.h"
#include "vitkit/core/tensor.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/int_exact.h"

namespace vitkit {
namespace {

using kernels::InputQuant;
using kernels::ScaleGranularity;
using kernels::WeightOperand;
using kernels::WeightType;

// ---- the reference ---------------------------------------------------------------

float clampq(float v, float qmax) {
  v = v > 0.f ? v : 0.f;
  return v < qmax ? v : qmax;
}

// gemm.h's formula, one element at a time, for weight codes of any width
// (code(n, k); int64 sums) and inputs of up to 16 bits.
template <typename Code>
std::vector<float> reference_codes(const std::vector<float>& X, int64_t M, int64_t N, int64_t K,
                                   ScaleGranularity gran, int64_t group, const Code& code, const float* scales,
                                   const int32_t* zeros, const float* bias, const std::vector<float>& Y0,
                                   bool accumulate, Activation act, const InputQuant& xq) {
  const int64_t L = gran == ScaleGranularity::Group ? group : K, G = K / L;
  const int qmax = (1 << xq.bits) - 1;
  auto idx = [&](int64_t n, int64_t g) -> int64_t {
    return gran == ScaleGranularity::Tensor ? 0 : gran == ScaleGranularity::Channel ? n : n * G + g;
  };
  std::vector<float> Y(size_t(M * N));
  std::vector<int64_t> q(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    const float* x = X.data() + m * K;
    float s;
    int32_t z;
    if (xq.mode == InputQuant::Mode::Static) {
      s = xq.scale;
      z = xq.zero;
    } else {
      float lo = 0.f, hi = 0.f;
      for (int64_t k = 0; k < K; ++k) {
        lo = std::min(lo, x[k]);
        hi = std::max(hi, x[k]);
      }
      s = (hi - lo) / float(qmax);
      if (s == 0.f) {
        s = 1.f;
        z = 0;
      } else {
        z = int32_t(clampq(std::nearbyint(-lo / s), float(qmax)));
      }
    }
    for (int64_t k = 0; k < K; ++k) q[size_t(k)] = int64_t(clampq(std::nearbyint(x[k] / s) + float(z), float(qmax)));
    for (int64_t n = 0; n < N; ++n) {
      float A = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t zw = zeros ? zeros[idx(n, g)] : 0;
        int64_t T = 0;
        for (int64_t k = g * L; k < (g + 1) * L; ++k) T += (q[size_t(k)] - z) * (int64_t(code(n, k)) - zw);
        const float sw = scales[idx(n, g)];
        A = g == 0 ? sw * float(T) : std::fma(sw, float(T), A);
      }
      float c = bias ? bias[n] : 0.f;
      if (accumulate) c = c + Y0[size_t(m * N + n)];
      float y = std::fma(s, A, c);
      kernels::linear_activation(act, &y, &y, 1);
      Y[size_t(m * N + n)] = y;
    }
  }
  return Y;
}

// The same for an S8/U8 operand.
std::vector<float> reference(const std::vector<float>& X, int64_t M, const WeightOperand& W, const float* bias,
                             const std::vector<float>& Y0, bool accumulate, Activation act, const InputQuant& xq) {
  const int64_t K = W.K;
  auto wv = [&](int64_t n, int64_t k) -> int64_t {
    return W.type == WeightType::S8 ? int64_t(static_cast<const int8_t*>(W.data)[n * K + k])
                                    : int64_t(static_cast<const uint8_t*>(W.data)[n * K + k]);
  };
  return reference_codes(X, M, W.N, K, W.granularity, W.group, wv, W.scales, W.zeros, bias, Y0, accumulate, act, xq);
}

// Number of elements whose bits differ; the first one in *where.
int64_t bit_mismatches(const std::vector<float>& a, const std::vector<float>& b, std::string* where = nullptr) {
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) {
      if (bad == 0 && where) *where = cat("[", i, "]: ", a[i], " vs reference ", b[i]);
      ++bad;
    }
  return bad;
}

// ---- one integer layer with random content ----------------------------------------

struct IntLayer {
  WeightType type = WeightType::S8;
  ScaleGranularity gran = ScaleGranularity::Channel;
  int64_t group = 0, M = 0, N = 0, K = 0;
  bool zp = false;
  std::vector<uint8_t> w;  // the bytes of W (S8 or U8)
  std::vector<float> scales, x, bias, y0;
  std::vector<int32_t> zeros;

  WeightOperand op() const {
    WeightOperand o;
    o.type = type;
    o.N = N;
    o.K = K;
    o.data = w.data();
    o.granularity = gran;
    o.group = group;
    o.scales = scales.data();
    o.zeros = zp ? zeros.data() : nullptr;
    return o;
  }
};

// wlo..whi: the weights' value range (as the type's values).
IntLayer make_layer(std::mt19937& rng, WeightType type, ScaleGranularity gran, int64_t group, bool zp, int64_t M,
                    int64_t K, int64_t N, int wlo, int whi) {
  IntLayer l;
  l.type = type;
  l.gran = gran;
  l.group = group;
  l.zp = zp;
  l.M = M;
  l.N = N;
  l.K = K;
  std::uniform_int_distribution<int> wd(wlo, whi);
  l.w.resize(size_t(N * K));
  for (auto& b : l.w) {
    const int v = wd(rng);
    b = type == WeightType::S8 ? uint8_t(int8_t(v)) : uint8_t(v);
  }
  const int64_t G = gran == ScaleGranularity::Group ? K / group : 1;
  const int64_t ns = gran == ScaleGranularity::Tensor ? 1 : gran == ScaleGranularity::Channel ? N : N * G;
  std::uniform_real_distribution<float> sd(1e-3f, 0.1f), xd(-3.f, 3.f);
  l.scales.resize(static_cast<size_t>(ns));
  for (auto& s : l.scales) s = sd(rng);
  std::uniform_int_distribution<int> zd(type == WeightType::S8 ? -128 : 0, type == WeightType::S8 ? 127 : 255);
  l.zeros.resize(static_cast<size_t>(ns));
  for (auto& z : l.zeros) z = zd(rng);
  l.x.resize(size_t(M * K));
  for (auto& v : l.x) v = xd(rng);
  if (M > 2)  // a row of zeros (dynamic scale 0) and a row of non-negative values (zero point 0)
    for (int64_t k = 0; k < K; ++k) {
      l.x[size_t(K + k)] = 0.f;
      l.x[size_t(2 * K + k)] = std::fabs(l.x[size_t(2 * K + k)]);
    }
  l.bias.resize(static_cast<size_t>(N));
  for (auto& v : l.bias) v = xd(rng);
  l.y0.resize(size_t(M * N));
  for (auto& v : l.y0) v = xd(rng);
  return l;
}

InputQuant static_quant(int bits) {
  InputQuant q;
  q.mode = InputQuant::Mode::Static;
  q.bits = bits;
  const int qmax = (1 << bits) - 1;
  q.scale = 5.f / float(qmax);  // inputs in [-3, 3] partly clamp at both ends
  q.zero = qmax / 2;
  return q;
}

// Runs linear on l and compares with the reference; returns the kernel used.
std::string check_layer(const IntLayer& l, bool with_bias, Activation act, bool accumulate, const InputQuant& xq,
                        const std::string& what) {
  const WeightOperand W = l.op();
  std::vector<float> Y = l.y0;
  kernels::linear(l.x.data(), W, with_bias ? l.bias.data() : nullptr, Y.data(), l.M, act, accumulate, xq);
  const std::vector<float> R = reference(l.x, l.M, W, with_bias ? l.bias.data() : nullptr, l.y0, accumulate, act, xq);
  std::string where;
  EXPECT_EQ(bit_mismatches(Y, R, &where), 0) << what << " first mismatch " << where;
  return kernels::int8_kernel(W, xq);
}

const char* name(WeightType t) { return t == WeightType::S8 ? "S8" : "U8"; }
const char* name(ScaleGranularity g) {
  return g == ScaleGranularity::Tensor ? "Tensor" : g == ScaleGranularity::Channel ? "Channel" : "Group";
}

// ---- integer sweeps -----------------------------------------------------------------

// Every shape of M {1, 3, 197} x K {7, 64, 768} x N {1, 10, 384}, S8 and U8,
// Tensor, Channel and several group sizes (odd ones too: padded), input bits
// 8, 7, 4, 2; the epilogue options and input modes rotate across cases.
TEST(GemmInt8, ShapesBitExact) {
  std::mt19937 rng(1);
  std::map<std::string, int> kernels_used;
  const Activation acts[] = {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu};
  const std::map<int64_t, std::vector<int64_t>> groups = {{7, {1, 7}}, {64, {2, 16, 32}}, {768, {3, 32, 64, 128}}};
  int64_t n_case = 0;
  for (int64_t M : {1, 3, 197})
    for (int64_t K : {7, 64, 768})
      for (int64_t N : {1, 10, 384})
        for (WeightType type : {WeightType::S8, WeightType::U8}) {
          std::vector<std::pair<ScaleGranularity, int64_t>> grans = {{ScaleGranularity::Tensor, 0},
                                                                     {ScaleGranularity::Channel, 0}};
          for (int64_t g : groups.at(K)) grans.push_back({ScaleGranularity::Group, g});
          for (auto [gran, group] : grans)
            for (int bits : {8, 7, 4, 2}) {
              const int64_t c = n_case++;
              const bool zp = type == WeightType::U8 || c % 2 == 1;
              const IntLayer l = make_layer(rng, type, gran, group, zp, M, K, N, type == WeightType::S8 ? -128 : 0,
                                            type == WeightType::S8 ? 127 : 255);
              InputQuant xq;
              xq.bits = bits;
              if (c % 3 == 2) xq = static_quant(bits);
              const bool bias = c % 2 == 0, acc = c % 5 >= 3;
              const Activation act = acts[(c / 2) % 4];
              const std::string what =
                  cat(name(type), " ", name(gran), " group ", group, zp ? " zp" : "", " M ", M, " K ", K, " N ", N,
                      " bits ", bits, xq.mode == InputQuant::Mode::Static ? " static" : " dynamic", bias ? " bias" : "",
                      " act ", to_string(act), acc ? " accumulate" : "");
              ++kernels_used[check_layer(l, bias, act, acc, xq, what)];
            }
        }
  for (auto& [k, n] : kernels_used) std::printf("  kernel %s: %d cases\n", k.c_str(), n);
  EXPECT_GT(kernels_used["s16"], 0);
}

// Every combination of the epilogue and quantization options on one small shape.
TEST(GemmInt8, EpilogueCombinationsBitExact) {
  std::mt19937 rng(2);
  std::map<std::string, int> kernels_used;
  for (WeightType type : {WeightType::S8, WeightType::U8})
    for (auto [gran, group] : std::vector<std::pair<ScaleGranularity, int64_t>>{{ScaleGranularity::Tensor, 0},
                                                                                {ScaleGranularity::Channel, 0},
                                                                                {ScaleGranularity::Group, 8},
                                                                                {ScaleGranularity::Group, 5}})
      for (bool zp : {false, true})
        for (int bits : {8, 7, 4, 2})
          for (bool stat : {false, true})
            for (bool bias : {false, true})
              for (Activation act : {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu})
                for (bool acc : {false, true}) {
                  const IntLayer l = make_layer(rng, type, gran, group, zp, 8, 40, 21,
                                                type == WeightType::S8 ? -128 : 0, type == WeightType::S8 ? 127 : 255);
                  InputQuant xq;
                  xq.bits = bits;
                  if (stat) xq = static_quant(bits);
                  const std::string what =
                      cat(name(type), " ", name(gran), " ", group, zp ? " zp" : "", " bits ", bits,
                          stat ? " static" : "", bias ? " bias" : "", " ", to_string(act), acc ? " accumulate" : "");
                  ++kernels_used[check_layer(l, bias, act, acc, xq, what)];
                }
  for (auto& [k, n] : kernels_used) std::printf("  kernel %s: %d cases\n", k.c_str(), n);
}

// Weights in [-64, 64] with 8-bit inputs: where oneDNN's kernel qualifies
// without VNNI (2 * 255 * 64 <= 32767), so both kernels are exercised here.
TEST(GemmInt8, NarrowWeightsBitExact) {
  std::mt19937 rng(3);
  std::map<std::string, int> kernels_used;
  for (WeightType type : {WeightType::S8, WeightType::U8})
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 64, 10}, {3, 768, 384}, {197, 64, 384}, {5, 7, 1}})
      for (bool zp : {false, true}) {
        const IntLayer l = make_layer(rng, type, ScaleGranularity::Channel, 0, zp, M, K, N,
                                      type == WeightType::S8 ? -64 : 64, type == WeightType::S8 ? 64 : 192);
        ++kernels_used[check_layer(l, true, Activation::None, false, InputQuant{},
                                   cat(name(type), " ", M, "x", K, "x", N))];
      }
  for (auto& [k, n] : kernels_used) std::printf("  kernel %s: %d cases\n", k.c_str(), n);
}

// The saturation test: all inputs at the largest code against all weights at
// -128 or 127 (and u8 weights 0/255 against zero points 255/0, so that every
// product is 255 * 255), large K, sums beyond 2^24, up to the largest K.
TEST(GemmInt8, ExtremeValuesExact) {
  std::map<std::string, int> kernels_used;
  for (int bits : {8, 7})
    for (int64_t K : {768, 3072, 33025})
      for (WeightType type : {WeightType::S8, WeightType::U8})
        for (int wsel = 0; wsel < 2; ++wsel)
          for (bool neg_x : {false, true}) {
            const int64_t M = K > 4000 ? 2 : 7, N = K > 4000 ? 3 : 33;
            const int qmax = (1 << bits) - 1;
            IntLayer l;
            l.type = type;
            l.gran = ScaleGranularity::Tensor;
            l.M = M;
            l.N = N;
            l.K = K;
            l.w.assign(size_t(N * K),
                       type == WeightType::S8 ? uint8_t(int8_t(wsel ? -128 : 127)) : uint8_t(wsel ? 0 : 255));
            l.scales = {1.f};
            l.zp = type == WeightType::U8;
            l.zeros = {wsel ? 255 : 0};
            // static scale 1: x = qmax gives code qmax; zero qmax and x = -qmax give code 0, so q - z = -qmax
            InputQuant xq;
            xq.mode = InputQuant::Mode::Static;
            xq.bits = bits;
            xq.scale = 1.f;
            xq.zero = neg_x ? qmax : 0;
            l.x.assign(size_t(M * K), neg_x ? -float(qmax) : float(qmax));
            l.y0.assign(size_t(M * N), 0.f);
            const std::string k = check_layer(
                l, false, Activation::None, false, xq,
                cat(name(type), " bits ", bits, " K ", K, " w ", wsel ? "min" : "max", neg_x ? " x-" : " x+"));
            ++kernels_used[k];
            // The expected value itself, to make sure the reference is not wrong the same way.
            const int64_t w = type == WeightType::S8 ? (wsel ? -128 : 127) : (wsel ? -255 : 255);
            const int64_t T = K * (neg_x ? -qmax : qmax) * w;
            std::vector<float> Y(size_t(M * N));
            kernels::linear(l.x.data(), l.op(), nullptr, Y.data(), M, Activation::None, false, xq);
            EXPECT_EQ(Y[0], float(T)) << k << " K " << K;
            // Dynamic inputs at the extremes too (the row's max maps to the largest code).
            InputQuant dq;
            dq.bits = bits;
            check_layer(l, false, Activation::None, false, dq, cat("dynamic ", name(type), " bits ", bits, " K ", K));
          }
  for (auto& [k, n] : kernels_used) std::printf("  kernel %s: %d cases\n", k.c_str(), n);
}

// 1 and 2 threads give the reference's bits; so do calls made from inside an
// OpenMP parallel region (each thread its own rows, as per-image inference).
TEST(GemmInt8, ThreadsAndParallelRegion) {
  std::mt19937 rng(4);
  const int saved = num_threads();
  for (auto [gran, group] :
       std::vector<std::pair<ScaleGranularity, int64_t>>{{ScaleGranularity::Channel, 0}, {ScaleGranularity::Group, 32}})
    for (int bits : {8, 7}) {
      const IntLayer l = make_layer(rng, WeightType::S8, gran, group, true, 197, 768, 384, -128, 127);
      InputQuant xq;
      xq.bits = bits;
      const WeightOperand W = l.op();
      const std::vector<float> R = reference(l.x, l.M, W, l.bias.data(), l.y0, false, Activation::Gelu, xq);
      for (int t : {1, 2}) {
        set_num_threads(t);
        std::vector<float> Y(size_t(l.M * l.N));
        kernels::linear(l.x.data(), W, l.bias.data(), Y.data(), l.M, Activation::Gelu, false, xq);
        EXPECT_EQ(bit_mismatches(Y, R), 0) << "threads " << t << " " << name(gran) << " bits " << bits;
      }
      set_num_threads(2);
      // 4 chunks of rows, each linear called by one thread of a parallel region.
      std::vector<float> Y(size_t(l.M * l.N));
      const int64_t chunks = 4;
#pragma omp parallel for num_threads(2)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t m0 = l.M * c / chunks, m1 = l.M * (c + 1) / chunks;
        kernels::linear(l.x.data() + m0 * l.K, W, l.bias.data(), Y.data() + m0 * l.N, m1 - m0, Activation::Gelu, false,
                        xq);
      }
      EXPECT_EQ(bit_mismatches(Y, R), 0) << "parallel region " << name(gran) << " bits " << bits;
    }
  set_num_threads(saved);
}

// pack_weight_int8 gives the plain operand's results bit for bit (both forms),
// and unpack_weight_int8 gives the weight's bytes back exactly.
TEST(GemmInt8, PackedEqualsPlain) {
  std::mt19937 rng(5);
  std::map<std::string, int> kernels_used;
  struct C {
    WeightType type;
    ScaleGranularity gran;
    int64_t group;
    int wlo, whi, input_bits;
  };
  const std::vector<C> cases = {{WeightType::S8, ScaleGranularity::Channel, 0, -128, 127, 8},
                                {WeightType::S8, ScaleGranularity::Channel, 0, -128, 127, 7},
                                {WeightType::U8, ScaleGranularity::Tensor, 0, 0, 255, 8},
                                {WeightType::S8, ScaleGranularity::Channel, 0, -64, 64, 8},
                                {WeightType::S8, ScaleGranularity::Group, 32, -128, 127, 8},
                                {WeightType::U8, ScaleGranularity::Group, 3, 0, 255, 8}};
  for (const C& c : cases)
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{3, 96, 10}, {197, 768, 384}}) {
      const IntLayer l = make_layer(rng, c.type, c.gran, c.group, true, M, K, N, c.wlo, c.whi);
      WeightOperand W = l.op();
      const auto P = kernels::pack_weight_int8(W, c.input_bits);
      InputQuant xq;
      xq.bits = c.input_bits;
      std::vector<float> Yp = l.y0, Y = l.y0;
      kernels::linear(l.x.data(), W, l.bias.data(), Y.data(), M, Activation::Relu, true, xq);
      WeightOperand Wp = W;
      Wp.packed = P.get();
      Wp.data = nullptr;
      kernels::linear(l.x.data(), Wp, l.bias.data(), Yp.data(), M, Activation::Relu, true, xq);
      EXPECT_EQ(bit_mismatches(Yp, Y), 0) << name(c.type) << " " << name(c.gran) << " " << M << "x" << K << "x" << N;
      ++kernels_used[kernels::int8_kernel(Wp, xq)];
      std::vector<uint8_t> back(l.w.size(), 0x5a);
      kernels::unpack_weight_int8(*P, back.data());
      EXPECT_TRUE(back == l.w) << "unpacked " << name(c.type) << " " << name(c.gran) << " " << c.group << " " << K
                               << "x" << N << " (" << kernels::int8_kernel(Wp, xq) << ")";
    }
  for (auto& [k, n] : kernels_used) std::printf("  packed kernel %s: %d cases\n", k.c_str(), n);
}

// The int8 result of a random layer against the f32 product: the difference is
// bounded by the input rounding, sum_k |dx_k| |w_k| <= s_x / 2 * sum_k |w_k| per
// output (the weights compared are the dequantized ones), plus f32 rounding.
TEST(GemmInt8, QuantizationErrorWithinBound) {
  std::mt19937 rng(6);
  const int64_t M = 64, K = 768, N = 96;
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(M * K)), w(size_t(N * K)), wdq(size_t(N * K)), scales(static_cast<size_t>(N)),
      yf(size_t(M * N)), yq(size_t(M * N)), yo(size_t(M * N));
  for (auto& v : x) v = nd(rng);
  for (auto& v : w) v = 0.05f * nd(rng);
  std::vector<int8_t> wq(size_t(N * K));
  for (int64_t n = 0; n < N; ++n) {  // symmetric per-channel 8-bit
    float mx = 0.f;
    for (int64_t k = 0; k < K; ++k) mx = std::max(mx, std::fabs(w[size_t(n * K + k)]));
    scales[size_t(n)] = mx / 127.f;
    for (int64_t k = 0; k < K; ++k) {
      const int q = int(std::nearbyint(w[size_t(n * K + k)] / scales[size_t(n)]));
      wq[size_t(n * K + k)] = int8_t(std::clamp(q, -127, 127));
      wdq[size_t(n * K + k)] = scales[size_t(n)] * float(wq[size_t(n * K + k)]);
    }
  }
  kernels::linear(x.data(), wdq.data(), nullptr, yf.data(), M, K, N);
  kernels::linear(x.data(), w.data(), nullptr, yo.data(), M, K, N);
  WeightOperand W;
  W.type = WeightType::S8;
  W.N = N;
  W.K = K;
  W.data = wq.data();
  W.granularity = ScaleGranularity::Channel;
  W.scales = scales.data();
  kernels::linear(x.data(), W, nullptr, yq.data(), M);
  double worst = 0, rel_err = 0, ref_norm = 0;
  for (int64_t m = 0; m < M; ++m) {
    float lo = 0, hi = 0;
    for (int64_t k = 0; k < K; ++k) {
      lo = std::min(lo, x[size_t(m * K + k)]);
      hi = std::max(hi, x[size_t(m * K + k)]);
    }
    const double sx = (hi - lo) / 255.0;
    for (int64_t n = 0; n < N; ++n) {
      double wabs = 0;
      for (int64_t k = 0; k < K; ++k) wabs += std::fabs(wdq[size_t(n * K + k)]);
      const double bound = sx / 2 * wabs * 1.001 + 1e-4;
      const double d = std::fabs(double(yq[size_t(m * N + n)]) - yf[size_t(m * N + n)]);
      EXPECT_LE(d, bound) << "m " << m << " n " << n;
      worst = std::max(worst, d / bound);
      rel_err += std::pow(double(yq[size_t(m * N + n)]) - yo[size_t(m * N + n)], 2);
      ref_norm += std::pow(double(yo[size_t(m * N + n)]), 2);
    }
  }
  std::printf("  worst |int8 - f32(W dequantized)| / bound = %.3f; ||int8 - f32(W)|| / ||f32(W)|| = %.2e\n", worst,
              std::sqrt(rel_err / ref_norm));
  EXPECT_LT(std::sqrt(rel_err / ref_norm), 0.02);
}

// linear_activation: close to act_forward, and a value's result is the same
// wherever it sits in a span of any length.
TEST(GemmInt8, ActivationElementwise) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> d(-8.f, 8.f);
  std::vector<float> x(1000);
  for (auto& v : x) v = d(rng);
  x[0] = 0.f;
  x[1] = -0.f;
  x[2] = 1.f;
  x[3] = -1.f;
  x[4] = 100.f;
  x[5] = -100.f;
  for (Activation a : {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu}) {
    std::vector<float> full(x.size()), ref(x.size());
    kernels::linear_activation(a, x.data(), full.data(), int64_t(x.size()));
    kernels::act_forward(a, x.data(), ref.data(), int64_t(x.size()));
    float worst = 0.f;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(full[i] - ref[i]));
    EXPECT_LT(worst, 2e-6f) << to_string(a);
    std::printf("  %s: max |linear_activation - act_forward| = %.2e\n", to_string(a), worst);
    for (int64_t off : {1, 3, 7})
      for (int64_t n : {1, 5, 9, 100}) {
        std::vector<float> part(static_cast<size_t>(n));
        kernels::linear_activation(a, x.data() + off, part.data(), n);
        for (int64_t i = 0; i < n; ++i)
          EXPECT_EQ(std::memcmp(&part[size_t(i)], &full[size_t(off + i)], 4), 0)
              << to_string(a) << " " << off << " " << n;
      }
  }
}

// What the saturation test guards against: oneDNN's u8 x s8 -> s32 matmul by
// itself on all-255 inputs and all-127 weights (K 768). Printed, not asserted
// (it is exact with VNNI); linear's own result is checked above.
TEST(GemmInt8, OneDnnAloneAtTheExtremes) {
  using dt = dnnl::memory::data_type;
  using md = dnnl::memory::desc;
  const int64_t M = 4, K = 768, N = 8;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  std::vector<uint8_t> x(static_cast<size_t>(M * K), 255);
  std::vector<int8_t> w(static_cast<size_t>(N * K), 127);
  std::vector<int32_t> y(static_cast<size_t>(M * N));
  md a({M, K}, dt::u8, dnnl::memory::dims{K, 1}), b({K, N}, dt::s8, dnnl::memory::dims{1, K}),
      c({M, N}, dt::s32, dnnl::memory::dims{N, 1});
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
  dnnl::memory ma(a, eng, x.data()), mb(b, eng, w.data()), mc(c, eng, y.data());
  dnnl::matmul(pd).execute(strm, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  strm.wait();
  std::printf("  oneDNN %s alone: %d for %lld (%s)\n", pd.impl_info_str(), y[0], 255LL * 127 * K,
              y[0] == 255 * 127 * K ? "exact" : "saturated");
}

// ---- linear_int_exact: the same formula for any width --------------------------------

// A layer's weight as linear_int_exact takes it: its codes as int32 (into codes).
kernels::IntWeights exact_weights(const IntLayer& l, std::vector<int32_t>& codes) {
  codes.resize(l.w.size());
  for (size_t i = 0; i < l.w.size(); ++i) codes[i] = l.type == WeightType::S8 ? int32_t(int8_t(l.w[i])) : l.w[i];
  kernels::IntWeights w;
  w.N = l.N;
  w.K = l.K;
  w.codes = codes.data();
  w.granularity = l.gran;
  w.group = l.group;
  w.scales = l.scales.data();
  w.zeros = l.zp ? l.zeros.data() : nullptr;
  return w;
}

// Where both apply (S8/U8 codes, inputs of 2..8 bits), linear_int_exact gives
// kernels::linear's bits (and both the scalar reference's): S8 and U8, Tensor,
// Channel and Group scales (odd groups too), with and without zero points,
// weights of 8, 4 and 2 bits' range, inputs of 8, 7, 4 and 2 bits, dynamic and
// static, every activation, bias, accumulation; odd shapes.
TEST(IntExact, BitIdenticalToTheKernels) {
  std::mt19937 rng(11);
  std::map<std::string, int> kernels_used;
  const Activation acts[] = {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu};
  int64_t n_case = 0, compared = 0;
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 7, 1}, {3, 40, 21}, {13, 96, 33}, {50, 64, 10}})
    for (WeightType type : {WeightType::S8, WeightType::U8}) {
      std::vector<std::pair<ScaleGranularity, int64_t>> grans = {{ScaleGranularity::Tensor, 0},
                                                                 {ScaleGranularity::Channel, 0}};
      for (int64_t g : {int64_t(1), int64_t(8), int64_t(5), K / 2})
        if (g > 0 && K % g == 0) grans.push_back({ScaleGranularity::Group, g});
      for (auto [gran, group] : grans)
        for (bool zp : {false, true})
          for (int wbits : {8, 4, 2})
            for (int bits : {8, 7, 4, 2})
              for (bool stat : {false, true}) {
                const int64_t c = n_case++;
                // The weight's code range at wbits (S8 at 8 bits: all of it, -128 too).
                const int wlo = type == WeightType::S8 ? (wbits == 8 ? -128 : -((1 << (wbits - 1)) - 1)) : 0;
                const int whi = type == WeightType::S8 ? (1 << (wbits - 1)) - 1 : (1 << wbits) - 1;
                IntLayer l = make_layer(rng, type, gran, group, zp, M, K, N, wlo, whi);
                InputQuant xq;
                xq.bits = bits;
                if (stat) xq = static_quant(bits);
                const bool bias = c % 2 == 0, acc = c % 3 == 1;
                const Activation act = acts[(c / 3) % 4];
                const float* b = bias ? l.bias.data() : nullptr;
                std::vector<float> Yk = l.y0, Ye = l.y0;
                kernels::linear(l.x.data(), l.op(), b, Yk.data(), M, act, acc, xq);
                std::vector<int32_t> codes;
                kernels::linear_int_exact(l.x.data(), exact_weights(l, codes), b, Ye.data(), M, act, acc, xq);
                const std::vector<float> R = reference(l.x, M, l.op(), b, l.y0, acc, act, xq);
                const std::string what = cat(name(type), " ", name(gran), " group ", group, zp ? " zp" : "",
                                             " wbits ", wbits, " M ", M, " K ", K, " N ", N, " bits ", bits,
                                             stat ? " static" : " dynamic", bias ? " bias" : "", " ", to_string(act),
                                             acc ? " accumulate" : "");
                std::string where;
                EXPECT_EQ(bit_mismatches(Ye, Yk, &where), 0) << what << ": exact vs kernel " << where;
                EXPECT_EQ(bit_mismatches(Ye, R, &where), 0) << what << ": exact vs reference " << where;
                ++kernels_used[kernels::int8_kernel(l.op(), xq)];
                ++compared;
              }
    }
  for (auto& [k, n] : kernels_used) std::printf("  kernel %s: %d cases\n", k.c_str(), n);
  std::printf("  %lld layers: linear_int_exact == kernels::linear bit for bit\n", (long long)compared);
  EXPECT_GT(kernels_used["s16"], 0);
}

// A weight of int32 codes of any width (2..16 bits): symmetric codes in
// [-(2^(b-1) - 1), 2^(b-1) - 1], or [0, 2^b - 1] with zero points in that range.
struct WideLayer {
  int64_t M = 0, N = 0, K = 0;
  ScaleGranularity gran = ScaleGranularity::Channel;
  int64_t group = 0;
  std::vector<int32_t> codes, zeros;
  std::vector<float> scales, x, bias, y0;
  bool zp = false;
  kernels::IntWeights weights() const {
    kernels::IntWeights w;
    w.N = N;
    w.K = K;
    w.codes = codes.data();
    w.granularity = gran;
    w.group = group;
    w.scales = scales.data();
    w.zeros = zp ? zeros.data() : nullptr;
    return w;
  }
  std::vector<float> reference(bool with_bias, bool acc, Activation act, const InputQuant& xq) const {
    auto code = [&](int64_t n, int64_t k) { return codes[size_t(n * K + k)]; };
    return reference_codes(x, M, N, K, gran, group, code, scales.data(), zp ? zeros.data() : nullptr,
                           with_bias ? bias.data() : nullptr, y0, acc, act, xq);
  }
};

WideLayer make_wide(std::mt19937& rng, int bits, bool zp, ScaleGranularity gran, int64_t group, int64_t M, int64_t K,
                    int64_t N) {
  // make_layer's scales, inputs (a zero row, a non-negative row), bias and Y0
  const IntLayer base = make_layer(rng, WeightType::S8, gran, group, false, M, K, N, 0, 0);
  WideLayer l;
  l.M = M;
  l.N = N;
  l.K = K;
  l.gran = gran;
  l.group = group;
  l.zp = zp;
  l.scales = base.scales;
  l.x = base.x;
  l.bias = base.bias;
  l.y0 = base.y0;
  const int qs = (1 << (bits - 1)) - 1, qu = (1 << bits) - 1;
  std::uniform_int_distribution<int> cd(zp ? 0 : -qs, zp ? qu : qs), zd(0, qu);
  l.codes.resize(size_t(N * K));
  for (auto& c : l.codes) c = cd(rng);
  l.zeros.resize(l.scales.size());
  for (auto& z : l.zeros) z = zd(rng);
  return l;
}

// Weights and inputs of 9..16 bits (and 8 / 2 bits beside 16): the scalar
// reference (int64 sums, which pass 2^31 here) bit for bit.
TEST(IntExact, WideWidthsMatchTheScalarReference) {
  std::mt19937 rng(12);
  const Activation acts[] = {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu};
  const std::vector<std::pair<int, int>> widths = {{9, 9}, {12, 10}, {16, 16}, {16, 2}, {8, 16}, {2, 12}, {10, 8}};
  int64_t n_case = 0;
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 7, 3}, {5, 80, 17}, {3, 1000, 4}})
    for (auto [wbits, bits] : widths)
      for (bool zp : {false, true})
        for (auto [gran, group] : std::vector<std::pair<ScaleGranularity, int64_t>>{
                 {ScaleGranularity::Tensor, 0}, {ScaleGranularity::Channel, 0}, {ScaleGranularity::Group, 0}})
          for (bool stat : {false, true}) {
            const int64_t c = n_case++;
            const int64_t g = gran == ScaleGranularity::Group ? (K % 5 == 0 ? 5 : K) : 0;
            const WideLayer l = make_wide(rng, wbits, zp, gran, g, M, K, N);
            InputQuant xq;
            xq.bits = bits;
            if (stat) xq = static_quant(bits);
            const bool bias = c % 2 == 0, acc = c % 3 == 2;
            const Activation act = acts[c % 4];
            std::vector<float> Y = l.y0;
            kernels::linear_int_exact(l.x.data(), l.weights(), bias ? l.bias.data() : nullptr, Y.data(), M, act, acc,
                                      xq);
            std::string where;
            EXPECT_EQ(bit_mismatches(Y, l.reference(bias, acc, act, xq), &where), 0)
                << "wbits " << wbits << " bits " << bits << (zp ? " zp " : " ") << name(gran) << " " << g << " M " << M
                << " K " << K << " N " << N << (stat ? " static" : " dynamic") << " " << to_string(act)
                << (acc ? " accumulate" : "") << ": " << where;
          }
}

// The extremes: every product (2^16 - 1) * (2^16 - 1), K = 4096, sums of
// 1.76e13 (far beyond s32), the value itself and not only the reference's.
TEST(IntExact, ExtremeSumsExact) {
  for (int64_t K : {1, 4096})
    for (bool neg : {false, true}) {
      WideLayer l;
      l.M = 2;
      l.N = 3;
      l.K = K;
      l.gran = ScaleGranularity::Tensor;
      l.zp = true;
      l.codes.assign(size_t(l.N * K), neg ? 0 : 65535);
      l.zeros = {neg ? 65535 : 0};
      l.scales = {1.f};
      l.x.assign(size_t(l.M * K), 65535.f);
      l.y0.assign(size_t(l.M * l.N), 0.f);
      InputQuant xq;
      xq.mode = InputQuant::Mode::Static;
      xq.bits = 16;
      xq.scale = 1.f;
      xq.zero = 0;
      std::vector<float> Y(size_t(l.M * l.N));
      kernels::linear_int_exact(l.x.data(), l.weights(), nullptr, Y.data(), l.M, Activation::None, false, xq);
      const double T = double(K) * 65535.0 * 65535.0 * (neg ? -1 : 1);
      EXPECT_EQ(Y[0], float(T)) << K;
      EXPECT_EQ(bit_mismatches(Y, l.reference(false, false, Activation::None, xq)), 0) << K;
    }
}

// quantize_input_row (what linear_int_exact and the int layer's straight-through
// input use): gemm.h's scale, zero point and codes, codes within 0..2^bits - 1.
TEST(IntExact, InputRowsAsTheKernels) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> d(-3.f, 3.f);
  for (int bits : {2, 4, 8, 12, 16})
    for (bool stat : {false, true})
      for (int64_t K : {1, 9, 64}) {
        std::vector<float> x(static_cast<size_t>(K));
        for (auto& v : x) v = d(rng);
        InputQuant xq;
        xq.bits = bits;
        if (stat) xq = static_quant(bits);
        float s = 0;
        int32_t z = -1;
        std::vector<int32_t> q(static_cast<size_t>(K));
        kernels::quantize_input_row(x.data(), K, xq, &s, &z, q.data());
        // gemm.h's scale and zero point (dynamic: over [min(0, min x), max(0, max x)]).
        const int qmax = (1 << bits) - 1;
        float lo = 0.f, hi = 0.f;
        for (float v : x) lo = std::min(lo, v), hi = std::max(hi, v);
        const float ds = (hi - lo) / float(qmax);
        EXPECT_EQ(s, stat ? xq.scale : ds) << bits << " " << K;
        EXPECT_EQ(z, stat ? xq.zero : int32_t(clampq(std::nearbyint(-lo / ds), float(qmax)))) << bits << " " << K;
        for (int64_t k = 0; k < K; ++k) {
          EXPECT_GE(q[size_t(k)], 0);
          EXPECT_LE(q[size_t(k)], qmax);
          EXPECT_EQ(q[size_t(k)], int32_t(clampq(std::nearbyint(x[size_t(k)] / s) + float(z), float(qmax))));
        }
      }
}

TEST(IntExact, ClearErrors) {
  std::vector<int32_t> codes(size_t(4 * 6), 1);
  std::vector<float> scales(size_t(4 * 6), 0.1f), x(size_t(2 * 6), 0.5f), y(size_t(2 * 4));
  kernels::IntWeights w;
  w.N = 4;
  w.K = 6;
  w.codes = codes.data();
  w.scales = scales.data();
  auto msg = [&](const kernels::IntWeights& op, const InputQuant& xq) {
    try {
      kernels::linear_int_exact(x.data(), op, nullptr, y.data(), 2, Activation::None, false, xq);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  InputQuant xq;
  for (int bits : {1, 17}) {
    xq.bits = bits;
    EXPECT_NE(msg(w, xq).find(cat("input bits ", bits)), std::string::npos) << msg(w, xq);
  }
  xq.bits = 8;
  kernels::IntWeights g = w;
  g.granularity = ScaleGranularity::Group;
  g.group = 4;
  EXPECT_NE(msg(g, xq).find("group 4 does not divide K = 6"), std::string::npos) << msg(g, xq);
  InputQuant sq;
  sq.mode = InputQuant::Mode::Static;
  EXPECT_NE(msg(w, sq).find("static input scale"), std::string::npos) << msg(w, sq);
  kernels::IntWeights none = w;
  none.scales = nullptr;
  EXPECT_NE(msg(none, xq).find("no scales"), std::string::npos) << msg(none, xq);
}

// ---- F32 and BF16 through linear ------------------------------------------------------

TEST(GemmLinear, F32AndBf16EqualExistingEntryPoints) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 7, 1}, {3, 64, 10}, {197, 768, 384}})
    for (bool bias : {false, true})
      for (Activation act : {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu})
        for (bool acc : {false, true}) {
          std::vector<float> x(size_t(M * K)), w(size_t(N * K)), b(static_cast<size_t>(N)), y0(size_t(M * N));
          for (auto* v : {&x, &w, &b, &y0})
            for (auto& e : *v) e = d(rng);
          const float* bp = bias ? b.data() : nullptr;
          const std::string what = cat(M, "x", K, "x", N, bias ? " bias " : " ", to_string(act), acc ? " acc" : "");
          // F32 plain
          WeightOperand W;
          W.N = N;
          W.K = K;
          W.data = w.data();
          std::vector<float> y1 = y0, y2 = y0;
          kernels::gemm(false, true, M, N, K, 1.f, x.data(), K, w.data(), K, acc ? 1.f : 0.f, y1.data(), N, bp, act);
          kernels::linear(x.data(), W, bp, y2.data(), M, act, acc);
          EXPECT_EQ(bit_mismatches(y2, y1), 0) << "F32 " << what;
          // F32 packed (only where pack_weight packs: AVX-512)
          std::vector<float> wp = w;
          if (auto P = kernels::pack_weight(wp.data(), N, K, true)) {
            W.packed = P.get();
            W.data = wp.data();
            std::vector<float> y3 = y0, y4 = y0;
            kernels::linear_packed(x.data(), *P, wp.data(), bp, y3.data(), M, act, acc);
            kernels::linear(x.data(), W, bp, y4.data(), M, act, acc);
            EXPECT_EQ(bit_mismatches(y4, y3), 0) << "F32 packed " << what;
            EXPECT_EQ(bit_mismatches(y4, y1), 0) << "F32 packed vs plain " << what;
          }
          // BF16: X rounded by core's float_to_bf16, then gemm_bf16
          std::vector<uint16_t> xb(x.size()), wb(w.size());
          for (size_t i = 0; i < x.size(); ++i) xb[i] = float_to_bf16(x[i]);
          for (size_t i = 0; i < w.size(); ++i) wb[i] = float_to_bf16(w[i]);
          WeightOperand B;
          B.type = WeightType::BF16;
          B.N = N;
          B.K = K;
          B.data = wb.data();
          std::vector<float> y5 = y0, y6 = y0;
          kernels::gemm_bf16(false, true, M, N, K, 1.f, xb.data(), K, wb.data(), K, acc ? 1.f : 0.f, y5.data(), N, bp,
                             act);
          kernels::linear(x.data(), B, bp, y6.data(), M, act, acc);
          EXPECT_EQ(bit_mismatches(y6, y5), 0) << "BF16 " << what;
          if (auto P = kernels::pack_weight_bf16(wb.data(), N, K)) {
            B.packed = P.get();
            std::vector<float> y7 = y0, y8 = y0;
            kernels::linear_packed_bf16(xb.data(), *P, bp, y7.data(), M, act, acc);
            kernels::linear(x.data(), B, bp, y8.data(), M, act, acc);
            EXPECT_EQ(bit_mismatches(y8, y7), 0) << "BF16 packed " << what;
          }
        }
}

// ---- errors -------------------------------------------------------------------------------

// The message of the Error f throws (fails the test if it throws none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no vitkit::Error thrown";
  return "";
}

TEST(GemmLinear, ClearErrors) {
  std::vector<int8_t> w(size_t(10 * 64), 1);
  std::vector<float> x(size_t(3 * 64), 0.5f), y(size_t(3 * 10)), scales(size_t(10 * 64), 0.1f);
  WeightOperand W;
  W.type = WeightType::S8;
  W.N = 10;
  W.K = 64;
  W.data = w.data();
  W.granularity = ScaleGranularity::Group;
  W.scales = scales.data();
  auto run = [&](const WeightOperand& op, const InputQuant& xq = {}) {
    kernels::linear(x.data(), op, nullptr, y.data(), 3, Activation::None, false, xq);
  };
  auto expect_has = [](const std::string& msg, std::initializer_list<const char*> parts) {
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  };

  WeightOperand bad = W;
  bad.group = 48;
  expect_has(error_of([&] { run(bad); }), {"group = 48", "does not divide K = 64"});
  bad.group = 0;
  expect_has(error_of([&] { run(bad); }), {"group = 0"});
  bad = W;
  bad.group = 16;
  bad.scales = nullptr;
  expect_has(error_of([&] { run(bad); }), {"no scales", "Group needs 40"});
  bad = W;
  bad.group = 16;
  for (int bits : {1, 9, 0}) {
    InputQuant q;
    q.bits = bits;
    expect_has(error_of([&] { run(bad, q); }), {cat("bits = ", bits).c_str(), "outside 2..8"});
  }
  InputQuant sq;
  sq.mode = InputQuant::Mode::Static;
  expect_has(error_of([&] { run(bad, sq); }), {"finite scale > 0"});
  sq.scale = 0.1f;
  sq.zero = 256;
  expect_has(error_of([&] { run(bad, sq); }), {"zero point 256", "0..255"});
  std::vector<int32_t> zeros(size_t(40), 0);
  zeros[7] = 128;
  bad.zeros = zeros.data();
  expect_has(error_of([&] { run(bad); }), {"zero point [7] = 128", "[-128, 127]"});
  bad.zeros = nullptr;
  bad.data = nullptr;
  expect_has(error_of([&] { run(bad); }), {"has no data"});
  // a packed weight used with another grouping
  bad = W;
  bad.group = 16;
  auto P = kernels::pack_weight_int8(bad);
  WeightOperand other = bad;
  other.packed = P.get();
  other.group = 32;
  expect_has(error_of([&] { run(other); }), {"not a pack_weight_int8", "group 32"});
  other.group = 16;
  other.granularity = ScaleGranularity::Channel;
  expect_has(error_of([&] { run(other); }), {"not a pack_weight_int8", "Channel"});
  // packed for 7-bit inputs (oneDNN's form, where it is exact only for those): called with 8
  WeightOperand ch = W;
  ch.granularity = ScaleGranularity::Channel;
  auto P7 = kernels::pack_weight_int8(ch, 7);
  ch.packed = P7.get();
  if (std::string(kernels::int8_kernel(ch, [] {
        InputQuant q;
        q.bits = 7;
        return q;
      }())) == "onednn")
    expect_has(error_of([&] { run(ch); }), {"packed for inputs of at most 7 bits"});
  // K beyond what s32 sums hold
  std::vector<int8_t> big(size_t(33026), 0);
  std::vector<float> bx(size_t(33026), 0.f), one(1, 1.f), by(1);
  WeightOperand Wk;
  Wk.type = WeightType::S8;
  Wk.N = 1;
  Wk.K = 33026;
  Wk.data = big.data();
  Wk.scales = one.data();
  expect_has(error_of([&] { kernels::linear(bx.data(), Wk, nullptr, by.data(), 1); }), {"K <= 33025"});
  // float weights with scales; a packed weight of another type
  std::vector<float> wf(size_t(10 * 64), 0.f);
  WeightOperand F;
  F.N = 10;
  F.K = 64;
  F.data = wf.data();
  F.scales = scales.data();
  expect_has(error_of([&] { run(F); }), {"F32 weight", "for S8/U8 weights only"});
  F.scales = nullptr;
  F.packed = P.get();
  expect_has(error_of([&] { run(F); }), {"not a packed F32"});
}

}  // namespace
}  // namespace vitkit

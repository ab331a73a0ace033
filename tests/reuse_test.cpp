// Reuse counting (kernels/reuse.h) against brute force: distinct unordered
// magnitude pairs with std::set, per output and per matmul; hand-made matrices
// (signs, order, rounding edge cases, all equal, all distinct, shared values),
// random matrices of several shapes and value ranges; the sampling estimate;
// the reuse-aware matmul against the exact result and the fp32 matmul.
#include "vitkit/kernels/reuse.h"

#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/rng.h"
#include "vitkit/kernels/gemm.h"

using namespace vitkit;
using namespace vitkit::kernels;

namespace {

struct Brute {
  int64_t mults = 0, distinct = 0, per_output = 0;
};

// Every multiplication x[t,k] w[o,k] with its pair {|round(x)|, |round(w)|}
// as exact integers (units of 10^-d), unordered.
Brute brute(const std::vector<float>& X, int64_t T, const std::vector<float>& W, int64_t N, int64_t K, int d) {
  auto mag = [&](float v) { return uint64_t(std::fabs(decimal_units(v, d))); };
  std::set<std::pair<uint64_t, uint64_t>> all;
  Brute b;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < N; ++o) {
      std::set<std::pair<uint64_t, uint64_t>> out;
      for (int64_t k = 0; k < K; ++k) {
        uint64_t a = mag(X[t * K + k]), c = mag(W[o * K + k]);
        auto p = std::minmax(a, c);
        all.insert(p);
        out.insert(p);
        ++b.mults;
      }
      b.per_output += int64_t(out.size());
    }
  b.distinct = int64_t(all.size());
  return b;
}

ReuseCount count(const std::vector<float>& X, int64_t T, const std::vector<float>& W, int64_t N, int64_t K, int d,
                 const ReuseCountOptions& opt = {}) {
  ReuseWeights rw(W.data(), N, K, d);
  return count_reuse(X.data(), T, rw, opt);
}

void expect_matches_brute(const std::vector<float>& X, int64_t T, const std::vector<float>& W, int64_t N, int64_t K,
                          int d, const std::string& what) {
  const Brute b = brute(X, T, W, N, K, d);
  const ReuseCount c = count(X, T, W, N, K, d);
  EXPECT_EQ(c.mults, b.mults) << what;
  EXPECT_EQ(c.distinct, b.distinct) << what;
  EXPECT_EQ(c.per_output, b.per_output) << what;
  ReuseCountOptions general;
  general.masked = false;  // the general kernel even when W has few values
  EXPECT_EQ(count(X, T, W, N, K, d, general).per_output, b.per_output) << what << " (general kernel)";
  // The reuse-aware matmul performs exactly those multiplications.
  std::vector<float> Y(size_t(T * N));
  EXPECT_EQ(reuse_matmul(X.data(), W.data(), Y.data(), T, N, K, d, ReuseEngine::PerOutput), b.per_output) << what;
  EXPECT_EQ(reuse_matmul(X.data(), W.data(), Y.data(), T, N, K, d, ReuseEngine::Table), b.distinct) << what;
}

std::vector<float> normal(Rng& rng, int64_t n, float std, float mean = 0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = mean + std * rng.normal();
  return v;
}

}  // namespace

// The example: (1.2, 2.3), (2.3, 1.2), (-1.2, 2.3) and (-2.3, -1.2) are one pair.
TEST(ReuseCount, HandMadeSignsAndOrder) {
  // X (1, 3), W (2, 3), d = 1.
  const std::vector<float> X = {1.2f, -2.3f, 0.0f};
  const std::vector<float> W = {2.3f,  1.2f,  5.0f,    // o = 0: {1.2,2.3} {2.3,1.2} {0,5} -> 2 distinct
                                -1.2f, -2.3f, -0.0f};  // o = 1: {1.2,1.2} {2.3,2.3} {0,0} -> 3 distinct
  const ReuseCount c = count(X, 1, W, 2, 3, 1);
  EXPECT_EQ(c.mults, 6);
  EXPECT_EQ(c.distinct, 5);  // {1.2,2.3} {0,5} {1.2,1.2} {2.3,2.3} {0,0}
  EXPECT_EQ(c.per_output, 5);
  EXPECT_NEAR(c.hits(), 100.0 / 6.0, 1e-12);
  expect_matches_brute(X, 1, W, 2, 3, 1, "hand-made");
  // The four spellings of one pair, in four columns of one output: one distinct pair.
  const std::vector<float> X4 = {1.2f, 2.3f, -1.2f, -2.3f}, W4 = {2.3f, 1.2f, 2.3f, -1.2f};
  const ReuseCount c4 = count(X4, 1, W4, 1, 4, 1);
  EXPECT_EQ(c4.distinct, 1);
  EXPECT_EQ(c4.per_output, 1);
  EXPECT_NEAR(c4.hits(), 75.0, 1e-12);
}

TEST(ReuseCount, RoundingEdgeCases) {
  // At d = 2: 0.0049 -> 0; the float nearest 0.005 (0.00499999988...) -> 0; the
  // literal 0.0050000001f is that same float -> 0; the next float up
  // (0.00500000035...) -> 1; -0.0 -> 0; 0.125 -> 13 (half away from zero).
  const float up = std::nextafter(0.005f, 1.f);
  EXPECT_EQ(0.0050000001f, 0.005f);
  const std::vector<float> vals = {0.0049f, 0.005f, 0.0050000001f, up, -0.0f, 0.0f, -0.125f, 0.125f};
  const uint64_t want[] = {0, 0, 0, 1, 0, 0, 13, 13};
  for (size_t i = 0; i < vals.size(); ++i) EXPECT_EQ(magnitude_code(vals[i], 2), want[i]) << vals[i];
  // One row of X against one of W: the codes {0,0,0,1,0,0,13,13} x {13,...}.
  const std::vector<float> W = {0.13f, 0.13f, 0.13f, 0.13f, 0.13f, 0.13f, 0.0f, -0.01f};
  // pairs: {0,13} x6 minus... columns: (0,13) (0,13) (0,13) (1,13) (0,13) (0,13) (13,0) (13,1)
  const ReuseCount c = count(vals, 1, W, 1, 8, 2);
  EXPECT_EQ(c.distinct, 2);  // {0,13}, {1,13}
  EXPECT_EQ(c.per_output, 2);
  expect_matches_brute(vals, 1, W, 1, 8, 2, "edge cases");
  // A matrix of edge cases against itself (every value is common to both operands).
  std::vector<float> X2, W2;
  for (int r = 0; r < 4; ++r)
    for (size_t k = 0; k < vals.size(); ++k) {
      X2.push_back(vals[(k + r) % vals.size()] * (r % 2 ? -1.f : 1.f));
      W2.push_back(vals[(k + 3 * r) % vals.size()]);
    }
  expect_matches_brute(X2, 4, W2, 4, int64_t(vals.size()), 2, "edge-case matrix");
}

TEST(ReuseCount, AllEqual) {
  const int64_t T = 7, N = 5, K = 9;
  std::vector<float> X(size_t(T * K), 0.5f), W(size_t(N * K), -0.25f);
  for (size_t i = 0; i < X.size(); i += 2) X[i] = -0.5f;  // signs do not matter
  for (int d : {0, 1, 2, 3}) {
    const ReuseCount c = count(X, T, W, N, K, d);
    EXPECT_EQ(c.distinct, 1) << d;
    EXPECT_EQ(c.per_output, T * N) << d;
    EXPECT_NEAR(c.hits(), 100.0 * double(T * N * K - 1) / double(T * N * K), 1e-12);
    expect_matches_brute(X, T, W, N, K, d, "all equal d=" + std::to_string(d));
  }
}

TEST(ReuseCount, AllDistinct) {
  const int64_t T = 6, N = 5, K = 4;
  // Disjoint value sets, every value distinct: no multiplication repeats.
  std::vector<float> X, W;
  for (int64_t i = 0; i < T * K; ++i) X.push_back(float(1 + i) * (i % 3 ? 1.f : -1.f));
  for (int64_t i = 0; i < N * K; ++i) W.push_back(float(1000 + i));
  ReuseCount c = count(X, T, W, N, K, 0);
  EXPECT_EQ(c.distinct, T * N * K);
  EXPECT_EQ(c.per_output, T * N * K);
  EXPECT_EQ(c.hits(), 0.0);
  expect_matches_brute(X, T, W, N, K, 0, "all distinct");
  // X = W with distinct values: multiplication (t, o, k) and (o, t, k) are the
  // same unordered pair, so the distinct pairs are K * T (T + 1) / 2.
  std::vector<float> S;
  for (int64_t i = 0; i < T * K; ++i) S.push_back(float(i + 1) / 10.f);
  c = count(S, T, S, T, K, 1);
  EXPECT_EQ(c.distinct, K * T * (T + 1) / 2);
  EXPECT_EQ(c.per_output, T * T * K);  // within one output all K pairs differ
  expect_matches_brute(S, T, S, T, K, 1, "X = W");
}

TEST(ReuseCount, RandomMatricesMatchBruteForce) {
  Rng rng(7);
  struct Case {
    int64_t T, N, K;
    int d;
    float sx, sw;  // value scales of X and W
  };
  const Case cases[] = {
      {1, 1, 1, 2, 1.f, 0.05f},    {3, 4, 5, 1, 1.f, 0.3f},     {17, 9, 13, 2, 1.f, 0.05f}, {20, 24, 16, 3, 1.f, 0.05f},
      {12, 10, 40, 2, 0.3f, 0.3f}, {30, 16, 24, 1, 2.f, 0.5f},  {9, 33, 70, 3, 0.2f, 0.2f}, {25, 12, 18, 4, 1.f, 0.05f},
      {8, 8, 8, 0, 3.f, 3.f},      {16, 20, 12, 2, 0.05f, 1.f},
  };
  for (const Case& c : cases) {
    const std::vector<float> X = normal(rng, c.T * c.K, c.sx), W = normal(rng, c.N * c.K, c.sw);
    expect_matches_brute(X, c.T, W, c.N, c.K, c.d,
                         cat("T=", c.T, " N=", c.N, " K=", c.K, " d=", c.d, " sx=", c.sx, " sw=", c.sw));
  }
  // Large magnitudes (codes far above the dense-table range: the sorted path).
  const std::vector<float> X = normal(rng, 10 * 12, 5000.f), W = normal(rng, 8 * 12, 3000.f);
  expect_matches_brute(X, 10, W, 8, 12, 5, "large codes");
  // Few distinct values (GELU-like inputs with many near-zero values) in wider layers.
  std::vector<float> G = normal(rng, 6 * 96, 1.f);
  for (float& g : G) g = 0.5f * g * (1.f + std::erf(g / std::sqrt(2.f)));
  expect_matches_brute(G, 6, normal(rng, 11 * 96, 0.04f), 11, 96, 2, "gelu inputs");
}

TEST(ReuseCount, RejectsNonFiniteValues) {
  std::vector<float> X = {1.f, NAN}, W = {1.f, 2.f};
  EXPECT_THROW(count(X, 1, W, 1, 2, 2), Error);
  X[1] = INFINITY;
  EXPECT_THROW(count(X, 1, W, 1, 2, 2), Error);
  EXPECT_THROW(ReuseWeights(X.data(), 1, 2, 2), Error);
}

TEST(ReuseSample, EstimatesAndZones) {
  Rng rng(11);
  const int64_t T = 40, N = 48, K = 64;
  const std::vector<float> X = normal(rng, T * K, 1.f), W = normal(rng, N * K, 0.05f);
  ReuseCountOptions o;
  o.per_output = false;
  o.sample = 20000;
  o.seed = 3;
  const ReuseCount c = count(X, T, W, N, K, 2, o);
  EXPECT_EQ(c.per_output, -1);
  EXPECT_EQ(c.samples, 20000);
  EXPECT_GE(c.sample_hits, 0.0);
  EXPECT_LE(c.sample_hits, 100.0);
  // The 1/frequency estimator is unbiased for distinct / mults: close to exact.
  EXPECT_NEAR(c.sample_freq_hits, c.hits(), 1.0) << "exact " << c.hits();
  // The naive estimate sees far fewer multiplications, so fewer repeats.
  EXPECT_LT(c.sample_hits, c.hits());
  // Deterministic for a seed; zones larger than the matrix are clamped.
  const ReuseCount again = count(X, T, W, N, K, 2, o);
  EXPECT_EQ(again.sample_hits, c.sample_hits);
  EXPECT_EQ(again.sample_freq_hits, c.sample_freq_hits);
  o.zone_rows = 1000;
  o.zone_cols = 1000;
  o.sample = 100;
  const ReuseCount z = count(X, 2, W, 3, K, 2, o);
  EXPECT_EQ(z.samples, 100);  // 6 zones (one per output element of 2 x 3): 17, 17, 17, 17, 16, 16
}

// Exact result of round(X) round(W)^T: integer sums of k_x k_w, divided by 10^(2d) once.
static std::vector<float> exact_matmul(const std::vector<float>& X, const std::vector<float>& W, int64_t T, int64_t N,
                                       int64_t K, int d) {
  std::vector<float> Y(size_t(T * N));
  const long double p = std::pow(10.0L, 2 * d);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < N; ++o) {
      __int128 acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += __int128(int64_t(decimal_units(X[t * K + k], d))) * int64_t(decimal_units(W[o * K + k], d));
      Y[t * N + o] = float((long double)acc / p);
    }
  return Y;
}

TEST(ReuseMatmul, EqualsExactAndPlainMatmul) {
  Rng rng(5);
  for (int d : {1, 2, 3}) {
    const int64_t T = 13, N = 21, K = 37;
    const std::vector<float> X = normal(rng, T * K, 1.f), W = normal(rng, N * K, 0.1f);
    const std::vector<float> want = exact_matmul(X, W, T, N, K, d);
    std::vector<float> a(size_t(T * N)), b(size_t(T * N));
    const int64_t ma = reuse_matmul(X.data(), W.data(), a.data(), T, N, K, d, ReuseEngine::PerOutput);
    const int64_t mb = reuse_matmul(X.data(), W.data(), b.data(), T, N, K, d, ReuseEngine::Table);
    const Brute br = brute(X, T, W, N, K, d);
    EXPECT_EQ(ma, br.per_output);
    EXPECT_EQ(mb, br.distinct);
    EXPECT_LT(mb, ma);
    EXPECT_LE(ma, T * N * K);
    if (d == 1) {
      EXPECT_LT(ma, T * N * K * 3 / 4);  // W has ~4 values at d = 1: many repeats per output
    }
    // Bit-exact: both engines form the same integer sums.
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(a[i], want[i]) << i;
      ASSERT_EQ(b[i], want[i]) << i;
    }
    // The fp32 matmul of the rounded operands agrees to float rounding:
    // |err| <= (K + 2) eps sum_k |x_k w_k| (operands not exactly k/10^d, K additions).
    std::vector<float> Xr(X.size()), Wr(W.size()), plain(size_t(T * N));
    round_decimal(X.data(), Xr.data(), int64_t(X.size()), d);
    round_decimal(W.data(), Wr.data(), int64_t(W.size()), d);
    gemm(false, true, T, N, K, 1.f, Xr.data(), K, Wr.data(), K, 0.f, plain.data(), N);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < N; ++o) {
        double mag = 0;
        for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(Xr[t * K + k]) * Wr[o * K + k]);
        EXPECT_LE(std::fabs(double(plain[t * N + o]) - want[t * N + o]), (K + 2) * 0x1p-24 * mag + 1e-30);
      }
  }
}

// kernels::sparse_linear (sparse.h) against a scalar reference in double:
//   ref[m, o] = act(sum_j X[m, j] W[o, j] + b[o] (+ Y0[m, o])), every product and
//   sum in double, the activations from <cmath>;
// a result passes when |y - ref| <= 1e-5 * (sum_j |X[m, j] W[o, j]| + |b[o]| + |Y0[m, o]|)
// (relative to the magnitudes summed, so that cancellation is not blamed on the
// kernel), over shapes with odd sizes and tails of every vector and block, each
// density, with and without bias, accumulate on and off, every activation.
// Also: csr_from_dense round trips, the CsrRef view gives the same bits, and
// calls from inside an OpenMP parallel region (which run on their thread
// alone) give the bits of the threaded call.
#include "vitkit/kernels/sparse.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numbers>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"

namespace vitkit {
namespace {

using kernels::Csr;

constexpr Activation kActs[] = {Activation::None, Activation::Gelu, Activation::GeluTanh, Activation::Relu};

double act_ref(Activation a, double x) {
  switch (a) {
    case Activation::None:
      return x;
    case Activation::Relu:
      return x > 0 ? x : 0;
    case Activation::Gelu:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::GeluTanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
  }
  return x;
}

// W (rows, cols): each element nonzero with probability density (N(0, 1) values).
std::vector<float> random_weight(int rows, int cols, double density, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<double> ud(0, 1);
  std::vector<float> w(size_t(rows) * cols);
  for (auto& v : w) v = ud(rng) < density ? nd(rng) : 0.f;
  return w;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// The product part of the reference: P (M, out) = X W^T in double, A (M, out) = |X| |W|^T.
void reference_product(const std::vector<float>& X, const std::vector<float>& W, int64_t M, int in, int out,
                       std::vector<double>& P, std::vector<double>& A) {
  P.assign(size_t(M) * out, 0.0);
  A.assign(size_t(M) * out, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int o = 0; o < out; ++o) {
      double p = 0, a = 0;
      const float* x = X.data() + m * in;
      const float* w = W.data() + int64_t(o) * in;
      for (int j = 0; j < in; ++j) {
        p += double(x[j]) * double(w[j]);
        a += std::fabs(double(x[j]) * double(w[j]));
      }
      P[size_t(m) * out + o] = p;
      A[size_t(m) * out + o] = a;
    }
}

struct Combo {
  Activation act;
  bool bias, accumulate;
};

// Every activation with and without bias and accumulate (16 combinations).
std::vector<Combo> all_combos() {
  std::vector<Combo> v;
  for (Activation act : kActs)
    for (bool bias : {false, true})
      for (bool accumulate : {false, true}) v.push_back({act, bias, accumulate});
  return v;
}

// Four of them, each activation once, bias and accumulate chosen by k.
std::vector<Combo> some_combos(uint32_t k) {
  std::vector<Combo> v;
  for (int a = 0; a < 4; ++a) v.push_back({kActs[a], bool((k + a) & 1), bool(((k + a) >> 1) & 1)});
  return v;
}

// Checks sparse_linear for one shape and density against the reference, for
// the given combinations. Returns the failures.
int check_shape(int64_t M, int in, int out, double density, uint32_t seed, const std::vector<Combo>& combos) {
  std::mt19937 rng(seed);
  const std::vector<float> W = random_weight(out, in, density, rng);
  const std::vector<float> X = random_vector(size_t(M) * in, rng), b = random_vector(size_t(out), rng),
                           Y0 = random_vector(size_t(M) * out, rng);
  const Csr csr = kernels::csr_from_dense(W.data(), out, in);
  std::vector<double> P, A;
  reference_product(X, W, M, in, out, P, A);
  int failures = 0;
  std::vector<float> Y;
  for (const auto& [act, bias, accumulate] : combos) {
        Y = Y0;
        kernels::sparse_linear(X.data(), csr, bias ? b.data() : nullptr, Y.data(), M, act, accumulate);
        for (int64_t m = 0; m < M; ++m)
          for (int o = 0; o < out; ++o) {
            const size_t i = size_t(m) * out + o;
            double pre = P[i], mag = A[i];
            if (bias) pre += b[o], mag += std::fabs(b[o]);
            if (accumulate) pre += Y0[i], mag += std::fabs(Y0[i]);
            const double ref = act_ref(act, pre);
            if (!(std::fabs(Y[i] - ref) <= 1e-5 * mag) && failures++ < 5)
              ADD_FAILURE() << "M " << M << " in " << in << " out " << out << " density " << density << " act "
                            << to_string(act) << " bias " << bias << " accumulate " << accumulate << ": Y[" << m
                            << ", " << o << "] = " << Y[i] << ", reference " << ref << " (magnitude " << mag
                            << ")";
          }
  }
  return failures;
}

// Every test first sets the thread count to all cores (the default), so that
// num_threads() reads a stored value: unset, it asks the OS on each call, and
// act_forward calls it once per call.
class SparseKernel : public ::testing::Test {
 protected:
  void SetUp() override { set_num_threads(0); }
};

struct Shape {
  int in, out;
};

// in/out of 1, 3, 64, 192, 768 and odd sizes: tails of the 8-wide output
// groups and of the transposition's 8x8 tiles on both sides.
const Shape kShapes[] = {{1, 1}, {3, 1}, {1, 3}, {3, 64}, {64, 3}, {64, 64}, {17, 129},
                         {129, 17}, {192, 64}, {64, 192}, {768, 3}, {5, 768}, {192, 33}};

// M 1, 7, 197 with all 16 combinations; M 1000 with four of them in turn.
// (With AVX-512, M 197 is 13 vectors of 16: blocks of 7 and 6 vectors, or of
// 4, 3, 3, 3 for 64 < in <= 128; M 1000 is 63 vectors: 7 blocks of 8 and one of 7.)
TEST_F(SparseKernel, MatchesReference) {
  uint32_t seed = 1;
  for (int64_t M : {1, 7, 197, 1000})
    for (const Shape& s : kShapes)
      for (double density : {0.0, 0.05, 0.5, 1.0}) {
        const bool big = M == 1000;
        EXPECT_EQ(check_shape(M, s.in, s.out, density, seed, big ? some_combos(seed) : all_combos()), 0);
        ++seed;
      }
}

// Every block width (1 .. 8 vectors, a partial last vector, several blocks):
// M 1 .. 140 for in 33 (blocks of up to 8 vectors) and in 100 (up to 4 with AVX-512).
TEST_F(SparseKernel, EveryBlockWidth) {
  for (int in : {33, 100})
    for (int64_t M = 1; M <= 140; M += (M < 40 ? 1 : 7))
      EXPECT_EQ(check_shape(M, in, 19, 0.3, uint32_t(M * 7 + in), some_combos(uint32_t(M))), 0);
}

// Large enough to run over threads (where there are several).
TEST_F(SparseKernel, MatchesReferenceLarge) {
  EXPECT_EQ(check_shape(400, 192, 768, 0.5, 7, some_combos(0)), 0);
  EXPECT_EQ(check_shape(300, 768, 192, 0.05, 8, some_combos(1)), 0);
  EXPECT_EQ(check_shape(197, 768, 256, 1.0, 9, some_combos(2)), 0);
}

// Nothing to multiply: M = 0 writes nothing; in = 0 gives act(b (+ Y0)).
TEST_F(SparseKernel, EmptyOperands) {
  const Csr w = kernels::csr_from_dense(nullptr, 4, 0);
  EXPECT_EQ(w.nnz(), 0);
  std::vector<float> b = {1.f, -2.f, 0.5f, 3.f}, Y(8, 7.f);
  kernels::sparse_linear(nullptr, w, b.data(), Y.data(), 0, Activation::Relu, false);
  EXPECT_EQ(Y, std::vector<float>(8, 7.f));
  kernels::sparse_linear(nullptr, w, b.data(), Y.data(), 2, Activation::Relu, true);
  EXPECT_EQ(Y, (std::vector<float>{8.f, 5.f, 7.5f, 10.f, 8.f, 5.f, 7.5f, 10.f}));
  kernels::sparse_linear(nullptr, w, nullptr, Y.data(), 2, Activation::None, false);
  EXPECT_EQ(Y, std::vector<float>(8, 0.f));
  const Csr none = kernels::csr_from_dense(nullptr, 0, 5);
  kernels::sparse_linear(b.data(), none, nullptr, nullptr, 3, Activation::None, false);  // out = 0: nothing
}

TEST_F(SparseKernel, InconsistentCsrThrows) {
  std::mt19937 rng(3);
  const std::vector<float> W = random_weight(4, 6, 0.5, rng);
  Csr c = kernels::csr_from_dense(W.data(), 4, 6);
  std::vector<float> X(6), Y(4);
  c.row_ptr.pop_back();
  EXPECT_THROW(kernels::sparse_linear(X.data(), c, nullptr, Y.data(), 1, Activation::None, false), Error);
  c = kernels::csr_from_dense(W.data(), 4, 6);
  c.val.push_back(1.f);
  EXPECT_THROW(kernels::sparse_linear(X.data(), c, nullptr, Y.data(), 1, Activation::None, false), Error);
}

// The view overload (CsrRef: arrays owned elsewhere) gives the bits of the Csr
// one, and checks its row pointers.
TEST_F(SparseKernel, ViewSameBits) {
  std::mt19937 rng(13);
  const std::vector<float> W = random_weight(40, 70, 0.3, rng);
  const std::vector<float> X = random_vector(size_t(97) * 70, rng), b = random_vector(40, rng);
  const Csr c = kernels::csr_from_dense(W.data(), 40, 70);
  std::vector<float> y1(size_t(97) * 40), y2(y1.size());
  kernels::sparse_linear(X.data(), c, b.data(), y1.data(), 97, Activation::Gelu, false);
  kernels::sparse_linear(X.data(), kernels::csr_ref(c), b.data(), y2.data(), 97, Activation::Gelu, false);
  EXPECT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)), 0);
  std::vector<int32_t> rp = c.row_ptr;
  std::swap(rp[3], rp[4]);  // decreasing
  kernels::CsrRef bad = kernels::csr_ref(c);
  bad.row_ptr = rp.data();
  if (rp[3] != rp[4]) {
    EXPECT_THROW(kernels::sparse_linear(X.data(), bad, nullptr, y2.data(), 97, Activation::None, false), Error);
  }
  bad = kernels::csr_ref(c);
  bad.nnz -= 1;  // row_ptr[rows] != nnz
  EXPECT_THROW(kernels::sparse_linear(X.data(), bad, nullptr, y2.data(), 97, Activation::None, false), Error);
}

TEST_F(SparseKernel, CsrRoundTrip) {
  std::mt19937 rng(5);
  for (double density : {0.0, 0.05, 0.5, 1.0})
    for (const Shape& s : kShapes) {
      std::vector<float> W = random_weight(s.out, s.in, density, rng);
      if (!W.empty()) W[0] = -0.f;  // a negative zero is an exact zero: not stored
      const Csr c = kernels::csr_from_dense(W.data(), s.out, s.in);
      ASSERT_EQ(c.rows, s.out);
      ASSERT_EQ(c.cols, s.in);
      ASSERT_EQ(c.row_ptr.size(), size_t(s.out) + 1);
      EXPECT_EQ(c.row_ptr[0], 0);
      EXPECT_EQ(c.nnz(), int64_t(std::count_if(W.begin(), W.end(), [](float v) { return v != 0.f; })));
      EXPECT_EQ(c.col.size(), c.val.size());
      for (int o = 0; o < s.out; ++o)
        for (int32_t k = c.row_ptr[o]; k < c.row_ptr[o + 1]; ++k) {
          ASSERT_TRUE(k == c.row_ptr[o] || c.col[k - 1] < c.col[k]) << "columns not ascending in row " << o;
          ASSERT_NE(c.val[k], 0.f);
        }
      std::vector<float> back(W.size(), 1.f);
      kernels::csr_to_dense(c, back.data());
      if (!W.empty()) W[0] = 0.f;
      EXPECT_EQ(std::memcmp(back.data(), W.data(), W.size() * sizeof(float)), 0)
          << s.out << "x" << s.in << " density " << density;
    }
}

// Every thread of a parallel region calls sparse_linear on its own Y (each
// then runs on its thread alone): the bits of the call made outside, which ran
// over num_threads() threads for the larger shapes.
TEST_F(SparseKernel, InsideParallelRegionSameBits) {
  struct Case {
    int64_t M;
    int in, out;
    double density;
  };
  const Case cases[] = {{1, 192, 64, 0.5}, {197, 192, 768, 0.3}, {1000, 128, 384, 0.1}, {50, 256, 129, 1.0}};
  const int nt = std::max(2, num_threads());
  for (const Case& c : cases)
    for (Activation act : kActs) {
      std::mt19937 rng(11);
      const std::vector<float> W = random_weight(c.out, c.in, c.density, rng);
      const std::vector<float> X = random_vector(size_t(c.M) * c.in, rng), b = random_vector(size_t(c.out), rng),
                               Y0 = random_vector(size_t(c.M) * c.out, rng);
      const Csr csr = kernels::csr_from_dense(W.data(), c.out, c.in);
      std::vector<float> outside = Y0;
      kernels::sparse_linear(X.data(), csr, b.data(), outside.data(), c.M, act, true);
      std::vector<std::vector<float>> inside(size_t(nt), Y0);
#pragma omp parallel num_threads(nt)
      {
        auto& y = inside[size_t(omp_get_thread_num())];
        kernels::sparse_linear(X.data(), csr, b.data(), y.data(), c.M, act, true);
      }
      for (int t = 0; t < nt; ++t)
        EXPECT_EQ(std::memcmp(inside[size_t(t)].data(), outside.data(), outside.size() * sizeof(float)), 0)
            << "thread " << t << ", M " << c.M << " " << c.out << "x" << c.in << " " << to_string(act);
    }
}

// The crossover is a density threshold: denser never wins where sparser loses;
// an empty W always wins, a dense one never.
TEST_F(SparseKernel, IsFasterMonotoneInDensity) {
  for (int64_t M : {1, 7, 50, 197, 3200, 12608})
    for (auto [in, out] : {std::pair{128, 384}, {256, 128}, {768, 2304}, {3072, 768}}) {
      EXPECT_FALSE(kernels::sparse_is_faster(1.0, M, in, out));
      EXPECT_FALSE(kernels::sparse_is_faster(0.5, M, in, out));
      EXPECT_TRUE(kernels::sparse_is_faster(0.0, M, in, out));
      bool prev = true;
      for (int i = 0; i <= 100; ++i) {
        const double d = i / 100.0;
        const bool f = kernels::sparse_is_faster(d, M, in, out);
        EXPECT_FALSE(f && !prev) << "density " << d << " M " << M << " " << out << "x" << in;
        prev = f;
      }
    }
}

}  // namespace
}  // namespace vitkit

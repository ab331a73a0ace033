// Low-rank layers (repr/lowrank.h) and the lowrank pass (compress/lowrank.h):
// the decomposition against Eigen's SVD in double (exact at full rank,
// Eckart–Young at rank r), the data-aware methods (asvd, whiten) against svd
// on the output error of anisotropic inputs and whiten's optimality, the
// layer's forward against a naive double loop and its backward against
// central differences, the model-level gradients against the chain rule
// through a dense model of weight U V, save/load, composition with quantize,
// training, rank choice (energy, break-even) and bad specs.
//
// The model: image 16, patch 4, dim 32, depth 2 (17 tokens), MLP 64, 10 classes.

// Eigen's SVDs trip GCC's -W(maybe-)uninitialized inside its own intrinsics
// (as compress/lowrank.cpp notes); the test's own code is warning-clean.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <Eigen/Dense>
#include <Eigen/QR>
#include <Eigen/SVD>
#pragma GCC diagnostic pop

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>

#include "test_util.h"
#include "vitkit/compress/lowrank.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/repr/f32.h"
#include "vitkit/repr/int.h"
#include "vitkit/repr/lowrank.h"
#include "vitkit/train/step.h"

using namespace vitkit;

namespace {

using MatD = Eigen::MatrixXd;

// ---------------------------------------------------------------- helpers

std::vector<float> normals(Rng& rng, int64_t n, float scale = 1.f) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = scale * rng.normal();
  return v;
}

// A row-major f32 (rows, cols) as a double matrix.
MatD to_mat(const float* A, int rows, int cols) {
  MatD M(rows, cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) M(i, j) = A[size_t(i) * cols + j];
  return M;
}

// The singular values of W (out, in), descending, by Eigen's Jacobi SVD in double.
std::vector<double> singular_values(const float* W, int out, int in) {
  Eigen::JacobiSVD<MatD> svd(to_mat(W, out, in));
  const Eigen::VectorXd s = svd.singularValues();
  return std::vector<double>(s.data(), s.data() + s.size());
}

// U (out, r) V (r, in) in double, naively.
std::vector<double> product_double(const Tensor& U, const Tensor& V) {
  const int64_t out = U.dim(0), r = U.dim(1), in = V.dim(1);
  std::vector<double> W(static_cast<size_t>(out * in), 0.0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < r; ++k)
      for (int64_t j = 0; j < in; ++j) W[size_t(o * in + j)] += double(U.f32()[o * r + k]) * V.f32()[k * in + j];
  return W;
}

// ||W - A||_F^2 for W f32 and A double.
double sq_dist(const float* W, const std::vector<double>& A) {
  double s = 0;
  for (size_t i = 0; i < A.size(); ++i) s += (double(W[i]) - A[i]) * (double(W[i]) - A[i]);
  return s;
}

double sq_norm(const float* W, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(W[i]) * W[i];
  return s;
}

// The plain weight U V of the low-rank layer made of these factors (from_factors, plain_weight).
std::vector<float> reconstruct(const Tensor& U, const Tensor& V) {
  auto lr = LowRankLinear::from_factors(U.clone(), V.clone(), Tensor());
  std::vector<float> scratch;
  const float* p = lr->plain_weight(scratch);
  return std::vector<float>(p, p + U.dim(0) * V.dim(1));
}

// ||X (W - Wr)^T||_F / ||X W^T||_F computed directly from X (rows, in), in double.
double direct_output_error(const std::vector<float>& X, int64_t rows, const float* W, const float* Wr, int out, int in) {
  double err = 0, ref = 0;
  for (int64_t m = 0; m < rows; ++m)
    for (int o = 0; o < out; ++o) {
      double y = 0, yr = 0;
      for (int j = 0; j < in; ++j) {
        const double x = X[size_t(m * in + j)];
        y += x * W[size_t(o) * in + j];
        yr += x * Wr[size_t(o) * in + j];
      }
      err += (y - yr) * (y - yr);
      ref += y * y;
    }
  return std::sqrt(err / ref);
}

// A random orthonormal (n, k) matrix, k <= n: the Q of a Gaussian matrix's QR.
MatD random_orthonormal(Rng& rng, int n, int k) {
  MatD G(n, k);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j) G(i, j) = rng.normal();
  Eigen::HouseholderQR<MatD> qr(G);
  return qr.householderQ() * MatD::Identity(n, k);
}

// Inputs X (rows, in) with strongly anisotropic, correlated columns: column j
// is scale_j (z_j + 0.8 z_0 + 0.5 z_{j-1}), the scales spanning 10^-2..10^1.5
// in a shuffled order, and a per-column offset (so mean |x_j| differs too).
std::vector<float> anisotropic_inputs(int64_t rows, int in, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> scale(static_cast<size_t>(in));
  for (int j = 0; j < in; ++j) scale[size_t(j)] = std::pow(10.0, -2.0 + 3.5 * j / (in - 1));
  for (int j = in - 1; j > 0; --j) std::swap(scale[size_t(j)], scale[size_t(rng.below(uint64_t(j + 1)))]);
  std::vector<float> X(static_cast<size_t>(rows * in));
  std::vector<double> z(static_cast<size_t>(in));
  for (int64_t m = 0; m < rows; ++m) {
    for (double& v : z) v = rng.normal();
    for (int j = 0; j < in; ++j) {
      const double c = z[size_t(j)] + 0.8 * z[0] + (j > 0 ? 0.5 * z[size_t(j - 1)] : 0.0) + 0.3 * ((j % 3) - 1);
      X[size_t(m * in + j)] = float(scale[size_t(j)] * c);
    }
  }
  return X;
}

// The tensor of a representation's role (shares its storage), or undefined.
Tensor role_tensor(const LinearRepr& r, const std::string& role) {
  for (const ReprTensor& t : r.tensors())
    if (t.role == role) return t.t;
  return Tensor();
}

const LowRankLinear* as_lowrank(const Linear& l) { return dynamic_cast<const LowRankLinear*>(l.repr.get()); }

ViTConfig config() { return test::small_config(16, 4, 32, 2, 4, 64, 10); }
std::unique_ptr<ViT> dense_model(uint64_t seed = 11) { return test::random_model(config(), seed); }

PassContext quiet() {
  PassContext ctx;
  ctx.progress = false;
  return ctx;
}

// ||a - b|| / ||b|| over all values.
double rel_l2(const Tensor& a, const Tensor& b) {
  double e = 0, r = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    e += (double(a.f32()[i]) - b.f32()[i]) * (double(a.f32()[i]) - b.f32()[i]);
    r += double(b.f32()[i]) * b.f32()[i];
  }
  return std::sqrt(e / r);
}

// The share of rows whose argmax agrees.
double top1_agreement(const Tensor& a, const Tensor& b) {
  const int64_t B = a.dim(0), C = a.dim(1);
  int64_t same = 0;
  for (int64_t i = 0; i < B; ++i) {
    const float* x = a.f32() + i * C;
    const float* y = b.f32() + i * C;
    same += std::max_element(x, x + C) - x == std::max_element(y, y + C) - y;
  }
  return double(same) / double(B);
}

// f() throws E (exactly that type or a subclass) whose message contains every part.
template <typename E>
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts, const std::string& what) {
  try {
    f();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << what << ": the message '" << msg << "' does not mention '" << p << "'";
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw another exception type: " << e.what();
    return;
  }
  ADD_FAILURE() << what << ": did not throw";
}

bool is_encoder(const Linear& l) { return l.block >= 0; }

}  // namespace

// ---------------------------------------------------------------- 1. the decomposition

// At full rank the factors reconstruct W (f32 rounding only), the basis's
// singular values are Eigen's, and the factor shapes are (out, k), (k, in).
TEST(LowRankBasis, FullRankReconstructsTheWeight) {
  for (auto [out, in] : {std::pair{24, 40}, std::pair{40, 24}}) {
    SCOPED_TRACE(cat(out, "x", in));
    Rng rng(uint64_t(out * 1000 + in));
    const std::vector<float> W = normals(rng, int64_t(out) * in, 0.3f);
    const LowRankBasis b = lowrank_basis(W.data(), out, in, LowRankOptions{}, nullptr);
    const int k = std::min(out, in);
    ASSERT_EQ(b.k, k);
    ASSERT_EQ(b.sigma.size(), size_t(k));
    const std::vector<double> s = singular_values(W.data(), out, in);
    for (int i = 0; i < k; ++i) {
      EXPECT_NEAR(b.sigma[size_t(i)], s[size_t(i)], 1e-9 * s[0]) << "sigma " << i;
      if (i > 0) { EXPECT_GE(b.sigma[size_t(i - 1)], b.sigma[size_t(i)]) << "not descending at " << i; }
    }
    Tensor U, V;
    b.factors(k, &U, &V);
    EXPECT_EQ(U.shape(), (Shape{out, k}));
    EXPECT_EQ(V.shape(), (Shape{k, in}));
    const std::vector<float> Wr = reconstruct(U, V);
    const double rel = relative_weight_error(W.data(), Wr.data(), int64_t(out) * in);
    EXPECT_LT(rel, 1e-5);
    // relative_weight_error is the relative Frobenius distance.
    EXPECT_NEAR(rel, std::sqrt(sq_dist(W.data(), std::vector<double>(Wr.begin(), Wr.end())) /
                               sq_norm(W.data(), int64_t(out) * in)),
                1e-12);
    // The factors split sigma evenly: the columns of U and the rows of V have norm sqrt(sigma_i).
    for (int i = 0; i < k; ++i) {
      double nu = 0, nv = 0;
      for (int o = 0; o < out; ++o) nu += double(U.f32()[o * k + i]) * U.f32()[o * k + i];
      for (int j = 0; j < in; ++j) nv += double(V.f32()[i * in + j]) * V.f32()[i * in + j];
      EXPECT_NEAR(nu, b.sigma[size_t(i)], 1e-5 * s[0]) << "|U col " << i << "|^2";
      EXPECT_NEAR(nv, b.sigma[size_t(i)], 1e-5 * s[0]) << "|V row " << i << "|^2";
    }
  }
}

// asvd and whiten are exact at full rank too (W = P diag(sigma) B for all three).
TEST(LowRankBasis, DataAwareMethodsAreExactAtFullRank) {
  const int out = 24, in = 40;
  Rng rng(5);
  const std::vector<float> W = normals(rng, int64_t(out) * in, 0.3f);
  const int64_t rows = 300;
  const std::vector<float> X = anisotropic_inputs(rows, in, 6);
  InputGram g(in);
  g.add(X.data(), rows);
  for (LowRankMethod method : {LowRankMethod::Asvd, LowRankMethod::Whiten}) {
    SCOPED_TRACE(to_string(method));
    LowRankOptions o;
    o.method = method;
    const LowRankBasis b = lowrank_basis(W.data(), out, in, o, &g);
    Tensor U, V;
    b.factors(b.k, &U, &V);
    const std::vector<double> Wr = product_double(U, V);
    EXPECT_LT(std::sqrt(sq_dist(W.data(), Wr) / sq_norm(W.data(), int64_t(out) * in)), 1e-4);
  }
}

// Eckart–Young: ||W - U V||_F^2 at rank r is the sum of the dropped sigma_i^2
// (Eigen's, in double); other rank-r matrices do worse.
TEST(LowRankBasis, TruncatedSvdIsEckartYoungOptimal) {
  const int out = 24, in = 40;
  Rng rng(7);
  const std::vector<float> W = normals(rng, int64_t(out) * in, 0.3f);
  const double total = sq_norm(W.data(), int64_t(out) * in);
  const std::vector<double> s = singular_values(W.data(), out, in);
  const LowRankBasis b = lowrank_basis(W.data(), out, in, LowRankOptions{}, nullptr);
  for (int r : {1, 5, 12, 23}) {
    SCOPED_TRACE(cat("rank ", r));
    Tensor U, V;
    b.factors(r, &U, &V);
    const std::vector<double> Wr = product_double(U, V);
    double dropped = 0;
    for (size_t i = size_t(r); i < s.size(); ++i) dropped += s[i] * s[i];
    const double err = sq_dist(W.data(), Wr);
    EXPECT_NEAR(err, dropped, 1e-4 * dropped + 1e-6 * total);
    EXPECT_NEAR(b.energy(r), 1.0 - dropped / total, 1e-9);
    // The f32 product (plain_weight) and the library's relative error agree.
    const std::vector<float> Wf = reconstruct(U, V);
    EXPECT_NEAR(relative_weight_error(W.data(), Wf.data(), int64_t(out) * in), std::sqrt(dropped / total), 1e-4);

    // (a) random rank-r factors, at their best scale c (least squares);
    Rng r2(uint64_t(100 + r));
    Tensor Ur = Tensor::from({out, r}, normals(r2, int64_t(out) * r)), Vr = Tensor::from({r, in}, normals(r2, int64_t(r) * in));
    const std::vector<double> R = product_double(Ur, Vr);
    double wr = 0, rr = 0;
    for (size_t i = 0; i < R.size(); ++i) wr += W[i] * R[i], rr += R[i] * R[i];
    std::vector<double> cR(R.size());
    for (size_t i = 0; i < R.size(); ++i) cR[i] = wr / rr * R[i];
    EXPECT_GT(sq_dist(W.data(), cR), err * 1.05) << "a random rank-" << r << " matrix";
    // (b) W projected onto a random r-dimensional subspace of its inputs;
    const MatD Q = random_orthonormal(r2, in, r);
    const MatD Wp = to_mat(W.data(), out, in) * Q * Q.transpose();
    std::vector<double> P(static_cast<size_t>(out) * in);
    for (int o = 0; o < out; ++o)
      for (int j = 0; j < in; ++j) P[size_t(o) * in + j] = Wp(o, j);
    EXPECT_GT(sq_dist(W.data(), P), err * 1.05) << "W on a random " << r << "-dimensional subspace";
    // (c) the optimum's factors perturbed a little.
    Tensor Up = U.clone();
    for (int64_t i = 0; i < Up.numel(); ++i) Up.f32()[i] += 0.02f * r2.normal();
    EXPECT_GT(sq_dist(W.data(), product_double(Up, V)), err) << "the optimum perturbed";
  }
}

// ---------------------------------------------------------------- 2. calibration statistics

// InputGram accumulates X^T X, sum |X| and rows over chunks; input_singular_values
// are the singular values of X.
TEST(LowRankGram, AccumulatesOverChunks) {
  const int in = 7;
  const int64_t rows = 23;
  Rng rng(9);
  const std::vector<float> X = normals(rng, rows * in);
  InputGram g(in);
  g.add(X.data(), 10);
  g.add(X.data() + 10 * in, rows - 10);
  g.add(X.data(), 0);
  EXPECT_EQ(g.rows, rows);
  for (int a = 0; a < in; ++a) {
    double abs_sum = 0;
    for (int64_t m = 0; m < rows; ++m) abs_sum += std::fabs(double(X[size_t(m * in + a)]));
    EXPECT_NEAR(g.abs_sum[size_t(a)], abs_sum, 1e-9 * abs_sum);
    for (int b = 0; b < in; ++b) {
      double s = 0;
      for (int64_t m = 0; m < rows; ++m) s += double(X[size_t(m * in + a)]) * X[size_t(m * in + b)];
      EXPECT_NEAR(g.xtx[size_t(a) * in + b], s, 1e-9 * std::max(1.0, std::fabs(s))) << a << "," << b;
    }
  }
  const std::vector<double> want = singular_values(X.data(), int(rows), in), got = input_singular_values(g);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-8 * want[0]) << i;
}

// input_grams hooks every target layer: its gram is the one of the inputs the
// layer sees in the model (recorded here by a hook of our own).
TEST(LowRankGram, InputGramsSeeTheLayersInputs) {
  auto m = dense_model();
  const Tensor images = test::random_images(m->cfg, 5, 3);
  std::vector<const Linear*> ls;
  for (const Linear* l : m->linears())
    if (is_encoder(*l)) ls.push_back(l);
  const std::map<std::string, InputGram> g = input_grams(*m, ls, images);
  ASSERT_EQ(g.size(), ls.size());
  std::map<std::string, InputGram> mine;
  for (const Linear* l : ls) mine.emplace(l->name, InputGram(l->in));
  ForwardHooks hooks;
  hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
    auto it = mine.find(l.name);
    if (it != mine.end()) it->second.add(X, rows);
  };
  vit_predict(*m, images, 0, &hooks);
  const int64_t tokens = 1 + (16 / 4) * (16 / 4);
  for (const Linear* l : ls) {
    const InputGram& a = g.at(l->name);
    const InputGram& b = mine.at(l->name);
    EXPECT_EQ(a.in, l->in) << l->name;
    EXPECT_EQ(a.rows, 5 * tokens) << l->name;
    EXPECT_EQ(a.rows, b.rows) << l->name;
    double worst = 0, scale = 0;
    for (size_t i = 0; i < a.xtx.size(); ++i) {
      worst = std::max(worst, std::fabs(a.xtx[i] - b.xtx[i]));
      scale = std::max(scale, std::fabs(b.xtx[i]));
    }
    EXPECT_LE(worst, 1e-9 * scale) << l->name;
  }
}

// ---------------------------------------------------------------- 3. data-aware methods

// On strongly anisotropic, correlated inputs, asvd and whiten give a lower
// output error than svd at equal rank; whiten's is the optimum (its square the
// dropped share of its basis's sigma^2 when undamped) and no larger than asvd's.
TEST(LowRankMethods, DataAwareMethodsLowerTheOutputError) {
  const int out = 24, in = 40;
  const int64_t rows = 600;
  Rng rng(13);
  const std::vector<float> W = normals(rng, int64_t(out) * in, 0.3f);
  const std::vector<float> X = anisotropic_inputs(rows, in, 14);
  InputGram g(in);
  g.add(X.data(), rows);
  for (int r : {4, 8, 16}) {
    SCOPED_TRACE(cat("rank ", r));
    std::map<std::string, double> err;
    for (LowRankMethod method : {LowRankMethod::Svd, LowRankMethod::Asvd, LowRankMethod::Whiten}) {
      LowRankOptions o;
      o.method = method;
      o.damp = 1e-10;
      const LowRankBasis b = lowrank_basis(W.data(), out, in, o, &g);
      Tensor U, V;
      b.factors(r, &U, &V);
      const std::vector<float> Wr = reconstruct(U, V);
      const double e = relative_output_error(W.data(), Wr.data(), out, in, g);
      // relative_output_error is the definition computed from X itself.
      EXPECT_NEAR(e, direct_output_error(X, rows, W.data(), Wr.data(), out, in), 1e-6 * e) << to_string(method);
      err[to_string(method)] = e;
      if (method == LowRankMethod::Whiten) {
        double dropped = 0, total = 0;
        for (int i = 0; i < b.k; ++i) {
          total += b.sigma[size_t(i)] * b.sigma[size_t(i)];
          if (i >= r) dropped += b.sigma[size_t(i)] * b.sigma[size_t(i)];
        }
        EXPECT_NEAR(e * e, dropped / total, 1e-4 * dropped / total) << "whiten's output error is not optimal";
        EXPECT_NEAR(b.energy(r), 1 - dropped / total, 1e-12);
      }
    }
    {  // asvd with alpha = 0 scales nothing: svd's error
      LowRankOptions o;
      o.method = LowRankMethod::Asvd;
      o.alpha = 0;
      const LowRankBasis b = lowrank_basis(W.data(), out, in, o, &g);
      Tensor U, V;
      b.factors(r, &U, &V);
      const std::vector<float> Wr = reconstruct(U, V);
      EXPECT_NEAR(relative_output_error(W.data(), Wr.data(), out, in, g), err["svd"], 1e-5 * err["svd"]);
    }
    std::printf("rank %d: output error svd %.4f, asvd %.4f, whiten %.4f\n", r, err["svd"], err["asvd"], err["whiten"]);
    EXPECT_LT(err["whiten"], err["svd"]);
    EXPECT_LT(err["asvd"], err["svd"]);
    EXPECT_LE(err["whiten"], err["asvd"] * (1 + 1e-6));
  }
}

// Inputs that never drive some columns (a singular X^T X) or are all zero:
// every method still gives finite factors; whiten (damped, even with damp=0)
// keeps the output error at most svd's, and an all-zero X has output error 0.
TEST(LowRankMethods, DegenerateInputsStayFinite) {
  const int out = 12, in = 16, r = 4;
  const int64_t rows = 200;
  Rng rng(15);
  const std::vector<float> W = normals(rng, int64_t(out) * in, 0.3f);
  std::vector<float> X = anisotropic_inputs(rows, in, 16);
  for (int64_t m = 0; m < rows; ++m)
    for (int j : {0, 5, 11}) X[size_t(m * in + j)] = 0.f;
  InputGram g(in), zero(in);
  g.add(X.data(), rows);
  const std::vector<float> Z(size_t(rows) * in, 0.f);
  zero.add(Z.data(), rows);
  for (const InputGram* gram : {&g, &zero}) {
    std::map<std::string, double> err;
    for (LowRankMethod method : {LowRankMethod::Svd, LowRankMethod::Asvd, LowRankMethod::Whiten}) {
      for (double damp : {0.0, 1e-4}) {
        SCOPED_TRACE(cat(gram == &g ? "three dead columns " : "all-zero inputs ", to_string(method), " damp ", damp));
        LowRankOptions o;
        o.method = method;
        o.damp = damp;
        const LowRankBasis b = lowrank_basis(W.data(), out, in, o, gram);
        Tensor U, V;
        b.factors(r, &U, &V);
        bool finite = true;
        for (const Tensor* t : {&U, &V})
          for (int64_t i = 0; i < t->numel(); ++i) finite = finite && std::isfinite(t->f32()[i]);
        ASSERT_TRUE(finite);
        const std::vector<float> Wr = reconstruct(U, V);
        const double e = relative_output_error(W.data(), Wr.data(), out, in, *gram);
        EXPECT_TRUE(std::isfinite(e));
        if (gram == &zero) { EXPECT_EQ(e, 0.0); }
        if (damp == 0.0) err[to_string(method)] = e;
      }
    }
    if (gram == &g) {
      EXPECT_LE(err["whiten"], err["svd"] * (1 + 1e-6));
      EXPECT_LE(err["asvd"], err["svd"] * (1 + 1e-6));
    }
  }
}

// ---------------------------------------------------------------- 4. forward

// Y = act(X (U V)^T + b (+ Y0)) against a naive double loop, with and without
// bias, accumulate and an activation, at several row counts.
TEST(LowRankLayer, ForwardMatchesNaiveProduct) {
  const int out = 24, in = 40, r = 5;
  Rng rng(17);
  const Tensor U = Tensor::from({out, r}, normals(rng, int64_t(out) * r, 0.5f));
  const Tensor V = Tensor::from({r, in}, normals(rng, int64_t(r) * in, 0.5f));
  const Tensor b = Tensor::from({out}, normals(rng, out));
  for (bool with_bias : {true, false}) {
    auto lr = LowRankLinear::from_factors(U.clone(), V.clone(), with_bias ? b.clone() : Tensor());
    EXPECT_EQ(lr->kind(), "lowrank");
    EXPECT_EQ(lr->rank(), r);
    EXPECT_EQ(lr->in(), in);
    EXPECT_EQ(lr->out(), out);
    EXPECT_EQ(lr->weight_params(), int64_t(r) * (in + out));
    EXPECT_EQ(lr->macs(3), 3 * int64_t(r) * (in + out));
    EXPECT_EQ(lr->bias() != nullptr, with_bias);
    EXPECT_EQ(lr->file_bytes(), 4 * (int64_t(r) * (in + out) + (with_bias ? out : 0)));
    EXPECT_NE(lr->describe().find(cat("rank ", r, " of ", std::min(in, out))), std::string::npos) << lr->describe();
    {  // clone: a deep copy
      auto c = lr->clone();
      ASSERT_EQ(c->kind(), "lowrank");
      Tensor cu = role_tensor(*c, "up.weight");
      EXPECT_TRUE(test::bit_equal(cu, role_tensor(*lr, "up.weight")));
      cu.f32()[0] += 1.f;
      EXPECT_FALSE(test::bit_equal(cu, role_tensor(*lr, "up.weight"))) << "the clone shares the up factor";
    }
    const std::vector<double> Wd = product_double(U, V);
    for (int64_t M : {1, 7, 64}) {
      const std::vector<float> X = normals(rng, M * in), Y0 = normals(rng, M * out);
      for (auto [act, accumulate] : {std::pair{Activation::None, false}, std::pair{Activation::None, true},
                                     std::pair{Activation::Relu, true}, std::pair{Activation::Relu, false}}) {
        SCOPED_TRACE(cat("bias ", with_bias, " M ", M, " act ", to_string(act), " accumulate ", accumulate));
        std::vector<float> Y = Y0;
        lr->forward(X.data(), Y.data(), M, act, accumulate);
        double worst = 0;
        for (int64_t m = 0; m < M; ++m)
          for (int o = 0; o < out; ++o) {
            double y = with_bias ? double(b.f32()[o]) : 0.0, mag = std::fabs(y);
            for (int j = 0; j < in; ++j) {
              y += double(X[size_t(m * in + j)]) * Wd[size_t(o) * in + j];
              mag += std::fabs(double(X[size_t(m * in + j)]) * Wd[size_t(o) * in + j]);
            }
            if (accumulate) y += Y0[size_t(m * out + o)], mag += std::fabs(Y0[size_t(m * out + o)]);
            if (act == Activation::Relu) y = std::max(y, 0.0);
            const double got = Y[size_t(m * out + o)];
            worst = std::max(worst, std::fabs(got - y) / (mag + 1e-30));
            ASSERT_NEAR(got, y, 1e-5 * mag + 1e-6) << "row " << m << " output " << o;
          }
        EXPECT_LT(worst, 1e-5);
      }
    }
  }
}

// ---------------------------------------------------------------- 5. backward

// dX, dV (down.weight), dU (up.weight) and db against central differences of
// L = sum(G * forward(X)) in double. L is linear in each single entry (the
// layer is bilinear in U and V), so the quotient is exact but for the f32
// rounding of Y; a wide step h = 0.25 divides that down.
TEST(LowRankLayer, BackwardAgreesWithFiniteDifferences) {
  const int out = 24, in = 40, r = 5;
  const int64_t M = 6;
  Rng rng(19);
  auto lr = LowRankLinear::from_factors(Tensor::from({out, r}, normals(rng, int64_t(out) * r, 0.5f)),
                                        Tensor::from({r, in}, normals(rng, int64_t(r) * in, 0.5f)),
                                        Tensor::from({out}, normals(rng, out)));
  EXPECT_EQ(lr->train_mode(), TrainMode::Direct);
  // tensors(): down.weight (r, in), up.weight (out, r), bias (out): all trainable parameters.
  const std::vector<ReprTensor> ts = lr->tensors();
  ASSERT_EQ(ts.size(), 3u);
  EXPECT_EQ(ts[0].role, "down.weight");
  EXPECT_EQ(ts[0].t.shape(), (Shape{r, in}));
  EXPECT_EQ(ts[1].role, "up.weight");
  EXPECT_EQ(ts[1].t.shape(), (Shape{out, r}));
  EXPECT_EQ(ts[2].role, "bias");
  for (const ReprTensor& t : ts) {
    EXPECT_TRUE(t.param && t.trainable) << t.role;
    EXPECT_TRUE(t.in_model_file) << t.role;
  }
  float* Vp = const_cast<Tensor&>(ts[0].t).f32();
  float* Up = const_cast<Tensor&>(ts[1].t).f32();
  float* bp = const_cast<Tensor&>(ts[2].t).f32();

  std::vector<float> X = normals(rng, M * in);
  const std::vector<float> G = normals(rng, M * out);
  std::vector<float> dX(X.size()), gV(size_t(r) * in, 0.f), gU(size_t(out) * r, 0.f), gb(size_t(out), 0.f);
  float* grads[3] = {gV.data(), gU.data(), gb.data()};
  lr->backward(G.data(), X.data(), dX.data(), M, false, grads);

  auto loss = [&] {
    std::vector<float> Y(static_cast<size_t>(M * out));
    lr->forward(X.data(), Y.data(), M, Activation::None, false);
    double s = 0;
    for (size_t i = 0; i < Y.size(); ++i) s += double(G[i]) * Y[i];
    return s;
  };
  const double h = 0.25;
  auto fd = [&](float* v) {
    const float v0 = *v;
    *v = float(v0 + h);
    const double up = loss();
    *v = float(v0 - h);
    const double down = loss();
    *v = v0;
    return (up - down) / (2 * h);
  };
  double worst = 0;
  auto check_all = [&](const char* what, float* v, int64_t n, const float* g) {
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = fd(v + i), e = std::fabs(g[i] - want) / std::max(1.0, std::fabs(want));
      worst = std::max(worst, e);
      if (e > 1e-3 && bad++ < 5) ADD_FAILURE() << what << "[" << i << "]: " << g[i] << " vs " << want;
    }
    EXPECT_EQ(bad, 0) << what << ": entries off";
  };
  check_all("dX", X.data(), int64_t(X.size()), dX.data());
  check_all("dV (down.weight)", Vp, int64_t(r) * in, gV.data());
  check_all("dU (up.weight)", Up, int64_t(out) * r, gU.data());
  check_all("db", bp, out, gb.data());
  std::printf("lowrank backward vs finite differences: max relative error %.3g\n", worst);

  // accumulate: dX is added to; the gradients are always added to.
  const std::vector<float> dX0 = normals(rng, M * in);
  std::vector<float> dX2 = dX0;
  const std::vector<float> gV1 = gV, gU1 = gU, gb1 = gb;
  lr->backward(G.data(), X.data(), dX2.data(), M, true, grads);
  for (size_t i = 0; i < dX2.size(); ++i) ASSERT_NEAR(dX2[i], dX0[i] + dX[i], 1e-5f * (1 + std::fabs(dX[i]))) << i;
  for (size_t i = 0; i < gV.size(); ++i) ASSERT_NEAR(gV[i], 2 * gV1[i], 1e-5f * (1 + std::fabs(gV1[i]))) << "dV " << i;
  for (size_t i = 0; i < gU.size(); ++i) ASSERT_NEAR(gU[i], 2 * gU1[i], 1e-5f * (1 + std::fabs(gU1[i]))) << "dU " << i;
  for (size_t i = 0; i < gb.size(); ++i) ASSERT_NEAR(gb[i], 2 * gb1[i], 1e-5f * (1 + std::fabs(gb1[i]))) << "db " << i;

  // Null pointers skip: no dX, only dU wanted.
  std::vector<float> gU3(gU.size(), 0.f);
  float* only_u[3] = {nullptr, gU3.data(), nullptr};
  lr->backward(G.data(), X.data(), nullptr, M, false, only_u);
  for (size_t i = 0; i < gU3.size(); ++i) ASSERT_NEAR(gU3[i], gU1[i], 1e-5f * (1 + std::fabs(gU1[i]))) << "dU " << i;
}

// ---------------------------------------------------------------- 6. the pass on a model, save / load

// lowrank:rank=4 (svd) and method=whiten with calibration images: the encoder's
// layers become rank-4 factors (patch and head stay dense), the parameter count
// drops by what r (in + out) predicts, the record says so, and the file is
// smaller and loads back bit-identically.
TEST(LowRankPass, SaveLoadIsIdentical) {
  const ViTConfig c = config();
  const PassContext calib = test::random_calibration(c, 16, 31);
  const Tensor x = test::random_images(c, 6, 32);
  const std::string dir = test::temp_dir();
  auto dense = dense_model();
  save_model(*dense, dir + "/dense.safetensors");
  const int64_t dense_params = dense->params.count();
  std::map<std::string, std::map<std::string, double>> out_err;  // method -> layer -> output error
  for (const char* method : {"svd", "whiten"}) {
    SCOPED_TRACE(method);
    auto m = dense_model();
    const nlohmann::json rec = apply_pass(*m, cat("lowrank:rank=4,method=", method), calib);
    const int r = 4;
    int64_t predicted = dense_params;
    std::vector<float> scratch;
    for (const Linear* l : m->linears()) {
      if (!is_encoder(*l)) {
        EXPECT_EQ(l->repr->kind(), "f32") << l->name;
        continue;
      }
      ASSERT_EQ(l->repr->kind(), "lowrank") << l->name;
      const LowRankLinear& lr = *as_lowrank(*l);
      EXPECT_EQ(lr.rank(), r) << l->name;
      EXPECT_EQ(lr.down().kind(), "f32") << l->name;
      EXPECT_EQ(lr.up().kind(), "f32") << l->name;
      EXPECT_EQ(lr.weight_params(), int64_t(r) * (l->in + l->out)) << l->name;
      // The bias is the dense layer's.
      const Linear& dl = *dense->find_linear(l->name);
      ASSERT_TRUE(lr.bias() != nullptr) << l->name;
      EXPECT_EQ(std::memcmp(lr.bias(), dense->B(dl), sizeof(float) * size_t(l->out)), 0) << l->name;
      predicted += int64_t(r) * (l->in + l->out) - int64_t(l->in) * l->out;
    }
    EXPECT_EQ(m->params.count(), predicted);
    EXPECT_EQ(model_cost(*m).params, predicted);
    // The record: 8 layers, rank 4 of full rank min(out, in), their weight counts and errors.
    ASSERT_TRUE(rec.contains("layers"));
    ASSERT_EQ(rec["layers"].size(), 8u);
    EXPECT_EQ(rec["method"], method);
    EXPECT_FALSE(rec.contains("kept_dense"));
    for (const auto& e : rec["layers"]) {
      const Linear& l = *m->find_linear(e["name"].get<std::string>());
      EXPECT_EQ(e["rank"], r);
      EXPECT_EQ(e["full_rank"], std::min(l.in, l.out));
      EXPECT_EQ(e["weights_before"], int64_t(l.in) * l.out);
      EXPECT_EQ(e["weights_after"], int64_t(r) * (l.in + l.out));
      const Linear& dl = *dense->find_linear(l.name);
      const float* Wr = l.repr->plain_weight(scratch);
      EXPECT_NEAR(e["weight_error"].get<double>(),
                  relative_weight_error(dense->W(dl), Wr, int64_t(l.in) * l.out), 1e-9);
      ASSERT_TRUE(e.contains("output_error")) << "calibration was given: the record has the output error";
      out_err[method][l.name] = e["output_error"].get<double>();
    }
    EXPECT_EQ(rec["weights_after"].get<int64_t>() - rec["weights_before"].get<int64_t>(), predicted - dense_params);

    const std::string path = dir + "/" + method + ".safetensors";
    save_model(*m, path);
    auto loaded = load_model(path);
    for (size_t i = 0; i < m->linears().size(); ++i) {
      const Linear& a = *m->linears()[i];
      const Linear& b = *loaded->linears()[i];
      EXPECT_EQ(b.repr->kind(), a.repr->kind()) << a.name;
      if (!is_encoder(a)) continue;
      ASSERT_NE(as_lowrank(b), nullptr) << a.name;
      EXPECT_EQ(as_lowrank(b)->rank(), r);
      for (const char* role : {"down.weight", "up.weight", "bias"})
        EXPECT_TRUE(test::bit_equal(role_tensor(*b.repr, role), role_tensor(*a.repr, role))) << a.name << " " << role;
    }
    const Tensor logits = vit_predict(*m, x);
    EXPECT_TRUE(test::bit_equal(vit_predict(*loaded, x), logits)) << "the loaded model computes otherwise";
    EXPECT_FALSE(test::bit_equal(vit_predict(*dense, x), logits)) << "rank 4 changes the logits";
    EXPECT_EQ(compression_log(*loaded), compression_log(*m));
    EXPECT_EQ(loaded->params.count(), predicted);
    // The file: smaller by about the 4 bytes of every weight saved.
    const int64_t saved = 4 * (dense_params - predicted);
    const int64_t shrink = int64_t(file_size(dir + "/dense.safetensors")) - int64_t(file_size(path));
    EXPECT_GT(shrink, saved * 8 / 10) << "dense file " << file_size(dir + "/dense.safetensors") << ", low-rank " << file_size(path);
    EXPECT_LE(shrink, saved);
    // Written again from the loaded model: the same file.
    save_model(*loaded, dir + "/again.safetensors");
    EXPECT_EQ(read_file(dir + "/again.safetensors"), read_file(path));
  }
  // The same calibration inputs (gathered on the dense model): whiten's output error is
  // at most svd's on every layer (it is the optimum for the damped gram).
  for (const auto& [name, e] : out_err["svd"]) {
    EXPECT_LE(out_err["whiten"][name], e * (1 + 1e-3)) << name;
  }
}

// Outside the encoder too (layers= picks conv_proj, kinds= the head): the
// patch layer's 4-d weight and the head save and load as low-rank, identically.
TEST(LowRankPass, PatchAndHeadRoundTrip) {
  auto m = dense_model(33);
  auto dense = m->clone();
  apply_pass(*m, "lowrank:rank=3,layers=conv_proj", quiet());
  apply_pass(*m, "lowrank:rank=2,kinds=head", quiet());
  ASSERT_EQ(m->patch.repr->kind(), "lowrank");
  ASSERT_EQ(m->head.repr->kind(), "lowrank");
  EXPECT_EQ(as_lowrank(m->patch)->rank(), 3);
  EXPECT_EQ(as_lowrank(m->head)->rank(), 2);
  for (const Linear* l : m->linears())
    if (is_encoder(*l)) { EXPECT_EQ(l->repr->kind(), "f32") << l->name; }
  // The patch layer's product is the truncated SVD of its (D, C p p) weight.
  const Linear& dp = dense->patch;
  const std::vector<double> s = singular_values(dense->W(dp), dp.out, dp.in);
  double dropped = 0;
  for (size_t i = 3; i < s.size(); ++i) dropped += s[i] * s[i];
  std::vector<float> scratch;
  const float* Wr = m->patch.repr->plain_weight(scratch);
  const double sq = sq_dist(dense->W(dp), std::vector<double>(Wr, Wr + int64_t(dp.in) * dp.out));
  EXPECT_NEAR(sq, dropped, 1e-4 * dropped + 1e-6 * sq_norm(dense->W(dp), int64_t(dp.in) * dp.out));
  const std::string path = test::temp_dir() + "/ph.safetensors";
  save_model(*m, path);
  auto loaded = load_model(path);
  ASSERT_EQ(loaded->patch.repr->kind(), "lowrank");
  ASSERT_EQ(loaded->head.repr->kind(), "lowrank");
  EXPECT_EQ(as_lowrank(loaded->patch)->rank(), 3);
  EXPECT_EQ(as_lowrank(loaded->head)->rank(), 2);
  const Tensor x = test::random_images(m->cfg, 4, 34);
  EXPECT_TRUE(test::bit_equal(vit_predict(*loaded, x), vit_predict(*m, x)));
  EXPECT_EQ(compression_log(*loaded).size(), 2u);
}

// The pass honours PassContext::progress = false (pass.h: the context says
// whether to show progress), as the CLI's --quiet and analyze sensitivity
// (which applies a pass once per layer with progress off) rely on.
TEST(LowRankPass, QuietContextDrawsNoProgress) {
  auto m = dense_model();
  PassContext ctx = quiet();
  testing::internal::CaptureStderr();
  apply_pass(*m, "lowrank:rank=4", ctx);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("lowrank: "), std::string::npos) << "progress drawn with ctx.progress = false:\n" << err;
}

// ---------------------------------------------------------------- 7. with quantize

// quantize after lowrank quantizes both factors (each "int"), the layer stays
// low-rank with its bias, logits stay close, and save/load is bit-identical;
// with act=static the up factor's input range is the bottleneck's.
TEST(LowRankPass, ComposesWithQuantize) {
  const ViTConfig c = config();
  const Tensor x = test::random_images(c, 32, 41);
  const std::string dir = test::temp_dir();
  PassContext calib = test::random_calibration(c, 16, 42);
  for (const char* q : {"quantize:bits=8", "quantize:bits=8,act=static"}) {
    SCOPED_TRACE(q);
    auto m = dense_model();
    apply_pass(*m, "lowrank:rank=8", quiet());
    auto lowrank = m->clone();
    const Tensor before = vit_predict(*m, x);
    const nlohmann::json rec = apply_pass(*m, q, calib);
    for (const Linear* l : m->linears()) {
      if (!is_encoder(*l)) {
        EXPECT_EQ(l->repr->kind(), "int") << l->name;
        continue;
      }
      ASSERT_EQ(l->repr->kind(), "lowrank") << l->name;
      const LowRankLinear& lr = *as_lowrank(*l);
      EXPECT_EQ(lr.down().kind(), "int") << l->name;
      EXPECT_EQ(lr.up().kind(), "int") << l->name;
      EXPECT_EQ(lr.rank(), 8);
      EXPECT_EQ(lr.down().bias(), nullptr) << l->name;
      const LowRankLinear& lr0 = *as_lowrank(*lowrank->find_linear(l->name));
      ASSERT_NE(lr.bias(), nullptr) << l->name;
      EXPECT_EQ(std::memcmp(lr.bias(), lr0.bias(), sizeof(float) * size_t(l->out)), 0) << l->name << ": the bias changed";
      // The factors quantized, not their product: each close to its f32 factor.
      std::vector<float> s0, s1;
      for (auto [a, b] : {std::pair{&lr.down(), &lr0.down()}, std::pair{&lr.up(), &lr0.up()}}) {
        const int64_t n = int64_t(a->in()) * a->out();
        const float* wq = a->plain_weight(s0);
        const float* w = b->plain_weight(s1);
        EXPECT_LT(relative_weight_error(w, wq, n), 0.02) << l->name;
        EXPECT_GT(relative_weight_error(w, wq, n), 0.0) << l->name;
      }
    }
    const Tensor after = vit_predict(*m, x);
    EXPECT_FALSE(test::bit_equal(after, before));
    const double l2 = rel_l2(after, before), agree = top1_agreement(after, before);
    std::printf("%s after lowrank: logits relative L2 %.4f, top-1 agreement %.3f\n", q, l2, agree);
    EXPECT_LT(l2, 0.05);
    EXPECT_GE(agree, 0.9);

    if (std::string(q).find("static") != std::string::npos) {
      // The up factor's static range comes from its own inputs, Z = X V^T (the
      // bottleneck of the float low-rank model), the down factor's from X.
      ASSERT_TRUE(rec.contains("input_ranges"));
      std::map<std::string, std::pair<float, float>> range;  // key -> (min, max)
      ForwardHooks hooks;
      std::vector<float> z;
      hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
        if (!is_encoder(l)) return;
        const LowRankLinear& lr = *as_lowrank(l);
        z.resize(size_t(rows) * size_t(lr.rank()));
        lr.down().forward(X, z.data(), rows, Activation::None, false);
        auto add = [&](const std::string& key, const float* v, int64_t n) {
          auto [it, fresh] = range.try_emplace(key, v[0], v[0]);
          for (int64_t i = 0; i < n; ++i) {
            it->second.first = std::min(it->second.first, v[i]);
            it->second.second = std::max(it->second.second, v[i]);
          }
        };
        add(l.name + ".down", X, rows * l.in);
        add(l.name + ".up", z.data(), rows * lr.rank());
      };
      vit_predict(*lowrank, calib.calib, 0, &hooks);
      for (const auto& [key, mm] : range) {
        ASSERT_TRUE(rec["input_ranges"].contains(key)) << key;
        const auto& e = rec["input_ranges"][key];
        EXPECT_NEAR(e["min"].get<double>(), mm.first, 1e-5 * (1 + std::fabs(mm.first))) << key;
        EXPECT_NEAR(e["max"].get<double>(), mm.second, 1e-5 * (1 + std::fabs(mm.second))) << key;
      }
      for (const Linear* l : m->linears()) {
        if (!is_encoder(*l)) continue;
        for (const LinearRepr* f : {&as_lowrank(*l)->down(), &as_lowrank(*l)->up()}) {
          const auto* il = dynamic_cast<const IntLinear*>(f);
          ASSERT_NE(il, nullptr) << l->name;
          EXPECT_TRUE(il->format().static_inputs) << l->name;
        }
      }
    }

    const std::string path = dir + "/q.safetensors";
    save_model(*m, path);
    auto loaded = load_model(path);
    for (size_t i = 0; i < m->linears().size(); ++i) {
      const Linear& a = *m->linears()[i];
      const Linear& b = *loaded->linears()[i];
      ASSERT_EQ(b.repr->kind(), a.repr->kind()) << a.name;
      if (!is_encoder(a)) continue;
      EXPECT_EQ(as_lowrank(b)->down().kind(), "int") << a.name;
      EXPECT_EQ(as_lowrank(b)->up().kind(), "int") << a.name;
      EXPECT_EQ(as_lowrank(b)->meta(), as_lowrank(a)->meta()) << a.name;
    }
    EXPECT_TRUE(test::bit_equal(vit_predict(*loaded, x), after)) << "the loaded quantized low-rank model differs";
    // A second quantize is refused (the factors are integers already).
    expect_error<Error>([&] { apply_pass(*m, "quantize:bits=8", quiet()); }, {"already", "int"}, "quantize twice");
  }
}

// ---------------------------------------------------------------- 8. training

// A low-rank layer trains directly: its factors are trainable parameters of
// the model (NAME.down.weight, NAME.up.weight) in place of the dense weight.
TEST(LowRankTraining, FactorsAreTrainableParameters) {
  auto m = dense_model();
  apply_pass(*m, "lowrank:rank=4", quiet());
  for (const Linear* l : m->linears()) {
    if (!is_encoder(*l)) continue;
    EXPECT_EQ(l->repr->train_mode(), TrainMode::Direct) << l->name;
    const int d = m->params.find(l->name + ".down.weight"), u = m->params.find(l->name + ".up.weight");
    ASSERT_GE(d, 0) << l->name << ": no down.weight parameter";
    ASSERT_GE(u, 0) << l->name << ": no up.weight parameter";
    EXPECT_EQ(l->tensor_name("down.weight"), l->name + ".down.weight");
    EXPECT_TRUE(m->params.info(d).trainable);
    EXPECT_TRUE(m->params.info(u).trainable);
    EXPECT_EQ(m->params.info(d).shape, (Shape{4, l->in})) << l->name;
    EXPECT_EQ(m->params.info(u).shape, (Shape{l->out, 4})) << l->name;
    EXPECT_EQ(m->params.find(l->weight_name), -1) << l->name << ": the dense weight is still a parameter";
    const int b = m->params.find(l->bias_name);
    ASSERT_GE(b, 0);
    EXPECT_EQ(l->trainable_params, (std::vector<int>{d, u, b})) << l->name;
    // The table shares the layer's storage.
    EXPECT_EQ(m->params.ptr(d), role_tensor(*l->repr, "down.weight").f32());
    EXPECT_EQ(m->params.ptr(u), role_tensor(*l->repr, "up.weight").f32());
  }
}

// The whole model's gradients of the low-rank model are the chain rule's
// through the dense model of weight W = U V: dU = dW V^T, dV = U^T dW, and
// every other parameter's gradient (biases, norms, embeddings) is the dense model's.
TEST(LowRankTraining, ModelGradientsFollowTheChainRule) {
  auto m = dense_model(51);
  apply_pass(*m, "lowrank:rank=6", quiet());
  auto d = m->clone();
  std::vector<float> scratch;
  for (Linear* l : d->linears()) {
    if (!is_encoder(*l)) continue;
    const float* W = l->repr->plain_weight(scratch);
    Tensor Wt = Tensor::from({l->out, l->in}, std::vector<float>(W, W + int64_t(l->in) * l->out));
    d->set_repr(*l, std::make_unique<F32Linear>(Wt, l->repr->bias_tensor().clone()));
  }
  const Tensor x = test::random_images(m->cfg, 4, 52);
  const std::vector<int> labels = {1, 3, 5, 7};
  Tensor gm, gd;
  const float lm = test::loss_and_grads(*m, x, labels.data(), 0.f, gm);
  const float ld = test::loss_and_grads(*d, x, labels.data(), 0.f, gd);
  EXPECT_NEAR(lm, ld, 1e-4 * std::fabs(ld));
  auto grad_of = [](const ViT& mm, const Tensor& g, const std::string& name) {
    const int i = mm.params.find(name);
    EXPECT_GE(i, 0) << name;
    const ParamInfo& p = mm.params.info(i);
    return MatD(Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                    g.f32() + p.offset, p.shape[0], p.numel / p.shape[0])
                    .cast<double>());
  };
  auto expect_close = [](const MatD& got, const MatD& want, const std::string& what) {
    ASSERT_EQ(got.rows(), want.rows()) << what;
    ASSERT_EQ(got.cols(), want.cols()) << what;
    const double diff = (got - want).cwiseAbs().maxCoeff(), scale = want.cwiseAbs().maxCoeff();
    EXPECT_LE(diff, 2e-3 * scale + 1e-7) << what << ": max |diff| " << diff << ", max |grad| " << scale;
    EXPECT_GT(scale, 0) << what;
  };
  for (const Linear* l : m->linears()) {
    if (!is_encoder(*l)) continue;
    const LowRankLinear& lr = *as_lowrank(*l);
    const MatD U = to_mat(role_tensor(lr, "up.weight").f32(), l->out, lr.rank());
    const MatD V = to_mat(role_tensor(lr, "down.weight").f32(), lr.rank(), l->in);
    const MatD dW = grad_of(*d, gd, d->find_linear(l->name)->weight_name);
    expect_close(grad_of(*m, gm, l->name + ".up.weight"), dW * V.transpose(), l->name + " dU");
    expect_close(grad_of(*m, gm, l->name + ".down.weight"), U.transpose() * dW, l->name + " dV");
  }
  for (const ParamInfo& p : d->params.entries()) {
    if (m->params.find(p.name) < 0) continue;  // a dense weight of a factored layer
    expect_close(grad_of(*m, gm, p.name), grad_of(*d, gd, p.name), p.name);
  }
}

// A few optimizer steps on one batch lower its loss and move both factors; the
// trained model stays low-rank and saves and loads bit-identically.
TEST(LowRankTraining, StepsTrainTheFactors) {
  auto m = dense_model(61);
  apply_pass(*m, "lowrank:rank=4", quiet());
  auto before = m->clone();
  const Tensor x = test::random_images(m->cfg, 8, 62);
  std::vector<int> y(8);
  for (size_t i = 0; i < y.size(); ++i) y[i] = int(i % 10);
  std::vector<float> losses;
  {
    TrainStep step(*m, AdamWConfig{});
    StepOptions o;
    o.lr = 3e-3f;
    for (int i = 0; i < 6; ++i) losses.push_back(step.run(x.f32(), y.data(), 8, o).loss);
  }
  end_training(*m);
  EXPECT_LT(losses.back(), losses.front());
  for (const Linear* l : m->linears()) {
    if (!is_encoder(*l)) continue;
    ASSERT_EQ(l->repr->kind(), "lowrank") << l->name;
    const LinearRepr& b = *before->find_linear(l->name)->repr;
    for (const char* role : {"down.weight", "up.weight"})
      EXPECT_FALSE(test::bit_equal(role_tensor(*l->repr, role), role_tensor(b, role))) << l->name << " " << role;
  }
  const std::string path = test::temp_dir() + "/trained.safetensors";
  save_model(*m, path);
  EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(path), x), vit_predict(*m, x)));
}

// Quantized factors train through their latent weights (straight-through):
// the layer reports ste, the model's table lists each factor's latent weight
// while training, a few steps lower the loss, and the trained model stays
// low-rank with integer factors and saves and loads bit-identically.
TEST(LowRankTraining, QuantizedFactorsTrainThroughLatentWeights) {
  auto m = dense_model(63);
  apply_pass(*m, "lowrank:rank=4", quiet());
  apply_pass(*m, "quantize:bits=8", quiet());
  const Linear& l0 = m->blocks[0].fc1;
  EXPECT_EQ(l0.repr->train_mode(), TrainMode::Ste);
  const Tensor x = test::random_images(m->cfg, 8, 64);
  std::vector<int> y(8);
  for (size_t i = 0; i < y.size(); ++i) y[i] = int(i % 10);
  std::vector<float> losses;
  {
    TrainStep step(*m, AdamWConfig{});
    for (const char* role : {"down.weight_latent", "up.weight_latent"}) {
      const int i = m->params.find(l0.tensor_name(role));
      ASSERT_GE(i, 0) << role << " is not a parameter while training";
      EXPECT_TRUE(m->params.info(i).trainable) << role;
    }
    EXPECT_EQ(m->params.info(m->params.find(l0.tensor_name("down.weight_latent"))).shape, (Shape{4, l0.in}));
    EXPECT_EQ(m->params.info(m->params.find(l0.tensor_name("up.weight_latent"))).shape, (Shape{l0.out, 4}));
    StepOptions o;
    o.lr = 3e-3f;
    for (int i = 0; i < 6; ++i) losses.push_back(step.run(x.f32(), y.data(), 8, o).loss);
  }
  end_training(*m);
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_EQ(m->params.find(l0.tensor_name("down.weight_latent")), -1) << "the latent weight outlived training";
  for (const Linear* l : m->linears()) {
    if (!is_encoder(*l)) continue;
    ASSERT_EQ(l->repr->kind(), "lowrank") << l->name;
    EXPECT_EQ(as_lowrank(*l)->down().kind(), "int") << l->name;
    EXPECT_EQ(as_lowrank(*l)->up().kind(), "int") << l->name;
  }
  const std::string path = test::temp_dir() + "/qat.safetensors";
  save_model(*m, path);
  EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(path), x), vit_predict(*m, x)));
}

// Packed for inference (dense f32 factors in oneDNN's layout, where available):
// runs as before, saves the same file, and refuses training naming the layer.
TEST(LowRankTraining, PackedFactorsInferAndSaveButDoNotTrain) {
  auto m = dense_model(71);
  apply_pass(*m, "lowrank:rank=4", quiet());
  const std::string dir = test::temp_dir();
  save_model(*m, dir + "/plain.safetensors");
  const Tensor x = test::random_images(m->cfg, 4, 72);
  const Tensor want = vit_predict(*m, x);
  auto p = m->clone();
  if (pack_linears_for_inference(*p) == 0) GTEST_SKIP() << "no packed layout on this CPU";
  const Linear& l0 = p->blocks[0].fc1;
  ASSERT_EQ(l0.repr->kind(), "lowrank");
  EXPECT_EQ(as_lowrank(l0)->down().kind(), "f32_packed");
  EXPECT_LE(rel_l2(vit_predict(*p, x), want), 1e-5);
  save_model(*p, dir + "/packed.safetensors");
  EXPECT_TRUE(test::bit_equal(vit_predict(*load_model(dir + "/packed.safetensors"), x),
                              vit_predict(*load_model(dir + "/plain.safetensors"), x)));
  EXPECT_EQ(l0.repr->train_mode(), TrainMode::None);
  expect_error<Error>([&] { begin_training(*p); }, {"cannot be trained"}, "training a packed model");
  // lowrank takes packed dense layers too (their plain weight is exact): the same factors.
  {
    auto plain = dense_model(74), packed = dense_model(74);
    ASSERT_GT(pack_linears_for_inference(*packed), 0);
    apply_pass(*plain, "lowrank:rank=3", quiet());
    apply_pass(*packed, "lowrank:rank=3", quiet());
    for (size_t i = 0; i < plain->linears().size(); ++i) {
      const Linear& a = *plain->linears()[i];
      const Linear& b = *packed->linears()[i];
      if (!is_encoder(a)) continue;
      ASSERT_EQ(b.repr->kind(), "lowrank") << b.name;
      for (const char* role : {"down.weight", "up.weight", "bias"})
        EXPECT_TRUE(test::bit_equal(role_tensor(*b.repr, role), role_tensor(*a.repr, role))) << a.name << " " << role;
    }
  }
  // One layer alone: packed factors cannot train, and say which factor.
  Rng rng(73);
  auto lr = LowRankLinear::from_factors(Tensor::from({96, 8}, normals(rng, 96 * 8)),
                                        Tensor::from({8, 32}, normals(rng, 8 * 32)), Tensor::zeros({96}));
  ASSERT_GT(lr->pack_for_inference(), 0);
  EXPECT_EQ(lr->train_mode(), TrainMode::None);
  EXPECT_NE(lr->why_not_trainable().find("down factor"), std::string::npos) << lr->why_not_trainable();
  std::vector<float> X(32), dY(96), dX(32);
  float* grads[3] = {nullptr, nullptr, nullptr};
  expect_error<Error>([&] { lr->backward(dY.data(), X.data(), dX.data(), 1, false, grads); }, {},
                      "backward of packed factors");
}

// ---------------------------------------------------------------- 9. bad specs

TEST(LowRankPass, BadSpecsAreClearErrors) {
  auto m = dense_model();
  const Tensor x = test::random_images(m->cfg, 3, 81);
  const Tensor before = vit_predict(*m, x);
  const PassContext ctx = quiet();
  struct Bad {
    std::string spec;
    std::vector<std::string> parts;
  };
  const std::vector<Bad> usage = {
      {"lowrank:rank=0", {"rank=0"}},
      {"lowrank:rank=100000", {"rank=100000", "full rank"}},
      {"lowrank:rank=-3", {"rank=-3"}},
      {"lowrank:rank=2.5", {"rank=2.5"}},
      {"lowrank:energy=1.5", {"energy=1.5"}},
      {"lowrank:energy=0", {"energy=0"}},
      {"lowrank:fraction=0", {"fraction=0"}},
      {"lowrank:fraction=-0.1", {"fraction=-0.1"}},
      {"lowrank:params=2", {"params=2"}},
      {"lowrank:rank=4,energy=0.5", {"exactly one", "2 given"}},
      {"lowrank:rank=4,fraction=0.5,params=0.5", {"exactly one", "3 given"}},
      {"lowrank:method=svd", {"exactly one", "0 given"}},
      {"lowrank", {"exactly one", "0 given"}},
      {"lowrank:rank=4,method=foo", {"method=foo"}},
      {"lowrank:rank=4,alpha=0.3", {"alpha"}},
      {"lowrank:rank=4,damp=0.01", {"damp"}},
      {"lowrank:rank=4,kinds=bogus", {"bogus"}},
      {"lowrank:rank=4,kinds=fc1|bogus", {"bogus"}},
      {"lowrank:rank=4,kinds=|", {"kinds"}},
      {"lowrank:rank=4,layers=nomatch", {"nomatch"}},
      {"lowrank:rank=4,color=red", {"color"}},
      {"lowrank:rank=4,method=whiten", {"calibration"}},
      {"lowrank:rank=4,method=asvd", {"calibration"}},
  };
  for (const Bad& b : usage)
    expect_error<UsageError>([&] { apply_pass(*m, b.spec, ctx); }, b.parts, b.spec);
  // Keys of the other method, with the calibration the method needs.
  PassContext calib = test::random_calibration(m->cfg, 4, 83);
  expect_error<UsageError>([&] { apply_pass(*m, "lowrank:rank=4,method=whiten,alpha=0.3", calib); }, {"alpha"},
                           "alpha with whiten");
  expect_error<UsageError>([&] { apply_pass(*m, "lowrank:rank=4,method=asvd,damp=0.01", calib); }, {"damp"},
                           "damp with asvd");
  // Nothing changed by the refused specs.
  for (const Linear* l : m->linears()) EXPECT_EQ(l->repr->kind(), "f32") << l->name;
  EXPECT_TRUE(test::bit_equal(vit_predict(*m, x), before));
  EXPECT_EQ(compression_log(*m).size(), 0u);

  // The library functions: a data-aware basis without its statistics, a gram of other size, a bad rank.
  Rng rng(82);
  const std::vector<float> W = normals(rng, 6 * 8);
  LowRankOptions o;
  o.method = LowRankMethod::Whiten;
  expect_error<Error>([&] { lowrank_basis(W.data(), 6, 8, o, nullptr); }, {"whiten", "calibration"}, "whiten, no gram");
  InputGram g5(5);
  const std::vector<float> X5 = normals(rng, 10 * 5);
  g5.add(X5.data(), 10);
  o.method = LowRankMethod::Asvd;
  expect_error<Error>([&] { lowrank_basis(W.data(), 6, 8, o, &g5); }, {"asvd"}, "asvd, gram of 5 inputs for 8");
  expect_error<UsageError>([] { parse_lowrank_method("SVD2"); }, {"SVD2"}, "parse_lowrank_method");
  const LowRankBasis b = lowrank_basis(W.data(), 6, 8, LowRankOptions{}, nullptr);
  Tensor U, V;
  expect_error<Error>([&] { b.factors(0, &U, &V); }, {"rank 0"}, "factors(0)");
  expect_error<Error>([&] { b.factors(7, &U, &V); }, {"rank 7"}, "factors(7)");
  expect_error<Error>([] { LowRankLinear::from_factors(Tensor::zeros({4, 3}), Tensor::zeros({2, 5}), Tensor()); },
                      {"do not chain"}, "factors that do not chain");

  // lowrank twice on the same layers: the second refuses (the layer is no longer dense f32), naming it.
  apply_pass(*m, "lowrank:rank=4", ctx);
  const Tensor once = vit_predict(*m, x);
  expect_error<Error>([&] { apply_pass(*m, "lowrank:rank=2", ctx); }, {"'lowrank'", "dense f32"}, "lowrank twice");
  expect_error<Error>([&] { apply_pass(*m, "lowrank:rank=2,kinds=fc1", ctx); }, {"'lowrank'", "mlp"}, "lowrank twice, fc1");
  EXPECT_TRUE(test::bit_equal(vit_predict(*m, x), once)) << "a refused second lowrank changed the model";
  EXPECT_EQ(compression_log(*m).size(), 1u);
  // After quantize too.
  auto q = dense_model();
  apply_pass(*q, "quantize:bits=8", ctx);
  expect_error<Error>([&] { apply_pass(*q, "lowrank:rank=4", ctx); }, {"'int'"}, "lowrank after quantize");
}

// ---------------------------------------------------------------- 10. break-even

// A rank that would not save weights leaves the layer dense, with a warning
// and a kept_dense record; the break-even rank itself is factored.
TEST(LowRankPass, RanksThatSaveNothingStayDense) {
  // lowrank_break_even: the largest r with r (in + out) < in out.
  for (auto [in, out] : {std::pair{32, 32}, std::pair{32, 96}, std::pair{64, 32}, std::pair{1, 1}, std::pair{3, 5},
                         std::pair{10, 10}}) {
    int want = 0;
    while (int64_t(want + 1) * (in + out) < int64_t(in) * out) ++want;
    EXPECT_EQ(lowrank_break_even(in, out), want) << in << "x" << out;
  }
  // (params=1 is not among them: it takes the largest rank keeping at most all
  // the weights, which on a non-square layer still saves a few, e.g. 21 x 96 < 64 x 32.)
  for (const char* spec : {"lowrank:fraction=1", "lowrank:energy=1"}) {
    SCOPED_TRACE(spec);
    auto m = dense_model();
    const Tensor x = test::random_images(m->cfg, 3, 91);
    const Tensor before = vit_predict(*m, x);
    testing::internal::CaptureStderr();
    const nlohmann::json rec = apply_pass(*m, spec, quiet());
    const std::string err = testing::internal::GetCapturedStderr();
    for (const Linear* l : m->linears()) EXPECT_EQ(l->repr->kind(), "f32") << l->name;
    EXPECT_TRUE(test::bit_equal(vit_predict(*m, x), before));
    ASSERT_TRUE(rec.contains("kept_dense")) << rec.dump();
    EXPECT_EQ(rec["kept_dense"].size(), 8u);
    EXPECT_EQ(rec["layers"].size(), 0u);
    EXPECT_EQ(rec["weights_after"], rec["weights_before"]);
    for (const auto& e : rec["kept_dense"]) {
      const Linear& l = *m->find_linear(e["name"].get<std::string>());
      EXPECT_EQ(e["break_even"], lowrank_break_even(l.in, l.out)) << l.name;
      EXPECT_GT(e["rank"].get<int>(), lowrank_break_even(l.in, l.out)) << l.name;
      EXPECT_NE(err.find(l.name), std::string::npos) << "no warning names " << l.name;
    }
    EXPECT_NE(err.find("stays dense"), std::string::npos) << err;
  }
  // out_proj (32x32) breaks even at rank 15: rank 15 is factored, 16 is not (16 x 64 = 1024 = 32 x 32).
  {
    auto m = dense_model();
    const nlohmann::json rec = apply_pass(*m, "lowrank:rank=15,kinds=out_proj", quiet());
    EXPECT_EQ(rec["layers"].size(), 2u);
    EXPECT_FALSE(rec.contains("kept_dense"));
    for (const Linear* l : m->linears())
      EXPECT_EQ(l->repr->kind(), l->kind == LayerKind::Proj ? "lowrank" : "f32") << l->name;
  }
  {
    auto m = dense_model();
    testing::internal::CaptureStderr();
    const nlohmann::json rec = apply_pass(*m, "lowrank:rank=16,kinds=out_proj", quiet());
    testing::internal::GetCapturedStderr();
    EXPECT_EQ(rec["layers"].size(), 0u);
    ASSERT_TRUE(rec.contains("kept_dense"));
    EXPECT_EQ(rec["kept_dense"].size(), 2u);
    for (const Linear* l : m->linears()) EXPECT_EQ(l->repr->kind(), "f32") << l->name;
  }
  // kinds= reaches outside the encoder: the head (10x32, break-even 7) at rank 2.
  {
    auto m = dense_model();
    apply_pass(*m, "lowrank:rank=2,kinds=head", quiet());
    EXPECT_EQ(m->head.repr->kind(), "lowrank");
    EXPECT_EQ(m->patch.repr->kind(), "f32");
    for (const Linear* l : m->linears())
      if (is_encoder(*l)) { EXPECT_EQ(l->repr->kind(), "f32") << l->name; }
  }
}

// fraction and params pick round(F min(out, in)) and the largest R with R (in + out) <= P in out.
TEST(LowRankPass, FractionAndParamsPickTheirRanks) {
  auto m = dense_model();
  nlohmann::json rec = apply_pass(*m, "lowrank:fraction=0.25", quiet());
  for (const Linear* l : m->linears())
    if (is_encoder(*l)) {
      EXPECT_EQ(as_lowrank(*l)->rank(), int(std::lround(0.25 * std::min(l->in, l->out)))) << l->name;
    }
  for (double P : {0.1, 0.33, 0.5}) {
    auto p = dense_model();
    apply_pass(*p, cat("lowrank:params=", P), quiet());
    for (const Linear* l : p->linears()) {
      if (!is_encoder(*l)) continue;
      int want = 0;
      while (double(want + 1) * (l->in + l->out) <= P * l->in * l->out) ++want;
      want = std::max(want, 1);
      ASSERT_NE(as_lowrank(*l), nullptr) << l->name;
      EXPECT_EQ(as_lowrank(*l)->rank(), want) << "params=" << P << " " << l->name;
      EXPECT_LE(as_lowrank(*l)->weight_params(), std::max(P * l->in * l->out, double(l->in + l->out))) << l->name;
    }
  }
}

// ---------------------------------------------------------------- 11. energy

// W = Q1 diag(s) Q2^T with known s: the basis's sigma are s, energy(r) their
// kept share, and rank_for_energy(E) the smallest r keeping at least E; the
// pass with energy=E picks that rank.
TEST(LowRankEnergy, PicksTheSmallestRankKeepingTheEnergy) {
  const int out = 20, in = 30, k = 20;
  std::vector<double> s(k);
  for (int i = 0; i < k; ++i) s[size_t(i)] = 10.0 * std::pow(0.75, i);
  Rng rng(101);
  const MatD Q1 = random_orthonormal(rng, out, k), Q2 = random_orthonormal(rng, in, k);
  const MatD Wd = Q1 * Eigen::Map<const Eigen::VectorXd>(s.data(), k).asDiagonal() * Q2.transpose();
  std::vector<float> W(static_cast<size_t>(out) * in);
  for (int o = 0; o < out; ++o)
    for (int j = 0; j < in; ++j) W[size_t(o) * in + j] = float(Wd(o, j));
  const LowRankBasis b = lowrank_basis(W.data(), out, in, LowRankOptions{}, nullptr);
  ASSERT_EQ(b.k, k);
  double total = 0;
  for (double v : s) total += v * v;
  std::vector<double> cum(static_cast<size_t>(k + 1), 0.0);  // cum[r]: the share the first r keep
  for (int i = 0; i < k; ++i) cum[size_t(i + 1)] = cum[size_t(i)] + s[size_t(i)] * s[size_t(i)] / total;
  for (int i = 0; i < k; ++i) EXPECT_NEAR(b.sigma[size_t(i)], s[size_t(i)], 1e-5 * s[0]) << i;
  EXPECT_NEAR(b.energy(0), 0.0, 1e-12);
  EXPECT_NEAR(b.energy(k), 1.0, 1e-12);
  for (int r = 1; r <= k; ++r) {
    EXPECT_NEAR(b.energy(r), cum[size_t(r)], 1e-5) << r;
    const double mid = 0.5 * (cum[size_t(r - 1)] + cum[size_t(r)]);
    EXPECT_EQ(b.rank_for_energy(mid), r) << "E = " << mid;
    EXPECT_GE(b.energy(b.rank_for_energy(mid)), mid);
    if (r > 1) { EXPECT_LT(b.energy(b.rank_for_energy(mid) - 1), mid); }
  }
  EXPECT_EQ(b.rank_for_energy(1.0), k);
  EXPECT_EQ(b.rank_for_energy(1e-9), 1);

  // Exact shares (sigma^2 = 4, 2, 1, 1 of 8): E met exactly is enough; zeros at the end are not needed for E = 1.
  LowRankBasis h;
  h.k = 4;
  h.sigma = {2.0, std::sqrt(2.0), 1.0, 1.0};
  EXPECT_EQ(h.rank_for_energy(0.5), 1);
  EXPECT_EQ(h.rank_for_energy(0.75), 2);
  EXPECT_EQ(h.rank_for_energy(0.875), 3);
  EXPECT_EQ(h.rank_for_energy(0.8751), 4);
  EXPECT_EQ(h.rank_for_energy(1.0), 4);
  EXPECT_DOUBLE_EQ(h.energy(2), 0.75);
  h.sigma = {3.0, 1.0, 0.0, 0.0};
  EXPECT_EQ(h.rank_for_energy(1.0), 2);
  h.sigma = {0.0, 0.0, 0.0, 0.0};
  EXPECT_EQ(h.rank_for_energy(0.5), 1);
  EXPECT_EQ(h.energy(1), 1.0);

  // The pass: each layer's rank is the basis's rank_for_energy (kept dense past break-even).
  for (double E : {0.3, 0.6}) {
    auto m = dense_model();
    auto dense = m->clone();
    testing::internal::CaptureStderr();
    const nlohmann::json rec = apply_pass(*m, cat("lowrank:energy=", E), quiet());
    testing::internal::GetCapturedStderr();
    int factored = 0;
    for (const Linear* l : dense->linears()) {
      if (!is_encoder(*l)) continue;
      const LowRankBasis lb = lowrank_basis(dense->W(*l), l->out, l->in, LowRankOptions{}, nullptr);
      const int want = lb.rank_for_energy(E);
      const Linear& ml = *m->find_linear(l->name);
      if (want > lowrank_break_even(l->in, l->out)) {
        EXPECT_EQ(ml.repr->kind(), "f32") << l->name;
        continue;
      }
      ++factored;
      ASSERT_NE(as_lowrank(ml), nullptr) << l->name;
      EXPECT_EQ(as_lowrank(ml)->rank(), want) << "energy=" << E << " " << l->name;
    }
    EXPECT_GT(factored, 0) << "energy=" << E << " factored no layer";
    for (const auto& e : rec["layers"]) {
      EXPECT_GE(e["energy"].get<double>(), E * (1 - 1e-9)) << e["name"];
    }
  }
}

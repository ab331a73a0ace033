// The lowrank pass: linear layers replaced by rank-r factors (repr/lowrank.h),
// W (out, in) ~ U (out, r) V (r, in), chosen by one of three methods:
//
//   svd     the truncated SVD of W (Eckart–Young: the best rank-r weight in
//           Frobenius norm).
//   asvd    activation-aware (Yuan et al. 2023, ASVD): W's input columns
//           scaled by s_j = (mean |x_j|)^alpha over the calibration inputs,
//           A = W diag(s), truncated, and the scaling folded back into V
//           (V = sqrt(S_r) Q_r^T diag(s)^-1): columns the data drives hard
//           are kept more faithfully.
//   whiten  data-whitened (SVD-LLM, Wang et al. 2024): with the calibration
//           inputs' Gram matrix X^T X = L L^T (Cholesky, damped by damp x its
//           mean diagonal), A = W L is truncated and V = sqrt(S_r) Q_r^T L^-1,
//           so ||X (W - U V)^T||_F, the output error on the data, is the
//           smallest any rank-r weight gives (its square is the sum of the
//           dropped sigma_i(W L)^2).
// In all three W = P diag(sigma) B exactly at full rank, P the left singular
// vectors of A and B = Q^T S^-1, and U = P_r sqrt(sigma_r), V = sqrt(sigma_r) B_r
// split the singular values evenly between the factors.
//
//   lowrank:rank=32                   every encoder block's qkv, out_proj, fc1, fc2
//   lowrank:params=0.33,method=whiten  a third of each layer's weights (--data, --calib)
//   lowrank:energy=0.9,kinds=fc1|fc2   the rank keeping 90% of sigma^2 (of the method's A)
//   lowrank:fraction=0.25,layers=REGEX
//
// Exactly one of rank=R (R <= min(out, in)), fraction=F (R = round(F min(out, in))),
// params=P (the largest R with R (in + out) <= P in out) and energy=E picks each
// layer's rank (at least 1). A layer whose rank would not save weights
// (R (in + out) >= in out) stays dense, with a warning and a note in the
// record. Only dense f32 layers are factored; quantize afterwards quantizes
// the factors.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/compress/pass.h"
#include "vitkit/core/tensor.h"

namespace vitkit {

std::unique_ptr<Pass> make_lowrank_pass();

enum class LowRankMethod { Svd, Asvd, Whiten };
const char* to_string(LowRankMethod m);                                 // "svd", "asvd", "whiten"
LowRankMethod parse_lowrank_method(const std::string& s);               // UsageError otherwise

// A layer's inputs over a calibration set: X^T X and the column sums of |X|.
struct InputGram {
  int in = 0;
  int64_t rows = 0;
  std::vector<double> xtx;      // (in, in), row-major
  std::vector<double> abs_sum;  // (in)
  explicit InputGram(int in_ = 0);
  // X (rows, in).
  void add(const float* X, int64_t n);
};
// Each named layer's input statistics over images (N, C, S, S), the model run as it is.
std::map<std::string, InputGram> input_grams(const ViT& m, const std::vector<const Linear*>& layers,
                                             const Tensor& images);

// W = P diag(sigma) B (exact at full rank k = min(out, in)), sigma descending:
// the decomposition the method truncates.
struct LowRankBasis {
  int out = 0, in = 0, k = 0;
  std::vector<double> P;      // (out, k)
  std::vector<double> sigma;  // (k)
  std::vector<double> B;      // (k, in)
  // The smallest r keeping a share e in (0, 1] of sum sigma^2 (at least 1).
  int rank_for_energy(double e) const;
  // The share of sum sigma^2 the first r keep.
  double energy(int r) const;
  // U (out, r) = P_r sqrt(sigma_r), V (r, in) = sqrt(sigma_r) B_r, f32.
  void factors(int r, Tensor* U, Tensor* V) const;
};
struct LowRankOptions {
  LowRankMethod method = LowRankMethod::Svd;
  double alpha = 0.5;   // asvd's exponent
  double damp = 1e-4;   // whiten's damping, relative to X^T X's mean diagonal
};
// W (out, in) f32; gram: the layer's inputs (asvd and whiten need it, svd ignores it).
LowRankBasis lowrank_basis(const float* W, int out, int in, const LowRankOptions& o, const InputGram* gram);

// ||X (W - Wr)^T||_F / ||X W^T||_F over the gram's inputs (0 when X W^T is 0).
double relative_output_error(const float* W, const float* Wr, int out, int in, const InputGram& gram);
// ||W - Wr||_F / ||W||_F.
double relative_weight_error(const float* W, const float* Wr, int64_t n);
// The singular values of the inputs X (rows, in) themselves, descending: sqrt(eig(X^T X)).
std::vector<double> input_singular_values(const InputGram& gram);

}  // namespace vitkit

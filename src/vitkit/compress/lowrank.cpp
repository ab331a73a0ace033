#include "vitkit/compress/lowrank.h"

// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics when
// inlining Eigen's BDCSVD at -O3 (a known false positive of Eigen 3.4 with GCC 12).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <Eigen/Cholesky>
#include <Eigen/Dense>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <regex>

#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/lowrank.h"

namespace vitkit {

using MatD = Eigen::MatrixXd;
using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

const char* to_string(LowRankMethod m) {
  switch (m) {
    case LowRankMethod::Svd: return "svd";
    case LowRankMethod::Asvd: return "asvd";
    case LowRankMethod::Whiten: return "whiten";
  }
  return "?";
}

LowRankMethod parse_lowrank_method(const std::string& s) {
  if (s == "svd") return LowRankMethod::Svd;
  if (s == "asvd") return LowRankMethod::Asvd;
  if (s == "whiten") return LowRankMethod::Whiten;
  throw UsageError(cat("lowrank: method=", s, " is not svd, asvd or whiten"));
}

// ---- Calibration statistics ------------------------------------------------

InputGram::InputGram(int in_) : in(in_), xtx(size_t(in_) * size_t(in_), 0.0), abs_sum(size_t(in_), 0.0) {}

// xtx (in, in) += X^T X, abs_sum (in) += column sums of |X|, X (n, in)
void InputGram::add(const float* X, int64_t n) {
  if (n <= 0) return;
  const RowMatD Xd = Eigen::Map<const RowMatF>(X, n, in).cast<double>();
  Eigen::Map<RowMatD> C(xtx.data(), in, in);
  C.noalias() += Xd.transpose() * Xd;
  Eigen::Map<Eigen::RowVectorXd> a(abs_sum.data(), in);
  a += Xd.cwiseAbs().colwise().sum();
  rows += n;
}

std::map<std::string, InputGram> input_grams(const ViT& m, const std::vector<const Linear*>& layers,
                                             const Tensor& images) {
  std::map<std::string, InputGram> g;
  for (const Linear* l : layers) g.emplace(l->name, InputGram(l->in));
  ForwardHooks hooks;
  hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
    auto it = g.find(l.name);
    if (it != g.end()) it->second.add(X, rows);
  };
  vit_predict(m, images, 0, &hooks);
  return g;
}

// ---- Decomposition -----------------------------------------------------------

static Eigen::Map<const RowMatD> gram_matrix(const InputGram& g) { return {g.xtx.data(), g.in, g.in}; }

LowRankBasis lowrank_basis(const float* W, int out, int in, const LowRankOptions& o, const InputGram* gram) {
  check(o.method == LowRankMethod::Svd || (gram && gram->in == in && gram->rows > 0), "lowrank: method ",
        to_string(o.method), " needs the layer's calibration inputs");
  const MatD Wd = Eigen::Map<const RowMatF>(W, out, in).cast<double>();
  MatD A;
  Eigen::VectorXd s;  // asvd's column scaling
  MatD L;             // whiten's Cholesky factor
  switch (o.method) {
    case LowRankMethod::Svd: A = Wd; break;
    case LowRankMethod::Asvd: {
      s = (Eigen::Map<const Eigen::VectorXd>(gram->abs_sum.data(), in) / double(gram->rows)).array().pow(o.alpha);
      const double top = s.maxCoeff();
      // A column the data never drives keeps a tiny scale (its inverse stays finite).
      for (int j = 0; j < in; ++j) s[j] = top > 0 ? std::max(s[j], 1e-6 * top) : 1.0;
      A = Wd * s.asDiagonal();
      break;
    }
    case LowRankMethod::Whiten: {
      MatD C = gram_matrix(*gram);
      const double mean_diag = C.diagonal().mean();
      double lambda = o.damp * (mean_diag > 0 ? mean_diag : 1.0);
      if (!(lambda > 0)) lambda = 1e-12 * (mean_diag > 0 ? mean_diag : 1.0);
      // Damping grows until X^T X + lambda I is positive definite in floating point.
      for (int attempt = 0;; ++attempt) {
        Eigen::LLT<MatD> llt(C + lambda * MatD::Identity(in, in));
        if (llt.info() == Eigen::Success) {
          L = llt.matrixL();
          break;
        }
        check(attempt < 12, "lowrank: the calibration inputs' Gram matrix (", in, "x", in,
              ") is not positive definite even damped by ", lambda);
        lambda *= 10;
      }
      A = Wd * L;
      break;
    }
  }
  Eigen::BDCSVD<MatD> svd(A, Eigen::ComputeThinU | Eigen::ComputeThinV);
  LowRankBasis b;
  b.out = out;
  b.in = in;
  b.k = std::min(out, in);
  const MatD& P = svd.matrixU();  // (out, k)
  MatD Bt = svd.matrixV();        // (in, k): Q, then (S^-1)^T Q
  if (o.method == LowRankMethod::Asvd) Bt = s.cwiseInverse().asDiagonal() * Bt;
  if (o.method == LowRankMethod::Whiten) Bt = L.transpose().triangularView<Eigen::Upper>().solve(Bt);
  b.P.resize(size_t(out) * b.k);
  b.B.resize(size_t(b.k) * in);
  b.sigma.resize(size_t(b.k));
  for (int i = 0; i < b.k; ++i) {
    b.sigma[size_t(i)] = svd.singularValues()[i];
    for (int o2 = 0; o2 < out; ++o2) b.P[size_t(o2) * b.k + i] = P(o2, i);
    for (int j = 0; j < in; ++j) b.B[size_t(i) * in + j] = Bt(j, i);
  }
  return b;
}

double LowRankBasis::energy(int r) const {
  double total = 0, kept = 0;
  for (int i = 0; i < k; ++i) {
    total += sigma[size_t(i)] * sigma[size_t(i)];
    if (i < r) kept += sigma[size_t(i)] * sigma[size_t(i)];
  }
  return total > 0 ? kept / total : 1.0;
}

int LowRankBasis::rank_for_energy(double e) const {
  double total = 0;
  for (double s : sigma) total += s * s;
  double kept = 0;
  for (int i = 0; i < k; ++i) {
    kept += sigma[size_t(i)] * sigma[size_t(i)];
    // A relative slack of 1e-12 so that e = 1 is met at the last nonzero value.
    if (kept >= e * total * (1 - 1e-12)) return i + 1;
  }
  return std::max(k, 1);
}

void LowRankBasis::factors(int r, Tensor* U, Tensor* V) const {
  check(r >= 1 && r <= k, "lowrank: rank ", r, " is outside 1..", k);
  *U = Tensor::zeros({out, r});
  *V = Tensor::zeros({r, in});
  float* u = U->f32();
  float* v = V->f32();
  for (int i = 0; i < r; ++i) {
    const double h = std::sqrt(sigma[size_t(i)]);
    for (int o = 0; o < out; ++o) u[size_t(o) * r + i] = float(P[size_t(o) * k + i] * h);
    for (int j = 0; j < in; ++j) v[size_t(i) * in + j] = float(B[size_t(i) * in + j] * h);
  }
}

double relative_output_error(const float* W, const float* Wr, int out, int in, const InputGram& gram) {
  const MatD Wd = Eigen::Map<const RowMatF>(W, out, in).cast<double>();
  const MatD D = Wd - Eigen::Map<const RowMatF>(Wr, out, in).cast<double>();
  const MatD C = gram_matrix(gram);
  // ||X A^T||_F^2 = trace(A X^T X A^T).
  const double err = (D * C).cwiseProduct(D).sum(), ref = (Wd * C).cwiseProduct(Wd).sum();
  return ref > 0 ? std::sqrt(std::max(err, 0.0) / ref) : 0.0;
}

double relative_weight_error(const float* W, const float* Wr, int64_t n) {
  double err = 0, ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(W[i]) - double(Wr[i]);
    err += d * d;
    ref += double(W[i]) * double(W[i]);
  }
  return ref > 0 ? std::sqrt(err / ref) : 0.0;
}

std::vector<double> input_singular_values(const InputGram& gram) {
  Eigen::SelfAdjointEigenSolver<MatD> es(MatD(gram_matrix(gram)), Eigen::EigenvaluesOnly);
  std::vector<double> s;
  for (int i = gram.in - 1; i >= 0; --i) s.push_back(std::sqrt(std::max(es.eigenvalues()[i], 0.0)));
  return s;
}

// ---- The pass ----------------------------------------------------------------

namespace {

struct PassOptions {
  LowRankOptions lr;
  std::string by;  // rank, fraction, params or energy
  double value = 0;
  std::string layers;              // regex; "" (and no kinds) the encoder's linear layers
  std::vector<LayerKind> kinds;    // empty: any
};

LayerKind parse_kind(const std::string& s) {
  for (LayerKind k : {LayerKind::Patch, LayerKind::Qkv, LayerKind::Proj, LayerKind::Fc1, LayerKind::Fc2,
                      LayerKind::Head})
    if (s == to_string(k)) return k;
  throw UsageError(cat("lowrank: kinds: '", s, "' is not a layer kind (patch, qkv, out_proj, fc1, fc2, head)"));
}

PassOptions parse_options(const PassArgs& a) {
  PassOptions o;
  o.lr.method = parse_lowrank_method(a.text("method"));
  int chosen = 0;
  for (const char* k : {"rank", "fraction", "params", "energy"})
    if (a.given(k)) {
      ++chosen;
      o.by = k;
    }
  if (chosen != 1)
    throw UsageError(cat("lowrank: give exactly one of rank=R, fraction=F, params=P or energy=E (", chosen, " given)"));
  o.value = o.by == "rank" ? double(a.integer("rank")) : a.real(o.by);
  if (o.by != "rank" && !(o.value > 0))
    throw UsageError(cat("lowrank: ", o.by, "=", a.text(o.by), " keeps nothing (it must be in (0, 1])"));
  if (a.given("alpha") && o.lr.method != LowRankMethod::Asvd) throw UsageError("lowrank: alpha= is for method=asvd");
  if (a.given("damp") && o.lr.method != LowRankMethod::Whiten) throw UsageError("lowrank: damp= is for method=whiten");
  o.lr.alpha = a.real("alpha");
  o.lr.damp = a.real("damp");
  if (a.given("layers")) o.layers = a.text("layers");
  if (a.given("kinds")) {
    std::string s = a.text("kinds");
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t bar = s.find_first_of("|+", pos);
      if (bar == std::string::npos) bar = s.size();
      if (bar > pos) o.kinds.push_back(parse_kind(s.substr(pos, bar - pos)));
      pos = bar + 1;
    }
    if (o.kinds.empty()) throw UsageError("lowrank: kinds= names no layer kind");
  }
  return o;
}

std::vector<Linear*> targets(ViT& m, const PassOptions& o) {
  std::vector<Linear*> v;
  const std::regex re(o.layers.empty() ? "." : o.layers, std::regex::ECMAScript);
  for (Linear* l : m.linears()) {
    const bool kind_ok = o.kinds.empty() || std::find(o.kinds.begin(), o.kinds.end(), l->kind) != o.kinds.end();
    const bool name_ok = o.layers.empty() ? (!o.kinds.empty() || l->block >= 0) : std::regex_search(l->name, re);
    if (kind_ok && name_ok) v.push_back(l);
  }
  if (v.empty()) throw UsageError(cat("lowrank: layers=", o.layers, " kinds= match no linear layer"));
  for (const Linear* l : v) {
    const std::string k = l->repr->kind();
    if (k != "f32" && k != "f32_packed")
      fail("lowrank: ", l->describe(), " is '", k, "' (", l->repr->describe(),
           "); lowrank factors dense f32 layers (put it before quantize or prune in the recipe)");
    if (o.by == "rank" && o.value > std::min(l->in, l->out))
      throw UsageError(cat("lowrank: rank=", int64_t(o.value), " is above ", l->name, "'s full rank ",
                           std::min(l->in, l->out), " (", l->out, "x", l->in, ")"));
  }
  return v;
}

// The rank the options give a layer of this basis.
int choose_rank(const PassOptions& o, const LowRankBasis& b) {
  int r = 1;
  if (o.by == "rank") r = int(o.value);
  else if (o.by == "fraction") r = int(std::lround(o.value * b.k));
  else if (o.by == "params") r = int(std::floor(o.value * double(b.in) * b.out / double(b.in + b.out) + 1e-9));
  else r = b.rank_for_energy(o.value);
  return std::clamp(r, 1, b.k);
}

nlohmann::json lowrank_model(ViT& m, const PassOptions& o, const PassContext& ctx) {
  const std::vector<Linear*> ls = targets(m, o);
  std::map<std::string, InputGram> grams;
  if (ctx.has_calibration()) grams = input_grams(m, std::vector<const Linear*>(ls.begin(), ls.end()), ctx.calib);
  nlohmann::json layers = nlohmann::json::array(), dense = nlohmann::json::array();
  int64_t before = 0, after = 0;
  std::vector<float> scratch, approx;
  std::unique_ptr<Progress> bar;  // the context decides (analyze sensitivity applies passes quietly)
  if (ctx.progress) bar = std::make_unique<Progress>("lowrank", int64_t(ls.size()));
  for (size_t i = 0; i < ls.size(); ++i) {
    Linear& l = *ls[i];
    const float* W = l.repr->plain_weight(scratch);
    const InputGram* g = grams.count(l.name) ? &grams.at(l.name) : nullptr;
    const LowRankBasis b = lowrank_basis(W, l.out, l.in, o.lr, g);
    const int r = choose_rank(o, b), even = lowrank_break_even(l.in, l.out);
    before += int64_t(l.in) * l.out;
    if (r > even) {
      warn(cat("lowrank: ", l.name, " (", l.out, "x", l.in, ") stays dense: rank ", r, " would not save weights (",
               r, " x ", l.in + l.out, " >= ", int64_t(l.in) * l.out, "; at most rank ", even, ")"));
      dense.push_back({{"name", l.name}, {"rank", r}, {"break_even", even}});
      after += int64_t(l.in) * l.out;
      if (bar) bar->update(int64_t(i) + 1);
      continue;
    }
    Tensor U, V;
    b.factors(r, &U, &V);
    auto repr = LowRankLinear::from_factors(U, V, l.repr->bias_tensor().defined() ? l.repr->bias_tensor().clone()
                                                                                 : Tensor());
    const float* Wr = repr->plain_weight(approx);
    nlohmann::json e{{"name", l.name},
                     {"kind", to_string(l.kind)},
                     {"rank", r},
                     {"full_rank", b.k},
                     {"energy", b.energy(r)},
                     {"weights_before", int64_t(l.in) * l.out},
                     {"weights_after", repr->weight_params()},
                     {"weight_error", relative_weight_error(W, Wr, int64_t(l.in) * l.out)}};
    if (g) e["output_error"] = relative_output_error(W, Wr, l.out, l.in, *g);
    after += repr->weight_params();
    m.set_repr(l, std::move(repr));
    layers.push_back(e);
    if (bar) bar->update(int64_t(i) + 1);
  }
  if (bar) bar->finish();
  nlohmann::json rec{{"method", to_string(o.lr.method)},
                     {"by", o.by},
                     {"layers", layers},
                     {"weights_before", before},
                     {"weights_after", after},
                     {"reduction", after > 0 ? double(before) / double(after) : 0.0}};
  if (!dense.empty()) rec["kept_dense"] = dense;
  return rec;
}

class LowRankPass : public Pass {
 public:
  std::string name() const override { return "lowrank"; }
  std::string summary() const override {
    return "linear layers factored to rank r (two smaller layers): truncated SVD, activation-aware (asvd) or "
           "data-whitened (whiten, least output error) from --data/--calib";
  }
  std::vector<PassKey> keys() const override {
    using T = PassKey::Type;
    return {
        PassKey("rank", T::Int, "", "the rank of every chosen layer (at most min(out, in))").range(1, 1 << 20),
        PassKey("fraction", T::Float, "", "rank = round(F x min(out, in))").range(0, 1),
        PassKey("params", T::Float, "", "the largest rank keeping at most a share P of each layer's weights")
            .range(0, 1),
        PassKey("energy", T::Float, "", "the smallest rank keeping a share E of the sum of squared singular values")
            .range(0, 1),
        PassKey("method", T::String, "svd", "svd (the weight's), asvd (activation-scaled) or whiten (Cholesky of X^T X)"),
        PassKey("alpha", T::Float, "0.5", "method=asvd: the column scales' exponent, (mean |x|)^alpha").range(0, 4),
        PassKey("damp", T::Float, "0.0001", "method=whiten: damping of X^T X, relative to its mean diagonal")
            .range(0, 1),
        PassKey("kinds", T::String, "", "only layers of these kinds, e.g. fc1|fc2 (patch, qkv, out_proj, fc1, fc2, head)"),
        PassKey("layers", T::Regex, "",
                "only the layers whose name matches (default: every encoder block's qkv, out_proj, fc1, fc2)"),
    };
  }
  bool needs_calibration(const PassArgs& a) const override {
    return parse_lowrank_method(a.text("method")) != LowRankMethod::Svd;
  }
  bool layers_select() const override { return true; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext& ctx) const override {
    return lowrank_model(m, parse_options(a), ctx);
  }
};

}  // namespace

std::unique_ptr<Pass> make_lowrank_pass() { return std::make_unique<LowRankPass>(); }

}  // namespace vitkit

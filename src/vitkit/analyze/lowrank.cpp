#include "vitkit/analyze/lowrank.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "vitkit/compress/lowrank.h"
#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/report/svg_plot.h"
#include "vitkit/report/table.h"
#include "vitkit/repr/lowrank.h"

namespace vitkit {

constexpr double LowRankAnalysis::kEnergies[3];

// The smallest r whose first r values hold a share e of sum s^2.
static int energy_rank(const std::vector<double>& s, double e) {
  double total = 0, kept = 0;
  for (double v : s) total += v * v;
  for (size_t i = 0; i < s.size(); ++i) {
    kept += s[i] * s[i];
    if (kept >= e * total * (1 - 1e-12)) return int(i) + 1;
  }
  return int(s.size());
}

static std::vector<int> energy_ranks(const std::vector<double>& s) {
  std::vector<int> r;
  for (double e : LowRankAnalysis::kEnergies) r.push_back(energy_rank(s, e));
  return r;
}

// W_r (out, in) = P_r diag(sigma_r) B_r.
static void truncated(const LowRankBasis& b, int r, std::vector<float>& W) {
  W.assign(size_t(b.out) * b.in, 0.f);
  std::vector<double> row(size_t(b.in));
  for (int o = 0; o < b.out; ++o) {
    std::fill(row.begin(), row.end(), 0.0);
    for (int i = 0; i < r; ++i) {
      const double c = b.P[size_t(o) * b.k + i] * b.sigma[size_t(i)];
      const double* Bi = &b.B[size_t(i) * b.in];
      for (int j = 0; j < b.in; ++j) row[size_t(j)] += c * Bi[j];
    }
    for (int j = 0; j < b.in; ++j) W[size_t(o) * b.in + j] = float(row[size_t(j)]);
  }
}

// Ranks from 1/64 of full rank to full, distinct.
static std::vector<int> curve_ranks(int k) {
  std::set<int> s;
  for (double f : {1 / 64., 1 / 32., 1 / 16., 1 / 8., 3 / 16., 1 / 4., 5 / 16., 3 / 8., 1 / 2., 5 / 8., 3 / 4., 1.})
    s.insert(std::clamp(int(std::lround(f * k)), 1, k));
  return {s.begin(), s.end()};
}

LowRankAnalysis analyze_lowrank(const ViT& m, const Tensor& images, bool progress) {
  LowRankAnalysis a;
  a.images = images.dim(0);
  const std::vector<const Linear*> ls = m.linears();
  const std::map<std::string, InputGram> grams = input_grams(m, ls, images);
  std::unique_ptr<Progress> bar;
  if (progress) bar = std::make_unique<Progress>("analyze lowrank", int64_t(ls.size()));
  std::vector<float> scratch, Wr;
  for (size_t li = 0; li < ls.size(); ++li) {
    const Linear& l = *ls[li];
    const InputGram& g = grams.at(l.name);
    const float* W = l.repr->plain_weight(scratch);
    LowRankLayer r;
    r.name = l.name;
    r.kind = to_string(l.kind);
    r.block = l.block;
    r.out = l.out;
    r.in = l.in;
    r.full_rank = std::min(l.in, l.out);
    r.break_even = lowrank_break_even(l.in, l.out);
    LowRankOptions o;
    std::map<LowRankMethod, LowRankBasis> bases;
    for (LowRankMethod mt : {LowRankMethod::Svd, LowRankMethod::Asvd, LowRankMethod::Whiten}) {
      o.method = mt;
      bases.emplace(mt, lowrank_basis(W, l.out, l.in, o, &g));
    }
    r.weight_sv = bases.at(LowRankMethod::Svd).sigma;
    r.seen_sv = bases.at(LowRankMethod::Whiten).sigma;
    r.feature_sv = input_singular_values(g);
    r.weight_rank = energy_ranks(r.weight_sv);
    r.seen_rank = energy_ranks(r.seen_sv);
    r.feature_rank = energy_ranks(r.feature_sv);
    r.ranks = curve_ranks(r.full_rank);
    for (int k : r.ranks) {
      truncated(bases.at(LowRankMethod::Svd), k, Wr);
      r.err_svd.push_back(relative_output_error(W, Wr.data(), l.out, l.in, g));
      truncated(bases.at(LowRankMethod::Asvd), k, Wr);
      r.err_asvd.push_back(relative_output_error(W, Wr.data(), l.out, l.in, g));
      truncated(bases.at(LowRankMethod::Whiten), k, Wr);
      r.err_whiten.push_back(relative_output_error(W, Wr.data(), l.out, l.in, g));
    }
    a.layers.push_back(std::move(r));
    if (bar) bar->update(int64_t(li) + 1);
  }
  if (bar) bar->finish();
  return a;
}

nlohmann::json LowRankLayer::to_json() const {
  return {{"name", name},
          {"kind", kind},
          {"block", block},
          {"out", out},
          {"in", in},
          {"full_rank", full_rank},
          {"break_even_rank", break_even},
          {"energies", {0.90, 0.95, 0.99}},
          {"weight", {{"singular_values", weight_sv}, {"ranks", weight_rank}}},
          {"seen_by_data", {{"singular_values", seen_sv}, {"ranks", seen_rank}}},
          {"features", {{"singular_values", feature_sv}, {"ranks", feature_rank}}},
          {"output_error", {{"ranks", ranks}, {"svd", err_svd}, {"asvd", err_asvd}, {"whiten", err_whiten}}}};
}

nlohmann::json LowRankAnalysis::to_json() const {
  nlohmann::json j{{"data", data}, {"images", images}, {"layers", nlohmann::json::array()}};
  for (const LowRankLayer& l : layers) j["layers"].push_back(l.to_json());
  return j;
}

// The error curve's value at the rank nearest r.
static double error_at(const LowRankLayer& l, const std::vector<double>& err, int r) {
  size_t best = 0;
  for (size_t i = 0; i < l.ranks.size(); ++i)
    if (std::abs(l.ranks[i] - r) < std::abs(l.ranks[best] - r)) best = i;
  return err[best];
}

static std::string ranks_str(const std::vector<int>& r) { return cat(r[0], "/", r[1], "/", r[2]); }

std::string LowRankAnalysis::text() const {
  Table t({"layer", "out x in", "full", "even", "weight 90/95/99", "seen 90/95/99", "features 90/95/99",
            "err@k/4 svd", "asvd", "whiten"});
  t.right_align({1, 2, 3, 4, 5, 6, 7, 8, 9});
  for (const LowRankLayer& l : layers) {
    const int q = std::max(1, int(std::lround(l.full_rank / 4.0)));
    const std::string name = l.block >= 0 ? cat("encoder_layer_", l.block, ".", l.kind) : l.name;
    t.add({name, cat(l.out, "x", l.in), cat(l.full_rank), cat(l.break_even), ranks_str(l.weight_rank),
           ranks_str(l.seen_rank), ranks_str(l.feature_rank), fmt_fixed(error_at(l, l.err_svd, q), 3),
           fmt_fixed(error_at(l, l.err_asvd, q), 3), fmt_fixed(error_at(l, l.err_whiten, q), 3)});
  }
  return cat(t.text(),
             "\nranks: for 90/95/99% of sum sigma^2 of the weight W, of W L (the weight seen by the data, X^T X = L "
             "L^T) and of the inputs X; full: min(out, in); even: the largest rank that saves weights; err@k/4: "
             "||X (W - W_r)^T|| / ||X W^T|| at a quarter of full rank, per method\n");
}

std::string LowRankAnalysis::csv() const {
  std::string s =
      "layer,kind,block,out,in,full_rank,break_even,weight_r90,weight_r95,weight_r99,seen_r90,seen_r95,seen_r99,"
      "features_r90,features_r95,features_r99,rank,err_svd,err_asvd,err_whiten\n";
  for (const LowRankLayer& l : layers)
    for (size_t i = 0; i < l.ranks.size(); ++i)
      s += cat(l.name, ",", l.kind, ",", l.block, ",", l.out, ",", l.in, ",", l.full_rank, ",", l.break_even, ",",
               l.weight_rank[0], ",", l.weight_rank[1], ",", l.weight_rank[2], ",", l.seen_rank[0], ",",
               l.seen_rank[1], ",", l.seen_rank[2], ",", l.feature_rank[0], ",", l.feature_rank[1], ",",
               l.feature_rank[2], ",", l.ranks[i], ",", l.err_svd[i], ",", l.err_asvd[i], ",", l.err_whiten[i],
               "\n");
  return s;
}

// Cumulative energy at rank fractions 0..1 in 50 steps.
static std::vector<double> cumulative(const std::vector<double>& s, const std::vector<double>& fr) {
  double total = 0;
  for (double v : s) total += v * v;
  std::vector<double> out;
  for (double f : fr) {
    const size_t r = size_t(std::lround(f * double(s.size())));
    double kept = 0;
    for (size_t i = 0; i < r && i < s.size(); ++i) kept += s[i] * s[i];
    out.push_back(total > 0 ? kept / total : 1.0);
  }
  return out;
}

std::string LowRankAnalysis::svg(const std::string& title) const {
  std::vector<std::string> kinds;
  for (const LowRankLayer& l : layers)
    if (l.block >= 0 && std::find(kinds.begin(), kinds.end(), l.kind) == kinds.end()) kinds.push_back(l.kind);
  std::vector<double> fr;
  for (int i = 0; i <= 50; ++i) fr.push_back(i / 50.0);
  std::vector<Plot> energy, error;
  for (const std::string& k : kinds) {
    std::vector<const LowRankLayer*> ls;
    for (const LowRankLayer& l : layers)
      if (l.kind == k && l.block >= 0) ls.push_back(&l);
    auto mean_of = [&](auto get) {
      std::vector<double> y(fr.size(), 0.0);
      for (const LowRankLayer* l : ls) {
        const std::vector<double> c = cumulative(get(*l), fr);
        for (size_t i = 0; i < y.size(); ++i) y[i] += c[i] / double(ls.size());
      }
      return y;
    };
    Plot p;
    p.title = cat(title, ": ", k, " (", ls[0]->out, "x", ls[0]->in, ", mean of ", ls.size(), " blocks)");
    p.x.label = "rank / full rank";
    p.y.label = "energy kept (sum sigma^2)";
    p.x.min = 0, p.x.max = 1, p.y.min = 0, p.y.max = 1;
    p.series.push_back({"weight W", fr, mean_of([](const LowRankLayer& l) { return l.weight_sv; }), true, false, false, false, ""});
    p.series.push_back({"seen by data W L", fr, mean_of([](const LowRankLayer& l) { return l.seen_sv; }), true, false, false, false, ""});
    p.series.push_back({"features X", fr, mean_of([](const LowRankLayer& l) { return l.feature_sv; }), true, false, false, false, ""});
    energy.push_back(p);
    Plot e;
    e.title = cat(k, ": output error against rank (mean of blocks)");
    e.x.label = "rank / full rank";
    e.y.label = "||X (W - W_r)^T|| / ||X W^T||";
    e.y.log = true;
    const LowRankLayer& f = *ls[0];
    std::vector<double> x;
    for (int r : f.ranks) x.push_back(double(r) / f.full_rank);
    for (auto [name, which] : {std::pair{"svd", 0}, std::pair{"asvd", 1}, std::pair{"whiten", 2}}) {
      std::vector<double> y(f.ranks.size(), 0.0);
      for (const LowRankLayer* l : ls) {
        const std::vector<double>& err = which == 0 ? l->err_svd : which == 1 ? l->err_asvd : l->err_whiten;
        for (size_t i = 0; i < y.size() && i < err.size(); ++i) y[i] += err[i] / double(ls.size());
      }
      for (double& v : y) v = std::max(v, 1e-7);  // full rank: exact (0 on a log axis)
      e.series.push_back({name, x, y, true, true, false, false, ""});
    }
    e.lines.push_back({0.01, "1%"});
    error.push_back(e);
  }
  std::vector<Plot> panels = energy;
  panels.insert(panels.end(), error.begin(), error.end());
  return render_svg_grid(panels, std::max<int>(1, int(kinds.size())), 460, 340);
}

}  // namespace vitkit

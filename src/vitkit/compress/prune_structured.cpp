#include "vitkit/compress/prune_structured.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "vitkit/compress/prune_scores.h"
#include "vitkit/core/error.h"
#include "vitkit/model/cost.h"
#include "vitkit/repr/f32.h"

namespace vitkit {

// ---- Physical removal ------------------------------------------------------

// Rows `rows` of W (R, C) -> (rows.size(), C).
static Tensor take_rows(const float* W, int C, const std::vector<int>& rows) {
  Tensor t = Tensor::zeros({int64_t(rows.size()), C});
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(t.f32() + int64_t(i) * C, W + int64_t(rows[i]) * C, sizeof(float) * size_t(C));
  return t;
}
// Columns `cols` of W (R, C) -> (R, cols.size()).
static Tensor take_cols(const float* W, int R, int C, const std::vector<int>& cols) {
  const int64_t K = int64_t(cols.size());
  Tensor t = Tensor::zeros({R, K});
  for (int r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k) t.f32()[r * K + k] = W[int64_t(r) * C + cols[size_t(k)]];
  return t;
}
static Tensor take(const float* v, const std::vector<int>& idx) {
  Tensor t = Tensor::zeros({int64_t(idx.size())});
  for (size_t i = 0; i < idx.size(); ++i) t.f32()[i] = v[idx[i]];
  return t;
}
static Tensor copy_bias(const Linear& l) { return l.has_bias ? l.repr->bias_tensor().clone() : Tensor(); }

static void check_keep(const std::vector<int>& k, int n, const char* what, size_t block) {
  check(!k.empty(), "prune: block ", block, " would keep no ", what);
  for (size_t i = 0; i < k.size(); ++i)
    check(k[i] >= 0 && k[i] < n && (i == 0 || k[i] > k[i - 1]), "prune: block ", block, ": kept ", what, " ", k[i],
          " is out of 0..", n - 1, " or not ascending");
}

void remove_heads(ViT& m, const std::vector<std::vector<int>>& keep) {
  check(keep.size() == m.blocks.size(), "remove_heads: ", keep.size(), " lists for ", m.blocks.size(), " blocks");
  check_dense_for_pruning(m, "prune-heads", true);
  for (size_t bi = 0; bi < m.blocks.size(); ++bi) {
    Block& b = m.blocks[bi];
    const int H = b.shape.heads, d = b.shape.head_dim, A = b.shape.attn_dim(), D = m.cfg.dim;
    check_keep(keep[bi], H, "heads", bi);
    if (int(keep[bi].size()) == H) continue;
    // qkv rows: [q heads | k heads | v heads], head h at h*d.. in each part; out_proj columns likewise.
    std::vector<int> rows, cols;
    for (int part = 0; part < 3; ++part)
      for (int h : keep[bi])
        for (int e = 0; e < d; ++e) rows.push_back(part * A + h * d + e);
    for (int h : keep[bi])
      for (int e = 0; e < d; ++e) cols.push_back(h * d + e);
    auto qkv = std::make_unique<F32Linear>(take_rows(m.W(b.qkv), D, rows),
                                           b.qkv.has_bias ? take(b.qkv.repr->bias(), rows) : Tensor());
    auto proj = std::make_unique<F32Linear>(take_cols(m.W(b.proj), D, A, cols), copy_bias(b.proj));
    BlockShape s = b.shape;
    s.heads = int(keep[bi].size());
    m.reshape_block(int(bi), s, std::move(qkv), std::move(proj), b.fc1.repr->clone(), b.fc2.repr->clone());
  }
}

void remove_neurons(ViT& m, const std::vector<std::vector<int>>& keep) {
  check(keep.size() == m.blocks.size(), "remove_neurons: ", keep.size(), " lists for ", m.blocks.size(), " blocks");
  check_dense_for_pruning(m, "prune-mlp", false);
  for (size_t bi = 0; bi < m.blocks.size(); ++bi) {
    Block& b = m.blocks[bi];
    const int M = b.shape.mlp_dim, D = m.cfg.dim;
    check_keep(keep[bi], M, "MLP neurons", bi);
    if (int(keep[bi].size()) == M) continue;
    auto fc1 = std::make_unique<F32Linear>(take_rows(m.W(b.fc1), D, keep[bi]), take(b.fc1.repr->bias(), keep[bi]));
    auto fc2 = std::make_unique<F32Linear>(take_cols(m.W(b.fc2), D, M, keep[bi]), copy_bias(b.fc2));
    BlockShape s = b.shape;
    s.mlp_dim = int(keep[bi].size());
    m.reshape_block(int(bi), s, b.qkv.repr->clone(), b.proj.repr->clone(), std::move(fc1), std::move(fc2));
  }
}

// ---- Selection -------------------------------------------------------------

std::vector<std::vector<int>> select_units(const std::vector<std::vector<double>>& scores, bool global,
                                           const std::vector<int64_t>& remove_per_block, int64_t remove_total,
                                           int min_keep) {
  const size_t L = scores.size();
  std::vector<std::vector<bool>> gone(L);
  for (size_t b = 0; b < L; ++b) gone[b].assign(scores[b].size(), false);
  std::vector<int64_t> left(L);
  for (size_t b = 0; b < L; ++b) left[b] = int64_t(scores[b].size());
  using Item = std::tuple<double, size_t, int>;  // score, block, unit
  auto take_lowest = [&](std::vector<Item> items, int64_t n) {
    std::sort(items.begin(), items.end());
    for (const auto& [s, b, u] : items) {
      if (n <= 0) break;
      if (left[b] <= min_keep) continue;
      gone[b][size_t(u)] = true;
      --left[b];
      --n;
    }
  };
  if (global) {
    std::vector<Item> all;
    for (size_t b = 0; b < L; ++b)
      for (size_t u = 0; u < scores[b].size(); ++u) all.emplace_back(scores[b][u], b, int(u));
    take_lowest(std::move(all), remove_total);
  } else {
    for (size_t b = 0; b < L; ++b) {
      std::vector<Item> one;
      for (size_t u = 0; u < scores[b].size(); ++u) one.emplace_back(scores[b][u], b, int(u));
      take_lowest(std::move(one), remove_per_block.at(b));
    }
  }
  std::vector<std::vector<int>> keep(L);
  for (size_t b = 0; b < L; ++b)
    for (size_t u = 0; u < scores[b].size(); ++u)
      if (!gone[b][u]) keep[b].push_back(int(u));
  return keep;
}

// ---- The passes ------------------------------------------------------------

namespace {

enum class Unit { Heads, Neurons };

struct PruneOptions {
  Unit unit = Unit::Heads;
  double ratio = -1;  // < 0: count
  int64_t count = 0;
  std::string score = "l2";
  bool global = true;
  int min_keep = 1;
};

const char* pass_name(Unit u) { return u == Unit::Heads ? "prune-heads" : "prune-mlp"; }
const char* min_key(Unit u) { return u == Unit::Heads ? "min_heads" : "min_neurons"; }

PruneOptions parse_options(Unit unit, const PassArgs& a) {
  PruneOptions o;
  o.unit = unit;
  const char* pass = pass_name(unit);
  if (a.given("ratio") == a.given("count"))
    throw UsageError(cat(pass, ": give ratio=R (a share of the ", unit == Unit::Heads ? "heads" : "neurons",
                         ") or count=N, one of them"));
  if (a.given("ratio")) o.ratio = a.real("ratio");
  else o.count = a.integer("count");
  o.score = a.text("score");
  const bool known = o.score == "l2" || o.score == "taylor" || (unit == Unit::Heads && o.score == "entropy");
  if (!known)
    throw UsageError(cat(pass, ": unknown score '", o.score, "' (scores: l2, taylor",
                         unit == Unit::Heads ? ", entropy" : "", ")"));
  const std::string scope = a.text("scope");
  if (scope != "global" && scope != "layer")
    throw UsageError(cat(pass, ": unknown scope '", scope, "' (global or layer)"));
  o.global = scope == "global";
  o.min_keep = int(a.integer(min_key(unit)));
  return o;
}

std::vector<PassKey> prune_keys(Unit unit) {
  using T = PassKey::Type;
  const bool heads = unit == Unit::Heads;
  return {
      PassKey("ratio", T::Float, "", heads ? "share of the heads to remove (0 <= R < 1)" : "share of the MLP neurons "
                                                                                            "to remove (0 <= R < 1)")
          .range(0, 0.999),
      PassKey("count", T::Int, "", "how many to remove (global: in all; layer: per block)").range(0, 1e9),
      PassKey("score", T::String, "l2",
              heads ? "l2 (grouped weight norm), taylor (|activation x gradient| over --data/--calib) or entropy "
                      "(mean attention entropy: the most uniform heads go first)"
                    : "l2 (fc1 row and fc2 column norm) or taylor (|activation x gradient| over --data/--calib)"),
      PassKey("scope", T::String, "global", "global (rank all blocks' units together) or layer (each block alike)"),
      PassKey(min_key(unit), T::Int, "1", heads ? "heads every block keeps" : "neurons every block keeps")
          .range(1, 1e9),
  };
}

nlohmann::json prune_model(ViT& m, const PruneOptions& o, const PassContext& ctx) {
  const bool heads = o.unit == Unit::Heads;
  const char* pass = pass_name(o.unit);
  check_dense_for_pruning(m, pass, heads);
  std::vector<int64_t> units;
  int64_t total = 0;
  for (const Block& b : m.blocks) {
    units.push_back(heads ? b.shape.heads : b.shape.mlp_dim);
    total += units.back();
    if (units.back() < o.min_keep)
      throw UsageError(cat(pass, ": ", min_key(o.unit), "=", o.min_keep, " is above block ", b.qkv.block, "'s ",
                           units.back(), heads ? " heads" : " MLP neurons"));
  }
  // The scores (higher: more important).
  UnitScores scores;
  if (o.score == "l2") {
    scores = heads ? head_scores_l2(m) : neuron_scores_l2(m);
  } else if (o.score == "taylor") {
    check(ctx.has_calibration(), pass, ": score=taylor needs calibration images (--data, --calib)");
    TaylorScores t = taylor_scores(m, ctx.calib, ctx.calib_labels, ctx.progress);
    scores = heads ? t.heads : t.neurons;
  } else {
    check(ctx.has_calibration(), pass, ": score=entropy needs calibration images (--data, --calib)");
    const UnitScores ent = head_attention_entropy(m, ctx.calib, ctx.progress);
    const double full = std::log(double(m.cfg.tokens()));
    scores = ent;
    for (auto& v : scores)
      for (double& x : v) x = full - x;
  }
  // How many go.
  std::vector<int64_t> per_block(m.blocks.size(), 0);
  int64_t requested = 0;
  for (size_t b = 0; b < units.size(); ++b) {
    per_block[b] = o.ratio >= 0 ? std::llround(o.ratio * double(units[b])) : o.count;
    if (!o.global) requested += per_block[b];
  }
  if (o.global) requested = o.ratio >= 0 ? std::llround(o.ratio * double(total)) : o.count;
  const int64_t params_before = model_cost(m).params, macs_before = model_cost(m).macs;
  const std::vector<std::vector<int>> keep = select_units(scores, o.global, per_block, requested, o.min_keep);
  nlohmann::json removed = nlohmann::json::array(), before = nlohmann::json::array(),
                 after = nlohmann::json::array(), sj = nlohmann::json::array();
  int64_t n_removed = 0;
  for (size_t b = 0; b < keep.size(); ++b) {
    nlohmann::json r = nlohmann::json::array();
    size_t k = 0;
    for (int u = 0; u < int(units[b]); ++u) {
      if (k < keep[b].size() && keep[b][k] == u) ++k;
      else r.push_back(u);
    }
    n_removed += int64_t(r.size());
    removed.push_back(r);
    before.push_back(units[b]);
    after.push_back(keep[b].size());
    if (heads) sj.push_back(scores[b]);  // a neuron list per block would make the log as large as the model
  }
  if (heads) remove_heads(m, keep);
  else remove_neurons(m, keep);
  const ModelCost cost = model_cost(m);
  nlohmann::json rec{{"score", o.score},
                     {"scope", o.global ? "global" : "layer"},
                     {"requested", requested},
                     {"removed_count", n_removed},
                     {"limited_by_min", n_removed < requested},
                     {heads ? "heads_before" : "mlp_before", before},
                     {heads ? "heads_after" : "mlp_after", after},
                     {"removed", removed},
                     {"params_before", params_before},
                     {"params_after", cost.params},
                     {"macs_before", macs_before},
                     {"macs_after", cost.macs}};
  if (heads) rec["scores"] = sj;
  if (n_removed < requested)
    std::fprintf(stderr, "vitkit: warning: %s removed %lld of the %lld requested: %s=%d stops the rest\n", pass,
                 (long long)n_removed, (long long)requested, min_key(o.unit), o.min_keep);
  return rec;
}

class PrunePass : public Pass {
 public:
  explicit PrunePass(Unit u) : unit_(u) {}
  std::string name() const override { return pass_name(unit_); }
  std::string summary() const override {
    return unit_ == Unit::Heads
               ? "remove attention heads (lowest scores first): smaller qkv and out_proj, per-block head counts"
               : "remove MLP neurons (lowest scores first): smaller fc1 and fc2, per-block MLP widths";
  }
  std::vector<PassKey> keys() const override { return prune_keys(unit_); }
  bool needs_calibration(const PassArgs& a) const override { return parse_options(unit_, a).score != "l2"; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext& ctx) const override {
    return prune_model(m, parse_options(unit_, a), ctx);
  }

 private:
  Unit unit_;
};

}  // namespace

std::unique_ptr<Pass> make_prune_heads_pass() { return std::make_unique<PrunePass>(Unit::Heads); }
std::unique_ptr<Pass> make_prune_mlp_pass() { return std::make_unique<PrunePass>(Unit::Neurons); }

}  // namespace vitkit

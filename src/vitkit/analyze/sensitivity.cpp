#include "vitkit/analyze/sensitivity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "vitkit/core/error.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/repr/int.h"
#include "vitkit/report/table.h"

namespace vitkit {

namespace {

using Keys = std::vector<std::pair<std::string, std::string>>;

double now_s() {
  using C = std::chrono::steady_clock;
  return std::chrono::duration<double>(C::now().time_since_epoch()).count();
}

// "x.yz" or "inf" / "nan".
std::string fmt_db(double db) {
  if (std::isinf(db)) return db > 0 ? "inf" : "-inf";
  if (std::isnan(db)) return "nan";
  return fmt_fixed(db, 2);
}

nlohmann::json db_json(double db) { return std::isfinite(db) ? nlohmann::json(db) : nlohmann::json(); }

// The spec's pass and its given keys.
PassSpec parsed(const std::string& spec, const std::string& flag) {
  try {
    PassSpec s = parse_pass_spec(spec);
    validate_pass_args(find_pass(s.name), s);
    return s;
  } catch (const UsageError& e) {
    throw UsageError(cat(flag, ": ", e.what()));
  }
}

// Sum over a unit's layers of signal and noise (as sums, not means).
void add_sqnr(SensitivityUnit& u, const CompareResult& r) {
  u.signal = u.noise = 0;
  for (const LayerSqnr& l : r.layers) {
    if (std::find(u.layers.begin(), u.layers.end(), l.name) == u.layers.end()) continue;
    u.signal += l.signal * double(l.values);
    u.noise += l.noise * double(l.values);
  }
}

// One unit: the pass on a copy of m restricted to the unit, compared with ref.
// Returns ref's top-1 (fraction).
double measure_unit(SensitivityUnit& u, const ViT& m, const ViT& ref, const Dataset& ds, const PassContext& ctx,
                  const SensitivityOptions& o) {
  const double t0 = now_s();
  std::unique_ptr<ViT> b = m.clone();
  apply_pass(*b, restricted_spec(o.pass, u.layers), ctx);
  u.low.clear();
  for (const LayerWidth& w : layer_widths(*b))
    if (std::find(u.layers.begin(), u.layers.end(), w.name) != u.layers.end()) u.low.push_back(w);
  pack_linears_for_inference(*b);
  CompareOptions co;
  co.batch = o.batch;
  co.name_a = "the model";
  co.name_b = "the model with " + u.name + " compressed";
  const CompareResult r = compare_models(ref, *b, ds, co);
  u.top1_diff = r.top1_diff_points();
  u.agreement = r.agreement;
  u.kl_mean = r.kl.mean;
  add_sqnr(u, r);
  u.seconds = now_s() - t0;
  return r.top1_a;
}

// Sort key: larger is more sensitive.
double sensitivity_key(const SensitivityUnit& u, SensitivityRank rank) {
  switch (rank) {
    case SensitivityRank::Kl: return u.kl_mean;
    case SensitivityRank::Top1: return -u.top1_diff;
    case SensitivityRank::Sqnr: {
      const double db = u.sqnr_db();
      return std::isnan(db) ? std::numeric_limits<double>::infinity() : -db;
    }
  }
  return 0;
}

// ---- Mixed precision helpers

struct PlanTotals {
  double bit_weights = 0;  // sum of weights * bits
  int64_t weights = 0, bytes = 0;
  double bits() const { return weights ? bit_weights / double(weights) : 0; }
};

// What moving unit u from the high state to the pass changes.
PlanTotals unit_delta(const SensitivityUnit& u, const std::map<std::string, LayerWidth>& high) {
  PlanTotals d;
  for (const LayerWidth& w : u.low) {
    const LayerWidth& h = high.at(w.name);
    d.bit_weights += double(w.weights) * (w.bits - h.bits);
    d.bytes += w.bytes - h.bytes;
  }
  return d;
}

double target_of(const PlanTotals& t, MixedTarget::Kind k) {
  return k == MixedTarget::Kind::Bits ? t.bits() : double(t.bytes);
}

void check_target(const MixedTarget& target, const PlanTotals& all_high, const PlanTotals& all_low) {
  const bool bits = target.kind == MixedTarget::Kind::Bits;
  const double lo = target_of(all_low, target.kind), hi = target_of(all_high, target.kind);
  const std::string flag = bits ? "--target-bits" : "--target-bytes";
  if (!(lo < hi))
    throw UsageError(cat(flag, ": the pass does not lower the ", bits ? "average weight bits" : "model bytes",
                         " below --high's (", lo, " with every unit at the pass, ", hi,
                         " with every unit high): give a lower-precision --pass or a higher --high"));
  const double eps = bits ? 1e-9 : 0.5;
  if (target.value < lo - eps || target.value > hi + eps)
    throw UsageError(cat(flag, " ", target.value, " is out of range: it must lie in ", bits ? fmt_fixed(lo, 3) : fmt_int(int64_t(lo)),
                         "..", bits ? fmt_fixed(hi, 3) : fmt_int(int64_t(hi)),
                         " (every unit at --pass .. every unit at --high)"));
}

// The low spec's keys for an override on a step of high's keys: low's own, and
// for each key high gives that low does not, low's default (so the layers get
// exactly low's spec).
Keys override_keys(const PassSpec& low, const PassSpec& high) {
  Keys keys = low.args;
  const Pass& pass = find_pass(low.name);
  const PassArgs args = validate_pass_args(pass, low);
  for (auto& [k, v] : high.args) {
    if (k == "layers" || args.given(k)) continue;
    std::string def;
    for (const PassKey& pk : pass.keys())
      if (pk.name == k) def = pk.default_value;
    if (def.empty())
      throw UsageError(cat("--high sets ", k, "=", v, ", which --pass '", low.text,
                           "' leaves unset: give ", k, " in --pass too"));
    keys.emplace_back(k, def);
  }
  return keys;
}

RecipeStep step_of(const PassSpec& s) {
  RecipeStep st;
  st.pass = s.name;
  st.keys = s.args;
  return st;
}

}  // namespace

// ---- Names

const char* to_string(SensitivityBy b) {
  switch (b) {
    case SensitivityBy::Layer: return "layer";
    case SensitivityBy::Kind: return "kind";
    case SensitivityBy::Block: return "block";
  }
  return "?";
}

const char* to_string(SensitivityRank r) {
  switch (r) {
    case SensitivityRank::Kl: return "kl";
    case SensitivityRank::Top1: return "top1";
    case SensitivityRank::Sqnr: return "sqnr";
  }
  return "?";
}

SensitivityBy parse_sensitivity_by(const std::string& s, const std::string& flag) {
  for (SensitivityBy b : {SensitivityBy::Layer, SensitivityBy::Kind, SensitivityBy::Block})
    if (s == to_string(b)) return b;
  throw UsageError(cat(flag, " '", s, "': give layer, kind or block"));
}

SensitivityRank parse_sensitivity_rank(const std::string& s, const std::string& flag) {
  for (SensitivityRank r : {SensitivityRank::Kl, SensitivityRank::Top1, SensitivityRank::Sqnr})
    if (s == to_string(r)) return r;
  throw UsageError(cat(flag, " '", s, "': give kl, top1 or sqnr"));
}

// ---- Widths

int weight_bits(const LinearRepr& r) {
  const std::string k = r.kind();
  if (k == "f32" || k == "f32_packed" || k == "round") return 32;
  if (k == "bf16" || k == "f16") return 16;
  if (auto* q = dynamic_cast<const IntLinear*>(&r)) return q->format().bits;
  throw Error(cat("weight bits: unknown representation '", k, "'"));
}

std::vector<LayerWidth> layer_widths(const ViT& m) {
  std::vector<LayerWidth> v;
  for (const Linear* l : m.linears())
    v.push_back({l->name, int64_t(l->in) * l->out, weight_bits(*l->repr), l->repr->file_bytes()});
  return v;
}

double average_bits(const std::vector<LayerWidth>& v) {
  double bw = 0;
  int64_t w = 0;
  for (const LayerWidth& l : v) bw += double(l.weights) * l.bits, w += l.weights;
  return w ? bw / double(w) : 0;
}

double SensitivityUnit::sqnr_db() const {
  if (noise == 0 && signal >= 0) return std::numeric_limits<double>::infinity();
  return 10 * std::log10(signal / noise);
}

// ---- Units and specs

std::vector<SensitivityUnit> sensitivity_units(const ViT& m, SensitivityBy by) {
  std::vector<SensitivityUnit> units;
  auto unit = [&](const std::string& name) -> SensitivityUnit& {
    for (auto& u : units)
      if (u.name == name) return u;
    units.push_back({});
    units.back().name = name;
    return units.back();
  };
  const std::vector<const Linear*> ls = m.linears();
  if (by == SensitivityBy::Kind) {  // the canonical kind order, whatever the model order
    for (LayerKind k : {LayerKind::Patch, LayerKind::Qkv, LayerKind::Proj, LayerKind::Fc1, LayerKind::Fc2,
                        LayerKind::Head})
      for (const Linear* l : ls)
        if (l->kind == k) unit(to_string(k));
  }
  for (const Linear* l : ls) {
    std::string name = l->name;
    if (by == SensitivityBy::Kind) name = to_string(l->kind);
    if (by == SensitivityBy::Block) {
      if (l->block < 0) continue;
      name = cat("block ", l->block);
    }
    SensitivityUnit& u = unit(name);
    u.layers.push_back(l->name);
    u.weights += int64_t(l->in) * l->out;
  }
  return units;
}

void check_sensitivity_pass(const std::string& spec, const std::string& flag) {
  const PassSpec s = parsed(spec, flag);
  const Pass& pass = find_pass(s.name);
  if (!pass.layers_select())
    throw UsageError(cat(flag, " '", spec, "': pass ", s.name,
                         " cannot be restricted to one unit (its layers= does not choose exactly the layers it "
                         "changes); sensitivity works with quantize, bf16 and f16"));
  for (auto& kv : s.args)
    if (kv.first == "layers")
      throw UsageError(cat(flag, " '", spec, "': leave out layers= (the study restricts the pass to each unit)"));
}

std::string restricted_spec(const std::string& spec, const std::vector<std::string>& layers) {
  const bool has_keys = spec.find(':') != std::string::npos && spec.back() != ':';
  return spec + (spec.find(':') == std::string::npos ? ":" : has_keys ? "," : "") + "layers=" +
         anchored_layers(layers);
}

void rank_units(std::vector<SensitivityUnit>& units, SensitivityRank rank) {
  // Top-1 moves in whole images: ties (common on few images) go by KL.
  std::stable_sort(units.begin(), units.end(), [&](const SensitivityUnit& a, const SensitivityUnit& b) {
    const double ka = sensitivity_key(a, rank), kb = sensitivity_key(b, rank);
    if (ka != kb || rank != SensitivityRank::Top1) return ka > kb;
    return a.kl_mean > b.kl_mean;
  });
}

// ---- The study

SensitivityResult run_sensitivity(const ViT& m, const Dataset& ds, const PassContext& ctx,
                                  const SensitivityOptions& o) {
  check_sensitivity_pass(o.pass);
  const double t0 = now_s();
  SensitivityResult r;
  r.pass = o.pass;
  r.data = ds.describe();
  r.by = o.by;
  r.rank = o.rank;
  r.images = ds.size();
  r.units = sensitivity_units(m, o.by);
  check(!r.units.empty(), "sensitivity: the model has no units to study by ", to_string(o.by));
  std::unique_ptr<ViT> ref = m.clone();
  pack_linears_for_inference(*ref);
  PassContext quiet = ctx;
  quiet.progress = false;
  for (size_t i = 0; i < r.units.size(); ++i) {
    SensitivityUnit& u = r.units[i];
    r.top1_ref = measure_unit(u, m, *ref, ds, quiet, o);
    if (o.progress)
      std::fprintf(stderr, "[%zu/%zu] %-40s KL %.3g  top-1 %+.2f  agree %.2f%%  SQNR %s dB  (%.1f s)\n", i + 1,
                   r.units.size(), u.name.c_str(), u.kl_mean, u.top1_diff, 100 * u.agreement,
                   fmt_db(u.sqnr_db()).c_str(), u.seconds);
  }
  rank_units(r.units, o.rank);
  r.seconds = now_s() - t0;
  return r;
}

nlohmann::json SensitivityResult::to_json() const {
  nlohmann::json units_j = nlohmann::json::array();
  for (size_t i = 0; i < units.size(); ++i) {
    const SensitivityUnit& u = units[i];
    nlohmann::json low = nlohmann::json::array();
    for (const LayerWidth& w : u.low) low.push_back({{"name", w.name}, {"bits", w.bits}, {"bytes", w.bytes}});
    units_j.push_back({{"rank", i + 1},
                       {"unit", u.name},
                       {"layers", u.layers},
                       {"weights", u.weights},
                       {"top1_diff_points", u.top1_diff},
                       {"agreement", u.agreement},
                       {"kl_mean", u.kl_mean},
                       {"sqnr_db", db_json(u.sqnr_db())},
                       {"seconds", u.seconds},
                       {"low", low}});
  }
  return {{"pass", pass}, {"by", to_string(by)}, {"rank_by", to_string(rank)}, {"data", data},
          {"images", images}, {"top1_ref", top1_ref}, {"seconds", seconds}, {"units", units_j}};
}

std::string SensitivityResult::text() const {
  Table t({"rank", "unit", "layers", "weights", "top-1 diff", "agreement %", "KL mean", "SQNR dB"});
  t.right_align({0, 2, 3, 4, 5, 6, 7});
  for (size_t i = 0; i < units.size(); ++i) {
    const SensitivityUnit& u = units[i];
    char kl[32];
    std::snprintf(kl, sizeof kl, "%.4g", u.kl_mean);
    t.add({std::to_string(i + 1), u.name, std::to_string(u.layers.size()), fmt_int(u.weights),
           fmt_fixed(u.top1_diff, 2), fmt_fixed(100 * u.agreement, 2), kl, fmt_db(u.sqnr_db())});
  }
  return t.text();
}

std::string SensitivityResult::csv() const {
  Table t({"rank", "unit", "layers", "weights", "top1_diff_points", "agreement", "kl_mean", "sqnr_db"});
  for (size_t i = 0; i < units.size(); ++i) {
    const SensitivityUnit& u = units[i];
    char kl[32];
    std::snprintf(kl, sizeof kl, "%.6g", u.kl_mean);
    t.add({std::to_string(i + 1), u.name, std::to_string(u.layers.size()), std::to_string(u.weights),
           fmt_fixed(u.top1_diff, 4), fmt_fixed(u.agreement, 6), kl, fmt_db(u.sqnr_db())});
  }
  return t.csv();
}

// ---- Mixed precision

Recipe mixed_recipe(const std::string& low_spec, const std::string& high_spec,
                    const std::vector<std::string>& low_layers, const std::string& description) {
  const PassSpec low = parsed(low_spec, "--pass");
  Recipe r;
  r.description = description;
  if (!high_spec.empty()) {
    const PassSpec high = parsed(high_spec, "--high");
    RecipeStep st = step_of(high);
    if (!low_layers.empty()) {
      RecipeOverride o;
      o.names = low_layers;
      if (low.name == high.name) o.keys = override_keys(low, high);
      else o.skip = true;
      st.overrides.push_back(o);
    }
    r.steps.push_back(st);
    if (low.name == high.name || low_layers.empty()) return parse_recipe(recipe_toml(r), "the mixed recipe");
  }
  if (low_layers.empty())
    throw UsageError("the mixed recipe would change nothing (no unit at the pass, --high none)");
  RecipeStep st = step_of(low);
  st.keys.emplace_back("layers", anchored_layers(low_layers));
  r.steps.push_back(st);
  return parse_recipe(recipe_toml(r), "the mixed recipe");
}

MixedPlan plan_mixed(const SensitivityResult& r, const std::vector<LayerWidth>& high, int64_t high_model_bytes,
                     const std::string& high_spec, const MixedTarget& target) {
  std::map<std::string, LayerWidth> by_name;
  PlanTotals t;
  for (const LayerWidth& w : high) {
    by_name[w.name] = w;
    t.bit_weights += double(w.weights) * w.bits;
    t.weights += w.weights;
  }
  t.bytes = high_model_bytes;
  PlanTotals all_low = t;
  for (const SensitivityUnit& u : r.units) {
    const PlanTotals d = unit_delta(u, by_name);
    all_low.bit_weights += d.bit_weights;
    all_low.bytes += d.bytes;
  }
  check_target(target, t, all_low);
  MixedPlan p;
  p.high_bits = t.bits(), p.low_bits = all_low.bits();
  p.high_bytes = t.bytes, p.low_bytes = all_low.bytes;
  // Least sensitive first, until the target is met.
  for (size_t i = r.units.size(); i-- > 0 && target_of(t, target.kind) > target.value;) {
    const SensitivityUnit& u = r.units[i];
    const PlanTotals d = unit_delta(u, by_name);
    t.bit_weights += d.bit_weights;
    t.bytes += d.bytes;
    p.low_units.insert(p.low_units.begin(), u.name);
    for (const LayerWidth& w : u.low) by_name[w.name] = w;
  }
  for (const LayerWidth& w : high) {
    p.layers.push_back(by_name.at(w.name));
    for (const SensitivityUnit& u : r.units)
      if (std::count(p.low_units.begin(), p.low_units.end(), u.name) &&
          std::count(u.layers.begin(), u.layers.end(), w.name))
        p.low_layers.push_back(w.name);
  }
  p.bits = t.bits();
  p.bytes = t.bytes;
  const std::string what = target.kind == MixedTarget::Kind::Bits ? cat("average weight bits <= ", target.value)
                                                                  : cat("model bytes <= ", int64_t(target.value));
  if (high_spec.empty() && p.low_layers.empty()) return p;  // nothing to do: no recipe
  p.recipe = mixed_recipe(r.pass, high_spec, p.low_layers,
                          cat("mixed precision by vitkit analyze sensitivity: ", r.pass, " on ", p.low_units.size(),
                              " of ", r.units.size(), " units by ", to_string(r.by), ", ",
                              high_spec.empty() ? "the rest as they were" : "the rest " + high_spec, "; ", what));
  return p;
}

}  // namespace vitkit

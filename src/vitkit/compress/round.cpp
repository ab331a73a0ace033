#include "vitkit/compress/round.h"

#include <cmath>
#include <cstring>
#include <regex>

#include "vitkit/model/cost.h"
#include "vitkit/core/error.h"
#include "vitkit/kernels/round.h"

namespace vitkit {

RoundActivationsRepr::RoundActivationsRepr(const float* W, int out, int in, int decimals)
    : w_(Tensor::empty({out, in})), out_(out), in_(in), decimals_(decimals) {
  kernels::pow10_exact(decimals);  // validates
  std::memcpy(w_.f32(), W, sizeof(float) * size_t(out) * size_t(in));
}

void RoundActivationsRepr::forward(const float* X, float* Y, int64_t M, const float* bias, Activation act,
                                   bool accumulate) const {
  Tensor xr = Tensor::empty({M, in_});  // (M, in)
  kernels::round_decimal(X, xr.f32(), M * in_, decimals_);
  kernels::gemm(false, true, M, out_, in_, 1.f, xr.f32(), in_, w_.f32(), in_, accumulate ? 1.f : 0.f, Y, out_, bias,
                act);
}

std::vector<Linear*> round_targets(ViT& m, const std::string& layers) {
  std::regex re;
  if (!layers.empty()) {
    try {
      re = std::regex(layers, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw UsageError(cat("round: layers=", layers, " is not a valid regular expression (", e.what(), ")"));
    }
  }
  std::vector<Linear*> v;
  for (Linear* l : m.linears()) {
    const bool block_layer = l->block >= 0;  // qkv, out_proj, fc1, fc2
    if (block_layer || (!layers.empty() && std::regex_search(l->name, re))) v.push_back(l);
  }
  return v;
}

MacShare mac_share(const ViT& m, const std::vector<std::string>& names) {
  MacShare s;
  const std::vector<LayerCost> costs = layer_costs(m.cfg);
  for (const LayerCost& c : costs) s.total += c.macs;
  for (const std::string& n : names) {
    const Linear* l = nullptr;
    for (const Linear* x : m.linears())
      if (x->name == n) l = x;
    check(l != nullptr, "no layer named '", n, "'");
    for (const LayerCost& c : costs)
      if (c.kind == to_string(l->kind) && c.block == l->block) s.covered += c.macs;
  }
  return s;
}

Linear* find_linear(ViT& m, const std::string& name) {
  for (Linear* l : m.linears())
    if (l->name == name) return l;
  return nullptr;
}

// Rounds n values in place; returns how many changed and how many became zero.
static std::pair<int64_t, int64_t> round_in_place(float* v, int64_t n, int d) {
  int64_t changed = 0, zeros = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float r = kernels::round_decimal(v[i], d);
    changed += r != v[i] || std::signbit(r) != std::signbit(v[i]);
    zeros += r == 0.f;
    v[i] = r;
  }
  return {changed, zeros};
}

nlohmann::json round_model(ViT& m, const RoundOptions& o) {
  if (o.decimals < 0 || o.decimals > kernels::kMaxDecimals)
    throw UsageError(cat("round: decimals=", o.decimals, " is outside 0..", kernels::kMaxDecimals));
  const std::vector<Linear*> targets = round_targets(m, o.layers);
  int64_t weights = 0, changed = 0, zeros = 0, biases = 0;
  nlohmann::json names = nlohmann::json::array();
  std::vector<std::string> name_list;
  for (const Linear* l : targets)
    if (l->repr)
      fail("round: layer ", l->name, " already has a '", l->repr->kind(),
           "' representation; apply round before the pass that made it");
  for (Linear* l : targets) {
    const int64_t n = int64_t(l->out) * l->in;
    auto [c, z] = round_in_place(m.W(*l), n, o.decimals);
    weights += n;
    changed += c;
    zeros += z;
    if (o.biases && l->b >= 0) {
      round_in_place(m.B(*l), l->out, o.decimals);
      biases += l->out;
    }
    if (o.activations) l->repr = std::make_shared<RoundActivationsRepr>(m.W(*l), l->out, l->in, o.decimals);
    names.push_back(l->name);
    name_list.push_back(l->name);
  }
  const MacShare macs = mac_share(m, name_list);
  return {{"decimals", o.decimals},
          {"activations", o.activations},
          {"biases", o.biases},
          {"layers", names},
          {"weights", weights},
          {"weights_changed", changed},
          {"weights_zero", zeros},
          {"biases_rounded", biases},
          {"macs_covered", macs.covered},
          {"macs_total", macs.total},
          {"macs_fraction", macs.fraction()}};
}

void restore_round(ViT& m, const nlohmann::json& rec) {
  const int d = rec.at("decimals").get<int>();
  check(d >= 0 && d <= kernels::kMaxDecimals, "decimals ", d, " is outside 0..", kernels::kMaxDecimals);
  if (!rec.at("activations").get<bool>()) return;  // the rounded weights are in the file
  for (const auto& n : rec.at("layers")) {
    const std::string name = n.get<std::string>();
    Linear* l = find_linear(m, name);
    check(l != nullptr, "no layer named '", name, "' in the model");
    l->repr = std::make_shared<RoundActivationsRepr>(m.W(*l), l->out, l->in, d);
  }
}

namespace {

class RoundPass : public Pass {
 public:
  std::string name() const override { return "round"; }
  std::string summary() const override {
    return "round weights (and optionally input activations) of every block's qkv, out_proj, fc1, fc2 to d "
           "decimals, halves away from zero";
  }
  std::vector<PassKey> keys() const override {
    using T = PassKey::Type;
    return {
        PassKey("decimals", T::Int, "", "decimals kept").range(0, kernels::kMaxDecimals).require(),
        PassKey("activations", T::Bool, "false", "also round the layers' inputs at run time"),
        PassKey("layers", T::Regex, "", "more layers: regex searched in layer names, e.g. conv_proj|heads.head"),
        PassKey("biases", T::Bool, "false", "also round the biases"),
    };
  }
  nlohmann::json apply(ViT& m, const PassArgs& a) const override {
    RoundOptions o;
    o.decimals = int(a.integer("decimals"));
    o.activations = a.boolean("activations");
    o.biases = a.boolean("biases");
    if (a.given("layers")) o.layers = a.text("layers");
    return round_model(m, o);
  }
  void restore(ViT& m, const nlohmann::json& rec) const override { restore_round(m, rec); }
};

}  // namespace

std::unique_ptr<Pass> make_round_pass() { return std::make_unique<RoundPass>(); }

}  // namespace vitkit

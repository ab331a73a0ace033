#include "vitkit/compress/round.h"

#include <cmath>
#include <regex>

#include "vitkit/core/error.h"
#include "vitkit/kernels/round.h"
#include "vitkit/model/cost.h"
#include "vitkit/repr/round.h"

namespace vitkit {

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
  const std::vector<LayerCost> costs = layer_costs(m);
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

// Counts of rounding n values: how many changed and how many became zero.
static std::pair<int64_t, int64_t> count_rounding(const float* before, const float* after, int64_t n) {
  int64_t changed = 0, zeros = 0;
  for (int64_t i = 0; i < n; ++i) {
    changed += after[i] != before[i] || std::signbit(after[i]) != std::signbit(before[i]);
    zeros += after[i] == 0.f;
  }
  return {changed, zeros};
}

// The layer's weight when round may take it: dense f32, or already rounded
// without its inputs (rounding again composes). Refused otherwise.
static const float* roundable_weight(const Linear& l, std::vector<float>& scratch) {
  const auto* r = dynamic_cast<const RoundLinear*>(l.repr.get());
  if (l.repr->kind() != "f32" && !(r && !r->inputs()))
    fail("round: ", l.describe(), " already has a '", l.repr->kind(), "' representation (", l.repr->describe(),
         "); apply round before the pass that made it");
  return l.repr->plain_weight(scratch);
}

nlohmann::json round_model(ViT& m, const RoundOptions& o) {
  if (o.decimals < 0 || o.decimals > kernels::kMaxDecimals)
    throw UsageError(cat("round: decimals=", o.decimals, " is outside 0..", kernels::kMaxDecimals));
  const std::vector<Linear*> targets = round_targets(m, o.layers);
  std::vector<float> scratch;
  for (const Linear* l : targets) roundable_weight(*l, scratch);  // every layer checked before any changes
  int64_t weights = 0, changed = 0, zeros = 0, biases = 0;
  nlohmann::json names = nlohmann::json::array();
  std::vector<std::string> name_list;
  for (Linear* l : targets) {
    const int64_t n = int64_t(l->out) * l->in;
    Tensor bias = l->repr->bias_tensor();
    if (o.biases && bias.defined()) {
      kernels::round_decimal(bias.f32(), bias.f32(), l->out, o.decimals);
      biases += l->out;
    }
    const float* w = roundable_weight(*l, scratch);
    auto r = std::make_unique<RoundLinear>(w, l->in, l->out, bias, o.decimals, o.activations);
    auto [c, z] = count_rounding(w, r->weight(), n);
    weights += n;
    changed += c;
    zeros += z;
    m.set_repr(*l, std::move(r));
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

namespace {

class RoundPass : public Pass {
 public:
  std::string name() const override { return "round"; }
  std::string summary() const override {
    return "round weights (and optionally input activations) of every block's qkv, out_proj, fc1, fc2 to d "
           "decimals, halves away from zero (stored as integer codes)";
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
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext&) const override {
    RoundOptions o;
    o.decimals = int(a.integer("decimals"));
    o.activations = a.boolean("activations");
    o.biases = a.boolean("biases");
    if (a.given("layers")) o.layers = a.text("layers");
    return round_model(m, o);
  }
};

}  // namespace

std::unique_ptr<Pass> make_round_pass() { return std::make_unique<RoundPass>(); }

}  // namespace vitkit

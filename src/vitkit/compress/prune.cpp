#include "vitkit/compress/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <regex>

#include "vitkit/core/error.h"
#include "vitkit/core/rng.h"
#include "vitkit/repr/sparse.h"

namespace vitkit {

namespace {

struct PruneOptions {
  double sparsity = 0;
  bool random = false, global = false;
  std::string layers;  // regex; "" the encoder's linear layers
};

PruneOptions parse_options(const PassArgs& a) {
  PruneOptions o;
  o.sparsity = a.real("sparsity");
  const std::string method = a.text("method"), scope = a.text("scope");
  if (method != "l1" && method != "random")
    throw UsageError(cat("prune: unknown method '", method, "' (l1 or random)"));
  if (scope != "layer" && scope != "global") throw UsageError(cat("prune: unknown scope '", scope, "' (layer or global)"));
  o.random = method == "random";
  o.global = scope == "global";
  o.layers = a.given("layers") ? a.text("layers") : "";
  return o;
}

// One weight of a chosen layer: |w| (l1) or a random key (random), its layer, its index.
struct Candidate {
  double key;
  uint32_t layer;
  int64_t index;
  bool operator<(const Candidate& c) const {
    return key != c.key ? key < c.key : layer != c.layer ? layer < c.layer : index < c.index;
  }
};

nlohmann::json prune_model(ViT& m, const PruneOptions& o, const PassContext& ctx) {
  std::vector<Linear*> ls;
  const std::regex re(o.layers.empty() ? "." : o.layers, std::regex::ECMAScript);
  for (Linear* l : m.linears())
    if (o.layers.empty() ? l->block >= 0 : std::regex_search(l->name, re)) ls.push_back(l);
  if (ls.empty()) throw UsageError(cat("prune: layers=", o.layers, " matches no linear layer"));
  // Each layer's weight and which of them are already pruned (a sparse layer's zeros).
  std::vector<std::vector<float>> w(ls.size());
  std::vector<std::vector<uint8_t>> pruned(ls.size());
  int64_t total = 0;
  for (size_t i = 0; i < ls.size(); ++i) {
    const Linear& l = *ls[i];
    const std::string kind = l.repr->kind();
    if (kind != "f32" && kind != "sparse")
      fail("prune: ", l.describe(), " is '", kind, "' (", l.repr->describe(),
           "); prune before quantizing or rounding (put prune first in the recipe)");
    std::vector<float> scratch;
    const float* p = l.repr->plain_weight(scratch);
    const int64_t n = int64_t(l.in) * l.out;
    w[i].assign(p, p + n);
    pruned[i].assign(size_t(n), 0);
    if (kind == "sparse") {
      const auto& s = static_cast<const SparseLinear&>(*l.repr);
      for (int r = 0; r < l.out; ++r)
        for (int c = 0; c < l.in; ++c) pruned[i][size_t(r) * l.in + c] = !s.kept(r, c);
    }
    total += n;
  }
  // Candidates: every weight not pruned yet, keyed; the lowest keys go first.
  Rng rng(ctx.seed * 0x9E3779B97F4A7C15ull + 0x5EED);
  std::vector<std::vector<Candidate>> groups(o.global ? 1 : ls.size());
  std::vector<int64_t> already(groups.size(), 0), size(groups.size(), 0);
  for (size_t i = 0; i < ls.size(); ++i) {
    const size_t g = o.global ? 0 : i;
    for (int64_t k = 0; k < int64_t(w[i].size()); ++k) {
      ++size[g];
      if (pruned[i][size_t(k)]) {
        ++already[g];
        continue;
      }
      groups[g].push_back({o.random ? rng.uniform_double() : std::fabs(double(w[i][size_t(k)])), uint32_t(i), k});
    }
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t target = std::llround(o.sparsity * double(size[g]));
    if (target < already[g])
      throw UsageError(cat("prune: sparsity=", o.sparsity, " is below ",
                           o.global ? std::string("the chosen layers'") : ls[g]->describe() + "'s",
                           " current sparsity ", double(already[g]) / double(size[g]),
                           " (pruned weights stay pruned)"));
    const int64_t more = target - already[g];
    std::nth_element(groups[g].begin(), groups[g].begin() + more, groups[g].end());
    for (int64_t k = 0; k < more; ++k) {
      const Candidate& c = groups[g][size_t(k)];
      pruned[c.layer][size_t(c.index)] = 1;
    }
  }
  nlohmann::json layers = nlohmann::json::array();
  int64_t zero = 0, bytes_before = 0, bytes_after = 0;
  for (size_t i = 0; i < ls.size(); ++i) {
    Linear& l = *ls[i];
    // Kept weights that happen to be exactly zero stay kept (the mask is the structure, not the value).
    std::vector<uint8_t> keep(pruned[i].size());
    int64_t z = 0;
    for (size_t k = 0; k < keep.size(); ++k) {
      keep[k] = !pruned[i][k];
      if (pruned[i][k]) w[i][k] = 0.f, ++z;
    }
    zero += z;
    bytes_before += l.repr->file_bytes();
    auto r = std::make_unique<SparseLinear>(w[i].data(), keep.data(), l.in, l.out,
                                            l.has_bias ? l.repr->bias_tensor().clone() : Tensor());
    bytes_after += r->file_bytes();
    m.set_repr(l, std::move(r));
    layers.push_back({{"name", l.name}, {"sparsity", double(z) / double(w[i].size())}});
  }
  return {{"method", o.random ? "random" : "l1"},
          {"scope", o.global ? "global" : "layer"},
          {"sparsity", double(zero) / double(total)},
          {"weights", total},
          {"pruned", zero},
          {"bytes_before", bytes_before},
          {"bytes_after", bytes_after},
          {"layers", layers}};
}

class PrunePass : public Pass {
 public:
  std::string name() const override { return "prune"; }
  std::string summary() const override {
    return "unstructured sparsity: the smallest (l1) or random weights zeroed and dropped (sparse layers, masks kept "
           "through fine-tuning, bitmap + values in files)";
  }
  std::vector<PassKey> keys() const override {
    using T = PassKey::Type;
    return {
        PassKey("sparsity", T::Float, "", "share of the weights pruned (0 <= S < 1)").range(0, 0.999).require(),
        PassKey("method", T::String, "l1", "l1 (smallest |w| first) or random (seeded by --seed)"),
        PassKey("scope", T::String, "layer", "layer (S of each layer) or global (S of all chosen layers together)"),
        PassKey("layers", T::Regex, "",
                "only the layers whose name matches (default: every encoder block's qkv, out_proj, fc1, fc2)"),
    };
  }
  bool needs_calibration(const PassArgs& a) const override {
    parse_options(a);  // validates
    return false;
  }
  bool layers_select() const override { return true; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext& ctx) const override {
    return prune_model(m, parse_options(a), ctx);
  }
};

}  // namespace

std::unique_ptr<Pass> make_prune_pass() { return std::make_unique<PrunePass>(); }

}  // namespace vitkit

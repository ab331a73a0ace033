#include "vitkit/compress/quantize.h"

#include <map>
#include <regex>

#include "vitkit/compress/calibrate.h"
#include "vitkit/core/error.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/int.h"

namespace vitkit {

namespace {

using kernels::ScaleGranularity;

struct QuantizeOptions {
  IntFormat format;
  bool static_inputs = false;
  Calibrator calib;
  std::string layers;  // regex; "" every linear layer
};

QuantizeOptions options(const PassArgs& a) {
  QuantizeOptions o;
  IntFormat& f = o.format;
  f.bits = int(a.integer("bits"));
  const std::string g = a.text("granularity");
  if (g != "tensor" && g != "channel" && g != "group")
    throw UsageError(cat("quantize: granularity=", g, " is not tensor, channel or group"));
  f.granularity = g == "tensor" ? ScaleGranularity::Tensor : g == "channel" ? ScaleGranularity::Channel
                                                                          : ScaleGranularity::Group;
  if (a.given("group") && f.granularity != ScaleGranularity::Group)
    throw UsageError("quantize: group=G needs granularity=group");
  if (f.granularity == ScaleGranularity::Group) {
    if (!a.given("group")) throw UsageError("quantize: granularity=group needs group=G (inputs per scale)");
    f.group = a.integer("group");
  }
  f.symmetric = a.boolean("sym");
  f.abits = int(a.integer("abits"));
  if (f.abits == 1) throw UsageError("quantize: abits=1 is not a width (2..16, or 0 for f32 inputs)");
  const std::string act = a.text("act");
  if (act != "dynamic" && act != "static") throw UsageError(cat("quantize: act=", act, " is not dynamic or static"));
  o.static_inputs = act == "static";
  if (o.static_inputs && f.abits == 0) throw UsageError("quantize: act=static needs input bits (abits=0 keeps f32)");
  if (a.given("calib") && !o.static_inputs) throw UsageError("quantize: calib= is for act=static");
  o.calib = Calibrator::parse(a.text("calib"));
  if (a.given("layers")) o.layers = a.text("layers");
  return o;
}

std::vector<Linear*> targets(ViT& m, const std::string& layers) {
  std::vector<Linear*> v;
  const std::regex re(layers.empty() ? "." : layers, std::regex::ECMAScript);
  for (Linear* l : m.linears())
    if (std::regex_search(l->name, re)) v.push_back(l);
  if (v.empty()) throw UsageError(cat("quantize: layers=", layers, " matches no layer"));
  for (const Linear* l : v) {
    if (l->repr->kind() != "f32" && l->repr->kind() != "f32_packed")
      fail("quantize: ", l->describe(), " already has a '", l->repr->kind(), "' representation (",
           l->repr->describe(), "); quantize converts dense f32 layers");
  }
  return v;
}

// Each target layer's input statistics over the calibration images, with the
// model as it is (float): moments, then a histogram when the calibrator needs one.
std::map<std::string, ActivationStats> input_stats(const ViT& m, const std::vector<Linear*>& ls, const PassContext& ctx,
                                                   bool histogram) {
  std::map<std::string, ActivationStats> stats;
  for (const Linear* l : ls) stats[l->name];
  for (int pass = 0; pass < (histogram ? 2 : 1); ++pass) {
    ForwardHooks hooks;
    hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
      auto it = stats.find(l.name);
      if (it == stats.end()) return;
      if (pass == 0) it->second.add_moments(X, rows * l.in);
      else it->second.add_histogram(X, rows * l.in);
    };
    vit_predict(m, ctx.calib, 0, &hooks);
  }
  return stats;
}

nlohmann::json quantize_model(ViT& m, const QuantizeOptions& o, const PassContext& ctx) {
  const std::vector<Linear*> ls = targets(m, o.layers);
  for (const Linear* l : ls) o.format.validate(l->in);  // every layer checked before any changes
  std::map<std::string, ActivationStats> stats;
  if (o.static_inputs) stats = input_stats(m, ls, ctx, o.calib.needs_histogram());
  nlohmann::json layers = nlohmann::json::array(), ranges = nlohmann::json::object();
  int64_t weights = 0, bytes_before = 0, bytes_after = 0, on_kernels = 0;
  std::vector<float> scratch;
  for (Linear* l : ls) {
    IntFormat f = o.format;
    if (o.static_inputs) {
      const QuantRange r = calibrate(stats.at(l->name), o.calib, f.abits);
      f.static_inputs = true;
      f.in_scale = r.scale;
      f.in_zero = r.zero;
      const ActivationStats& s = stats.at(l->name);
      ranges[l->name] = {{"lo", r.lo}, {"hi", r.hi}, {"min", s.min()}, {"max", s.max()}, {"scale", r.scale},
                         {"zero", r.zero}};
    }
    bytes_before += l->repr->file_bytes();
    auto r = std::make_unique<IntLinear>(l->repr->plain_weight(scratch), l->in, l->out, l->repr->bias_tensor(), f);
    on_kernels += r->on_integer_kernels();
    bytes_after += r->file_bytes();
    m.set_repr(*l, std::move(r));
    layers.push_back(l->name);
    weights += int64_t(l->in) * l->out;
  }
  nlohmann::json rec{{"layers", layers},
                     {"format", o.format.to_json()},
                     {"weights", weights},
                     {"bytes_before", bytes_before},
                     {"bytes_after", bytes_after},
                     {"layers_on_integer_kernels", on_kernels}};
  if (o.static_inputs) {
    rec["calibrator"] = o.calib.name();
    rec["input_ranges"] = ranges;
  }
  return rec;
}

class QuantizePass : public Pass {
 public:
  std::string name() const override { return "quantize"; }
  std::string summary() const override {
    return "linear layers to b-bit integer weights (scales per channel, tensor or group; symmetric or zero points) "
           "and b-bit inputs (dynamic per token, or static from --data/--calib); 8 bits run on integer kernels";
  }
  std::vector<PassKey> keys() const override {
    using T = PassKey::Type;
    return {
        PassKey("bits", T::Int, "8", "weight bits").range(2, 16),
        PassKey("granularity", T::String, "channel", "weight scales: tensor, channel (per output) or group"),
        PassKey("group", T::Int, "", "granularity=group: inputs per scale (must divide every layer's inputs)")
            .range(1, 1 << 20),
        PassKey("sym", T::Bool, "true", "symmetric weights (false: zero points)"),
        PassKey("abits", T::Int, "8", "input bits (0: inputs stay f32, weight-only)").range(0, 16),
        PassKey("act", T::String, "dynamic", "input scales: dynamic (per token) or static (calibrated)"),
        PassKey("calib", T::String, "minmax",
                "act=static: minmax, sigma:K, percentile:P, mse or entropy (TensorRT's KL)"),
        PassKey("layers", T::Regex, "", "only the layers whose name matches (default: every linear layer)"),
    };
  }
  bool needs_calibration(const PassArgs& a) const override { return a.text("act") == "static"; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext& ctx) const override {
    return quantize_model(m, options(a), ctx);
  }
};

}  // namespace

std::unique_ptr<Pass> make_quantize_pass() { return std::make_unique<QuantizePass>(); }

}  // namespace vitkit

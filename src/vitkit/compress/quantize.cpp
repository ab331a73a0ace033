#include "vitkit/compress/quantize.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>

#include "vitkit/compress/calibrate.h"
#include "vitkit/core/error.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/int.h"
#include "vitkit/repr/lowrank.h"

namespace vitkit {

namespace {

using kernels::ScaleGranularity;

struct QuantizeOptions {
  IntFormat format;
  bool fixed = false;  // format=fixed: frac / afrac / bias frac below, -1 derived per layer
  int frac = -1, afrac = -1, bfrac = -1;
  bool static_inputs = false;
  Calibrator calib;
  std::string layers;  // regex; "" every linear layer
  bool needs_data = false;
  bool attention = false;  // QK^T and P.V in integers too, in the blocks whose qkv is quantized
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
  // group=G alone means granularity=group.
  if (a.given("group") && !a.given("granularity")) f.granularity = ScaleGranularity::Group;
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
  try {
    o.calib = Calibrator::parse(a.text("calib"));
  } catch (const UsageError& e) {
    throw UsageError(cat("quantize: ", e.what()));
  }
  if (a.given("layers")) o.layers = a.text("layers");
  const std::string format = a.text("format");
  if (format != "int" && format != "fixed") throw UsageError(cat("quantize: format=", format, " is not int or fixed"));
  o.fixed = format == "fixed";
  for (const char* k : {"frac", "afrac", "bfrac"})
    if (a.given(k) && !o.fixed) throw UsageError(cat("quantize: ", k, "= is for format=fixed"));
  if (o.fixed) {
    if (a.given("granularity") && f.granularity != ScaleGranularity::Tensor)
      throw UsageError("quantize: format=fixed has one scale 2^-frac per layer (granularity=tensor)");
    if (!f.symmetric) throw UsageError("quantize: format=fixed has no zero points (sym=true)");
    if (a.given("act") && !o.static_inputs)
      throw UsageError("quantize: format=fixed quantizes inputs to a fixed point (static), not act=dynamic");
    f.granularity = ScaleGranularity::Tensor;
    if (a.given("frac")) o.frac = int(a.integer("frac"));
    if (a.given("afrac")) o.afrac = int(a.integer("afrac"));
    if (a.given("bfrac")) o.bfrac = int(a.integer("bfrac"));
    if (o.frac > f.bits) throw UsageError(cat("quantize: frac=", o.frac, " is more than bits=", f.bits));
    if (o.afrac > f.abits) throw UsageError(cat("quantize: afrac=", o.afrac, " is more than abits=", f.abits));
    if (o.afrac >= 0 && f.abits == 0) throw UsageError("quantize: afrac= needs input bits (abits > 0)");
    o.static_inputs = f.abits > 0;
    // Calibration only when the inputs' frac must be found from data.
    o.needs_data = o.static_inputs && o.afrac < 0;
  } else {
    o.needs_data = o.static_inputs;
  }
  o.attention = a.boolean("attention");
  if (o.attention && f.abits == 0) throw UsageError("quantize: attention=true needs input bits (abits > 0)");
  if (a.given("calib") && !o.needs_data)
    throw UsageError("quantize: calib= is for act=static (or format=fixed without afrac=)");
  return o;
}

// The largest frac (0..bits) at which amax still fits <bits, frac>: bits - 1
// minus the integer bits amax needs (floor(log2 amax) + 1).
int frac_for(double amax, int bits) {
  if (!(amax > 0)) return bits;
  const int k = int(std::floor(std::log2(amax))) + 1;
  return std::clamp(bits - 1 - k, 0, bits);
}

// A layer's format: granularity=group on a layer of fewer inputs than the
// group is one scale per row, i.e. per channel (the patch layer of a small
// model, 16 inputs, under group=32).
IntFormat format_for(const IntFormat& f, int in) {
  IntFormat g = f;
  if (f.granularity == ScaleGranularity::Group && in < f.group) {
    g.granularity = ScaleGranularity::Channel;
    g.group = 0;
  }
  return g;
}

const LowRankLinear* low_rank(const Linear& l) { return dynamic_cast<const LowRankLinear*>(l.repr.get()); }
// A low-rank layer whose factors are both dense f32 (quantize's to convert).
bool dense_factors(const Linear& l) {
  const LowRankLinear* lr = low_rank(l);
  if (!lr) return false;
  for (const LinearRepr* f : {&lr->down(), &lr->up()})
    if (f->kind() != "f32" && f->kind() != "f32_packed")
      fail("quantize: ", l.describe(), "'s factors are already '", f->kind(), "' (", f->describe(), ")");
  return true;
}

std::vector<Linear*> targets(ViT& m, const std::string& layers) {
  std::vector<Linear*> v;
  const std::regex re(layers.empty() ? "." : layers, std::regex::ECMAScript);
  for (Linear* l : m.linears())
    if (std::regex_search(l->name, re)) v.push_back(l);
  if (v.empty()) throw UsageError(cat("quantize: layers=", layers, " matches no layer"));
  for (const Linear* l : v) {
    if (dense_factors(*l)) continue;
    if (l->repr->kind() != "f32" && l->repr->kind() != "f32_packed")
      fail("quantize: ", l->describe(), " already has a '", l->repr->kind(), "' representation (",
           l->repr->describe(), "); quantize converts dense f32 layers and the f32 factors of low-rank ones");
  }
  return v;
}

// The quantized pieces of a layer: itself, or a low-rank layer's two factors,
// each with the key its statistics go under ("NAME", "NAME.down", "NAME.up").
struct Piece {
  std::string key;
  const LinearRepr* repr;
  int in, out;
};
std::vector<Piece> pieces(const Linear& l) {
  if (const LowRankLinear* lr = low_rank(l))
    return {{l.name + ".down", &lr->down(), l.in, lr->rank()}, {l.name + ".up", &lr->up(), lr->rank(), l.out}};
  return {{l.name, l.repr.get(), l.in, l.out}};
}

// Each target layer's input statistics over the calibration images, with the
// model as it is (float): moments, then a histogram when the calibrator needs one.
std::map<std::string, ActivationStats> input_stats(const ViT& m, const std::vector<Linear*>& ls, const PassContext& ctx,
                                                   bool histogram) {
  std::map<std::string, ActivationStats> stats;
  for (const Linear* l : ls)
    for (const Piece& p : pieces(*l)) stats[p.key];
  std::vector<float> z;  // a low-rank layer's bottleneck, the up factor's input
  for (int pass = 0; pass < (histogram ? 2 : 1); ++pass) {
    ForwardHooks hooks;
    hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
      if (!stats.count(l.name) && !stats.count(l.name + ".down")) return;
      for (const Piece& p : pieces(l)) {
        const float* in = X;
        if (p.key != l.name && p.key == l.name + ".up") {
          z.resize(size_t(rows) * size_t(p.in));
          low_rank(l)->down().forward(X, z.data(), rows, Activation::None, false);
          in = z.data();
        }
        ActivationStats& s = stats.at(p.key);
        if (pass == 0) s.add_moments(in, rows * p.in);
        else s.add_histogram(in, rows * p.in);
      }
    };
    vit_predict(m, ctx.calib, 0, &hooks);
  }
  return stats;
}

nlohmann::json quantize_model(ViT& m, const QuantizeOptions& o, const PassContext& ctx) {
  const std::vector<Linear*> ls = targets(m, o.layers);
  for (const Linear* l : ls) {  // every layer checked before any changes
    for (const Piece& p : pieces(*l)) {
      try {
        format_for(o.format, p.in).validate(p.in);
      } catch (const Error& e) {
        throw UsageError(cat("quantize: ", p.key, " (", to_string(l->kind), ", ", p.in, " inputs): ", e.what(),
                             "; leave it out with layers=REGEX or give it its own group in a recipe override"));
      }
    }
  }
  std::map<std::string, ActivationStats> stats;
  if (o.needs_data) stats = input_stats(m, ls, ctx, o.calib.needs_histogram());
  nlohmann::json layers = nlohmann::json::array(), ranges = nlohmann::json::object();
  int64_t weights = 0, bytes_before = 0, bytes_after = 0, on_kernels = 0;
  std::vector<float> scratch;
  nlohmann::json per_channel = nlohmann::json::array();  // group layers with no more inputs than G
  // One piece (a layer, or a low-rank layer's factor) as integers.
  auto quantize_piece = [&](const Piece& p) {
    IntFormat f = format_for(o.format, p.in);
    if (f.granularity != o.format.granularity) per_channel.push_back(p.key);
    const float* w = p.repr->plain_weight(scratch);
    if (o.fixed) {
      double amax = 0;
      for (int64_t i = 0; i < int64_t(p.in) * p.out; ++i) amax = std::max(amax, double(std::fabs(w[i])));
      f.frac = o.frac >= 0 ? o.frac : frac_for(amax, f.bits);
    }
    if (o.static_inputs) {
      f.static_inputs = true;
      if (o.fixed) {  // <abits, afrac>: scale 2^-afrac, the signed codes offset by 2^(abits-1)
        f.afrac = o.afrac;
        if (f.afrac < 0) {
          const QuantRange r = calibrate(stats.at(p.key), o.calib, f.abits);
          f.afrac = frac_for(std::max(-r.lo, r.hi), f.abits);
        }
        f.in_scale = std::ldexp(1.f, -f.afrac);
        f.in_zero = 1 << (f.abits - 1);
        ranges[p.key] = {{"frac", f.frac}, {"afrac", f.afrac}};
      } else {
        const QuantRange r = calibrate(stats.at(p.key), o.calib, f.abits);
        f.in_scale = r.scale;
        f.in_zero = r.zero;
        const ActivationStats& s = stats.at(p.key);
        ranges[p.key] = {{"lo", r.lo}, {"hi", r.hi}, {"min", s.min()}, {"max", s.max()}, {"scale", r.scale},
                         {"zero", r.zero}};
      }
    } else if (o.fixed) {
      ranges[p.key] = {{"frac", f.frac}};
    }
    // The bias on the accumulator's grid (weight frac + input frac) unless given.
    if (o.fixed && p.repr->bias()) f.bias_frac = o.bfrac >= 0 ? o.bfrac : f.frac + std::max(f.afrac, 0);
    auto r = std::make_unique<IntLinear>(w, p.in, p.out, p.repr->bias_tensor(), f);
    on_kernels += r->on_integer_kernels();
    weights += int64_t(p.in) * p.out;
    return r;
  };
  for (Linear* l : ls) {
    bytes_before += l->repr->file_bytes();
    if (auto* lr = dynamic_cast<LowRankLinear*>(l->repr.get())) {  // the factors quantized, not their product
      const std::vector<Piece> ps = pieces(*l);
      auto down = quantize_piece(ps[0]);
      auto up = quantize_piece(ps[1]);
      lr->set_down(std::move(down));
      lr->set_up(std::move(up));
      m.layout();
    } else {
      m.set_repr(*l, quantize_piece(pieces(*l)[0]));
    }
    bytes_after += l->repr->file_bytes();
    layers.push_back(l->name);
  }
  nlohmann::json att_blocks = nlohmann::json::array();
  if (o.attention) {
    for (size_t b = 0; b < m.blocks.size(); ++b) {
      if (std::find(ls.begin(), ls.end(), &m.blocks[b].qkv) == ls.end()) continue;
      if (m.blocks[b].attn_quant) fail("quantize: block ", b, "'s attention is already quantized");
      m.blocks[b].attn_quant = kernels::AttentionQuant{o.format.abits, o.format.abits};
      att_blocks.push_back(b);
    }
    if (att_blocks.empty()) throw UsageError("quantize: attention=true, but layers= selects no block's qkv layer");
  }
  // The format every layer got (per-layer input scales and fixed-point fracs in input_ranges).
  nlohmann::json format = o.format.to_json();
  if (o.static_inputs) format["inputs"] = "static";
  nlohmann::json rec{{"layers", layers},
                     {"format", format},
                     {"weights", weights},
                     {"bytes_before", bytes_before},
                     {"bytes_after", bytes_after},
                     {"layers_on_integer_kernels", on_kernels}};
  if (o.attention) rec["attention_blocks"] = att_blocks;
  if (!per_channel.empty()) rec["group_as_channel"] = per_channel;
  if (o.needs_data) rec["calibrator"] = o.calib.name();
  if (!ranges.empty()) rec[o.fixed ? "fixed_point" : "input_ranges"] = ranges;
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
        PassKey("group", T::Int, "",
                "inputs per scale (granularity=group, implied): must divide each layer's inputs; a layer of fewer "
                "than G inputs gets one scale per channel")
            .range(1, 1 << 20),
        PassKey("sym", T::Bool, "true", "symmetric weights (false: zero points)"),
        PassKey("abits", T::Int, "8", "input bits (0: inputs stay f32, weight-only)").range(0, 16),
        PassKey("act", T::String, "dynamic", "input scales: dynamic (per token) or static (calibrated)"),
        PassKey("calib", T::String, "minmax",
                "act=static: minmax, sigma:K, percentile:P, mse or entropy (TensorRT's KL)"),
        PassKey("layers", T::Regex, "", "only the layers whose name matches (default: every linear layer)"),
        PassKey("attention", T::Bool, "false",
                "also QK^T and attention x V in integers (abits-bit signed Q, K, V per image and head, unsigned "
                "abits-bit probabilities) in the blocks whose qkv is quantized; inference only"),
        PassKey("format", T::String, "int",
                "int (scales from the ranges) or fixed: MASE-style fixed point <bits, frac>, one scale 2^-frac per "
                "layer, inputs static <abits, afrac>, biases on the accumulator's grid"),
        PassKey("frac", T::Int, "", "format=fixed: weight fraction bits (default: the most that fit each layer)")
            .range(0, 16),
        PassKey("afrac", T::Int, "", "format=fixed: input fraction bits (default: from --data with calib=)")
            .range(0, 16),
        PassKey("bfrac", T::Int, "", "format=fixed: bias fraction bits (default frac + afrac)").range(0, 30),
    };
  }
  bool needs_calibration(const PassArgs& a) const override { return options(a).needs_data; }
  bool layers_select() const override { return true; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext& ctx) const override {
    return quantize_model(m, options(a), ctx);
  }
};

}  // namespace

std::unique_ptr<Pass> make_quantize_pass() { return std::make_unique<QuantizePass>(); }

}  // namespace vitkit

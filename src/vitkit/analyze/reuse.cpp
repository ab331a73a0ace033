#include "vitkit/analyze/reuse.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>

#include "vitkit/train/evaluate.h"
#include "vitkit/compress/round.h"
#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/core/threads.h"
#include "vitkit/model/forward.h"
#include "vitkit/report/table.h"

namespace vitkit {

// ---- Counting one image ----------------------------------------------------

ReuseCounter::ReuseCounter(const ViT& m, const std::vector<std::string>& layers, int decimals,
                           const ReuseCountSettings& s)
    : m_(m), decimals_(decimals), s_(s) {
  kernels::pow10_exact(decimals);  // validates
  for (const std::string& name : layers) {
    const Linear* l = nullptr;
    for (const Linear* x : m.linears())
      if (x->name == name) l = x;
    check(l != nullptr, "reuse: no layer named '", name, "'");
    std::vector<float> scratch;  // the plain weight of a layer that is not dense f32
    weights_[name] = std::make_unique<kernels::ReuseWeights>(plain_weight(*l, scratch), l->out, l->in, decimals);
  }
}

ReuseCounter::~ReuseCounter() = default;

static uint64_t mix_seed(uint64_t seed, int64_t image, int64_t layer) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * uint64_t(image + 1) + 0xBF58476D1CE4E5B9ull * uint64_t(layer + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  return z ^ (z >> 31);
}

static void add_count(LayerReuse& r, const kernels::ReuseCount& c) {
  // Sampling estimates of several matmuls (heads) combine weighted by multiplications.
  const double w0 = double(r.mults), w1 = double(c.mults);
  if (c.samples) {
    r.sample_hits = (r.sample_hits * w0 + c.sample_hits * w1) / (w0 + w1);
    r.sample_freq_hits = (r.sample_freq_hits * w0 + c.sample_freq_hits * w1) / (w0 + w1);
  }
  r.mults += c.mults;
  r.distinct += c.distinct;
  r.per_output = c.per_output < 0 ? -1 : (r.per_output < 0 ? 0 : r.per_output) + c.per_output;
  r.samples = std::max(r.samples, c.samples);  // per matmul (per head for attention)
}

// q.k^T and softmax(q.k^T / sqrt(hd)).v of one head h of one image: qkv (T, 3D).
// scores: X = q_h (T, hd), W = k_h (T, hd); values: X = P_h (T, T), W = v_h^T (hd, T).
static void count_head(const ViTConfig& c, const BlockShape& b, int64_t h, const float* qkv, int decimals,
                       const kernels::ReuseCountOptions& opt, kernels::ReuseCount& scores,
                       kernels::ReuseCount& values) {
  const int64_t T = c.tokens(), D = b.attn_dim(), hd = b.head_dim;  // qkv (T, 3D)
  Tensor q = Tensor::empty({T, hd}), k = Tensor::empty({T, hd}), vt = Tensor::empty({hd, T});
  Tensor p = Tensor::empty({T, T});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < hd; ++j) {
      const float* base = qkv + t * 3 * D + h * hd + j;
      q.f32()[t * hd + j] = base[0];
      k.f32()[t * hd + j] = base[D];
      vt.f32()[j * T + t] = base[2 * D];
    }
  kernels::ReuseCountOptions o = opt;
  o.seed = mix_seed(opt.seed, h, 0);
  kernels::ReuseWeights wk(k.f32(), T, hd, decimals);
  scores = kernels::count_reuse(q.f32(), T, wk, o);
  // P = softmax(q k^T / sqrt(hd)), row by row in double.
  std::vector<double> row(static_cast<size_t>(T));
  const double scale = 1.0 / std::sqrt(double(hd));
  for (int64_t t = 0; t < T; ++t) {
    double mx = -1e300, sum = 0;
    for (int64_t s = 0; s < T; ++s) {
      double dot = 0;
      for (int64_t j = 0; j < hd; ++j) dot += double(q.f32()[t * hd + j]) * k.f32()[s * hd + j];
      row[s] = dot * scale;
      mx = std::max(mx, row[s]);
    }
    for (int64_t s = 0; s < T; ++s) sum += row[s] = std::exp(row[s] - mx);
    for (int64_t s = 0; s < T; ++s) p.f32()[t * T + s] = float(row[s] / sum);
  }
  kernels::ReuseWeights wv(vt.f32(), hd, T, decimals);
  o.seed = mix_seed(opt.seed, h, 1);
  values = kernels::count_reuse(p.f32(), T, wv, o);
}

// Every head of one block, the heads in parallel; summed in head order.
static void count_attention(const ViTConfig& c, const BlockShape& b, const float* qkv, int decimals,
                            const kernels::ReuseCountOptions& opt, LayerReuse& scores, LayerReuse& values) {
  const int64_t H = b.heads;
  std::vector<kernels::ReuseCount> rs(static_cast<size_t>(H)), rv(static_cast<size_t>(H));
  std::exception_ptr err;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads())
  for (int64_t h = 0; h < H; ++h) {
    try {
      count_head(c, b, h, qkv, decimals, opt, rs[h], rv[h]);
    } catch (...) {
#pragma omp critical(reuse_attention_error)
      err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
  for (int64_t h = 0; h < H; ++h) {
    add_count(scores, rs[h]);
    add_count(values, rv[h]);
  }
}

std::vector<LayerReuse> ReuseCounter::count(const float* image, int64_t image_index) {
  std::vector<LayerReuse> out;
  kernels::ReuseCountOptions opt;
  opt.per_output = s_.per_output;
  opt.sample = s_.sample;
  opt.zone_rows = s_.zone_rows;
  opt.zone_cols = s_.zone_cols;
  ForwardHooks hooks;
  hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
    auto it = weights_.find(l.name);
    if (it == weights_.end()) return;
    kernels::ReuseCountOptions o = opt;
    o.seed = mix_seed(s_.seed, image_index, int64_t(out.size()));
    LayerReuse r;
    r.name = l.name;
    r.kind = to_string(l.kind);
    r.block = l.block;
    add_count(r, kernels::count_reuse(X, rows, *it->second, o));
    out.push_back(r);
  };
  if (s_.attention)
    hooks.on_attention = [&](int block, const float* qkv, int64_t) {
      const std::string prefix = "encoder.layers.encoder_layer_" + std::to_string(block) + ".self_attention.";
      LayerReuse scores{prefix + "scores", "attn_scores", block}, values{prefix + "values", "attn_values", block};
      kernels::ReuseCountOptions o = opt;
      o.seed = mix_seed(s_.seed, image_index, int64_t(out.size()));
      count_attention(m_.cfg, m_.blocks[size_t(block)].shape, qkv, decimals_, o, scores, values);
      out.push_back(scores);
      out.push_back(values);
    };
  Acts acts;
  acts.plan(m_.cfg, 1, false);
  vit_forward(m_, image, 1, acts, &hooks);
  return out;
}

// ---- Summaries -----------------------------------------------------------------

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  return s;
}

static bool is_attention(const LayerReuse& l) { return l.kind == "attn_scores" || l.kind == "attn_values"; }

// Multiplication-weighted hits of the layers of one image that `keep` selects.
template <typename Keep>
static double group_hits(const std::vector<LayerReuse>& layers, Keep keep) {
  double m = 0, d = 0;
  for (const LayerReuse& l : layers)
    if (keep(l)) m += double(l.mults), d += double(l.distinct);
  return m > 0 ? 100.0 * (m - d) / m : 0;
}

ReuseSummary summarize_reuse(const std::vector<std::vector<LayerReuse>>& per_image) {
  ReuseSummary s;
  s.images = int64_t(per_image.size());
  if (per_image.empty()) return s;
  const std::vector<LayerReuse>& first = per_image[0];
  int blocks = 0;
  for (const LayerReuse& l : first) {
    if (std::find(s.kinds.begin(), s.kinds.end(), l.kind) == s.kinds.end()) s.kinds.push_back(l.kind);
    blocks = std::max(blocks, l.block + 1);
    s.attention = s.attention || is_attention(l);
    s.samples = std::max(s.samples, l.samples);
  }
  for (const std::string& k : s.kinds) {
    std::vector<double> v;
    for (auto& img : per_image) v.push_back(group_hits(img, [&](const LayerReuse& l) { return l.kind == k; }));
    s.kind_hits[k] = stat_of(v);
  }
  for (int b = 0; b < blocks; ++b) {
    std::vector<double> v;
    for (auto& img : per_image)
      v.push_back(group_hits(img, [&](const LayerReuse& l) { return l.block == b && !is_attention(l); }));
    s.block_hits.push_back(stat_of(v));
  }
  std::vector<double> overall, with_att, est, est_freq;
  double abs_err = 0, abs_err_freq = 0;
  int64_t n_err = 0;
  bool per_output = true;
  double po_sum = 0;
  for (auto& img : per_image) {
    overall.push_back(group_hits(img, [](const LayerReuse& l) { return !is_attention(l); }));
    with_att.push_back(group_hits(img, [](const LayerReuse&) { return true; }));
    double m = 0, e = 0, ef = 0;
    for (const LayerReuse& l : img) {
      if (l.samples) {
        abs_err += std::fabs(l.sample_hits - l.hits());
        abs_err_freq += std::fabs(l.sample_freq_hits - l.hits());
        s.sample_max_abs_error = std::max(s.sample_max_abs_error, std::fabs(l.sample_hits - l.hits()));
        s.sample_freq_max_abs_error = std::max(s.sample_freq_max_abs_error, std::fabs(l.sample_freq_hits - l.hits()));
        ++n_err;
      }
      if (is_attention(l)) continue;
      s.mults += double(l.mults);
      s.table += double(l.distinct);
      if (l.per_output < 0) per_output = false;
      po_sum += double(l.per_output);
      m += double(l.mults);
      e += double(l.mults) * l.sample_hits;
      ef += double(l.mults) * l.sample_freq_hits;
    }
    est.push_back(m > 0 ? e / m : 0);
    est_freq.push_back(m > 0 ? ef / m : 0);
  }
  const double n = double(per_image.size());
  s.mults /= n;
  s.table /= n;
  s.per_output = per_output ? po_sum / n : -1;
  s.overall = stat_of(overall);
  s.overall_attention = stat_of(with_att);
  if (s.samples) {
    s.sample_hits = stat_of(est).mean;
    s.sample_freq_hits = stat_of(est_freq).mean;
    s.sample_error = s.sample_hits - s.overall.mean;
    s.sample_freq_error = s.sample_freq_hits - s.overall.mean;
    s.sample_abs_error = abs_err / double(n_err);
    s.sample_freq_abs_error = abs_err_freq / double(n_err);
  }
  for (size_t i = 0; i < first.size(); ++i) {
    LayerReuse avg = first[i];
    double distinct = 0, po = 0;
    std::vector<double> h;
    for (auto& img : per_image) {
      check(i < img.size() && img[i].name == avg.name, "reuse: images analysed different layers");
      distinct += double(img[i].distinct);
      po += double(img[i].per_output);
      h.push_back(img[i].hits());
    }
    avg.distinct = int64_t(std::llround(distinct / n));
    avg.per_output = avg.per_output < 0 ? -1 : int64_t(std::llround(po / n));
    s.layers.push_back(avg);
    s.layer_hits.push_back(stat_of(h));
  }
  return s;
}

nlohmann::json ReuseSummary::to_json() const {
  nlohmann::json j;
  j["images"] = images;
  nlohmann::json kj = nlohmann::json::object();
  for (const std::string& k : kinds) kj[k] = kind_hits.at(k).to_json();
  nlohmann::json bj = nlohmann::json::array();
  for (const Stat& b : block_hits) bj.push_back(b.to_json());
  j["hits"] = {{"overall", overall.to_json()}, {"kinds", kj}, {"blocks", bj}};
  if (attention) j["hits"]["overall_with_attention"] = overall_attention.to_json();
  j["engine"] = {{"multiplications", mults},
                 {"table", table},
                 {"table_fraction", mults > 0 ? table / mults : 0},
                 {"per_output", per_output},
                 {"per_output_fraction", per_output >= 0 && mults > 0 ? per_output / mults : -1}};
  if (samples)
    j["sampling"] = {{"samples_per_matmul", samples},
                     {"estimate", sample_hits},
                     {"error", sample_error},
                     {"mean_abs_error", sample_abs_error},
                     {"max_abs_error", sample_max_abs_error},
                     {"freq_estimate", sample_freq_hits},
                     {"freq_error", sample_freq_error},
                     {"freq_mean_abs_error", sample_freq_abs_error},
                     {"freq_max_abs_error", sample_freq_max_abs_error}};
  nlohmann::json lj = nlohmann::json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerReuse& l = layers[i];
    nlohmann::json e = {{"name", l.name},
                        {"kind", l.kind},
                        {"block", l.block},
                        {"multiplications", l.mults},
                        {"distinct", l.distinct},
                        {"per_output", l.per_output},
                        {"hits", layer_hits[i].to_json()}};
    lj.push_back(e);
  }
  j["layers"] = lj;
  return j;
}

// ---- The study -------------------------------------------------------------------

nlohmann::json ReuseStudy::to_json() const {
  nlohmann::json j;
  j["evaluated"] = evaluated;
  if (evaluated) {
    j["eval_images"] = eval_images;
    j["top1_baseline"] = top1_baseline;
  }
  j["images"] = images;
  nlohmann::json rj = nlohmann::json::array();
  for (const ReuseDecimals& r : rows) {
    nlohmann::json e;
    e["decimals"] = r.decimals;
    e["macs_fraction"] = r.macs_fraction;
    e["macs_covered"] = r.round_record.value("macs_covered", int64_t(0));
    e["macs_total"] = r.round_record.value("macs_total", int64_t(0));
    e["layers_rounded"] = r.round_record.value("layers", nlohmann::json::array()).size();
    e["weights_zero_fraction"] = double(r.round_record.value("weights_zero", int64_t(0))) /
                                 double(std::max<int64_t>(1, r.round_record.value("weights", int64_t(1))));
    if (evaluated) {
      e["top1_weights"] = r.top1_weights;
      e["top1_all"] = r.top1_all;
      e["loss_weights"] = r.loss_weights;
      e["loss_all"] = r.loss_all;
    }
    e["reuse"] = r.reuse.to_json();
    e["count_seconds"] = r.count_seconds;
    rj.push_back(e);
  }
  j["rows"] = rj;
  return j;
}

static double top1(const ViT& m, const Dataset& ds, const ReuseStudyOptions& o) {
  return evaluate_dataset(m, ds, o.eval_limit, o.batch, o.progress).top1;
}

ReuseStudy run_reuse_study(const ViT& model, const Dataset* ds, const Tensor& images, const ReuseStudyOptions& o) {
  using Clock = std::chrono::steady_clock;
  check(!o.eval || ds != nullptr, "reuse study: no dataset to evaluate on");
  const ViTConfig& c = model.cfg;
  check(images.ndim() == 4 && images.dim(1) == c.channels && images.dim(2) == c.image_size &&
            images.dim(3) == c.image_size,
        "reuse study: images have shape ", shape_str(images.shape()), ", the model needs (N, ", c.channels, ", ",
        c.image_size, ", ", c.image_size, ")");
  ReuseStudy st;
  st.images = images.dim(0);
  st.evaluated = o.eval;
  if (o.eval) {
    st.eval_images = o.eval_limit > 0 ? std::min(o.eval_limit, ds->size()) : ds->size();
    st.top1_baseline = top1(model, *ds, o);
  }
  const int64_t per_image = int64_t(c.channels) * c.image_size * c.image_size;
  for (int d : o.decimals) {
    ReuseDecimals row;
    row.decimals = d;
    // The model the engine would run: weights and input activations rounded.
    std::unique_ptr<ViT> all = model.clone();
    row.round_record = round_model(*all, {d, true, o.layers, false});
    row.macs_fraction = row.round_record["macs_fraction"].get<double>();
    if (o.eval) {
      std::unique_ptr<ViT> weights = model.clone();
      round_model(*weights, {d, false, o.layers, false});
      row.top1_weights = top1(*weights, *ds, o);
      row.top1_all = top1(*all, *ds, o);
      row.loss_weights = 100 * (st.top1_baseline - row.top1_weights);
      row.loss_all = 100 * (st.top1_baseline - row.top1_all);
    }
    auto t0 = Clock::now();
    std::vector<std::string> names;
    for (auto& n : row.round_record["layers"]) names.push_back(n.get<std::string>());
    ReuseCounter counter(*all, names, d, o.count);
    std::vector<std::vector<LayerReuse>> per;
    Progress bar(cat("reuse d=", d), st.images);
    for (int64_t i = 0; i < st.images; ++i) {
      per.push_back(counter.count(images.f32() + i * per_image, i));
      if (o.progress)
        bar.update(
            i + 1,
            cat("hits ", fmt_fixed(group_hits(per.back(), [](const LayerReuse& l) { return !is_attention(l); }), 2),
                "%"));
    }
    row.reuse = summarize_reuse(per);
    row.count_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (o.progress) bar.finish(cat("hits ", fmt_fixed(row.reuse.overall.mean, 2), "%"));
    st.rows.push_back(std::move(row));
  }
  return st;
}

}  // namespace vitkit

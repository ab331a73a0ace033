#include "vitkit/analyze/stats.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "vitkit/compress/calibrate.h"
#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/model/forward.h"
#include "vitkit/report/svg_plot.h"
#include "vitkit/report/table.h"

namespace vitkit {

namespace {

// Where a value's channel comes from in a (rows, cols) block of values.
enum class ChannelAxis { Columns, Rows };

// One tensor's statistics, accumulated in two passes (stats.h).
class Dist {
 public:
  Dist(TensorStats meta, int channels, ChannelAxis axis, int64_t group = 1)
      : meta_(std::move(meta)), axis_(axis), group_(group), chmax_(size_t(channels), 0.f) {}

  // Pass 1: x (rows, cols).
  void moments(const float* x, int64_t rows, int64_t cols) {
    s_.add_moments(x, rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t ch = size_t(axis_ == ChannelAxis::Rows ? r : c / group_);
        chmax_[ch] = std::max(chmax_[ch], std::fabs(x[r * cols + c]));
      }
  }
  // Pass 2: the same values again.
  void histogram(const float* x, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    s_.add_histogram(x, n);
    const double mu = s_.mean(), sd = s_.stddev();
    for (int64_t i = 0; i < n; ++i) {
      const double d = std::fabs(double(x[i]) - mu);
      for (int k = 0; k < 3; ++k) outside_[k] += d > (k + 1) * sd;
    }
  }
  TensorStats finish(const StatsOptions& o) const;

 private:
  TensorStats meta_;
  ChannelAxis axis_;
  int64_t group_;
  ActivationStats s_;
  std::vector<float> chmax_;
  int64_t outside_[3] = {0, 0, 0};
};

double median(std::vector<float> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (double(v[n / 2 - 1]) + double(v[n / 2]));
}

TensorStats Dist::finish(const StatsOptions& o) const {
  TensorStats t = meta_;
  t.count = s_.count();
  if (t.count == 0) return t;
  t.min = s_.min();
  t.max = s_.max();
  t.mean = s_.mean();
  t.stddev = s_.stddev();
  for (int k = 0; k < 3; ++k) t.outside[k] = double(outside_[k]) / double(t.count);
  for (double p : o.percentiles) t.percentiles.push_back(s_.quantile(p / 100));
  t.percentile_error = s_.bin_width();
  const std::vector<double>& h = s_.histogram();
  const size_t per = h.size() / size_t(o.bins);
  t.histogram.assign(size_t(o.bins), 0.0);
  for (size_t i = 0; i < h.size(); ++i) t.histogram[i / per] += h[i];
  t.channels = int(chmax_.size());
  t.channel_max = chmax_;
  t.median_channel_max = median(chmax_);
  for (int c = 0; c < t.channels; ++c)
    if (double(chmax_[size_t(c)]) > o.outlier_ratio * t.median_channel_max) t.outlier_channels.push_back(c);
  return t;
}

// A block's module path: "encoder.layers.encoder_layer_3".
std::string block_path(const ViT& m, int b) {
  const std::string& n = m.blocks[size_t(b)].qkv.name;
  return n.substr(0, n.find(".self_attention"));
}

TensorStats meta(std::string name, std::string layer, std::string kind, std::string role, int block) {
  TensorStats t;
  t.name = std::move(name);
  t.layer = std::move(layer);
  t.kind = std::move(kind);
  t.role = std::move(role);
  t.block = block;
  return t;
}

// Every tensor's accumulator, in the report's order, and the hooks' indices into it.
struct Collector {
  std::vector<Dist> dists;
  std::map<const Linear*, size_t> weight, input, output;
  std::vector<size_t> ln1, ln2, attn;
  size_t lnf = SIZE_MAX;

  explicit Collector(const ViT& m) {
    const int D = m.cfg.dim;
    auto linear = [&](const Linear& l) {
      const char* kind = to_string(l.kind);
      weight[&l] = add(meta(l.name + ".weight", l.name, kind, "weight", l.block), l.out, ChannelAxis::Rows);
      input[&l] = add(meta(l.name + ".input", l.name, kind, "input", l.block), l.in, ChannelAxis::Columns);
      output[&l] = add(meta(l.name + ".output", l.name, kind, "output", l.block), l.out, ChannelAxis::Columns);
    };
    linear(m.patch);
    for (int b = 0; b < int(m.blocks.size()); ++b) {
      const Block& blk = m.blocks[size_t(b)];
      const std::string p = block_path(m, b);
      ln1.push_back(add(meta(p + ".ln_1", p + ".ln_1", "ln_1", "norm", b), D, ChannelAxis::Columns));
      linear(blk.qkv);
      attn.push_back(add(meta(p + ".attn_probs", p + ".self_attention", "attention", "probs", b), blk.shape.heads,
                         ChannelAxis::Columns, m.cfg.tokens()));
      linear(blk.proj);
      ln2.push_back(add(meta(p + ".ln_2", p + ".ln_2", "ln_2", "norm", b), D, ChannelAxis::Columns));
      linear(blk.fc1);
      linear(blk.fc2);
    }
    if (m.ln.w >= 0) lnf = add(meta("encoder.ln", "encoder.ln", "ln", "norm", -1), D, ChannelAxis::Columns);
    linear(m.head);
  }
  size_t add(TensorStats t, int channels, ChannelAxis axis, int64_t group = 1) {
    dists.emplace_back(std::move(t), channels, axis, group);
    return dists.size() - 1;
  }
};

// Pass `pass` (0: moments, 1: histogram) of one tensor's values x (rows, cols).
void feed(Dist& d, int pass, const float* x, int64_t rows, int64_t cols) {
  if (pass == 0) d.moments(x, rows, cols);
  else d.histogram(x, rows, cols);
}

// The weights: both passes at once, from each layer's plain weight (out, in).
void weight_stats(const ViT& m, Collector& c) {
  std::vector<float> scratch;
  for (const Linear* l : m.linears()) {
    const float* w = plain_weight(*l, scratch);
    for (int pass = 0; pass < 2; ++pass) feed(c.dists[c.weight.at(l)], pass, w, l->out, l->in);
  }
}

// Hooks feeding pass `pass` of the activations.
ForwardHooks activation_hooks(const ViT& m, Collector& c, int pass, std::vector<float>& probs) {
  ForwardHooks h;
  h.on_linear = [&c, pass](const Linear& l, const float* X, int64_t rows) {
    feed(c.dists[c.input.at(&l)], pass, X, rows, l.in);
  };
  h.on_linear_output = [&c, pass](const Linear& l, const float* Y, int64_t rows) {
    feed(c.dists[c.output.at(&l)], pass, Y, rows, l.out);
  };
  h.on_norm = [&c, &m, pass](int block, int which, const float* Y, int64_t rows) {
    const size_t i = block < 0 ? c.lnf : (which == 1 ? c.ln1 : c.ln2)[size_t(block)];
    feed(c.dists[i], pass, Y, rows, m.cfg.dim);
  };
  // Per image: probs (T, H, T).
  h.on_attention = [&c, &m, pass, &probs](int block, const float* qkv, int64_t B) {
    const BlockShape& s = m.blocks[size_t(block)].shape;
    const int64_t T = m.cfg.tokens(), H = s.heads, d = s.head_dim;
    probs.resize(size_t(T * H * T));
    for (int64_t b = 0; b < B; ++b) {
      attention_probs(qkv + b * T * 3 * H * d, 1, T, H, d, probs.data());
      feed(c.dists[c.attn[size_t(block)]], pass, probs.data(), T, H * T);
    }
  };
  return h;
}

void check_options(const StatsOptions& o) {
  check(o.bins >= 1 && ActivationStats::kBins % o.bins == 0, "stats: bins ", o.bins, " must divide ",
        ActivationStats::kBins);
  for (double p : o.percentiles) check(p >= 0 && p <= 100, "stats: percentile ", p, " is outside [0, 100]");
  check(o.outlier_ratio > 0, "stats: outlier ratio ", o.outlier_ratio, " must be positive");
  check(o.batch >= 1, "stats: batch ", o.batch, " must be >= 1");
}

}  // namespace

StatsResult model_stats(const ViT& m, const Tensor& images, const StatsOptions& o) {
  check_options(o);
  const auto t0 = std::chrono::steady_clock::now();
  check(images.ndim() == 4 && images.dim(0) >= 1, "stats: images of shape ", shape_str(images.shape()),
        ", need (N, C, S, S) with N >= 1");
  const int64_t N = images.dim(0);
  Collector c(m);
  weight_stats(m, c);
  Progress bar("stats", 2 * N);
  Acts acts;
  std::vector<float> probs;
  for (int pass = 0; pass < 2; ++pass) {
    const ForwardHooks hooks = activation_hooks(m, c, pass, probs);
    for (int64_t i = 0; i < N; i += o.batch) {
      const int64_t n = std::min(o.batch, N - i);
      vit_predict(m, images.slice(i, i + n), acts, 0, &hooks);
      if (o.progress) bar.update(pass * N + i + n, pass == 0 ? "moments" : "histograms");
    }
  }
  if (o.progress) bar.finish();
  StatsResult r;
  r.images = N;
  r.options = o;
  for (const Dist& d : c.dists) r.tensors.push_back(d.finish(o));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// ---- Output ----------------------------------------------------------------

const TensorStats* StatsResult::find(const std::string& name) const {
  for (const TensorStats& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

nlohmann::json TensorStats::to_json(const std::vector<double>& levels) const {
  nlohmann::json j{{"name", name},   {"layer", layer},   {"kind", kind}, {"role", role},
                   {"block", block}, {"count", count},   {"min", min},   {"max", max},
                   {"mean", mean},   {"stddev", stddev}};
  nlohmann::json sig = nlohmann::json::array();
  for (int k = 0; k < 3; ++k)
    sig.push_back({{"k", k + 1}, {"lo", mean - (k + 1) * stddev}, {"hi", mean + (k + 1) * stddev},
                   {"outside", outside[k]}});
  j["sigma"] = sig;
  nlohmann::json pc = nlohmann::json::object();
  for (size_t i = 0; i < percentiles.size() && i < levels.size(); ++i) pc[cat(levels[i])] = percentiles[i];
  j["percentiles"] = pc;
  j["percentile_error"] = percentile_error;
  j["histogram"] = {{"lo", min}, {"hi", max}, {"counts", histogram}};
  j["channels"] = channels;
  j["median_channel_max_abs"] = median_channel_max;
  j["max_channel_max_abs"] = channel_max.empty() ? 0.0 : double(*std::max_element(channel_max.begin(), channel_max.end()));
  j["outlier_channels"] = outlier_channels;
  return j;
}

nlohmann::json StatsResult::to_json() const {
  nlohmann::json j;
  j["images"] = images;
  if (!data.empty()) j["data"] = data;
  j["percentile_levels"] = options.percentiles;
  j["percentile_method"] = cat("histogram of ", ActivationStats::kBins,
                               " bins over [min, max], linear within a bin; error <= percentile_error (a bin width)");
  j["outlier_ratio"] = options.outlier_ratio;
  j["bins"] = options.bins;
  nlohmann::json ts = nlohmann::json::array();
  for (const TensorStats& t : tensors) ts.push_back(t.to_json(options.percentiles));
  j["tensors"] = ts;
  j["seconds"] = seconds;
  return j;
}

namespace {

std::string g4(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// "3: 17, 93" (count and the first few indices), "-" for none.
std::string outliers_cell(const TensorStats& t) {
  if (t.outlier_channels.empty()) return "-";
  std::string s = cat(t.outlier_channels.size(), ":");
  for (size_t i = 0; i < t.outlier_channels.size() && i < 6; ++i) s += cat(i ? "," : " ", t.outlier_channels[i]);
  if (t.outlier_channels.size() > 6) s += ",...";
  return s;
}

// The percentile at a level, NaN when that level was not asked for.
double percentile_at(const StatsResult& r, const TensorStats& t, double level) {
  for (size_t i = 0; i < r.options.percentiles.size(); ++i)
    if (r.options.percentiles[i] == level && i < t.percentiles.size()) return t.percentiles[i];
  return NAN;
}

std::string short_name(const TensorStats& t) {
  std::string s = t.name;
  const std::string prefix = "encoder.layers.encoder_layer_";
  if (s.rfind(prefix, 0) == 0) s = "b" + s.substr(prefix.size());
  for (auto [from, to] : {std::pair{".self_attention.in_proj", ".qkv"}, std::pair{".self_attention.out_proj", ".out_proj"},
                          std::pair{".mlp.0", ".fc1"}, std::pair{".mlp.3", ".fc2"}}) {
    const size_t at = s.find(from);
    if (at != std::string::npos) s.replace(at, std::string(from).size(), to);
  }
  return s;
}

}  // namespace

std::string StatsResult::text() const {
  const double lo = options.percentiles.empty() ? NAN : options.percentiles.front();
  const double hi = options.percentiles.empty() ? NAN : options.percentiles.back();
  Table t({"tensor", "min", "max", "mean", "sigma", ">3 sigma", cat("p", lo), cat("p", hi), "max|ch|/median",
           "outlier channels"});
  t.right_align({1, 2, 3, 4, 5, 6, 7, 8});
  for (const TensorStats& s : tensors) {
    const double top = s.channel_max.empty() ? 0 : *std::max_element(s.channel_max.begin(), s.channel_max.end());
    t.add({short_name(s), g4(s.min), g4(s.max), g4(s.mean), g4(s.stddev), fmt_fixed(100 * s.outside[2], 3) + "%",
           g4(percentile_at(*this, s, lo)), g4(percentile_at(*this, s, hi)),
           s.median_channel_max > 0 ? fmt_fixed(top / s.median_channel_max, 1) : "-", outliers_cell(s)});
  }
  int with = 0;
  for (const TensorStats& s : tensors) with += !s.outlier_channels.empty();
  return t.text() +
         cat("(", images, " images; bN = encoder block N; percentiles from a ", ActivationStats::kBins,
             "-bin histogram, within one bin width; outlier channels: max |x| above ", options.outlier_ratio,
             " x the median channel's, ", with, " of ", tensors.size(), " tensors have some)\n");
}

std::string StatsResult::csv() const {
  std::vector<std::string> cols{"name", "layer", "kind", "role", "block", "count", "min", "max", "mean", "stddev",
                                "outside_1sigma", "outside_2sigma", "outside_3sigma"};
  for (double p : options.percentiles) cols.push_back(cat("p", p));
  cols.insert(cols.end(), {"percentile_error", "channels", "median_channel_max_abs", "outlier_channels"});
  Table t(cols);
  auto g = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return std::string(buf);
  };
  for (const TensorStats& s : tensors) {
    std::vector<std::string> row{s.name, s.layer, s.kind, s.role, std::to_string(s.block), std::to_string(s.count),
                                 g(s.min), g(s.max), g(s.mean), g(s.stddev), g(s.outside[0]), g(s.outside[1]),
                                 g(s.outside[2])};
    for (double p : s.percentiles) row.push_back(g(p));
    std::string out;
    for (size_t i = 0; i < s.outlier_channels.size(); ++i) out += cat(i ? " " : "", s.outlier_channels[i]);
    row.insert(row.end(), {g(s.percentile_error), std::to_string(s.channels), g(s.median_channel_max), out});
    t.add(row);
  }
  return t.csv();
}

std::string StatsResult::svg(const std::string& title) const {
  // Panels in first-seen order of (kind, role) among the encoder blocks' tensors.
  std::vector<std::pair<std::string, std::string>> groups;
  for (const TensorStats& s : tensors)
    if (s.block >= 0 && std::find(groups.begin(), groups.end(), std::pair{s.kind, s.role}) == groups.end())
      groups.push_back({s.kind, s.role});
  std::vector<Plot> panels;
  for (const auto& [kind, role] : groups) {
    Plot p;
    p.title = kind == role || role == "norm" ? kind : kind + " " + role;
    if (panels.empty()) p.title = title + ": " + p.title;
    p.x.label = "value";
    p.y.label = "share of values per bin";
    p.y.log = true;
    for (const TensorStats& s : tensors) {
      if (s.block < 0 || s.kind != kind || s.role != role || s.count == 0) continue;
      PlotSeries ps;
      ps.name = cat("block ", s.block);
      ps.markers = false;
      const double w = (s.max - s.min) / double(s.histogram.size());
      for (size_t i = 0; i < s.histogram.size(); ++i) {
        ps.x.push_back(s.min + w * (double(i) + 0.5));
        ps.y.push_back(s.histogram[i] / double(s.count));  // zeros are skipped on the log axis
      }
      p.series.push_back(ps);
    }
    panels.push_back(p);
  }
  return render_svg_grid(panels, 4, 420, 320);
}

}  // namespace vitkit

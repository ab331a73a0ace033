#include "vitkit/analyze/compare.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <map>
#include <numeric>

#include <omp.h>

#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/model/forward.h"
#include "vitkit/report/table.h"

namespace vitkit {

namespace {

bool all_finite(const float* x, int C) {
  for (int c = 0; c < C; ++c)
    if (!std::isfinite(x[c])) return false;
  return true;
}

// The predicted class: the first of the largest logits (torch.argmax's choice).
int argmax(const float* x, int C) { return int(std::max_element(x, x + C) - x); }

// Whether class y is among the k best of x, ties ranked by the lower index
// (as a stable descending sort, and evaluate's top-5).
bool in_top_k(const float* x, int C, int y, int k) {
  int above = 0;
  for (int c = 0; c < C; ++c) above += x[c] > x[y] || (x[c] == x[y] && c < y);
  return above < k;
}

// log_softmax in double, in torch's form (x - max) - log(sum exp(x - max)).
void log_softmax(const float* x, int C, double* out) {
  const double mx = x[argmax(x, C)];
  double s = 0;
  for (int c = 0; c < C; ++c) s += std::exp(double(x[c]) - mx);
  const double ls = std::log(s);
  for (int c = 0; c < C; ++c) out[c] = (double(x[c]) - mx) - ls;
}

// KL(p_a || p_b) = sum_c p_a (log p_a - log p_b) from the log-softmaxes.
// Rounding can leave identical distributions a hair below zero; KL is not.
double kl_divergence(const double* la, const double* lb, int C) {
  double kl = 0;
  for (int c = 0; c < C; ++c) kl += std::exp(la[c]) * (la[c] - lb[c]);
  return std::max(kl, 0.0);
}

// The q-quantile of sorted values, interpolated linearly (numpy's default).
double quantile(const std::vector<double>& sorted, double q) {
  const double pos = q * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

KlStats kl_stats(std::vector<double> kl) {
  KlStats s;
  if (kl.empty()) return s;
  std::sort(kl.begin(), kl.end());
  s.mean = std::accumulate(kl.begin(), kl.end(), 0.0) / double(kl.size());
  s.median = quantile(kl, 0.5);
  s.p99 = quantile(kl, 0.99);
  s.max = kl.back();
  return s;
}

double fraction(int64_t part, int64_t whole) { return whole ? double(part) / double(whole) : 0; }

std::string pct(double fraction) { return fmt_fixed(100 * fraction, 2) + "%"; }

// "+0.40" / "-1.20": a difference in points.
std::string signed_points(double points) {
  std::string s = points >= 0 ? "+" : "";
  return s += fmt_fixed(points, 2);
}

// The same model input: preprocessing both models' images once is enough.
bool same_input(const ViTConfig& a, const ViTConfig& b) {
  return a.image_size == b.image_size && a.channels == b.channels && a.pre.mean == b.pre.mean &&
         a.pre.std == b.pre.std && a.pre.resize == b.pre.resize && a.pre.crop == b.pre.crop &&
         a.pre.interpolation == b.pre.interpolation;
}

// Per-layer SQNR of B's outputs against A's (LayerSqnr). The images are split
// between the threads (as vit_infer's per-image mode: each thread runs whole
// sub-batches with every op on itself, so hooks need no locks and no op waits
// at a barrier); each thread, chunk by chunk, runs A with its layers' outputs
// kept, then B, whose outputs are compared as they come, into its own sums.
class SqnrRun {
 public:
  SqnrRun(const ViT& a, const ViT& b) : a_(a), b_(b) {
    int64_t per_image = 0;  // bytes of A's kept outputs per image
    for (const Linear* la : a.linears()) {
      const Linear* lb = find(b, la->name);
      if (!lb || lb->out != la->out) continue;
      slot_a_[la] = slot_b_[lb] = layers_.size();
      LayerSqnr s;
      s.name = la->name;
      s.kind = to_string(la->kind);
      s.block = la->block;
      layers_.push_back(s);
      per_image += rows_per_image(a.cfg, *la) * la->out * int64_t(sizeof(float));
    }
    per_image_bytes_ = std::max<int64_t>(1, per_image);
  }

  // logits_a, logits_b (n, classes) of images xa, xb (n, C, S, S), each
  // preprocessed for its model; the layers' sums grow.
  void run(const Tensor& xa, const Tensor& xb, float* logits_a, float* logits_b) {
    const int64_t n = xa.dim(0);
    const int nt = int(std::clamp<int64_t>(omp_in_parallel() ? 1 : num_threads(), 1, n));
    if (int(workers_.size()) < nt) workers_.resize(size_t(nt));
    // Thread t's chunks: at most kSqnrChunkBytes of kept outputs over all threads.
    const int64_t chunk = std::max<int64_t>(1, kSqnrChunkBytes / per_image_bytes_ / nt);
    std::exception_ptr error;
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), k = omp_get_num_threads();
      const int64_t i0 = n * t / k, i1 = n * (t + 1) / k;
      try {
        Worker& w = workers_[size_t(t)];
        w.reset(layers_.size());
        for (int64_t i = i0; i < i1; i += chunk) run_chunk(w, xa, xb, i, std::min(i + chunk, i1), logits_a, logits_b);
      } catch (...) {
#pragma omp critical(sqnr_run_error)
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    for (Worker& w : workers_)
      for (size_t s = 0; s < layers_.size() && s < w.sig.size(); ++s) {
        layers_[s].signal += w.sig[s];
        layers_[s].noise += w.noise[s];
        layers_[s].values += w.values[s];
        w.sig[s] = w.noise[s] = 0;
        w.values[s] = 0;
      }
  }
  const std::vector<LayerSqnr>& layers() const { return layers_; }

 private:
  // One thread's activations, A's kept outputs of its chunk, and its sums, per layer slot.
  struct Worker {
    Acts acts_a, acts_b;
    std::vector<std::vector<float>> kept;
    std::vector<size_t> cursor;
    std::vector<double> sig, noise;
    std::vector<int64_t> values;
    void reset(size_t slots) {
      kept.resize(slots);
      cursor.resize(slots);
      sig.assign(slots, 0);
      noise.assign(slots, 0);
      values.assign(slots, 0);
    }
  };

  static const Linear* find(const ViT& m, const std::string& name) {
    for (const Linear* l : m.linears())
      if (l->name == name) return l;
    return nullptr;
  }
  // Rows a layer runs on per image with hooks set (every block on every token).
  static int64_t rows_per_image(const ViTConfig& c, const Linear& l) {
    if (l.kind == LayerKind::Patch) return c.patches();
    if (l.kind == LayerKind::Head) return 1;
    return c.tokens();
  }

  // Images [i0, i1): A with its outputs kept, then B compared.
  void run_chunk(Worker& w, const Tensor& xa, const Tensor& xb, int64_t i0, int64_t i1, float* logits_a,
                 float* logits_b) const {
    const int64_t C = a_.cfg.classes;
    for (size_t s = 0; s < w.kept.size(); ++s) w.kept[s].clear(), w.cursor[s] = 0;
    ForwardHooks keep, cmp;
    keep.on_linear_output = [this, &w](const Linear& l, const float* Y, int64_t rows) {
      auto it = slot_a_.find(&l);
      if (it != slot_a_.end()) w.kept[it->second].insert(w.kept[it->second].end(), Y, Y + rows * l.out);
    };
    cmp.on_linear_output = [this, &w](const Linear& l, const float* Y, int64_t rows) {
      auto it = slot_b_.find(&l);
      if (it != slot_b_.end()) compare(w, it->second, Y, rows * l.out);
    };
    const Tensor la = vit_predict(a_, xa.slice(i0, i1), w.acts_a, 0, &keep);
    const Tensor lb = vit_predict(b_, xb.slice(i0, i1), w.acts_b, 0, &cmp);
    std::memcpy(logits_a + i0 * C, la.f32(), sizeof(float) * size_t((i1 - i0) * C));
    std::memcpy(logits_b + i0 * C, lb.f32(), sizeof(float) * size_t((i1 - i0) * C));
  }

  // B's next n output values of layer slot s against A's.
  void compare(Worker& w, size_t s, const float* yb, int64_t n) const {
    const std::vector<float>& ya = w.kept[s];
    check(w.cursor[s] + size_t(n) <= ya.size(), "compare: layer ", layers_[s].name, " of B gives more values than A's");
    const float* a = ya.data() + w.cursor[s];
    double sig = 0, noise = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = double(a[i]) - double(yb[i]);
      sig += double(a[i]) * double(a[i]);
      noise += d * d;
    }
    w.sig[s] += sig;
    w.noise[s] += noise;
    w.values[s] += n;
    w.cursor[s] += size_t(n);
  }

  const ViT &a_, &b_;
  std::map<const Linear*, size_t> slot_a_, slot_b_;
  std::vector<LayerSqnr> layers_;  // sums until compare_models divides them
  std::vector<Worker> workers_;
  int64_t per_image_bytes_ = 1;
};

}  // namespace

double LayerSqnr::db() const {
  if (!std::isfinite(signal) || !std::isfinite(noise)) return NAN;
  if (noise == 0) return INFINITY;
  return 10 * std::log10(signal / noise);
}

// ---- Accumulation ----------------------------------------------------------

CompareAccumulator::CompareAccumulator(int classes)
    : classes_(classes), class_images_(classes, 0), class_top1_a_(classes, 0), class_top1_b_(classes, 0) {
  check(classes >= 1, "compare: ", classes, " classes");
}

void CompareAccumulator::add(const float* logits_a, const float* logits_b, const int* labels, int64_t n) {
  const int C = classes_;
  std::vector<double> la(C), lb(C);
  for (int64_t i = 0; i < n; ++i) {
    const float* a = logits_a + i * C;
    const float* b = logits_b + i * C;
    const int y = labels[i];
    check(y >= 0 && y < C, "compare: label ", y, " of image ", n_ + i, " is outside the models' ", C, " classes");
    class_images_[y]++;
    // A non-finite row has no prediction (-1): a miss, and no agreement.
    const int pa = all_finite(a, C) ? argmax(a, C) : -1, pb = all_finite(b, C) ? argmax(b, C) : -1;
    nonfinite_a_ += pa < 0;
    nonfinite_b_ += pb < 0;
    class_top1_a_[y] += pa == y;
    class_top1_b_[y] += pb == y;
    top5_a_ += pa >= 0 && in_top_k(a, C, y, 5);
    top5_b_ += pb >= 0 && in_top_k(b, C, y, 5);
    if (pa < 0 || pb < 0) continue;
    agree_ += pa == pb;
    for (int c = 0; c < C; ++c) max_abs_diff_ = std::max(max_abs_diff_, std::fabs(double(a[c]) - double(b[c])));
    log_softmax(a, C, la.data());
    log_softmax(b, C, lb.data());
    kl_.push_back(kl_divergence(la.data(), lb.data(), C));
  }
  n_ += n;
}

CompareResult CompareAccumulator::result() const {
  CompareResult r;
  r.images = n_;
  r.classes = classes_;
  r.class_names.resize(classes_);
  for (int c = 0; c < classes_; ++c) r.class_names[c] = std::to_string(c);
  r.per_class.resize(classes_);
  int64_t top1_a = 0, top1_b = 0;
  for (int c = 0; c < classes_; ++c) {
    ClassCompare& pc = r.per_class[c];
    pc.images = class_images_[c];
    pc.top1_a = fraction(class_top1_a_[c], pc.images);
    pc.top1_b = fraction(class_top1_b_[c], pc.images);
    top1_a += class_top1_a_[c];
    top1_b += class_top1_b_[c];
  }
  r.top1_a = fraction(top1_a, n_);
  r.top1_b = fraction(top1_b, n_);
  r.top5_a = fraction(top5_a_, n_);
  r.top5_b = fraction(top5_b_, n_);
  r.agreement = fraction(agree_, n_);
  r.nonfinite_a = nonfinite_a_;
  r.nonfinite_b = nonfinite_b_;
  r.finite_images = int64_t(kl_.size());
  r.kl = kl_stats(kl_);
  r.max_abs_diff = max_abs_diff_;
  return r;
}

CompareResult compare_logits(const Tensor& logits_a, const Tensor& logits_b, const std::vector<int>& labels) {
  check(logits_a.dtype() == DType::F32 && logits_b.dtype() == DType::F32, "compare: logits must be float32");
  check(logits_a.ndim() == 2 && logits_a.shape() == logits_b.shape(), "compare: logits of A ",
        shape_str(logits_a.shape()), " and of B ", shape_str(logits_b.shape()), " must be the same (N, classes)");
  const int64_t N = logits_a.dim(0);
  check(int64_t(labels.size()) == N, "compare: ", N, " rows of logits but ", labels.size(), " labels");
  CompareAccumulator acc(int(logits_a.dim(1)));
  acc.add(logits_a.f32(), logits_b.f32(), labels.data(), N);
  return acc.result();
}

// ---- Models on a dataset ---------------------------------------------------

CompareResult compare_models(const ViT& a, const ViT& b, const Dataset& ds, const CompareOptions& o) {
  const int C = a.cfg.classes;
  check(b.cfg.classes == C, "compare: ", o.name_a, " has ", C, " classes but ", o.name_b, " has ", b.cfg.classes,
        " (compare models of the same task)");
  check(ds.classes() <= C, ds.describe(), " has ", ds.classes(), " classes but the models only ", C);
  check(o.batch >= 1, "compare: batch ", o.batch, " must be >= 1");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t N = o.limit > 0 ? std::min(o.limit, ds.size()) : ds.size();
  const bool shared_input = same_input(a.cfg, b.cfg);
  CompareAccumulator acc(C);
  SqnrRun sqnr(a, b);
  Progress bar("compare", N);
  Acts acts_a, acts_b;  // one set per model for all batches
  std::vector<int> labels;
  for (int64_t i = 0; i < N; i += o.batch) {
    const int64_t n = std::min(o.batch, N - i);
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), i);
    labels.resize(n);
    for (int64_t k = 0; k < n; ++k) labels[k] = ds.label(i + k);
    const Tensor xa = preprocess_batch(ds, idx, a.cfg);
    const Tensor xb = shared_input ? xa : preprocess_batch(ds, idx, b.cfg);
    Tensor la, lb;
    if (o.layers) {
      la = Tensor::empty({n, C});
      lb = Tensor::empty({n, C});
      sqnr.run(xa, xb, la.f32(), lb.f32());
    } else {
      la = vit_predict(a, xa, acts_a);
      lb = vit_predict(b, xb, acts_b);
    }
    acc.add(la.f32(), lb.f32(), labels.data(), n);
    if (o.progress) bar.update(i + n, "agreement " + pct(acc.agreement()));
  }
  if (o.progress) bar.finish("agreement " + pct(acc.agreement()));
  CompareResult r = acc.result();
  const std::vector<std::string> names = ds.class_names();
  std::copy_n(names.begin(), std::min<size_t>(names.size(), r.class_names.size()), r.class_names.begin());
  r.data = ds.describe();
  if (o.layers) {
    r.layers = sqnr.layers();
    for (LayerSqnr& l : r.layers)
      if (l.values > 0) l.signal /= double(l.values), l.noise /= double(l.values);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

// ---- Output ----------------------------------------------------------------

nlohmann::json CompareResult::to_json() const {
  nlohmann::json j;
  j["images"] = images;
  j["classes"] = classes;
  if (!data.empty()) j["data"] = data;
  j["a"] = {{"top1", top1_a}, {"top5", top5_a}, {"nonfinite_images", nonfinite_a}};
  j["b"] = {{"top1", top1_b}, {"top5", top5_b}, {"nonfinite_images", nonfinite_b}};
  j["diff_points"] = {{"top1", top1_diff_points()}, {"top5", top5_diff_points()}};
  j["agreement"] = agreement;
  j["finite_images"] = finite_images;
  if (finite_images > 0) {
    j["kl"] = {{"mean", kl.mean}, {"median", kl.median}, {"p99", kl.p99}, {"max", kl.max}};
    j["max_abs_logit_diff"] = max_abs_diff;
  } else {
    j["kl"] = nullptr;
    j["max_abs_logit_diff"] = nullptr;
  }
  nlohmann::json pc = nlohmann::json::array();
  for (int c = 0; c < classes; ++c)
    pc.push_back({{"class", c},
                  {"name", class_names[c]},
                  {"images", per_class[c].images},
                  {"top1_a", per_class[c].top1_a},
                  {"top1_b", per_class[c].top1_b},
                  {"diff_points", per_class[c].diff_points()}});
  j["per_class"] = pc;
  nlohmann::json ls = nlohmann::json::array();
  for (const LayerSqnr& l : layers) {
    const double db = l.db();
    ls.push_back({{"name", l.name},
                  {"kind", l.kind},
                  {"block", l.block},
                  {"sqnr_db", std::isfinite(db) ? nlohmann::json(db) : nlohmann::json()},
                  {"identical", db == INFINITY},
                  {"signal_power", std::isfinite(l.signal) ? nlohmann::json(l.signal) : nlohmann::json()},
                  {"noise_power", std::isfinite(l.noise) ? nlohmann::json(l.noise) : nlohmann::json()}});
  }
  j["layers"] = ls;
  j["seconds"] = seconds;
  return j;
}

namespace {

std::string accuracy_table(const CompareResult& r) {
  Table t({"", "A", "B", "B - A"});
  t.right_align({1, 2, 3});
  t.add({"top-1", pct(r.top1_a), pct(r.top1_b), signed_points(r.top1_diff_points())});
  t.add({"top-5", pct(r.top5_a), pct(r.top5_b), signed_points(r.top5_diff_points())});
  return t.text();
}

std::string agreement_lines(const CompareResult& r) {
  std::string s = cat("agreement  ", pct(r.agreement), " of ", fmt_int(r.images),
                      " images (B predicts the class A predicts)\n");
  if (r.finite_images > 0) {
    s += cat("KL(A||B)   mean ", fmt_si(r.kl.mean), ", median ", fmt_si(r.kl.median), ", p99 ", fmt_si(r.kl.p99),
             ", max ", fmt_si(r.kl.max), " (nats, per image)\n");
    s += cat("max |dA-B| ", fmt_si(r.max_abs_diff), " (largest logit difference)\n");
  } else {
    s += "KL(A||B)   - (no image has finite logits in both models)\n";
  }
  for (auto [model, count] : {std::pair{"A", r.nonfinite_a}, std::pair{"B", r.nonfinite_b}})
    if (count > 0)
      s += cat("non-finite ", fmt_int(count), " image(s) with NaN or infinite logits in ", model,
               ": counted as misses and disagreements, left out of KL and max |dA-B|\n");
  return s;
}

std::string class_table(const CompareResult& r) {
  Table t({"class", "name", "images", "top-1 A", "top-1 B", "B - A"});
  t.right_align({0, 2, 3, 4, 5});
  for (int c = 0; c < r.classes; ++c) {
    const ClassCompare& pc = r.per_class[c];
    if (pc.images == 0) continue;
    t.add({std::to_string(c), r.class_names[c], fmt_int(pc.images), pct(pc.top1_a), pct(pc.top1_b),
           signed_points(pc.diff_points())});
  }
  return t.text();
}

std::string db_text(double db) {
  if (std::isnan(db)) return "nan";
  if (std::isinf(db)) return db > 0 ? "inf" : "-inf";
  return fmt_fixed(db, 2);
}

// Layer kinds in first-seen order, each with its layers' SQNR sorted ascending (NaN last).
std::vector<std::pair<std::string, std::vector<double>>> sqnr_by_kind(const std::vector<LayerSqnr>& layers) {
  std::vector<std::pair<std::string, std::vector<double>>> v;
  for (const LayerSqnr& l : layers) {
    auto it = std::find_if(v.begin(), v.end(), [&](auto& p) { return p.first == l.kind; });
    if (it == v.end()) {
      v.emplace_back(l.kind, std::vector<double>{});
      it = v.end() - 1;
    }
    it->second.push_back(l.db());
  }
  for (auto& [kind, dbs] : v)
    std::sort(dbs.begin(), dbs.end(), [](double x, double y) { return std::isnan(y) ? !std::isnan(x) : x < y; });
  return v;
}

std::string kind_table(const CompareResult& r) {
  Table t({"layer kind", "layers", "SQNR min", "median", "max"});
  t.right_align({1, 2, 3, 4});
  for (const auto& [kind, dbs] : sqnr_by_kind(r.layers))
    t.add({kind, std::to_string(dbs.size()), db_text(dbs.front()), db_text(dbs[(dbs.size() - 1) / 2]),
           db_text(dbs.back())});
  return t.text();
}

}  // namespace

std::string CompareResult::text() const {
  std::string s = accuracy_table(*this) + "(B - A in points)\n\n" + agreement_lines(*this) + "\n" + class_table(*this);
  if (!layers.empty())
    s += "\nSQNR of the layers' outputs, 10 log10(sum y_A^2 / sum (y_A - y_B)^2) in dB, per layer kind (B's layers "
         "fed B's own inputs: the error accumulated so far; inf: identical; --layers for each layer)\n" +
         kind_table(*this);
  return s;
}

std::string CompareResult::layers_text() const {
  Table t({"layer", "kind", "block", "SQNR dB"});
  t.right_align({2, 3});
  for (const LayerSqnr& l : layers)
    t.add({l.name, l.kind, l.block >= 0 ? std::to_string(l.block) : "-", db_text(l.db())});
  return t.text();
}

std::string compare_summary(const CompareResult& r) {
  std::string s = cat("B against A on ", fmt_int(r.images), " images: top-1 ",
                      pct(r.top1_a), " -> ", pct(r.top1_b), " (", signed_points(r.top1_diff_points()),
                      " points), top-5 ", pct(r.top5_a), " -> ", pct(r.top5_b), " (",
                      signed_points(r.top5_diff_points()), "); B agrees with A's prediction on ", pct(r.agreement),
                      " of them");
  if (r.finite_images > 0)
    s += cat("; KL(A||B) per image: mean ", fmt_si(r.kl.mean), ", p99 ", fmt_si(r.kl.p99), ", max ",
             fmt_si(r.kl.max), "; largest logit difference ", fmt_si(r.max_abs_diff));
  if (!r.layers.empty()) {
    s += "; layer output SQNR, lowest per kind:";
    bool first = true;
    for (const auto& [kind, dbs] : sqnr_by_kind(r.layers)) {
      s += cat(first ? " " : ", ", kind, " ", db_text(dbs.front()), " dB");
      first = false;
    }
  }
  const int64_t bad = r.nonfinite_a + r.nonfinite_b;
  if (bad > 0) s += cat("; ", fmt_int(bad), " image row(s) with NaN or infinite logits (A ", r.nonfinite_a, ", B ",
                        r.nonfinite_b, ")");
  return s + ".\n";
}

}  // namespace vitkit

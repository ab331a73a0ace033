#include "vitkit/analyze/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "vitkit/analyze/ceiling.h"
#include "vitkit/analyze/memory.h"
#include "vitkit/compress/pass.h"
#include "vitkit/model/cost.h"
#include "vitkit/core/cpu.h"
#include "vitkit/core/error.h"
#include "vitkit/core/rng.h"
#include "vitkit/core/tensor.h"
#include "vitkit/core/threads.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/train/step.h"

namespace vitkit {

// ---- precisions ------------------------------------------------------------

namespace {

// Every precision the benchmark knows, in one place: a shorthand for a pass
// (compress/) or the model as loaded. Adding one (int8) is one entry here.
struct PrecisionSpec {
  const char* name;
  const char* pass;  // the pass spec that converts a model; "" for the model as loaded
  bool same_size;    // inference converts nothing that changes a size: it can always take the model itself
};

const std::vector<PrecisionSpec>& precision_table() {
  static const std::vector<PrecisionSpec> t = {
      {"fp32", "", true},  // as loaded; for inference dense weights packed where that is faster (AVX-512)
      {"bf16", "bf16", false},
      {"f16", "f16", false},
  };
  return t;
}

const PrecisionSpec* find_precision(const std::string& p) {
  for (const auto& s : precision_table())
    if (p == s.name) return &s;
  return nullptr;
}

// The model in precision s, converted in place: for inference, `fp32` packs
// dense weights; other precisions apply their pass.
void convert(ViT& m, const PrecisionSpec& s, bool train) {
  if (*s.pass) apply_pass(m, s.pass);
  else if (!train) pack_linears_for_inference(m);
}

}  // namespace

std::vector<std::string> bench_precisions() {
  std::vector<std::string> v;
  for (const auto& s : precision_table()) v.push_back(s.name);
  return v;
}

void check_bench_precision(const std::string& p, const std::string& flag) {
  const PrecisionSpec* s = find_precision(p);
  if (!s) {
    std::string names;
    for (auto& n : bench_precisions()) names += (names.empty() ? "" : ", ") + n;
    throw UsageError(cat(flag, ": unknown precision '", p, "' (", names, ")"));
  }
}


// ---- statistics and output -------------------------------------------------

Stats summarize(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

nlohmann::json BenchRow::to_json() const {
  nlohmann::json times = nlohmann::json::array();
  for (double s : seconds) times.push_back(s * 1e3);
  nlohmann::json j{{"model", model},
                   {"arch", arch},
                   {"mode", mode},
                   {"precision", precision},
                   {"repr", repr},
                   {"params", params},
                   {"model_bytes", model_bytes},
                   {"macs_per_image", macs_per_image},
                   {"batch", batch},
                   {"sub_batch", sub_batch},
                   {"parallel", parallel},
                   {"threads", threads},
                   {"reps", reps},
                   {"warmup", warmup},
                   {"median_ms", median_ms},
                   {"min_ms", min_ms},
                   {"max_ms", max_ms},
                   {"images_per_s", images_per_s},
                   {"gflops", gflops},
                   {"ceiling_gflops", ceiling_gflops},
                   {"ceiling_fraction", ceiling_fraction},
                   {"peak_rss_mib", peak_rss_mib},
                   {"times_ms", times}};
  if (!profile.empty()) {
    nlohmann::json p = nlohmann::json::array();
    for (auto& e : profile) p.push_back({{"op", e.name}, {"ms_per_rep", e.seconds * 1e3}, {"calls_per_rep", e.calls}});
    j["profile"] = p;
  }
  return j;
}

nlohmann::json MachineInfo::to_json() const {
  nlohmann::json c = nlohmann::json::object();
  for (auto& [t, g] : ceiling_gflops) c[std::to_string(t)] = g;
  return {{"cpu", cpu},
          {"cores", cores},
          {"native_bf16", native_bf16},
          {"load_avg", {load[0], load[1], load[2]}},
          {"ceiling_isa", ceiling_isa},
          {"ceiling_gflops", c},
          {"rss_resettable", rss_resettable}};
}

nlohmann::json BenchReport::to_json() const {
  nlohmann::json r = nlohmann::json::array();
  for (auto& row : rows) r.push_back(row.to_json());
  return {{"vitkit_version", VITKIT_VERSION},
          {"model", model},
          {"arch", arch},
          {"params", params},
          {"macs_per_image", macs_per_image},
          {"flops_per_image", flops_per_image},
          {"machine", machine.to_json()},
          {"rows", r}};
}

Table BenchReport::table() const {
  Table t({"model", "mode", "precision", "batch", "sub-batch", "parallel", "threads", "median ms", "min ms", "max ms",
           "images/s", "GFLOP/s", "of ceiling", "peak RSS MiB", "model MiB"});
  t.right_align({3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14});
  for (auto& r : rows) {
    const int dec = r.median_ms < 10 ? 3 : r.median_ms < 1000 ? 2 : 1;
    const std::string precision = r.repr.empty() || r.repr == r.precision ? r.precision : r.precision + " (" + r.repr + ")";
    t.add({r.model, r.mode, precision, std::to_string(r.batch), std::to_string(r.sub_batch), r.parallel,
           std::to_string(r.threads), fmt_fixed(r.median_ms, dec), fmt_fixed(r.min_ms, dec), fmt_fixed(r.max_ms, dec),
           fmt_fixed(r.images_per_s, r.images_per_s < 100 ? 2 : 1), fmt_fixed(r.gflops, 1),
           fmt_fixed(100 * r.ceiling_fraction, 1) + "%", r.peak_rss_mib < 0 ? "-" : fmt_fixed(r.peak_rss_mib, 1),
           fmt_fixed(double(r.model_bytes) / (1024.0 * 1024.0), 2)});
  }
  return t;
}

std::string BenchReport::header() const {
  std::string s = cat("model: ", model, " (", arch, ": ", fmt_fixed(params / 1e6, 2), " M parameters, ",
                      fmt_fixed(macs_per_image / 1e9, 3), " GMAC per image)\n");
  s += cat("cpu: ", machine.cpu, ", ", machine.cores, " cores, native bf16: ", machine.native_bf16 ? "yes" : "no",
           "; load average ", fmt_fixed(machine.load[0], 2), " ", fmt_fixed(machine.load[1], 2), " ",
           fmt_fixed(machine.load[2], 2), "\n");
  s += cat("fp32 ceiling (", machine.ceiling_isa, " FMA micro-benchmark):");
  bool first = true;
  for (auto& [t, g] : machine.ceiling_gflops) {
    s += cat(first ? " " : ", ", t, t == 1 ? " thread " : " threads ", fmt_fixed(g, 1), " GFLOP/s");
    first = false;
  }
  s += "\n";
  if (!machine.rss_resettable) s += "peak RSS: cannot be reset here, so each peak is the process's so far\n";
  return s;
}

Table profile_table(const BenchRow& r) {
  double total = 0;
  for (auto& e : r.profile) total += e.seconds;
  Table t({"op", "ms/rep", "share", "calls/rep"});
  t.right_align({1, 2, 3});
  for (auto& e : r.profile)
    t.add({e.name, fmt_fixed(e.seconds * 1e3, 3), fmt_fixed(total > 0 ? 100 * e.seconds / total : 0, 1) + "%",
           std::to_string(e.calls)});
  t.add({"total", fmt_fixed(total * 1e3, 3), "100.0%", ""});
  return t;
}

// ---- machine ---------------------------------------------------------------

namespace {

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) break;
    auto start = line.find_first_not_of(" \t", colon + 1);
    return start == std::string::npos ? "unknown" : line.substr(start);
  }
  return "unknown";
}

void read_loadavg(double out[3]) {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return;
  if (std::fscanf(f, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3) out[0] = out[1] = out[2] = 0;
  std::fclose(f);
}

}  // namespace

MachineInfo machine_info(const std::vector<int>& threads, double ceiling_seconds) {
  MachineInfo m;
  m.cpu = cpu_model_name();
  m.cores = hardware_threads();
  m.native_bf16 = cpu_has_native_bf16();
  read_loadavg(m.load);
  m.ceiling_isa = ceiling_isa();
  for (int t : threads)
    if (!m.ceiling_gflops.count(t)) m.ceiling_gflops[t] = measure_fp32_ceiling(t, ceiling_seconds);
  m.rss_resettable = peak_rss_resettable();
  return m;
}

// ---- the sweep -------------------------------------------------------------

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// What one row needs to run a step: its model, random images (and labels), and
// the activations planned for its batch.
struct RowState {
  const ViT* model = nullptr;
  TrainStep* train = nullptr;  // training rows: the step of their model variant
  Tensor images;
  std::vector<int> labels;
  Acts acts;
  int64_t batch = 0, sub_batch = 0;  // inference: the batch runs in sub-batches of sub_batch images (vit_infer)
  InferThreads parallel = InferThreads::PerOp;  // inference: per op or per image
  std::vector<float> logits;          // inference: (batch, classes)
};

// sub: the row's sub-batch (the batch itself in training); par: its thread split.
std::unique_ptr<RowState> make_state(const ViT& m, int64_t B, int64_t sub, InferThreads par, bool train,
                                     uint64_t seed) {
  auto s = std::make_unique<RowState>();
  s->model = &m;
  const ViTConfig& c = m.cfg;
  s->images = Tensor::empty({B, c.channels, c.image_size, c.image_size});
  Rng rng(seed);
  float* x = s->images.f32();
  for (int64_t i = 0; i < s->images.numel(); ++i) x[i] = rng.normal();
  s->batch = B;
  s->sub_batch = train ? B : sub;
  s->parallel = par;
  if (!train) {
    s->acts.plan(c, s->sub_batch, false);
    s->logits.resize(size_t(B) * c.classes);
  } else {
    s->labels.resize(size_t(B));
    for (auto& l : s->labels) l = int(rng.below(uint64_t(c.classes)));
  }
  return s;
}

void infer_step(RowState& s) {
  vit_infer(*s.model, s.images.f32(), s.batch, s.sub_batch, s.acts, s.logits.data(), nullptr, s.parallel);
}

// One optimizer step as a training loop runs it (without data loading):
// train/step.h's forward, loss, backward, AdamW and after-step hook.
void train_step(RowState& s) {
  StepOptions o;
  o.lr = 1e-4f;
  s.train->run(s.images.f32(), s.labels.data(), s.batch, o);
}

class Sweep {
 public:
  Sweep(const std::vector<BenchModel>& models, const BenchOptions& o) : models_(models), o_(o) {
    check(!models_.empty(), "bench: no model");
    const BenchModel& first = models_.front();
    report_.model = first.label;
    report_.arch = first.model->cfg.name;
    const ModelCost c = model_cost(*first.model);
    report_.params = c.params;
    report_.macs_per_image = c.macs;
    report_.flops_per_image = flops_per_image(c.macs);
  }

  BenchReport run() {
    make_rows();
    report_.machine = machine_info(threads_list(), o_.ceiling_seconds);
    time_rows();
    if (o_.memory) measure_memory();
    finish_rows();
    return std::move(report_);
  }

 private:
  // 2 x MACs (inference) or 6 x MACs (training: backward ~ 2 forwards).
  double flops_per_image(int64_t macs) const { return (o_.train ? 6.0 : 2.0) * double(macs); }

  std::vector<int> threads_list() const {
    return o_.threads.empty() ? std::vector<int>{hardware_threads()} : o_.threads;
  }

  // Rows ordered model, precision, batch, sub-batch, thread split, threads.
  void make_rows() {
    for (size_t mi = 0; mi < models_.size(); ++mi)
    for (auto& p : o_.precisions)
      for (int64_t b : o_.batches)
        for (int64_t sub : o_.sub_batches)
        for (InferThreads par : o_.parallel)
        for (int t : threads_list()) {
          const ViT& m = *models_[mi].model;
          BenchRow r;
          r.model = models_[mi].label;
          r.model_index = int(mi);
          r.arch = m.cfg.name;
          r.mode = o_.train ? "train" : "infer";
          r.precision = p;
          r.batch = b;
          const int64_t max_batch = sub > 0 ? sub : infer_batch(m.cfg);
          r.sub_batch = o_.train ? b : sub_batch_size(b, max_batch);
          // The split vit_infer makes (auto resolved), fixed for the row's reps.
          const bool per_image = !o_.train && infer_per_image(b, max_batch, t, nullptr, par);
          r.parallel = infer_threads_name(per_image ? InferThreads::PerImage : InferThreads::PerOp);
          r.threads = t;
          r.reps = o_.reps;
          r.warmup = o_.warmup;
          report_.rows.push_back(r);
        }
  }

  static InferThreads infer_mode(const BenchRow& r) { return parse_infer_threads(r.parallel, "parallel"); }

  // Model mi in precision p, built once. A precision that changes no size
  // (fp32: packing, or nothing) and a sweep's only precision convert the model
  // itself, so their peak RSS has no copy; other precisions of a sweep convert
  // their own copy, and the model itself stays resident and counts in their
  // rows' peak RSS.
  ViT& variant(int mi, const std::string& p) {
    const PrecisionSpec* s = find_precision(p);
    check(s != nullptr, "bench: unknown precision '", p, "'");
    ViT& base = *models_[size_t(mi)].model;
    std::string& base_precision = base_precision_[mi];
    if (s->same_size || o_.precisions.size() == 1) {
      check(base_precision.empty() || base_precision == p, "bench: the model is already ", base_precision);
      if (base_precision.empty()) convert(base, *s, o_.train);
      base_precision = p;
      return base;
    }
    auto& v = variants_[{mi, p}];
    if (!v) {
      v = base.clone();
      convert(*v, *s, o_.train);
    }
    return *v;
  }

  // The training step of a variant (begin_training on first use).
  TrainStep* trainer(const ViT& v) {
    auto& t = steps_[&v];
    if (!t) t = std::make_unique<TrainStep>(const_cast<ViT&>(v), AdamWConfig{});
    return t.get();
  }

  std::unique_ptr<RowState> state(size_t i) {
    BenchRow& r = report_.rows[i];
    ViT& v = variant(r.model_index, r.precision);
    auto s = make_state(v, r.batch, r.sub_batch, infer_mode(r), o_.train, o_.seed + i);
    if (o_.train) s->train = trainer(v);
    // What the row runs: the variant's own counts (a bf16 model has half the bytes).
    const ModelCost c = model_cost(v);
    r.params = c.params;
    r.model_bytes = c.bytes;
    r.macs_per_image = c.macs;
    r.repr = model_precision(v);
    return s;
  }

  void say(const std::string& line) const {
    if (o_.progress) o_.progress(line);
  }

  // One step of row i, timed; the profile of the step goes to profs_[i].
  double step(size_t i, RowState& s) {
    set_num_threads(report_.rows[i].threads);
    if (profiling_) prof::reset();
    const double t0 = now_s();
    if (o_.train)
      train_step(s);
    else
      infer_step(s);
    const double dt = now_s() - t0;
    if (profiling_) add_profile(i, dt);
    return dt;
  }

  void add_profile(size_t i, double dt) {
    auto& acc = profs_[i];
    double covered = 0;
    for (auto& e : prof::report()) {
      auto& a = acc[e.name];
      a.name = e.name;
      a.seconds += e.seconds;
      a.calls += e.calls;
      covered += e.seconds;
    }
    auto& other = acc["other"];
    other.name = "other";
    other.seconds += std::max(0.0, dt - covered);
    other.calls += 1;
  }

  // Warmup, then reps rounds; each round runs every row once (A B C A B C ...).
  void time_rows() {
    const size_t n = report_.rows.size();
    std::vector<std::unique_ptr<RowState>> states(n);
    for (size_t i = 0; i < n; ++i) states[i] = state(i);
    const bool was_on = prof::enabled();
    prof::set_enabled(false);
    for (int w = 0; w < o_.warmup; ++w) {
      say(cat("warmup ", w + 1, "/", o_.warmup));
      for (size_t i = 0; i < n; ++i) step(i, *states[i]);
    }
    profs_.assign(n, {});
    profiling_ = o_.profile;
    prof::set_enabled(profiling_);
    for (int rep = 0; rep < o_.reps; ++rep) {
      say(cat("rep ", rep + 1, "/", o_.reps));
      for (size_t i = 0; i < n; ++i) report_.rows[i].seconds.push_back(step(i, *states[i]));
    }
    profiling_ = false;
    prof::set_enabled(was_on);
  }

  // Each row alone: the other rows' buffers freed, the high-water mark reset,
  // one step. The models in use stay resident and count.
  void measure_memory() {
    const size_t n = report_.rows.size();
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const BenchRow &x = report_.rows[a], &y = report_.rows[b];
      return std::tie(x.model_index, x.precision) < std::tie(y.model_index, y.precision);
    });
    const bool was_on = prof::enabled();
    prof::set_enabled(false);
    for (size_t i : order) {
      BenchRow& r = report_.rows[i];
      say(cat("peak memory: ", r.precision, " batch ", r.batch, " threads ", r.threads));
      drop_variants_except(r.model_index, r.precision);
      release_free_memory();
      reset_peak_rss();
      {
        auto s = state(i);
        step(i, *s);
      }
      r.peak_rss_mib = double(peak_rss_bytes()) / (1024.0 * 1024.0);
    }
    prof::set_enabled(was_on);
  }

  void drop_variants_except(int mi, const std::string& p) {
    for (auto it = variants_.begin(); it != variants_.end();) {
      if (it->first == std::pair{mi, p}) {
        ++it;
        continue;
      }
      steps_.erase(it->second.get());
      it = variants_.erase(it);
    }
  }

  void finish_rows() {
    for (size_t i = 0; i < report_.rows.size(); ++i) {
      BenchRow& r = report_.rows[i];
      const Stats st = summarize(r.seconds);
      r.median_ms = st.median * 1e3;
      r.min_ms = st.min * 1e3;
      r.max_ms = st.max * 1e3;
      r.images_per_s = st.median > 0 ? double(r.batch) / st.median : 0;
      r.gflops = st.median > 0 ? flops_per_image(r.macs_per_image) * double(r.batch) / st.median * 1e-9 : 0;
      r.ceiling_gflops = report_.machine.ceiling_gflops[r.threads];
      r.ceiling_fraction = r.ceiling_gflops > 0 ? r.gflops / r.ceiling_gflops : 0;
      if (o_.profile) r.profile = mean_profile(profs_[i], r.reps);
    }
  }

  static std::vector<prof::Entry> mean_profile(const std::map<std::string, prof::Entry>& acc, int reps) {
    std::vector<prof::Entry> v;
    for (auto& [name, e] : acc) v.push_back({name, e.seconds / reps, e.calls / reps});
    std::sort(v.begin(), v.end(), [](const prof::Entry& a, const prof::Entry& b) { return a.seconds > b.seconds; });
    return v;
  }

  std::vector<BenchModel> models_;
  const BenchOptions& o_;
  BenchReport report_;
  std::map<std::pair<int, std::string>, std::unique_ptr<ViT>> variants_;
  std::map<const ViT*, std::unique_ptr<TrainStep>> steps_;
  std::vector<std::map<std::string, prof::Entry>> profs_;
  bool profiling_ = false;  // the timed reps record a per-op profile
  std::map<int, std::string> base_precision_;  // the precision each model itself was converted to, if any
};

void check_options(const BenchOptions& o) {
  check(o.reps >= 1, "bench: reps must be >= 1");
  check(o.warmup >= 0, "bench: warmup must be >= 0");
  check(!o.batches.empty() && !o.precisions.empty(), "bench: no batch sizes or precisions");
  for (int64_t b : o.batches) check(b >= 1, "bench: batch sizes must be >= 1, got ", b);
  check(!o.sub_batches.empty(), "bench: no sub-batch sizes");
  for (int64_t b : o.sub_batches) check(b >= 0, "bench: sub-batch sizes must be >= 0, got ", b);
  check(!o.train || o.sub_batches == std::vector<int64_t>{0}, "bench: training runs whole batches (no sub-batches)");
  check(!o.parallel.empty(), "bench: no thread split (parallel)");
  check(!o.train || o.parallel == std::vector<InferThreads>{InferThreads::Auto},
        "bench: training splits its threads per op (no parallel choice)");
  for (int t : o.threads) check(t >= 1, "bench: thread counts must be >= 1, got ", t);
  for (auto& p : o.precisions) check_bench_precision(p, "precision");
}

}  // namespace

BenchReport run_bench(const std::vector<BenchModel>& models, const BenchOptions& o) {
  check_options(o);
  const int saved_threads = num_threads();
  BenchReport r = Sweep(models, o).run();
  set_num_threads(saved_threads);
  return r;
}

BenchReport run_bench(ViT& model, const std::string& label, const BenchOptions& o) {
  return run_bench(std::vector<BenchModel>{{&model, label}}, o);
}

}  // namespace vitkit

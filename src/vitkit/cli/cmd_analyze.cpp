// vitkit analyze SUBCOMMAND: studies of a model.
//   reuse MODEL --data D --decimals 1,2,3,4 --images N [--attention] [--sample N]
//         [--json] [--csv FILE] [--plot FILE.svg]: weights rounded to d decimals,
//         accuracy lost and percentage hits counted exactly (docs/reuse.md).
//   compare A [B] --data D [--pass SPEC ...] [--limit N] [--json]: B (a model
//         file, or A with compression passes applied) against its reference A:
//         top-1/top-5 of both, agreement, KL(A||B), per class, per-layer SQNR
//         (analyze/compare.h).
//   stats MODEL --data D [--images N] [--split S] [--json] [--svg FILE] [--csv FILE]:
//         distributions of every weight, layer input and output, layer-norm
//         output and attention probability tensor (analyze/stats.h).
//   sensitivity MODEL --data D --pass SPEC [--by layer|kind|block] [--rank kl|top1|sqnr]
//         [--limit N] [--split train|test] [--calib N] [--target-bits B | --target-bytes N]
//         [--high SPEC] [--recipe-out R.toml] [--json] [--csv FILE]: the pass on one unit
//         at a time, ranked; a mixed-precision recipe for a target (analyze/sensitivity.h).
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "commands.h"
#include "common.h"
#include "vitkit/analyze/compare.h"
#include "vitkit/analyze/lowrank.h"
#include "vitkit/analyze/reuse.h"
#include "vitkit/analyze/sensitivity.h"
#include "vitkit/analyze/stats.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/report/svg_plot.h"
#include "vitkit/report/table.h"

namespace vitkit::cli {

namespace {

struct ReuseCliOpts {
  std::string model, data, split = "test", csv, plot, layers;
  std::vector<int> decimals{1, 2, 3, 4};
  int64_t images = 10, eval_limit = 10000, batch = 256, sample = 0;
  std::vector<int> zones{4, 4};
  uint64_t sample_seed = 0;
  bool attention = false, no_eval = false, no_engine = false;
  LoadOptions load;
  CommonOpts common;
};

std::string pct(double v) { return fmt_fixed(v, 2); }

const char* const kKinds[] = {"qkv", "out_proj", "fc1", "fc2", "attn_scores", "attn_values", "patch", "head"};

// Kinds present in any row, in the canonical order.
std::vector<std::string> kinds_of(const ReuseStudy& st) {
  std::vector<std::string> v;
  for (const char* k : kKinds)
    for (auto& r : st.rows)
      if (r.reuse.kind_hits.count(k)) {
        v.push_back(k);
        break;
      }
  return v;
}

// Hits per block (rows) and decimals (columns), mean over images.
void print_blocks(const ReuseStudy& st) {
  std::vector<std::string> cols{"block"};
  for (auto& r : st.rows) cols.push_back("d=" + std::to_string(r.decimals));
  Table t(cols);
  std::vector<int> right(cols.size());
  std::iota(right.begin(), right.end(), 0);
  t.right_align(right);
  const size_t blocks = st.rows.empty() ? 0 : st.rows[0].reuse.block_hits.size();
  for (size_t b = 0; b < blocks; ++b) {
    std::vector<std::string> row{std::to_string(b)};
    for (auto& r : st.rows) row.push_back(b < r.reuse.block_hits.size() ? pct(r.reuse.block_hits[b].mean) : "-");
    t.add(row);
  }
  std::printf("Hits per block (its rounded linears, %%, mean over images)\n");
  std::fputs(t.text().c_str(), stdout);
  std::printf("\n");
}

void print_text(const ReuseStudy& st, const ReuseCliOpts& o) {
  const std::vector<std::string> kinds = kinds_of(st);
  if (st.evaluated)
    std::printf("baseline   top-1 %.2f%% on %lld images\n", 100 * st.top1_baseline, (long long)st.eval_images);
  std::printf("counted    %lld image(s), every multiplication of the rounded layers\n\n", (long long)st.images);
  // Accuracy and hits.
  std::vector<std::string> cols{"d"};
  if (st.evaluated) cols.insert(cols.end(), {"top-1 W", "loss W", "top-1 W+A", "loss W+A"});
  cols.push_back("MACs rounded");
  for (auto& k : kinds) cols.push_back("hits " + k);
  cols.insert(cols.end(), {"hits overall", "min", "max"});
  Table t(cols);
  std::vector<int> right(cols.size());
  std::iota(right.begin(), right.end(), 0);
  t.right_align(right);
  for (auto& r : st.rows) {
    std::vector<std::string> row{std::to_string(r.decimals)};
    if (st.evaluated)
      row.insert(row.end(), {pct(100 * r.top1_weights), pct(r.loss_weights), pct(100 * r.top1_all), pct(r.loss_all)});
    row.push_back(pct(100 * r.macs_fraction) + "%");
    for (auto& k : kinds) row.push_back(r.reuse.kind_hits.count(k) ? pct(r.reuse.kind_hits.at(k).mean) : "-");
    row.insert(row.end(), {pct(r.reuse.overall.mean), pct(r.reuse.overall.min), pct(r.reuse.overall.max)});
    t.add(row);
  }
  std::fputs(t.text().c_str(), stdout);
  std::printf(
      "(W: weights rounded; W+A: weights and layer inputs rounded; loss in points; hits in %%, "
      "mean over images)\n\n");
  print_blocks(st);
  // Engine.
  Table e({"d", "multiplications", "per-output engine", "%", "product table", "%", "seconds"});
  e.right_align({0, 1, 2, 3, 4, 5, 6});
  for (auto& r : st.rows) {
    const ReuseSummary& s = r.reuse;
    const bool po = s.per_output >= 0;
    e.add({std::to_string(r.decimals), fmt_int((long long)s.mults), po ? fmt_int((long long)s.per_output) : "-",
           po ? pct(100 * s.per_output / s.mults) : "-", fmt_int((long long)s.table), pct(100 * s.table / s.mults),
           fmt_fixed(r.count_seconds, 1)});
  }
  std::printf(
      "Multiplications executed per image (rounded layers): plain, one per distinct pair per output "
      "element, one per distinct pair per layer\n");
  std::fputs(e.text().c_str(), stdout);
  if (o.sample > 0) {
    Table s({"d", "exact hits", "sampled", "error", "mean |err|", "max |err|", "1/f estimate", "error", "mean |err|",
             "max |err|"});
    s.right_align({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
    for (auto& r : st.rows) {
      const ReuseSummary& x = r.reuse;
      s.add({std::to_string(r.decimals), pct(x.overall.mean), pct(x.sample_hits), pct(x.sample_error),
             pct(x.sample_abs_error), pct(x.sample_max_abs_error), pct(x.sample_freq_hits), pct(x.sample_freq_error),
             pct(x.sample_freq_abs_error), pct(x.sample_freq_max_abs_error)});
    }
    std::printf(
        "\nSampling estimate (%lld multiplications per matmul in %dx%d zones) against the exact count "
        "(errors in points; |err| per matmul)\n",
        (long long)o.sample, o.zones[0], o.zones[1]);
    std::fputs(s.text().c_str(), stdout);
  }
}

std::string csv_of(const ReuseStudy& st) {
  const std::vector<std::string> kinds = kinds_of(st);
  std::vector<std::string> cols{"decimals", "macs_fraction"};
  if (st.evaluated) cols.insert(cols.end(), {"top1_baseline", "top1_weights", "loss_weights", "top1_all", "loss_all"});
  for (auto& k : kinds) cols.push_back("hits_" + k);
  cols.insert(cols.end(),
              {"hits_overall", "hits_min", "hits_max", "multiplications", "engine_per_output", "engine_table",
               "sample_hits", "sample_error", "sample_freq_hits", "sample_freq_error", "images", "count_seconds"});
  Table t(cols);
  auto g = [](double v) { return fmt_fixed(v, 6); };
  for (auto& r : st.rows) {
    const ReuseSummary& s = r.reuse;
    std::vector<std::string> row{std::to_string(r.decimals), g(r.macs_fraction)};
    if (st.evaluated)
      row.insert(row.end(), {g(st.top1_baseline), g(r.top1_weights), g(r.loss_weights), g(r.top1_all), g(r.loss_all)});
    for (auto& k : kinds) row.push_back(s.kind_hits.count(k) ? g(s.kind_hits.at(k).mean) : "");
    row.insert(row.end(), {g(s.overall.mean), g(s.overall.min), g(s.overall.max), fmt_fixed(s.mults, 0),
                           s.per_output >= 0 ? fmt_fixed(s.per_output, 0) : "", fmt_fixed(s.table, 0),
                           s.samples ? g(s.sample_hits) : "", s.samples ? g(s.sample_error) : "",
                           s.samples ? g(s.sample_freq_hits) : "", s.samples ? g(s.sample_freq_error) : "",
                           std::to_string(s.images), fmt_fixed(r.count_seconds, 2)});
    t.add(row);
  }
  return t.csv();
}

PlotSeries series(const std::string& name, const std::vector<double>& x) {
  PlotSeries s;
  s.name = name;
  s.x = x;
  return s;
}

std::string plot_of(const ReuseStudy& st, const std::string& model) {
  std::vector<double> ds;
  for (auto& r : st.rows) ds.push_back(r.decimals);
  Plot hits;
  hits.title = "Percentage hits: " + model;
  hits.x.label = "decimals d";
  hits.y.label = "hits (%)";
  hits.xticks = ds;
  for (auto& k : kinds_of(st)) {
    PlotSeries s = series(k, ds);
    for (auto& r : st.rows) s.y.push_back(r.reuse.kind_hits.count(k) ? r.reuse.kind_hits.at(k).mean : NAN);
    s.dashed = true;
    hits.series.push_back(s);
  }
  PlotSeries all = series("overall", ds);
  for (auto& r : st.rows) all.y.push_back(r.reuse.overall.mean);
  all.color = "#000000";
  hits.series.push_back(all);
  std::vector<Plot> panels{hits};
  if (st.evaluated) {
    Plot loss;
    loss.title = "Accuracy loss";
    loss.x.label = "decimals d";
    loss.y.label = "top-1 loss (points)";
    loss.xticks = ds;
    PlotSeries w = series("weights rounded", ds), a = series("weights and inputs rounded", ds);
    for (auto& r : st.rows) w.y.push_back(r.loss_weights), a.y.push_back(r.loss_all);
    // Losses spanning decades (11 points at d = 1, 0.1 at d = 2) need a log axis;
    // losses at or below 0.01 point (one image in 10,000) are drawn at 0.01.
    double worst = 0;
    for (auto& r : st.rows) worst = std::max({worst, r.loss_weights, r.loss_all});
    if (worst > 2) {
      loss.y.log = true;
      loss.y.label = "top-1 loss (points; <= 0.01 drawn at 0.01)";
      for (auto* s : {&w, &a})
        for (double& v : s->y) v = std::max(v, 0.01);
    }
    loss.series = {w, a};
    loss.lines.push_back({0.5, "0.5 point"});
    panels.push_back(loss);
  }
  return render_svg(panels);
}

void run_reuse(const ReuseCliOpts& o) {
  apply_common(o.common);
  for (int d : o.decimals)
    if (d < 0 || d > kernels::kMaxDecimals)
      throw UsageError(cat("--decimals: ", d, " is outside 0..", kernels::kMaxDecimals));
  if (o.images < 1) throw UsageError("--images must be >= 1");
  if (o.zones.size() != 2 || o.zones[0] < 1 || o.zones[1] < 1)
    throw UsageError("--zones: give ROWS,COLS (two positive integers)");
  auto model = load_model(o.model, o.load);
  auto ds = open_dataset(o.data, o.split);
  if (!o.common.quiet) std::fprintf(stderr, "data: %s\n", ds->describe().c_str());
  const int64_t n = std::min(o.images, ds->size());
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  const Tensor images = preprocess_batch(*ds, idx, model->cfg);

  ReuseStudyOptions so;
  so.decimals = o.decimals;
  so.layers = o.layers;
  so.eval_limit = o.eval_limit;
  so.eval = !o.no_eval;
  so.batch = o.batch;
  so.count.attention = o.attention;
  so.count.per_output = !o.no_engine;
  so.count.sample = o.sample;
  so.count.zone_rows = o.zones[0];
  so.count.zone_cols = o.zones[1];
  so.count.seed = o.sample_seed;
  so.progress = !o.common.quiet;
  const ReuseStudy st = run_reuse_study(*model, ds.get(), images, so);

  if (!o.csv.empty()) write_text_atomic(o.csv, csv_of(st));
  if (!o.plot.empty()) write_text_atomic(o.plot, plot_of(st, model->cfg.name));
  if (o.common.json) {
    nlohmann::json j = st.to_json();
    j["model"] = o.model;
    j["data"] = ds->describe();
    j["split"] = o.split;
    j["decimals"] = o.decimals;
    j["attention"] = o.attention;
    j["threads"] = num_threads();
    if (o.sample > 0) j["sample"] = {{"per_matmul", o.sample}, {"zones", o.zones}, {"seed", o.sample_seed}};
    print_json(j);
    return;
  }
  std::printf("model      %s (%s)\n", o.model.c_str(), model->cfg.name.c_str());
  std::printf("data       %s\n", ds->describe().c_str());
  print_text(st, o);
  if (!o.csv.empty()) std::printf("\ncsv        %s\n", o.csv.c_str());
  if (!o.plot.empty()) std::printf("plot       %s\n", o.plot.c_str());
}

void add_reuse(CLI::App* analyze) {
  auto o = std::make_shared<ReuseCliOpts>();
  CLI::App* cmd = analyze->add_subcommand(
      "reuse", "Round weights to d decimals: accuracy lost and percentage hits (repeated multiplications), exact");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth) or preset")->required();
  cmd->add_option("--data", o->data, "fashion-mnist, mnist, cifar10, or a folder (IDX, CIFAR-10 binary, images)")
      ->required();
  cmd->add_option("--split", o->split, "train or test")->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--decimals", o->decimals, "Decimals to study, e.g. 1,2,3,4")->delimiter(',');
  cmd->add_option("--images", o->images, "Images whose multiplications are counted (the first of the split)");
  cmd->add_option("--eval-limit", o->eval_limit, "Accuracy on the first N images of the split (0: all)")
      ->check(whole_number(0));
  cmd->add_flag("--no-eval", o->no_eval, "Skip the accuracy evaluation");
  cmd->add_option("--batch", o->batch, "Images per forward pass in the evaluation")->check(whole_number(1));
  cmd->add_option("--layers", o->layers, "More layers to round: regex searched in layer names (conv_proj|heads.head)");
  cmd->add_flag("--attention", o->attention, "Also count q.k^T and attention.v (operands rounded for counting only)");
  cmd->add_flag("--no-engine", o->no_engine, "Skip the per-output engine count (the slowest part)");
  cmd->add_option("--sample", o->sample,
                  "Sampling estimate: N multiplications drawn per matmul, against the exact count")
      ->check(whole_number(0));
  cmd->add_option("--zones", o->zones, "Sampling zones: ROWS,COLS (rows of X x outputs)")->delimiter(',');
  cmd->add_option("--sample-seed", o->sample_seed, "Seed of the sampling estimate");
  cmd->add_option("--csv", o->csv, "Write one CSV row per decimals to FILE")->check(output_file());
  cmd->add_option("--plot", o->plot, "Write an SVG plot (hits and accuracy loss versus decimals) to FILE")->check(output_file());
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->callback([o] { run_reuse(*o); });
}

// ---------------------------------------------------------------- compare

struct CompareCliOpts {
  std::string a, b, data, split = "test";
  std::vector<std::string> passes;
  int64_t limit = 0, batch = 256;
  bool layers = false, no_layers = false;
  LoadOptions load;
  CommonOpts common;
};

// True when B is a pass spec ("round:decimals=2") rather than a model: it is
// no existing file or preset and its name before ':' is a registered pass.
// A spec-like B ("name:...") naming no pass is a usage error listing the passes;
// anything else is left to load_model (a missing file).
bool b_is_pass_spec(const std::string& b) {
  if (file_exists(b) || is_preset_spec(b)) return false;
  const std::string name = b.substr(0, b.find(':'));
  for (const Pass* p : registered_passes())
    if (p->name() == name) return true;
  if (b.find(':') == std::string::npos) return false;
  try {
    find_pass(name);
  } catch (const UsageError& e) {
    throw UsageError(cat("B '", b, "' is no model file or preset, and as a pass spec: ", e.what()));
  }
  return false;
}

// Model B: A's clone with the passes applied (their records in `records`), or a model file.
std::unique_ptr<ViT> load_b(const ViT& a, const CompareCliOpts& o, std::vector<nlohmann::json>& records) {
  std::vector<std::string> specs = o.passes;
  if (!o.b.empty() && b_is_pass_spec(o.b)) specs = {o.b};
  if (specs.empty()) {
    LoadOptions lo;  // --preset/--config/--arch/--map describe A; B is a vitkit file or preset
    lo.seed = o.load.seed;
    lo.strict = o.load.strict;
    return load_model(o.b, lo);
  }
  std::unique_ptr<ViT> b = a.clone();
  records = apply_passes(*b, specs);
  return b;
}

void run_compare(const CompareCliOpts& o) {
  apply_common(o.common);
  if (o.b.empty() && o.passes.empty()) throw UsageError("give B (a model file or a pass spec) or --pass SPEC");
  if (!o.b.empty() && !o.passes.empty()) throw UsageError("give B or --pass, not both (B = A with the --pass specs)");
  auto a = load_model(o.a, o.load);
  std::vector<nlohmann::json> records;
  auto b = load_b(*a, o, records);
  std::string b_desc = o.b.empty() ? "A" : o.b;
  for (const std::string& p : o.passes) b_desc += " + " + p;
  auto ds = open_dataset(o.data, o.split);
  // Inference only from here, as in eval: the same weights layout gives the same logits.
  pack_linears_for_inference(*a);
  pack_linears_for_inference(*b);
  if (!o.common.quiet) std::fprintf(stderr, "data: %s\n", ds->describe().c_str());
  CompareOptions co;
  co.limit = o.limit;
  co.batch = o.batch;
  co.progress = !o.common.quiet;
  co.layers = !o.no_layers;
  if (o.layers && o.no_layers) throw UsageError("give --layers or --no-layers, not both");
  co.name_a = "A (" + o.a + ")";
  co.name_b = "B (" + b_desc + ")";
  const CompareResult r = compare_models(*a, *b, *ds, co);
  if (o.common.json) {
    nlohmann::json j = r.to_json();
    j["a"]["model"] = o.a;
    j["b"]["model"] = b_desc;
    j["b"]["passes"] = records;
    j["split"] = o.split;
    j["threads"] = num_threads();
    print_json(j);
    return;
  }
  std::printf("A          %s (%s)\n", o.a.c_str(), a->cfg.name.c_str());
  std::printf("B          %s%s\n", b_desc.c_str(), records.empty() ? "" : " (passes applied to A)");
  std::printf("data       %s, %lld images\n\n", ds->describe().c_str(), (long long)r.images);
  std::fputs(r.text().c_str(), stdout);
  if (o.layers) std::printf("\n%s", r.layers_text().c_str());
}

void add_compare(CLI::App* analyze) {
  auto o = std::make_shared<CompareCliOpts>();
  CLI::App* cmd = analyze->add_subcommand(
      "compare", "Compare model B (e.g. compressed) with its reference A: top-1/top-5, agreement, KL(A||B), per class");
  cmd->add_option("a", o->a, "Reference model A: a file (.safetensors, .pth) or preset (the model options apply)")
      ->required();
  cmd->add_option("b", o->b,
                  "Model B: a vitkit model file or preset, or a pass spec NAME:key=value,... applied to a copy of A "
                  "(omit it with --pass)");
  cmd->add_option("--data", o->data, "fashion-mnist, mnist, cifar10, or a folder (IDX, CIFAR-10 binary, images)")
      ->required();
  cmd->add_option("--split", o->split, "train or test")->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--limit", o->limit, "Only the first N images")->check(whole_number(0));
  cmd->add_option("--batch", o->batch, "Images per forward pass")->check(whole_number(1));
  cmd->add_option("--pass", o->passes, "B = A with NAME:key=value,... applied (repeatable; in order)")
      ->allow_extra_args(false);
  cmd->add_flag("--layers", o->layers, "Print the SQNR of every layer (JSON always has them)");
  cmd->add_flag("--no-layers", o->no_layers, "Skip the per-layer SQNR (the models then run without hooks)");
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->footer(
      "B - A differences are in points. Agreement: share of images where B's argmax equals A's. KL(A||B): per "
      "image, sum_c p_A (log p_A - log p_B) of the softmaxes, in double; mean, median, p99, max over images.\n"
      "Images whose logits hold NaN or infinities count as misses and disagreements and are reported.\n"
      "SQNR per linear layer (present in both, same output width): 10 log10(sum y_A^2 / sum (y_A - y_B)^2) of "
      "its output (after its fused activation: fc1's after GELU; without the residual) on the same images, each "
      "model fed its own inputs, so B's error is the one accumulated up to that layer. \"inf\" when identical; "
      "JSON layers[].sqnr_db is null then, with identical: true.\n"
      "The model options (--preset, --config, --arch, --map) describe A; B is read as a vitkit file (as written "
      "by vitkit compress) or a preset.\n\n" +
      passes_help());
  cmd->callback([o] { run_compare(*o); });
}

// ---------------------------------------------------------------- stats

struct StatsCliOpts {
  std::string model, data, split = "test", svg, csv;
  int64_t images = 256;
  StatsOptions stats;
  LoadOptions load;
  CommonOpts common;
};

void print_stats_text(const StatsResult& r, const StatsCliOpts& o, const ViT& m) {
  std::printf("model      %s (%s, %s)\n", o.model.c_str(), m.cfg.name.c_str(), model_precision(m).c_str());
  std::printf("data       %s, %lld images (balanced over classes)\n\n", r.data.c_str(), (long long)r.images);
  std::fputs(r.text().c_str(), stdout);
  std::string with;
  for (const TensorStats& t : r.tensors)
    if (!t.outlier_channels.empty()) with += "  " + t.name + ": " + std::to_string(t.outlier_channels.size()) + "\n";
  if (!with.empty()) std::printf("\nTensors with outlier channels (count):\n%s", with.c_str());
  if (!o.csv.empty()) std::printf("\ncsv        %s\n", o.csv.c_str());
  if (!o.svg.empty()) std::printf("svg        %s\n", o.svg.c_str());
}

void run_stats(const StatsCliOpts& o) {
  apply_common(o.common);
  if (o.images < 1) throw UsageError(cat("--images: ", o.images, " must be >= 1"));
  if (o.stats.bins < 1 || 2048 % o.stats.bins != 0)
    throw UsageError(cat("--bins: ", o.stats.bins, " must divide 2048 (e.g. 64, 128, 256)"));
  if (!(o.stats.outlier_ratio > 0)) throw UsageError(cat("--outlier-ratio: ", o.stats.outlier_ratio, " must be > 0"));
  auto model = load_model(o.model, o.load);
  PassContext ctx;  // the calibration set: balanced over classes, as compress's
  load_calibration(ctx, *model, o.data, o.split, o.images);
  if (!o.common.quiet) std::fprintf(stderr, "data: %lld images of %s\n", (long long)ctx.calib.dim(0),
                                    ctx.calib_source.c_str());
  pack_linears_for_inference(*model);  // inference only; plain_weight reads any representation
  StatsOptions so = o.stats;
  so.progress = !o.common.quiet;
  StatsResult r = model_stats(*model, ctx.calib, so);
  r.data = ctx.calib_source;
  if (!o.csv.empty()) write_text_atomic(o.csv, r.csv());
  if (!o.svg.empty()) write_text_atomic(o.svg, r.svg(model->cfg.name));
  if (o.common.json) {
    nlohmann::json j = r.to_json();
    j["model"] = o.model;
    j["split"] = o.split;
    j["precision"] = model_precision(*model);
    j["threads"] = num_threads();
    print_json(j);
    return;
  }
  print_stats_text(r, o, *model);
}

void add_stats(CLI::App* analyze) {
  auto o = std::make_shared<StatsCliOpts>();
  CLI::App* cmd = analyze->add_subcommand(
      "stats", "Distributions of weights, layer inputs/outputs, layer norms and attention probabilities");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth; any representation) or preset")->required();
  cmd->add_option("--data", o->data, "fashion-mnist, mnist, cifar10, or a folder (IDX, CIFAR-10 binary, images)")
      ->required();
  cmd->add_option("--split", o->split, "train or test")->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--images", o->images, "Images to run (the first of the split in class-balanced order; default 256)");
  cmd->add_option("--batch", o->stats.batch, "Images per forward pass")->check(whole_number(1));
  cmd->add_option("--bins", o->stats.bins, "Histogram bins in the JSON (a divisor of 2048; default 128)");
  cmd->add_option("--outlier-ratio", o->stats.outlier_ratio,
                  "Outlier channel: per-channel max |x| above this many times the median channel's (default 10)");
  cmd->add_option("--svg", o->svg, "Write histograms per tensor kind (one panel per role and layer kind, a line per "
                                   "block) to FILE")
      ->check(output_file());
  cmd->add_option("--csv", o->csv, "Write one CSV row per tensor to FILE")->check(output_file());
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->footer(
      "Tensors: per linear layer its weight (repr->plain_weight: dequantized for compressed models; channel = "
      "output row), input X (channel = input feature) and output act(X W^T + b) without the residual (channel = "
      "output feature; fc1's output is after GELU, the same values as fc2's input); per block ln_1 and ln_2 "
      "outputs (pre-norm: the same values as qkv's and fc1's inputs) and the attention probabilities "
      "softmax(q k^T / sqrt(head_dim)) recomputed from the qkv the forward makes (channel = head); the final "
      "norm encoder.ln. Values: every token of every image.\n"
      "Per tensor: min, max, mean, sigma, the share outside mean -+ k sigma (k = 1, 2, 3; exact), percentiles "
      "0.01 0.1 1 99 99.9 99.99 from a 2048-bin histogram over [min, max] with linear interpolation within the "
      "bin (so within one bin width, JSON percentile_error, of the exact values), the histogram (--bins) and the "
      "outlier channels (indices). Two passes over the images (moments, then histograms).");
  cmd->callback([o] { run_stats(*o); });
}

// ---------------------------------------------------------------- lowrank

struct LowRankCliOpts {
  std::string model, data, split = "test", svg, csv;
  int64_t images = 256;
  LoadOptions load;
  CommonOpts common;
};

void run_lowrank(const LowRankCliOpts& o) {
  apply_common(o.common);
  if (o.images < 1) throw UsageError(cat("--images: ", o.images, " must be >= 1"));
  auto model = load_model(o.model, o.load);
  PassContext ctx;  // balanced over classes, as compress's calibration set
  load_calibration(ctx, *model, o.data, o.split, o.images);
  if (!o.common.quiet)
    std::fprintf(stderr, "data: %lld images of %s\n", (long long)ctx.calib.dim(0), ctx.calib_source.c_str());
  LowRankAnalysis r = analyze_lowrank(*model, ctx.calib, !o.common.quiet);
  r.data = ctx.calib_source;
  if (!o.csv.empty()) write_text_atomic(o.csv, r.csv());
  if (!o.svg.empty()) write_text_atomic(o.svg, r.svg(model->cfg.name));
  if (o.common.json) {
    nlohmann::json j = r.to_json();
    j["model"] = o.model;
    j["split"] = o.split;
    print_json(j);
    return;
  }
  std::printf("model      %s (%s, %s)\n", o.model.c_str(), model->cfg.name.c_str(), model_precision(*model).c_str());
  std::printf("data       %s, %lld images (balanced over classes)\n\n", r.data.c_str(), (long long)r.images);
  std::fputs(r.text().c_str(), stdout);
  if (!o.csv.empty()) std::printf("\ncsv        %s\n", o.csv.c_str());
  if (!o.svg.empty()) std::printf("svg        %s\n", o.svg.c_str());
}

void add_lowrank(CLI::App* analyze) {
  auto o = std::make_shared<LowRankCliOpts>();
  CLI::App* cmd = analyze->add_subcommand(
      "lowrank", "How low-rank each linear layer is: spectra of the weight, of the weight seen by the data and of "
                 "the features; ranks for 90/95/99% energy; output error against rank for svd, asvd and whiten");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth; any representation) or preset")->required();
  cmd->add_option("--data", o->data, "fashion-mnist, mnist, cifar10, or a folder (IDX, CIFAR-10 binary, images)")
      ->required();
  cmd->add_option("--split", o->split, "train or test")->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--images", o->images, "Images to run (the first of the split in class-balanced order)")
      ->check(whole_number(1));
  cmd->add_option("--svg", o->svg, "Write the energy and output-error curves per layer kind to FILE")
      ->check(output_file());
  cmd->add_option("--csv", o->csv, "Write one CSV row per layer and rank of the error curves to FILE")
      ->check(output_file());
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->footer(
      "Per linear layer, over the images' tokens X (rows, in): the singular values of the weight W, of W L with "
      "X^T X = L L^T (the weight as the data sees it: ||X W^T|| = ||W L||; truncating it is the least output "
      "error, lowrank method=whiten) and of X itself (the features); the rank each needs for 90, 95 and 99% of "
      "its sum of squared singular values; and ||X (W - W_r)^T|| / ||X W^T|| for the rank-r weight of each "
      "method (svd, asvd alpha 0.5, whiten damp 1e-4) at ranks from 1/64 of full rank to full. 'even' is the "
      "largest rank whose factors r (in + out) are fewer than the in x out weights.");
  cmd->callback([o] { run_lowrank(*o); });
}

// ---------------------------------------------------------------- sensitivity

struct SensCliOpts {
  std::string model, data, pass, by = "kind", rank = "kl", split = "train", high = "quantize:bits=8", recipe_out,
                                   csv;
  int64_t limit = 1000, calib = 512, batch = 256;
  double target_bits = 0, target_bytes = 0;
  LoadOptions load;
  CommonOpts common;
};

// The images a study measures on: with --split train, a held-out part of the
// training split (heldout_indices: each class's last images), disjoint from
// the calibration images (balanced_indices: each class's first); with --split
// test, the test split's first N in class-balanced order.
std::unique_ptr<Dataset> sensitivity_images(const Dataset& ds, const SensCliOpts& o) {
  if (o.split == "test")
    return subset_dataset(ds, balanced_indices(ds, o.limit), cat("first ", o.limit, " (class-balanced)"));
  std::vector<int64_t> idx = heldout_indices(ds, o.limit, balanced_indices(ds, o.calib));
  const int64_t n = int64_t(idx.size());
  return subset_dataset(ds, std::move(idx),
                        cat("held out: the last ", n, " (class-balanced), none of the first ", o.calib,
                            " calibration images"));
}

// One model of the mixed-precision summary, measured against the original.
struct MixedRow {
  std::string what;
  double bits = 0;
  int64_t bytes = 0;
  CompareResult cmp;
};

MixedRow measure_mixed(const std::string& what, const ViT& m, const ViT& ref, const std::vector<std::string>& specs,
                       const std::vector<nlohmann::json>& origins, const PassContext& ctx, const Dataset& ds,
                       int64_t batch) {
  std::unique_ptr<ViT> b = m.clone();
  apply_passes(*b, specs, ctx, origins);
  MixedRow row{what, average_bits(layer_widths(*b)), model_cost(*b).bytes, {}};
  pack_linears_for_inference(*b);
  CompareOptions co;
  co.batch = batch;
  co.layers = false;
  co.name_a = "the model";
  co.name_b = what;
  row.cmp = compare_models(ref, *b, ds, co);
  return row;
}

std::vector<std::string> all_unit_layers(const SensitivityResult& r) {
  std::vector<std::string> v;
  for (const SensitivityUnit& u : r.units) v.insert(v.end(), u.layers.begin(), u.layers.end());
  return v;
}

void check_sens_opts(const SensCliOpts& o) {
  parse_sensitivity_by(o.by);
  parse_sensitivity_rank(o.rank);
  check_sensitivity_pass(o.pass);
  if (o.high != "none") {
    try {
      passes_need_calibration({o.high});
    } catch (const UsageError& e) {
      throw UsageError(cat("--high: ", e.what()));
    }
  }
  if (o.target_bits != 0 && o.target_bytes != 0) throw UsageError("give --target-bits or --target-bytes, not both");
  if (o.target_bits != 0 && !(o.target_bits > 0 && o.target_bits <= 32))
    throw UsageError(cat("--target-bits ", o.target_bits, " is out of range: average weight bits are in (0, 32]"));
  if (o.target_bytes < 0) throw UsageError(cat("--target-bytes ", o.target_bytes, " is out of range: must be > 0"));
  if (!o.recipe_out.empty() && o.target_bits == 0 && o.target_bytes == 0)
    throw UsageError("--recipe-out needs a target: give --target-bits B or --target-bytes N");
  if (o.limit < 1) throw UsageError(cat("--limit ", o.limit, " must be >= 1"));
}

void print_mixed_rows(const std::vector<MixedRow>& rows) {
  Table t({"model", "avg bits", "bytes", "top-1 %", "top-1 diff", "agreement %", "KL mean"});
  t.right_align({1, 2, 3, 4, 5, 6});
  for (const MixedRow& r : rows) {
    char kl[32];
    std::snprintf(kl, sizeof kl, "%.4g", r.cmp.kl.mean);
    t.add({r.what, fmt_fixed(r.bits, 3), fmt_int(r.bytes), fmt_fixed(100 * r.cmp.top1_b, 2),
           fmt_fixed(r.cmp.top1_diff_points(), 2), fmt_fixed(100 * r.cmp.agreement, 2), kl});
  }
  std::fputs(t.text().c_str(), stdout);
}

nlohmann::json mixed_json(const MixedPlan& p, const std::vector<MixedRow>& rows, const SensCliOpts& o) {
  nlohmann::json measured = nlohmann::json::array();
  for (const MixedRow& r : rows)
    measured.push_back({{"model", r.what},
                        {"bits", r.bits},
                        {"bytes", r.bytes},
                        {"top1", r.cmp.top1_b},
                        {"top1_diff_points", r.cmp.top1_diff_points()},
                        {"agreement", r.cmp.agreement},
                        {"kl_mean", r.cmp.kl.mean}});
  nlohmann::json j{{"high", o.high},           {"low_units", p.low_units}, {"low_layers", p.low_layers},
                   {"bits", p.bits},           {"bytes", p.bytes},         {"high_bits", p.high_bits},
                   {"low_bits", p.low_bits},   {"high_bytes", p.high_bytes}, {"low_bytes", p.low_bytes},
                   {"recipe", recipe_toml(p.recipe)}, {"measured", measured}};
  if (o.target_bits != 0) j["target_bits"] = o.target_bits;
  else j["target_bytes"] = int64_t(o.target_bytes);
  if (!o.recipe_out.empty()) j["recipe_out"] = o.recipe_out;
  return j;
}

// Plans the mixed-precision recipe, writes it, and measures it beside every
// unit high and every unit at the pass.
void run_mixed(const SensCliOpts& o, const ViT& m, const SensitivityResult& r, const PassContext& ctx,
               const Dataset& ds, nlohmann::json* out) {
  const std::string high = o.high == "none" ? "" : o.high;
  std::unique_ptr<ViT> h = m.clone();
  if (!high.empty()) apply_pass(*h, high, ctx);
  MixedTarget target;
  target.kind = o.target_bits != 0 ? MixedTarget::Kind::Bits : MixedTarget::Kind::Bytes;
  target.value = o.target_bits != 0 ? o.target_bits : o.target_bytes;
  const MixedPlan p = plan_mixed(r, layer_widths(*h), model_cost(*h).bytes, high, target);
  h.reset();
  if (!o.recipe_out.empty() && p.recipe.steps.empty())
    throw UsageError(cat("--recipe-out: the model as it is meets the target (no unit needs --pass): no recipe "
                         "to write"));
  if (!o.recipe_out.empty()) write_text_atomic(o.recipe_out, recipe_toml(p.recipe));
  std::unique_ptr<ViT> ref = m.clone();
  pack_linears_for_inference(*ref);
  if (!o.common.quiet) std::fprintf(stderr, "measuring the mixed recipe and both uniform models\n");
  auto measure = [&](const std::string& what, const std::vector<std::string>& low_layers) {
    std::vector<std::string> specs;
    std::vector<nlohmann::json> origins;
    if (!(high.empty() && low_layers.empty()))
      for (const RecipeSpec& rs : compile_recipe(mixed_recipe(o.pass, high, low_layers, what), m))
        specs.push_back(rs.spec), origins.push_back(rs.origin);
    return measure_mixed(what, m, *ref, specs, origins, ctx, ds, o.batch);
  };
  std::vector<MixedRow> rows;
  rows.push_back(measure(high.empty() ? "as it is" : "all " + high, {}));
  rows.push_back(measure("mixed (the recipe)", p.low_layers));
  rows.push_back(measure("all " + o.pass, all_unit_layers(r)));
  if (out) {
    *out = mixed_json(p, rows, o);
    return;
  }
  std::printf("\nMixed precision (%s)\n", target.kind == MixedTarget::Kind::Bits
                                               ? cat("target: average weight bits <= ", o.target_bits).c_str()
                                               : cat("target: model bytes <= ", int64_t(o.target_bytes)).c_str());
  std::printf("at the pass  %zu of %zu units:", p.low_units.size(), r.units.size());
  for (const std::string& u : p.low_units) std::printf(" %s", u.c_str());
  std::printf("\nplanned      %.3f average weight bits, %s bytes\n\n", p.bits, fmt_int(p.bytes).c_str());
  print_mixed_rows(rows);
  if (!o.recipe_out.empty()) std::printf("\nrecipe       %s (vitkit compress MODEL --recipe %s -o OUT)\n",
                                         o.recipe_out.c_str(), o.recipe_out.c_str());
}

void run_sensitivity_cli(const SensCliOpts& o) {
  apply_common(o.common);
  check_sens_opts(o);
  auto model = load_model(o.model, o.load);
  PassContext ctx;
  ctx.seed = o.load.seed;
  ctx.progress = false;
  const bool need_calib =
      passes_need_calibration({o.pass}) || (o.high != "none" && passes_need_calibration({o.high}));
  if (need_calib) {
    load_calibration(ctx, *model, o.data, "train", o.calib);
    if (!o.common.quiet)
      std::fprintf(stderr, "calibration: %lld images of %s\n", (long long)ctx.calib.dim(0), ctx.calib_source.c_str());
  }
  auto split = open_dataset(o.data, o.split);
  auto ds = sensitivity_images(*split, o);
  if (!o.common.quiet) std::fprintf(stderr, "data: %s\n", ds->describe().c_str());
  SensitivityOptions so;
  so.pass = o.pass;
  so.by = parse_sensitivity_by(o.by);
  so.rank = parse_sensitivity_rank(o.rank);
  so.batch = o.batch;
  so.progress = !o.common.quiet;
  const SensitivityResult r = run_sensitivity(*model, *ds, ctx, so);
  if (!o.csv.empty()) write_text_atomic(o.csv, r.csv());
  const bool mixed = o.target_bits != 0 || o.target_bytes != 0;
  if (o.common.json) {
    nlohmann::json j = r.to_json();
    j["model"] = o.model;
    j["split"] = o.split;
    j["threads"] = num_threads();
    if (mixed) run_mixed(o, *model, r, ctx, *ds, &j["mixed"]);
    print_json(j);
    return;
  }
  std::printf("model      %s (%s)\n", o.model.c_str(), model->cfg.name.c_str());
  std::printf("data       %s, %lld images\n", r.data.c_str(), (long long)r.images);
  std::printf("pass       %s, one %s at a time; ranked by %s (most sensitive first)\n", r.pass.c_str(),
              to_string(r.by), r.rank == SensitivityRank::Kl     ? "KL mean"
                               : r.rank == SensitivityRank::Top1 ? "top-1 loss"
                                                                 : "the unit's output SQNR");
  std::printf("reference  top-1 %.2f%%\n\n", 100 * r.top1_ref);
  std::fputs(r.text().c_str(), stdout);
  if (!o.csv.empty()) std::printf("\ncsv        %s\n", o.csv.c_str());
  if (mixed) run_mixed(o, *model, r, ctx, *ds, nullptr);
}

void add_sensitivity(CLI::App* analyze) {
  auto o = std::make_shared<SensCliOpts>();
  CLI::App* cmd = analyze->add_subcommand(
      "sensitivity", "A pass on one layer, kind or block at a time: ranked damage; mixed-precision recipes");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth) or preset")->required();
  cmd->add_option("--data", o->data, "fashion-mnist, mnist, cifar10, or a folder (IDX, CIFAR-10 binary, images)")
      ->required();
  cmd->add_option("--pass", o->pass,
                  "The low-precision pass, e.g. quantize:bits=4,granularity=group,group=32 (one whose layers= "
                  "selects: quantize, bf16, f16; without layers=)")
      ->required();
  cmd->add_option("--by", o->by, "Units: layer, kind (patch, qkv, out_proj, fc1, fc2, head) or block (default kind)");
  cmd->add_option("--rank", o->rank,
                  "Rank by kl (KL mean, default), top1 (top-1 loss) or sqnr (the unit's own output SQNR, lowest first)");
  cmd->add_option("--split", o->split,
                  "train (default): a held-out part of the training split, none of the calibration images; test: "
                  "the test split (only when asked)")
      ->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--limit", o->limit, "Images to measure on (default 1000, class-balanced)");
  cmd->add_option("--calib", o->calib,
                  "Calibration images (the training split's first, class-balanced; default 512), for passes that "
                  "need them; never among the measured images")
      ->check(whole_number(1));
  cmd->add_option("--batch", o->batch, "Images per forward pass")->check(whole_number(1));
  cmd->add_option("--target-bits", o->target_bits,
                  "Mixed precision: choose per unit --pass or --high so the average weight bits (over every linear "
                  "weight) are <= B");
  cmd->add_option("--target-bytes", o->target_bytes,
                  "Mixed precision: ... so the model's bytes (model/cost.h, as a file stores it) are <= N");
  cmd->add_option("--high", o->high,
                  "The higher-precision spec of the units not at --pass (default quantize:bits=8; none: leave them "
                  "as they are)");
  cmd->add_option("--recipe-out", o->recipe_out, "Write the mixed-precision recipe (TOML, for compress --recipe)")->check(output_file());
  cmd->add_option("--csv", o->csv, "Write one CSV row per unit to FILE")->check(output_file());
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->footer(
      "Each unit: the model with --pass applied to that unit's layers only (an anchored layers= list, as recipes "
      "do), compared with the unchanged model on the same images (analyze compare): top-1 difference in points, "
      "agreement, KL(A||B) mean, and the SQNR of the unit's own outputs (its layers' signal and noise summed).\n"
      "Images: the datasets have no validation split, so --split train measures on each class's LAST images of "
      "the training split (--limit of them), excluding the calibration images (each class's first). Models "
      "trained on the whole training split have seen them: the numbers rank units, they are not test "
      "accuracy. --split test only when given.\n"
      "Mixed precision (--target-bits / --target-bytes): start with every layer at --high, move units to "
      "--pass least sensitive first until the average weight bits (or bytes) are at or below the target; a "
      "unit counts at its pass's bits, the rest at --high's (32 for f32 with --high none). The recipe: one step "
      "of --high with an override name = [...] giving the chosen layers --pass's keys. It is measured beside "
      "every unit at --high and every unit at --pass on the same images.\n\n" +
      passes_help());
  cmd->callback([o] { run_sensitivity_cli(*o); });
}

}  // namespace

void register_analyze(CLI::App& app) {
  CLI::App* analyze = app.add_subcommand("analyze", "Studies of a model (reuse, compare, stats, lowrank, sensitivity)");
  analyze->require_subcommand(1);
  add_reuse(analyze);
  add_compare(analyze);
  add_stats(analyze);
  add_lowrank(analyze);
  add_sensitivity(analyze);
}

}  // namespace vitkit::cli

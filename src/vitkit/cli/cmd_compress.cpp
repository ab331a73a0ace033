// vitkit compress MODEL --pass NAME:key=value,... [--pass ...] [--recipe R.toml]
// -o OUT: applies compression passes and recipes' steps in command-line order
// and writes the model with its compression log.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "commands.h"
#include "common.h"
#include <optional>

#include "vitkit/analyze/compare.h"
#include "vitkit/analyze/schedule.h"
#include "vitkit/compress/finetune.h"
#include "vitkit/core/file.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/io/dataset.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/core/error.h"
#include "vitkit/report/table.h"

namespace vitkit::cli {

namespace {

struct CompressOpts {
  std::string model, output, data, calib_split = "train", steps_csv;
  std::vector<std::string> passes, recipes;
  // --pass and --recipe in command-line order: (true: recipe, index)
  std::vector<std::pair<bool, size_t>> order;
  int64_t calib = 512, compare_limit = 1000;
  LoadOptions load;
  CommonOpts common;
};

// One step of the schedule: pass specs applied together, or a fine-tuning run.
struct Stage {
  std::string label;
  std::vector<std::string> specs;
  std::vector<nlohmann::json> origins;
  std::string finetune;  // a fine-tuning step's train config (TOML)
  nlohmann::json origin;
};

// A fresh directory under the system's temporary one, removed with everything in it.
class TempDir {
 public:
  TempDir() = default;
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() {
    if (path_.empty()) {
      std::string t = (std::filesystem::temp_directory_path() / "vitkit-compress-XXXXXX").string();
      if (!::mkdtemp(t.data())) fail("cannot create a temporary directory ", t, ": ", std::strerror(errno));
      path_ = t;
    }
    return path_;
  }

 private:
  std::string path_;
};

// A record's scalar fields, one per line (the layer list as a count).
void print_record(size_t i, const nlohmann::json& rec) {
  std::printf("pass %zu     %s\n", i + 1, rec.value("spec", "").c_str());
  Table t({"", ""});
  for (auto& [k, v] : rec.items()) {
    if (k == "pass" || k == "spec" || k == "args") continue;
    std::string s;
    if (v.is_array())
      s = std::to_string(v.size()) + (k == "layers" ? " layers" : " entries");
    else if (v.is_number_integer())
      s = fmt_int(v.get<long long>());
    else if (v.is_number_float())
      s = fmt_fixed(v.get<double>(), 6);
    else if (v.is_string())
      s = v.get<std::string>();
    else
      s = v.dump();
    t.add({"  " + k, s});
  }
  std::string text = t.text();
  // Drop the header line and its rule: a key/value list needs none.
  for (int skip = 0; skip < 2; ++skip) text.erase(0, text.find('\n') + 1);
  std::fputs(text.c_str(), stdout);
}

void run_compress(const CompressOpts& o) {
  apply_common(o.common);
  if (o.passes.empty() && o.recipes.empty())
    throw UsageError("give at least one --pass or --recipe (see vitkit compress --help)");
  std::vector<Recipe> recipes;
  for (const std::string& r : o.recipes) recipes.push_back(load_recipe(r));  // validated before any work
  // Every spec validated before any work; those that need calibration images named.
  std::vector<std::string> need;
  for (const std::string& p : o.passes)
    if (passes_need_calibration({p})) need.push_back("--pass " + p);
  for (const Recipe& r : recipes)
    if (recipe_needs_calibration(r)) need.push_back("--recipe " + r.path);
  const bool need_calib = !need.empty();
  if (need_calib && o.data.empty())
    throw UsageError(cat(need[0], need.size() > 1 ? " (and others)" : "",
                         " needs calibration images: give --data DATASET (and --calib N, default 512)"));
  // With --data, the output is compared with the model as it came (analyze
  // compare) on the test split: opened first, so that bad data fails before any work.
  std::unique_ptr<Dataset> test_split = o.data.empty() ? nullptr : open_dataset(o.data, "test");
  auto model = load_model(o.model, o.load);
  std::unique_ptr<ViT> original = o.data.empty() ? nullptr : model->clone();
  PassContext ctx;
  ctx.seed = o.load.seed;
  ctx.progress = !o.common.quiet;
  if (need_calib) {
    load_calibration(ctx, *model, o.data, o.calib_split, o.calib);
    if (!o.common.quiet)
      std::fprintf(stderr, "calibration: %lld images of %s\n", (long long)ctx.calib.dim(0), ctx.calib_source.c_str());
  }
  // The steps in command-line order: each --pass one, each recipe step one
  // (its overrides' specs together), fine-tuning steps on their own.
  std::vector<Stage> stages;
  for (auto [is_recipe, i] : o.order) {
    if (!is_recipe) {
      stages.push_back({o.passes[i], {o.passes[i]}, {{{"option", "--pass"}}}, "", nullptr});
      continue;
    }
    int last_step = -1;
    for (RecipeSpec& rs : compile_recipe(recipes[i], *model)) {
      const int step = rs.origin.value("step", 0);
      if (!rs.finetune.empty()) {
        stages.push_back({cat(recipes[i].path, " step ", step, ": finetune"), {}, {}, rs.finetune, rs.origin});
      } else if (step == last_step && !stages.empty() && stages.back().finetune.empty()) {
        stages.back().specs.push_back(rs.spec);
        stages.back().origins.push_back(rs.origin);
      } else {
        stages.push_back({rs.spec, {rs.spec}, {rs.origin}, "", nullptr});
      }
      last_step = step;
    }
  }
  const bool any_finetune = std::any_of(stages.begin(), stages.end(), [](const Stage& s) { return !s.finetune.empty(); });
  if (any_finetune && !original) original = model->clone();  // a [distill] teacher = "original"
  // A row per step (with --data): the input model first.
  std::vector<ScheduleRow> rows;
  auto measure = [&](int step, const std::string& what) {
    if (!test_split) return;
    ScheduleRow r = measure_step(*model, *test_split, o.compare_limit, 15, rows.empty() ? nullptr : &rows[0]);
    r.step = step;
    r.what = what;
    rows.push_back(r);
    if (step > 0) {  // the history in the file: the step's last log record says what the model became
      nlohmann::json log = compression_log(*model);
      if (!log.empty()) {
        log.back()["after"] = r.to_json();
        model->extra_metadata[kCompressionKey] = log;
      }
    }
    if (!o.common.quiet)
      std::fprintf(stderr, "step %d: %s: top-1 %.2f%%, %lld params\n", step, what.c_str(), 100 * r.top1,
                   (long long)r.params);
  };
  measure(0, "input");
  std::vector<nlohmann::json> records;
  TempDir work;
  for (size_t si = 0; si < stages.size(); ++si) {
    const Stage& st = stages[si];
    if (!st.finetune.empty()) {
      FinetuneContext fc;
      fc.original = original.get();
      fc.workdir = cat(work.path(), "/step", si + 1);
      fc.origin = st.origin;
      nlohmann::json rec;
      model = finetune(std::move(model), st.finetune, fc, &rec);
      records.push_back(rec);
    } else {
      for (auto& r : apply_passes(*model, st.specs, ctx, st.origins)) records.push_back(r);
    }
    measure(int(si) + 1, st.label);
  }
  save_model(*model, o.output);
  if (!o.steps_csv.empty()) write_text_atomic(o.steps_csv, schedule_csv(rows));
  std::optional<CompareResult> cmp;
  if (original && test_split) {
    CompareOptions co;
    co.limit = o.compare_limit;
    co.progress = !o.common.quiet;
    co.name_a = o.model;
    co.name_b = o.output;
    pack_linears_for_inference(*original);  // inference only from here
    pack_linears_for_inference(*model);
    cmp = compare_models(*original, *model, *test_split, co);
  }
  if (o.common.json) {
    nlohmann::json j{{"model", o.model}, {"output", o.output}, {"passes", records}, {"log", compression_log(*model)}};
    if (cmp) j["compare"] = cmp->to_json();
    if (!rows.empty()) {
      nlohmann::json sj = nlohmann::json::array();
      for (auto& r : rows) sj.push_back(r.to_json());
      j["steps"] = sj;
    }
    print_json(j);
    return;
  }
  std::printf("model      %s\n", o.model.c_str());
  for (size_t i = 0; i < records.size(); ++i) print_record(i, records[i]);
  std::printf("output     %s\n", o.output.c_str());
  if (!rows.empty()) std::printf("\nsteps (first %lld test images)\n%s", (long long)rows[0].images,
                                 schedule_table(rows).c_str());
  if (cmp) std::printf("\n%s\n", compare_summary(*cmp).c_str());
}

}  // namespace

void register_compress(CLI::App& app) {
  auto o = std::make_shared<CompressOpts>();
  CLI::App* cmd = app.add_subcommand("compress", "Apply compression passes (round, ...) and write the model");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth) or preset")->required();
  CLI::Option* pass = cmd->add_option("--pass", o->passes, "NAME:key=value,... (repeatable; applied in order)")
                          ->allow_extra_args(false);
  CLI::Option* recipe =
      cmd->add_option("--recipe", o->recipes,
                      "Recipe TOML: steps of passes with per-layer overrides by name, regex, kind or block (mixed "
                      "precision; format in docs/compression.md); repeatable, applied in order with the --passes")
          ->allow_extra_args(false)
          ->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", o->output, "Output model (.safetensors)")->check(output_file())->required();
  cmd->add_option("--data", o->data,
                  "Dataset (fashion-mnist, mnist, or a folder): calibration images for passes that need them, and "
                  "the output compared with the input model on its test split");
  cmd->add_option("--calib", o->calib,
                  "Calibration images, taken balanced over classes from --calib-split (default 512)")
      ->check(whole_number(1));
  cmd->add_option("--calib-split", o->calib_split, "Split the calibration images come from (default train)")
      ->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--compare-limit", o->compare_limit,
                  "With --data: compare the output with the input model on the first N test images (default 1000; "
                  "0: all), as analyze compare does")
      ->check(whole_number(0));
  cmd->add_option("--steps-csv", o->steps_csv,
                  "With --data: write the row of each step (parameters, bytes, MACs, top-1, top-3, batch-1 "
                  "latency) as CSV")
      ->check(output_file());
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->footer(passes_help());
  cmd->callback([o, cmd, pass, recipe] {
    size_t np = 0, nr = 0;
    o->order.clear();
    for (const CLI::Option* opt : cmd->parse_order()) {
      if (opt == pass) o->order.push_back({false, np++});
      if (opt == recipe) o->order.push_back({true, nr++});
    }
    run_compress(*o);
  });
}

}  // namespace vitkit::cli

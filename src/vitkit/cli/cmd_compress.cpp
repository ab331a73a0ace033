// vitkit compress MODEL --pass NAME:key=value,... [--pass ...] [--recipe R.toml]
// -o OUT: applies compression passes and recipes' steps in command-line order
// and writes the model with its compression log.
#include <cstdio>

#include "commands.h"
#include "common.h"
#include <optional>

#include "vitkit/analyze/compare.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/io/dataset.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/core/error.h"
#include "vitkit/report/table.h"

namespace vitkit::cli {

namespace {

struct CompressOpts {
  std::string model, output, data, calib_split = "train";
  std::vector<std::string> passes, recipes;
  // --pass and --recipe in command-line order: (true: recipe, index)
  std::vector<std::pair<bool, size_t>> order;
  int64_t calib = 512, compare_limit = 1000;
  LoadOptions load;
  CommonOpts common;
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
  // The specs in command-line order, recipes' steps resolved on the model's layers.
  std::vector<std::string> specs;
  std::vector<nlohmann::json> origins;
  for (auto [is_recipe, i] : o.order) {
    if (!is_recipe) {
      specs.push_back(o.passes[i]);
      origins.push_back({{"option", "--pass"}});
      continue;
    }
    for (RecipeSpec& rs : compile_recipe(recipes[i], *model)) {
      specs.push_back(rs.spec);
      origins.push_back(rs.origin);
    }
  }
  const std::vector<nlohmann::json> records = apply_passes(*model, specs, ctx, origins);
  save_model(*model, o.output);
  std::optional<CompareResult> cmp;
  if (original) {
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
    print_json(j);
    return;
  }
  std::printf("model      %s\n", o.model.c_str());
  for (size_t i = 0; i < records.size(); ++i) print_record(i, records[i]);
  std::printf("output     %s\n", o.output.c_str());
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
  cmd->add_option("-o,--output", o->output, "Output model (.safetensors)")->required();
  cmd->add_option("--data", o->data,
                  "Dataset (fashion-mnist, mnist, or a folder): calibration images for passes that need them, and "
                  "the output compared with the input model on its test split");
  cmd->add_option("--calib", o->calib,
                  "Calibration images, taken balanced over classes from --calib-split (default 512)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--calib-split", o->calib_split, "Split the calibration images come from (default train)")
      ->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--compare-limit", o->compare_limit,
                  "With --data: compare the output with the input model on the first N test images (default 1000; "
                  "0: all), as analyze compare does")
      ->check(CLI::NonNegativeNumber);
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

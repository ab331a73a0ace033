// vitkit eval MODEL --data D [--split test] [--limit N] [--batch B]: top-1,
// top-5, per-class accuracy, confusion matrix, images/s.
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "vitkit/train/evaluate.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/dataset.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/report/table.h"

namespace vitkit::cli {

namespace {

struct EvalOpts {
  std::string model, data, split = "test", precision = "fp32";
  int64_t limit = 0, batch = 256;
  LoadOptions load;
  CommonOpts common;
};

void print_eval(const EvalResult& r) {
  std::printf("images     %lld\n", (long long)r.images);
  std::printf("top-1      %.2f%%\n", 100 * r.top1);
  std::printf("top-3      %.2f%%\n", 100 * r.top3);
  std::printf("top-5      %.2f%%\n", 100 * r.top5);
  std::printf("loss       %.4f\n", r.loss);
  std::printf("speed      %.0f images/s (model), %.0f images/s with loading (%.2f s)\n\n", r.images_per_s(),
              r.total_seconds > 0 ? r.images / r.total_seconds : 0, r.total_seconds);
  Table t({"class", "name", "top-1", "images"});
  t.right_align({0, 2, 3});
  for (int c = 0; c < r.classes; ++c) {
    int64_t n = 0;
    for (int p = 0; p < r.classes; ++p) n += r.confusion[size_t(c) * r.classes + p];
    if (n == 0) continue;
    t.add({std::to_string(c), r.class_names[c], fmt_fixed(100 * r.per_class[c], 2) + "%", std::to_string(n)});
  }
  std::fputs(t.text().c_str(), stdout);
}

void run_eval(const EvalOpts& o) {
  apply_common(o.common);
  if (o.batch < 1) throw UsageError("--batch must be >= 1");
  auto model = load_model(o.model, o.load);
  auto ds = open_dataset(o.data, o.split);
  // --precision bf16 / f16: shorthands for those passes. The model runs as it
  // is otherwise (a compressed file in its own representations); inference
  // only from here, so dense f32 weights are packed into oneDNN's layout (AVX-512 CPUs).
  if (o.precision != "fp32") apply_pass(*model, o.precision);
  const int packed = pack_linears_for_inference(*model);
  if (!o.common.quiet)
    std::fprintf(stderr, "data: %s\nlayers: %s%s\n", ds->describe().c_str(), model_precision(*model).c_str(),
                 packed ? cat(" (", packed, " weights packed for oneDNN)").c_str() : "");
  EvalResult r = evaluate_dataset(*model, *ds, o.limit, o.batch, !o.common.quiet);
  if (o.common.json) {
    nlohmann::json j = r.to_json();
    j["model"] = o.model;
    j["data"] = ds->describe();
    j["split"] = o.split;
    j["threads"] = num_threads();
    j["precision"] = o.precision;
    j["layers"] = model_precision(*model);
    j["packed_weights"] = packed;
    print_json(j);
  } else {
    print_eval(r);
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOpts>();
  CLI::App* cmd = app.add_subcommand("eval", "Accuracy of a model on a dataset (top-1, top-5, per class, confusion)");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth) or preset")->required();
  cmd->add_option("--data", o->data, "fashion-mnist, mnist, cifar10, or a folder (IDX, CIFAR-10 binary, images)")
      ->required();
  cmd->add_option("--split", o->split, "train or test")->check(CLI::IsMember({"train", "test"}));
  cmd->add_option("--limit", o->limit, "Only the first N images")->check(whole_number(0));
  cmd->add_option("--batch", o->batch, "Images per forward pass");
  cmd->add_option("--precision", o->precision,
                  "fp32 (the model as it is), or bf16 / f16: the bf16 or f16 pass applied first (see compress --help)")
      ->check(CLI::IsMember({"fp32", "bf16", "f16"}));
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace vitkit::cli

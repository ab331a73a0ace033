// vitkit train --config configs/X.toml [-o model.safetensors] [--resume CKPT] [--init MODEL]
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/profile.h"
#include "vitkit/train/trainer.h"

namespace vitkit::cli {

namespace {

struct TrainOpts {
  std::string config, output, resume, init;
  int epochs = 0, stop_after = 0;
  int64_t limit = 0;
  bool profile = false;
  LoadOptions load;
  CommonOpts common;
};

void run_train(const TrainOpts& o) {
  apply_common(o.common);
  TrainConfig cfg = load_train_config(o.config);
  if (o.epochs > 0) cfg.epochs = o.epochs;
  if (o.limit > 0) cfg.train_limit = o.limit;
  prof::set_enabled(o.profile);
  std::string out = o.output;
  if (out.empty()) {
    std::string stem = o.config;
    auto slash = stem.find_last_of('/');
    if (slash != std::string::npos) stem = stem.substr(slash + 1);
    if (stem.size() > 5 && stem.substr(stem.size() - 5) == ".toml") stem.resize(stem.size() - 5);
    out = stem + ".safetensors";
  }
  std::unique_ptr<ViT> init;
  if (!o.init.empty()) init = load_model(o.init, o.load);
  const TrainPaths p = TrainPaths::beside(out);
  Trainer t(cfg, p, std::move(init));
  if (!o.resume.empty()) t.resume(o.resume);
  const auto& hist = t.run(o.stop_after);
  if (o.profile) print_profile();
  const bool finished = t.epochs_done() == cfg.epochs;
  if (o.common.json) {
    nlohmann::json h = nlohmann::json::array();
    for (auto& r : hist) h.push_back(r.to_json());
    print_json({{"model", finished ? out : ""}, {"finished", finished}, {"epochs_done", t.epochs_done()},
                {"checkpoint", p.checkpoint}, {"history_csv", p.history_csv}, {"history_json", p.history_json},
                {"history", h}, {"config", cfg.to_json()}});
    return;
  }
  if (hist.empty()) return;
  const EpochRecord& last = hist.back();
  if (finished) std::printf("model      %s\n", out.c_str());
  else std::printf("stopped    after epoch %d of %d; continue with --resume %s\n", t.epochs_done(), cfg.epochs,
                   p.checkpoint.c_str());
  std::printf("epochs     %d (%lld steps)\n", last.epoch, (long long)last.steps);
  if (last.evaluated) std::printf("test top-1 %.2f%% (top-5 %.2f%%)\n", 100 * last.test_top1, 100 * last.test_top5);
  double secs = 0;
  for (auto& r : hist) secs += r.seconds;
  std::printf("time       %.1f s training\n", secs);
  std::printf("history    %s, %s\n", p.history_csv.c_str(), p.history_json.c_str());
}

}  // namespace

void register_train(CLI::App& app) {
  auto o = std::make_shared<TrainOpts>();
  CLI::App* cmd = app.add_subcommand("train", "Train or fine-tune a ViT from a TOML config");
  cmd->add_option("--config", o->config, "Train config (TOML: [model] [data] [train] [augment] [distill])")
      ->required();
  cmd->add_option("-o,--output", o->output, "Model file to write (default: the config's name .safetensors)");
  cmd->add_option("--resume", o->resume, "Continue from a checkpoint (<model>.ckpt.safetensors)");
  cmd->add_option("--init", o->init, "Fine-tune this model instead of a new one");
  cmd->add_option("--epochs", o->epochs, "Override the config's epochs")->check(CLI::PositiveNumber);
  cmd->add_option("--limit", o->limit, "Override the config's train_limit (first N training images)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--stop-after", o->stop_after,
                  "Stop after this epoch (checkpoint and history written; no model yet): train in parts")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--profile", o->profile, "Print where the time went, per op (stderr)");
  add_common(cmd, o->common);
  cmd->callback([o] { run_train(*o); });
}

}  // namespace vitkit::cli

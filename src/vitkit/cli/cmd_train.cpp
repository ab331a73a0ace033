// vitkit train --config configs/X.toml [-o model.safetensors] [--resume CKPT] [--init MODEL]
// Ctrl-C (SIGINT) or SIGTERM stops after the current step with a checkpoint
// that --resume continues exactly; a second one aborts at once.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "commands.h"
#include "common.h"
#include "vitkit/core/file.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/profile.h"
#include "vitkit/compress/qat.h"
#include "vitkit/train/trainer.h"

namespace vitkit::cli {

namespace {

struct TrainOpts {
  std::string config, output, resume, init, qat;
  bool lsq = false;
  int64_t calib = 0;
  int epochs = 0, stop_after = 0;
  double max_minutes = 0;
  int64_t limit = 0;
  bool profile = false;
  LoadOptions load;
  CommonOpts common;
};

volatile sig_atomic_t g_signal = 0;
volatile sig_atomic_t g_first_ms = 0;  // CLOCK_MONOTONIC of the first signal, in ms (wraps: only differences matter)

int monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe (POSIX)
  return static_cast<int>(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

// The first SIGINT/SIGTERM asks for a stop after this step; a second one aborts
// at once. A second one within 250 ms of the first is the same request sent
// twice (coreutils' timeout signals the child and then its process group; a
// supervisor may do the same): ignored, or a stop request would be a crash.
extern "C" void on_stop_signal(int sig) {
  const int now = monotonic_ms();
  if (g_signal) {
    if (now - g_first_ms < 250) return;
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  g_signal = sig;
  g_first_ms = now;
  Trainer::request_stop();
  static const char msg[] =
      "\nvitkit train: stopping after this step and writing the checkpoint (once more to abort)\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
}

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void run_train(const TrainOpts& o) {
  catch_stop_signals();
  apply_common(o.common);
  // Resuming the fine-tune of a compressed model: the checkpoint holds its
  // layers' representations, so it is the model to continue (--init not needed).
  const bool from_checkpoint = o.init.empty() && !o.resume.empty() && file_exists(o.resume) &&
                               SafetensorsReader(o.resume).metadata().count(kLayersKey);
  TrainConfig cfg = load_train_config(o.config, !o.init.empty() || from_checkpoint);
  if (o.epochs > 0) cfg.epochs = o.epochs;
  if (o.limit > 0) cfg.train_limit = o.limit;
  if (!o.qat.empty()) cfg.qat.spec = o.qat;
  if (o.lsq) cfg.qat.lsq = true;
  if (o.calib > 0) cfg.qat.calib = o.calib;
  if (cfg.qat.enabled() && o.init.empty() && !from_checkpoint)
    throw UsageError("--qat quantizes a trained model: give it with --init MODEL (or --resume a QAT checkpoint)");
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
  if (from_checkpoint) {
    LoadOptions lo;
    lo.quiet_unused = true;  // optimizer state and latent weights: read by resume()
    init = load_model(o.resume, lo);
  }
  std::vector<nlohmann::json> qat_records;
  if (cfg.qat.enabled()) {
    // A QAT checkpoint holds the quantized layers already: only the training options are set again.
    if (from_checkpoint) {
      set_qat_options(*init, cfg.qat);
    } else {
      qat_records = quantize_for_qat(*init, cfg, !o.common.quiet);
      // The file's history says the quantized model was trained, and how (the epochs in <model>.history.*).
      nlohmann::json config = cfg.to_json();
      config.erase("model");
      append_compression_log(*init, {{"pass", "qat"}, {"spec", "qat" + std::string(cfg.qat.lsq ? " (lsq)" : "")},
                                     {"config", config}});
    }
  }
  const TrainPaths p = TrainPaths::beside(out);
  Trainer t(cfg, p, std::move(init));
  if (!o.resume.empty()) t.resume(o.resume);
  const auto& hist = t.run({.after_epoch = o.stop_after, .after_seconds = 60 * o.max_minutes});
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  const bool finished = t.epochs_done() == cfg.epochs;
  if (g_signal && !finished) set_exit_status(128 + g_signal);
  if (o.profile) print_profile();
  const char* why = stop_reason_name(t.stop_reason());
  if (o.common.json) {
    nlohmann::json h = nlohmann::json::array();
    for (auto& r : hist) h.push_back(r.to_json());
    print_json({{"model", finished ? out : ""}, {"finished", finished}, {"stop_reason", why},
                {"epochs_done", t.epochs_done()}, {"epoch_step", t.epoch_step()},
                {"steps_per_epoch", t.steps_per_epoch()}, {"checkpoint", p.checkpoint},
                {"history_csv", p.history_csv}, {"history_json", p.history_json}, {"history", h},
                {"config", cfg.to_json()}, {"qat_passes", qat_records}});
    return;
  }
  if (finished) std::printf("model      %s\n", out.c_str());
  else if (t.epoch_step() > 0)
    std::printf("stopped    (%s) in epoch %d of %d at step %lld of %lld; continue with --resume %s\n", why,
                t.epochs_done() + 1, cfg.epochs, (long long)t.epoch_step(), (long long)t.steps_per_epoch(),
                p.checkpoint.c_str());
  else std::printf("stopped    (%s) after epoch %d of %d; continue with --resume %s\n", why, t.epochs_done(),
                   cfg.epochs, p.checkpoint.c_str());
  if (hist.empty()) return;
  const EpochRecord& last = hist.back();
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
  cmd->add_option("--config", o->config, "Train config (TOML: [model] [data] [train] [augment] [distill] [qat])")
      ->required();
  cmd->add_option("-o,--output", o->output, "Model file to write (default: the config's name .safetensors)")->check(output_file());
  cmd->add_option("--resume", o->resume, "Continue from a checkpoint (<model>.ckpt.safetensors)");
  cmd->add_option("--init", o->init, "Fine-tune this model instead of a new one");
  cmd->add_option("--epochs", o->epochs, "Override the config's epochs")->check(whole_number(1));
  cmd->add_option("--limit", o->limit, "Override the config's train_limit (first N training images)")
      ->check(whole_number(1));
  cmd->add_option("--stop-after", o->stop_after,
                  "Stop after this epoch (checkpoint and history written; no model yet): train in parts")
      ->check(whole_number(1));
  cmd->add_option("--max-minutes", o->max_minutes,
                  "Stop once this much time has passed, after the current step (checkpoint written; "
                  "--resume continues exactly, mid-epoch too)")
      ->check(positive_number());
  cmd->add_option("--qat", o->qat,
                  "Quantization-aware training of the --init model: a quantize spec (quantize:bits=4,abits=4 or "
                  "bits=4,abits=4, as compress --pass) or a recipe file (.toml); the output is the quantized model "
                  "(also [qat] spec in the config)");
  cmd->add_flag("--lsq", o->lsq,
                "With --qat: learned step sizes (LSQ): weight scales and static input scales trained too");
  cmd->add_option("--calib", o->calib,
                  "With --qat: calibration images for static input scales, class-balanced from the train split "
                  "(default 512)")
      ->check(whole_number(1));
  cmd->add_flag("--profile", o->profile, "Print where the time went, per op (stderr)");
  add_common(cmd, o->common);
  cmd->callback([o] { run_train(*o); });
}

}  // namespace vitkit::cli

#include "vitkit/compress/finetune.h"

#include <filesystem>

#include "vitkit/core/error.h"
#include "vitkit/io/model_io.h"
#include "vitkit/train/trainer.h"

namespace vitkit {

std::unique_ptr<ViT> finetune(std::unique_ptr<ViT> m, const std::string& config_toml, const FinetuneContext& ctx,
                              nlohmann::json* record) {
  check(!ctx.workdir.empty(), "finetune: no working directory");
  std::filesystem::create_directories(ctx.workdir);
  TrainConfig cfg = parse_train_config(config_toml, "the finetune step", true);
  const bool teacher_original = cfg.distill.teacher == "original";
  if (teacher_original) {
    check(ctx.original != nullptr, "finetune: [distill] teacher = \"original\" but there is no original model");
    const std::string path = ctx.workdir + "/teacher.safetensors";
    save_model(*ctx.original, path);
    cfg.distill.teacher = path;
  }
  const nlohmann::json log = compression_log(*m);
  Trainer t(cfg, TrainPaths::beside(ctx.workdir + "/model.safetensors"), std::move(m));
  const auto& hist = t.run();
  check(t.epochs_done() == cfg.epochs, "finetune: stopped after ", t.epochs_done(), " of ", cfg.epochs, " epochs (",
        stop_reason_name(t.stop_reason()), ")");
  // The trained model as the trainer wrote it (latent weights dropped: what it computes).
  auto out = load_model(ctx.workdir + "/model.safetensors");
  nlohmann::json h = nlohmann::json::array();
  double seconds = 0;
  for (const EpochRecord& r : hist) h.push_back(r.to_json()), seconds += r.seconds;
  nlohmann::json config = cfg.to_json();
  config.erase("model");  // the model is the one fine-tuned, not the config's
  if (teacher_original) config["distill"]["teacher"] = "original";  // not the temporary copy's path
  nlohmann::json rec{{"pass", "finetune"}, {"spec", "finetune"}, {"config", config}, {"history", h},
                     {"train_seconds", seconds}};
  if (!ctx.origin.is_null()) rec["origin"] = ctx.origin;
  out->extra_metadata[kCompressionKey] = log;  // the log as it was, then this step
  append_compression_log(*out, rec);
  if (record) *record = rec;
  return out;
}

}  // namespace vitkit

// A training run's configuration, read from a TOML file:
//   [model]    ViTConfig keys (preset, image_size, patch, dim, ...; see model/config.h)
//   [data]     dataset, train_split, test_split, train_limit, test_limit
//   [train]    epochs, batch, lr, min_lr, warmup_lr, warmup_epochs, schedule, weight_decay,
//              beta1, beta2, eps, label_smoothing, clip_grad, seed, eval_every
//   [augment]  crop_padding, hflip
//   [distill]  teacher, alpha, temperature        (optional)
//   [qat]      spec (a quantize pass spec or a recipe file), lsq, calib   (optional)
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "vitkit/model/config.h"
#include "vitkit/train/adamw.h"

namespace vitkit {

struct AugmentConfig {
  int crop_padding = 0;  // random crop of the padded image (0: off)
  float hflip = 0.f;     // probability of a horizontal flip
};

struct DistillConfig {
  std::string teacher;       // model file; empty: no distillation
  float alpha = 0.5f;        // loss = (1 - alpha) CE + alpha * T^2 KL
  float temperature = 4.f;
};

// Quantization-aware training (compress/qat.h): the --init model quantized by
// `spec` before training, then trained through its quantizers.
struct QatConfig {
  std::string spec;   // "quantize:bits=4,abits=4" (or "bits=4,abits=4"), or a recipe file (.toml); empty: off
  bool lsq = false;   // learned step sizes (weight scales and static input scales)
  int64_t calib = 512;  // calibration images (class-balanced, from the train split) for static inputs
  bool enabled() const { return !spec.empty(); }
};

struct TrainConfig {
  ViTConfig model;
  std::string data = "fashion-mnist", train_split = "train", test_split = "test";
  int64_t train_limit = 0, test_limit = 0;  // 0: all
  int epochs = 10;
  int batch = 128;
  std::string schedule = "cosine";
  float lr = 1e-3f, min_lr = 1e-5f, warmup_lr = 1e-6f, warmup_epochs = 1.f;
  AdamWConfig opt;
  float label_smoothing = 0.1f;
  float clip_grad = 0.f;  // global norm; 0: off
  uint64_t seed = 0;
  int eval_every = 1;  // epochs between test evaluations (the last epoch always)
  AugmentConfig augment;
  DistillConfig distill;
  QatConfig qat;
  std::string source;  // the TOML text, kept in checkpoints
  bool has_model = true;  // the file has a [model] section (without one, --init must give the model)

  nlohmann::json to_json() const;
};

// Reads and validates a TOML train config; errors name the file, key and line.
// model_optional: no [model] section is fine (a fine-tune: --init gives the model).
TrainConfig load_train_config(const std::string& path, bool model_optional = false);
// Parses TOML text (name is used in errors).
TrainConfig parse_train_config(const std::string& text, const std::string& name, bool model_optional = false);

}  // namespace vitkit

// Training loop: data, augmentation, forward/backward, AdamW with a schedule,
// per-epoch evaluation, atomic checkpoints that --resume continues exactly,
// and the per-epoch history as CSV and JSON beside the model.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/model/vit.h"
#include "vitkit/train/train_config.h"

namespace vitkit {

struct EpochRecord {
  int epoch = 0;  // 1-based
  int64_t steps = 0;  // optimizer steps so far
  double lr = 0;      // at the epoch's last step
  double train_loss = 0, train_top1 = 0;
  bool evaluated = false;
  double test_loss = 0, test_top1 = 0, test_top5 = 0;
  double seconds = 0, images_per_s = 0;
  nlohmann::json to_json() const;
  static EpochRecord from_json(const nlohmann::json& j);
};

struct TrainPaths {
  std::string model;       // final model (.safetensors)
  std::string checkpoint;  // <stem>.ckpt.safetensors
  std::string history_csv, history_json;
  static TrainPaths beside(const std::string& model_path);
};

class Trainer {
 public:
  // init: a model to fine-tune (its architecture replaces [model]); null: a new
  // model with torchvision's initialisation from the config's seed.
  Trainer(TrainConfig cfg, TrainPaths paths, std::unique_ptr<ViT> init = nullptr);
  ~Trainer();
  // Continues from a checkpoint written by an earlier run of the same config.
  void resume(const std::string& checkpoint);
  // Trains the remaining epochs (or up to epoch stop_after when > 0); writes
  // checkpoint and history after each epoch and the model once the last epoch
  // is done. Returns the history.
  const std::vector<EpochRecord>& run(int stop_after = 0);
  int epochs_done() const { return epochs_done_; }
  const ViT& model() const { return *model_; }

 private:
  struct Data;
  void load_data();
  void train_epoch(int epoch);
  void save_checkpoint() const;
  void save_history() const;

  TrainConfig cfg_;
  TrainPaths paths_;
  std::unique_ptr<ViT> model_, teacher_;
  std::unique_ptr<Data> data_;
  std::vector<EpochRecord> history_;
  int epochs_done_ = 0;
  int64_t step_ = 0;
  struct Opt;
  std::unique_ptr<Opt> opt_;
};

}  // namespace vitkit

// Training loop: data, augmentation, forward/backward, AdamW with a schedule,
// per-epoch evaluation, atomic checkpoints that --resume continues exactly,
// and the per-epoch history as CSV and JSON beside the model.
#pragma once
#include <chrono>
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

// When run() stops before the last epoch. Every stop writes a checkpoint that
// resume() continues exactly, in the middle of an epoch too.
struct StopWhen {
  int after_epoch = 0;       // > 0: once this epoch is done (train in parts)
  int64_t at_step = 0;       // > 0: once this many optimizer steps are done
  double after_seconds = 0;  // > 0: once run() has taken this long (checked after each step)
};

enum class StopReason { Finished, Epoch, Step, Time, Signal };
const char* stop_reason_name(StopReason r);  // "finished", "epoch", "step", "time", "signal"

class Trainer {
 public:
  // init: a model to fine-tune (its architecture replaces [model]); null: a new
  // model with torchvision's initialisation from the config's seed.
  Trainer(TrainConfig cfg, TrainPaths paths, std::unique_ptr<ViT> init = nullptr);
  ~Trainer();
  // Continues from a checkpoint written by an earlier run of the same config.
  void resume(const std::string& checkpoint);
  // Trains the remaining epochs or until `when`; writes checkpoint and history
  // after each epoch and at a stop, and the model once the last epoch is done.
  // Returns the history of the finished epochs.
  const std::vector<EpochRecord>& run(const StopWhen& when = {});
  // Asks a running run() to stop after its current step (checkpoint written).
  // Async-signal-safe: the CLI calls it from its SIGINT/SIGTERM handler.
  static void request_stop();
  int epochs_done() const { return epochs_done_; }
  // Steps done in the unfinished epoch epochs_done() + 1 (0 at an epoch's end).
  int64_t epoch_step() const { return partial_.step; }
  int64_t steps_per_epoch() const;
  StopReason stop_reason() const { return reason_; }
  const ViT& model() const { return *model_; }

 private:
  struct Data;
  // The running sums of an epoch stopped in its middle.
  struct EpochProgress {
    int epoch = 0;
    int64_t step = 0;  // steps done in it
    double loss_sum = 0, seconds = 0;
    int64_t hits = 0, seen = 0;
  };
  void load_data();
  // Trains epoch `epoch` (from partial_ when it stopped in it); false when
  // stopped before its end.
  bool train_epoch(int epoch);
  bool should_stop();
  void save_checkpoint() const;
  void save_history() const;

  TrainConfig cfg_;
  TrainPaths paths_;
  std::unique_ptr<ViT> model_, teacher_;
  std::unique_ptr<Data> data_;
  std::vector<EpochRecord> history_;
  int epochs_done_ = 0;
  int64_t step_ = 0;
  EpochProgress partial_;
  std::string resumed_from_;
  StopWhen when_;
  StopReason reason_ = StopReason::Finished;
  std::chrono::steady_clock::time_point run_start_;
  struct Opt;
  std::unique_ptr<Opt> opt_;
};

}  // namespace vitkit

#include "vitkit/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "vitkit/train/evaluate.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/profile.h"
#include "vitkit/core/progress.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/init.h"
#include "vitkit/report/table.h"
#include "vitkit/train/augment.h"
#include "vitkit/train/schedule.h"
#include "vitkit/train/step.h"

namespace vitkit {

using Clock = std::chrono::steady_clock;
static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Set by request_stop() (from a signal handler): lock-free, so async-signal-safe.
static std::atomic<bool> g_stop_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void Trainer::request_stop() { g_stop_requested.store(true, std::memory_order_relaxed); }

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Finished: return "finished";
    case StopReason::Epoch: return "epoch";
    case StopReason::Step: return "step";
    case StopReason::Time: return "time";
    case StopReason::Signal: return "signal";
  }
  return "?";
}

nlohmann::json EpochRecord::to_json() const {
  nlohmann::json j{{"epoch", epoch},           {"steps", steps},     {"lr", lr},
                   {"train_loss", train_loss}, {"train_top1", train_top1}, {"seconds", seconds},
                   {"images_per_s", images_per_s}};
  if (evaluated) {
    j["test_loss"] = test_loss;
    j["test_top1"] = test_top1;
    j["test_top5"] = test_top5;
  }
  return j;
}

EpochRecord EpochRecord::from_json(const nlohmann::json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.steps = j.at("steps");
  r.lr = j.at("lr");
  r.train_loss = j.at("train_loss");
  r.train_top1 = j.at("train_top1");
  r.seconds = j.at("seconds");
  r.images_per_s = j.at("images_per_s");
  if (j.contains("test_top1")) {
    r.evaluated = true;
    r.test_loss = j.at("test_loss");
    r.test_top1 = j.at("test_top1");
    r.test_top5 = j.at("test_top5");
  }
  return r;
}

TrainPaths TrainPaths::beside(const std::string& model_path) {
  std::string stem = model_path;
  const std::string ext = ".safetensors";
  if (stem.size() > ext.size() && stem.compare(stem.size() - ext.size(), ext.size(), ext) == 0)
    stem.resize(stem.size() - ext.size());
  return {model_path, stem + ".ckpt.safetensors", stem + ".history.csv", stem + ".history.json"};
}

// Preprocessed images and labels of one split, held in memory.
struct Split {
  Tensor images;  // (N, C, S, S)
  std::vector<int> labels;
  std::string what;
};

struct Trainer::Data {
  Split train, test;
};

struct Trainer::Opt {
  TrainStep step;
  Schedule sched;
  Acts teacher_acts;  // the distillation teacher's, kept between steps
  Tensor batch;
};

static Split load_split(const TrainConfig& cfg, const std::string& split, int64_t limit) {
  auto ds = open_dataset(cfg.data, split);
  check(ds->classes() <= cfg.model.classes, ds->describe(), " has ", ds->classes(), " classes but the model has ",
        cfg.model.classes);
  const int64_t N = limit > 0 ? std::min(limit, ds->size()) : ds->size();
  Split s;
  s.what = ds->describe();
  const int64_t per = int64_t(cfg.model.channels) * cfg.model.image_size * cfg.model.image_size;
  s.images = Tensor::empty({N, cfg.model.channels, cfg.model.image_size, cfg.model.image_size});
  s.labels.resize(N);
  Progress bar("load " + split, N);
  const int64_t chunk = 4096;
  for (int64_t i = 0; i < N; i += chunk) {
    const int64_t b = std::min(chunk, N - i);
    std::vector<int64_t> idx(b);
    std::iota(idx.begin(), idx.end(), i);
    Tensor x = preprocess_batch(*ds, idx, cfg.model);
    std::memcpy(s.images.f32() + i * per, x.f32(), sizeof(float) * b * per);
    for (int64_t k = 0; k < b; ++k) s.labels[i + k] = ds->label(i + k);
    bar.update(i + b);
  }
  bar.finish();
  return s;
}

Trainer::Trainer(TrainConfig cfg, TrainPaths paths, std::unique_ptr<ViT> init)
    : cfg_(std::move(cfg)), paths_(std::move(paths)) {
  if (init) {
    model_ = std::move(init);
    // The fine-tuned model keeps its architecture; preprocessing follows it too.
    cfg_.model = model_->cfg;
  } else {
    if (!cfg_.has_model)
      throw UsageError("the train config has no [model] section: give the architecture (preset = \"vit_b_16\", or "
                       "image_size, patch, dim, depth, heads, mlp_dim, classes, ...), or fine-tune a model with "
                       "--init MODEL");
    model_ = std::make_unique<ViT>(cfg_.model);
    Rng rng(cfg_.seed);
    init_weights(*model_, rng);
  }
  if (!cfg_.distill.teacher.empty()) {
    teacher_ = load_model(cfg_.distill.teacher);
    check(teacher_->cfg.classes == model_->cfg.classes, "[distill] teacher ", cfg_.distill.teacher, " has ",
          teacher_->cfg.classes, " classes, the student ", model_->cfg.classes);
    // The teacher runs on the student's preprocessed batch: it must expect the same input.
    const ViTConfig &t = teacher_->cfg, &s = model_->cfg;
    auto list = [](const std::vector<float>& v) {
      std::string r;
      for (float x : v) r += (r.empty() ? "" : ", ") + cat(x);
      return "[" + r + "]";
    };
    check(t.channels == s.channels && t.image_size == s.image_size, "[distill] teacher ", cfg_.distill.teacher,
          " takes ", t.channels, "-channel ", t.image_size, "x", t.image_size, " images, the student ", s.channels,
          "-channel ", s.image_size, "x", s.image_size, " (the teacher sees the student's batch)");
    check(t.pre.mean == s.pre.mean && t.pre.std == s.pre.std, "[distill] teacher ",
          cfg_.distill.teacher, " normalises with mean ", list(t.pre.mean), " std ", list(t.pre.std),
          ", the student with mean ", list(s.pre.mean), " std ", list(s.pre.std),
          " (the teacher sees the student's batch: give the student the teacher's normalisation)");
    pack_linears_for_inference(*teacher_);  // the teacher only runs inference
  }
  // Readies the model's layers for training (an Error naming a layer that cannot train).
  opt_ = std::unique_ptr<Opt>(new Opt{TrainStep(*model_, cfg_.opt), Schedule{}, Acts{}, Tensor{}});
}

Trainer::~Trainer() = default;

void Trainer::load_data() {
  if (data_) return;
  data_ = std::make_unique<Data>();
  data_->train = load_split(cfg_, cfg_.train_split, cfg_.train_limit);
  data_->test = load_split(cfg_, cfg_.test_split, cfg_.test_limit);
  const int64_t per_epoch = steps_per_epoch();
  Schedule& s = opt_->sched;
  s.kind = cfg_.schedule;
  s.lr = cfg_.lr;
  s.min_lr = cfg_.min_lr;
  s.warmup_lr = cfg_.warmup_lr;
  s.warmup_steps = static_cast<int64_t>(std::llround(cfg_.warmup_epochs * per_epoch));
  s.total_steps = per_epoch * cfg_.epochs;
}

int64_t Trainer::steps_per_epoch() const {
  check(data_ != nullptr, "Trainer::steps_per_epoch before the data is loaded");
  return (data_->train.images.dim(0) + cfg_.batch - 1) / cfg_.batch;
}

// Checked after each step: a requested stop, the step limit or the time limit.
bool Trainer::should_stop() {
  if (g_stop_requested.load(std::memory_order_relaxed)) reason_ = StopReason::Signal;
  else if (when_.at_step > 0 && step_ >= when_.at_step) reason_ = StopReason::Step;
  else if (when_.after_seconds > 0 && since(run_start_) >= when_.after_seconds) reason_ = StopReason::Time;
  else return false;
  return true;
}

bool Trainer::train_epoch(int epoch) {
  const ViTConfig& mc = model_->cfg;
  const Split& tr = data_->train;
  const int64_t N = tr.images.dim(0), C = mc.channels, S = mc.image_size, per = C * S * S;
  // The epoch's order: a permutation from (seed, epoch).
  std::vector<int64_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  Rng shuf(cfg_.seed * 1000003ull + static_cast<uint64_t>(epoch));
  for (int64_t i = N - 1; i > 0; --i) std::swap(order[i], order[shuf.below(i + 1)]);
  AugmentParams aug;
  aug.pad = cfg_.augment.crop_padding;
  aug.hflip = cfg_.augment.hflip;
  for (int c = 0; c < C; ++c) aug.fill.push_back(-mc.pre.mean[c] / mc.pre.std[c]);

  Opt& o = *opt_;
  if (!o.batch.defined()) o.batch = Tensor::empty({cfg_.batch, C, S, S});
  Tensor gathered = Tensor::empty({cfg_.batch, C, S, S});
  std::vector<int> labels(cfg_.batch);
  std::vector<int64_t> ids(cfg_.batch);
  const int64_t steps = steps_per_epoch();
  // A stopped epoch continues with its running sums.
  EpochProgress p = partial_.epoch == epoch ? partial_ : EpochProgress{epoch};
  check(p.step >= 0 && p.step < steps, resumed_from_, ": the checkpoint stopped at step ", p.step, " of epoch ",
        epoch, ", which has only ", steps, " steps with this config");
  Progress bar(cat("epoch ", epoch, "/", cfg_.epochs), steps, p.step);
  auto t0 = Clock::now();
  double loss_sum = p.loss_sum;
  int64_t hits = p.hits, seen = p.seen;
  float lr = 0;
  for (int64_t s = p.step; s < steps; ++s) {
    const int64_t i0 = s * cfg_.batch, B = std::min<int64_t>(cfg_.batch, N - i0);
    {
      VK_PROF("train.batch");
      for (int64_t b = 0; b < B; ++b) {
        const int64_t idx = order[i0 + b];
        std::memcpy(gathered.f32() + b * per, tr.images.f32() + idx * per, sizeof(float) * per);
        labels[b] = tr.labels[idx];
        ids[b] = idx;
      }
      augment_batch(gathered.f32(), o.batch.f32(), B, C, S, aug, cfg_.seed * 7919ull + uint64_t(epoch), ids.data());
    }
    StepOptions so;
    lr = so.lr = o.sched.at(step_);
    so.label_smoothing = cfg_.label_smoothing;
    so.clip_grad = cfg_.clip_grad;
    // Dropout masks depend on (seed, global step) only: resumed runs draw the same masks.
    so.dropout_seed = cfg_.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step_);
    Tensor teacher_logits;
    if (teacher_) {
      teacher_logits = vit_predict(*teacher_, o.batch.slice(0, B), o.teacher_acts);
      so.distill_alpha = cfg_.distill.alpha;
      so.distill_temperature = cfg_.distill.temperature;
    }
    const StepResult r = o.step.run(o.batch.f32(), labels.data(), B, so, teacher_ ? teacher_logits.f32() : nullptr);
    const float loss = r.loss;
    const int64_t correct = r.correct;
    ++step_;
    check(std::isfinite(loss), "training diverged: loss is ", loss, " at epoch ", epoch, " step ", s + 1,
          " (lower the learning rate or enable clip_grad)");
    loss_sum += double(loss) * B;
    hits += correct;
    seen += B;
    bar.update(s + 1, cat("loss ", fmt_fixed(loss_sum / seen, 4), " acc ", fmt_fixed(100.0 * hits / seen, 2),
                          "% ", fmt_fixed((seen - p.seen) / since(t0), 0), " img/s"));
    if (s + 1 < steps && should_stop()) {
      partial_ = {epoch, s + 1, loss_sum, p.seconds + since(t0), hits, seen};
      bar.finish(cat("stopped (", stop_reason_name(reason_), ") at step ", s + 1));
      return false;
    }
  }
  partial_ = {};
  EpochRecord r;
  r.epoch = epoch;
  r.steps = step_;
  r.lr = lr;
  r.train_loss = loss_sum / seen;
  r.train_top1 = double(hits) / seen;
  r.seconds = p.seconds + since(t0);
  r.images_per_s = seen / r.seconds;
  bar.finish(cat("loss ", fmt_fixed(r.train_loss, 4), " acc ", fmt_fixed(100 * r.train_top1, 2), "% ",
                 fmt_fixed(r.images_per_s, 0), " img/s"));
  if (epoch % cfg_.eval_every == 0 || epoch == cfg_.epochs) {
    EvalResult e = evaluate_tensor(*model_, data_->test.images, data_->test.labels, 256, false);
    r.evaluated = true;
    r.test_loss = e.loss;
    r.test_top1 = e.top1;
    r.test_top5 = e.top5;
    if (progress_enabled())
      std::fprintf(stderr, "epoch %d: test top1 %.2f%% top5 %.2f%% loss %.4f\n", epoch, 100 * e.top1, 100 * e.top5,
                   e.loss);
  }
  history_.push_back(r);
  return true;
}

void Trainer::save_checkpoint() const {
  // The model with its layers' training state (latent weights), then the optimizer's.
  FileContents fc = model_file_contents(*model_, true);
  std::vector<StEntry> entries;
  for (auto& [name, t] : fc.tensors) entries.push_back({name, t.dtype(), t.shape(), t.raw()});
  AdamW& adam = opt_->step.optimizer();
  entries.push_back({"optim.m", DType::F32, {adam.m().numel()}, adam.m().f32()});
  entries.push_back({"optim.v", DType::F32, {adam.v().numel()}, adam.v().f32()});
  nlohmann::json hist = nlohmann::json::array();
  for (auto& r : history_) hist.push_back(r.to_json());
  nlohmann::json state{{"epochs_done", epochs_done_}, {"step", step_}, {"adam_steps", adam.steps()},
                       {"history", hist}, {"train_config", cfg_.to_json()}};
  if (partial_.step > 0)
    state["epoch_in_progress"] = {{"epoch", partial_.epoch}, {"step", partial_.step},
                                  {"loss_sum", partial_.loss_sum}, {"seconds", partial_.seconds},
                                  {"hits", partial_.hits},         {"seen", partial_.seen}};
  fc.metadata["vitkit.train_state"] = state.dump();
  write_safetensors(paths_.checkpoint, entries, fc.metadata);
}

// A layers metadata without what training learns (static input scales with
// learned step sizes, derived from their latent parameters on resuming).
static nlohmann::json without_learned(nlohmann::json layers) {
  for (auto& [name, entry] : layers.items())
    if (entry.is_object()) entry.erase("in_scale");
  return layers;
}

void Trainer::resume(const std::string& path) {
  SafetensorsReader r(path);
  resumed_from_ = path;
  auto md = r.metadata();
  check(md.count("vitkit.train_state"), path, ": not a vitkit training checkpoint (no vitkit.train_state)");
  nlohmann::json st;
  try {
    st = nlohmann::json::parse(md["vitkit.train_state"]);
    // QAT settings decide which parameters exist (learned scales): a resume must use the run's own.
    const nlohmann::json was_cfg = st.at("train_config");
    if (was_cfg.contains("qat"))
      check(was_cfg.at("qat") == cfg_.to_json().at("qat"), path, ": the run was started with [qat] ",
            was_cfg.at("qat").dump(), "; this one has ", cfg_.to_json().at("qat").dump(),
            " (resume with the same --qat, --lsq and --calib)");
    ViTConfig saved = load_config(path);
    check(config_to_json(saved) == config_to_json(model_->cfg), path,
          ": the checkpoint's model config differs from the train config's");
    const std::string layers = md.count(kLayersKey) ? md[kLayersKey] : "{}";
    check(without_learned(nlohmann::json::parse(layers)) == without_learned(layers_metadata(*model_)), path,
          ": the checkpoint's layers (", kLayersKey, " ", layers, ") differ from the model's (",
          layers_metadata(*model_).dump(), "): resume with the --init model the run started from");
    for (int i = 0; i < model_->params.size(); ++i) {
      const ParamInfo& p = model_->params.info(i);
      const StTensor* t = r.find(p.name);
      check(t && t->shape == p.shape && t->dtype == DType::F32, path, ": tensor '", p.name,
            "' is missing or has the wrong shape");
      r.read_f32(*t, model_->params.ptr(i));
    }
    after_optimizer_step(*model_);  // each layer's weight from its latent one, exactly as when saved
    AdamW& adam = opt_->step.optimizer();
    for (auto [name, dst] : {std::pair{"optim.m", &adam.m()}, std::pair{"optim.v", &adam.v()}}) {
      const StTensor* t = r.find(name);
      check(t && t->numel() == dst->numel() && t->dtype == DType::F32, path, ": optimizer state '", name,
            "' is missing or has the wrong size");
      r.read_f32(*t, dst->f32());
    }
    adam.set_steps(st.at("adam_steps").get<int64_t>());
    epochs_done_ = st.at("epochs_done").get<int>();
    step_ = st.at("step").get<int64_t>();
    history_.clear();
    for (auto& h : st.at("history")) history_.push_back(EpochRecord::from_json(h));
    partial_ = {};
    if (st.contains("epoch_in_progress")) {
      const auto& p = st.at("epoch_in_progress");
      partial_ = {p.at("epoch").get<int>(),       p.at("step").get<int64_t>(), p.at("loss_sum").get<double>(),
                  p.at("seconds").get<double>(), p.at("hits").get<int64_t>(), p.at("seen").get<int64_t>()};
      check(partial_.epoch == epochs_done_ + 1 && partial_.step > 0 && partial_.seen > 0 && partial_.hits >= 0 &&
                partial_.hits <= partial_.seen,
            path, ": corrupted training state: epoch_in_progress ", p.dump(), " after ", epochs_done_, " epochs");
      // The rest of the epoch needs the same order and augmentation of the same images.
      const nlohmann::json was = st.at("train_config"), now = cfg_.to_json();
      for (const char* key : {"data", "augment"})
        check(was.at(key) == now.at(key), path, ": stopped in the middle of epoch ", partial_.epoch,
              " with [", key, "] ", was.at(key).dump(), "; this config has ", now.at(key).dump(),
              " (resume an unfinished epoch with the same settings)");
      for (const char* key : {"batch", "seed"})
        check(was.at("train").at(key) == now.at("train").at(key), path, ": stopped in the middle of epoch ",
              partial_.epoch, " with ", key, " = ", was.at("train").at(key).dump(), "; this config has ",
              now.at("train").at(key).dump(), " (resume an unfinished epoch with the same settings)");
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": corrupted training state: ", e.what());
  }
  check(epochs_done_ <= cfg_.epochs, path, ": the checkpoint has ", epochs_done_, " epochs, the config only ",
        cfg_.epochs);
}

void Trainer::save_history() const {
  nlohmann::json j = nlohmann::json::array();
  std::string csv = "epoch,steps,lr,train_loss,train_top1,test_loss,test_top1,test_top5,seconds,images_per_s\n";
  for (auto& r : history_) {
    j.push_back(r.to_json());
    csv += cat(r.epoch, ",", r.steps, ",", r.lr, ",", r.train_loss, ",", r.train_top1, ",",
               r.evaluated ? cat(r.test_loss) : "", ",", r.evaluated ? cat(r.test_top1) : "", ",",
               r.evaluated ? cat(r.test_top5) : "", ",", r.seconds, ",", r.images_per_s, "\n");
  }
  write_text_atomic(paths_.history_json, j.dump(2) + "\n");
  write_text_atomic(paths_.history_csv, csv);
}

const std::vector<EpochRecord>& Trainer::run(const StopWhen& when) {
  when_ = when;
  reason_ = StopReason::Finished;
  run_start_ = Clock::now();
  load_data();
  if (progress_enabled())
    std::fprintf(stderr, "train: %s\ntest: %s\nmodel: %lld parameters; %d epochs of %lld steps\n",
                 data_->train.what.c_str(), data_->test.what.c_str(), (long long)model_->params.count(),
                 cfg_.epochs, (long long)steps_per_epoch());
  for (int e = epochs_done_ + 1; e <= cfg_.epochs; ++e) {
    const bool done = train_epoch(e);
    if (done) epochs_done_ = e;
    save_checkpoint();
    save_history();
    if (!done || e == cfg_.epochs) break;
    if (when.after_epoch > 0 && e >= when.after_epoch) {
      reason_ = StopReason::Epoch;
      break;
    }
    if (should_stop()) break;
  }
  g_stop_requested.store(false, std::memory_order_relaxed);
  if (epochs_done_ == cfg_.epochs) {
    end_training(*model_);  // latent weights dropped: the model as it computes
    save_model(*model_, paths_.model);
  }
  return history_;
}

}  // namespace vitkit

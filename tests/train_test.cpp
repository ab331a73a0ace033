// Training end to end on real data (Fashion-MNIST from Debian's
// dataset-fashion-mnist; skipped where it is absent): a short run clearly
// learns, runs are deterministic for a seed and thread count, --resume
// continues exactly, config errors are clear, and the CLI trains, stops,
// resumes and writes a model that eval scores as the history says.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vitkit/train/evaluate.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/threads.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/model_io.h"
#include "vitkit/kernels/round.h"
#include "vitkit/model/init.h"
#include "vitkit/train/train_config.h"
#include "vitkit/train/trainer.h"

using namespace vitkit;
namespace fs = std::filesystem;

namespace {

// A small ViT on Fashion-MNIST (about 1/11 of the default model's work per
// image), so that a few hundred steps take seconds.
std::string small_toml(const std::string& extra_train = "", int64_t train_limit = 19200, int64_t test_limit = 2000,
                       float dropout = 0.f, int epochs = 1) {
  return "[model]\nname = \"fmnist-small-test\"\nimage_size = 28\nchannels = 1\npatch = 4\ndim = 64\ndepth = 2\n"
         "heads = 4\nmlp_dim = 128\nclasses = 10\nmean = [0.2860]\nstd = [0.3530]\ndropout = " +
         std::to_string(dropout) +
         "\n\n[data]\ndataset = \"fashion-mnist\"\ntrain_limit = " + std::to_string(train_limit) +
         "\ntest_limit = " + std::to_string(test_limit) +
         "\n\n[train]\nepochs = " + std::to_string(epochs) +
         "\nlr = 2e-3\nmin_lr = 1e-4\nwarmup_epochs = 0.1\nweight_decay = 0.05\nlabel_smoothing = 0.1\n"
         "clip_grad = 1.0\nseed = 3\n" + (extra_train.find("batch") == std::string::npos ? "batch = 64\n" : "") +
         extra_train + "\n[augment]\ncrop_padding = 2\nhflip = 0.5\n";
}

bool have_fmnist() { return file_exists(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz"); }

#define REQUIRE_FMNIST() \
  if (!have_fmnist()) GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"

std::vector<float> params_of(const ViT& m) {
  return test::param_values(m);
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

std::string write_config(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/train.toml";
  std::ofstream(path) << text;
  return path;
}

// The error text of parsing a config, or "" when it parses.
std::string config_error(const std::string& text) {
  try {
    parse_train_config(text, "bad.toml");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TrainConfig, TheDefaultModelsConfigParses) {
  TrainConfig c = load_train_config(test::source_dir() + "/configs/vit-tiny-fmnist.toml");
  EXPECT_EQ(c.model.dim, 128);
  EXPECT_EQ(c.model.channels, 1);
  EXPECT_EQ(c.data, "fashion-mnist");
  EXPECT_GE(c.epochs, 1);
}

TEST(TrainConfig, ErrorsNameTheFileAndTheProblem) {
  const std::string ok = small_toml();
  EXPECT_EQ(config_error(ok), "");
  struct Case {
    std::string text, expect;
  } cases[] = {
      {"[model\n", "bad.toml:1: TOML error"},
      {ok + "\n[optimizer]\nlr = 1\n", "unknown section or key 'optimizer'"},
      {small_toml("learning_rate = 1e-3\n"), "learning_rate"},
      {small_toml("lr2 = 1\n"), "lr2"},
      {small_toml("batch = 0\n"), "batch must be in 1..65536"},
      {small_toml("schedule = \"step\"\n"), "schedule must be cosine, constant or linear"},
      {small_toml("label_smoothing = 1.5\n"), "label_smoothing"},
      {small_toml("warmup_lr = \"ten\"\n"), "warmup_lr"},
      {"[model]\npreset = \"vit_b_16\"\n[data]\n[train]\nlr = -1\n", "lr must be in (0, 10)"},
      {"[model]\npreset = \"vit_b_16\"\n[data]\n[train]\nepochs = \"ten\"\n", "epochs"},
      {"[model]\npreset = \"vit_b_16\"\nheads = 7\n[data]\n[train]\n", "heads"},
      {"[data]\n[train]\n", "[model]"},
  };
  for (const Case& c : cases) {
    const std::string err = config_error(c.text);
    EXPECT_NE(err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: '" << err << "'";
    EXPECT_NE(err.find("bad.toml"), std::string::npos) << err;
  }
}

TEST(TrainRun, AFewHundredStepsOnFashionMnistClearlyLearnSlow) {
  REQUIRE_FMNIST();
  set_num_threads(2);
  const std::string dir = test::temp_dir();
  // 400 steps of 64 images; no augmentation or label smoothing in so short a run.
  TrainConfig cfg = parse_train_config(small_toml("", 25600), "small.toml");
  cfg.augment = AugmentConfig{};
  cfg.label_smoothing = 0.f;
  Trainer t(cfg, TrainPaths::beside(dir + "/m.safetensors"));
  const auto& hist = t.run();
  ASSERT_EQ(hist.size(), 1u);
  EXPECT_EQ(hist[0].steps, 400);
  ASSERT_TRUE(hist[0].evaluated);
  EXPECT_GT(hist[0].test_top1, 0.70) << "test top-1 after 400 steps";
  EXPECT_LT(hist[0].train_loss, 1.2) << "mean training loss over the run (2.30 at the start)";
  // The written model scores the same on the same 2000 test images.
  auto m = load_model(dir + "/m.safetensors");
  auto ds = open_dataset("fashion-mnist", "test");
  EvalResult e = evaluate_dataset(*m, *ds, 2000, 256, false);
  EXPECT_NEAR(e.top1, hist[0].test_top1, 1e-9);
  EXPECT_TRUE(file_exists(dir + "/m.history.csv"));
  EXPECT_TRUE(file_exists(dir + "/m.history.json"));
  EXPECT_TRUE(file_exists(dir + "/m.ckpt.safetensors"));
}

// Distillation end to end. A teacher that is the student's own starting point
// (loaded from its file, weights packed for inference by the trainer) gives a
// distillation term of about 0 while the student barely moves (learning rate
// 1e-8, no decay); with alpha = 1 the loss is that term alone. Another teacher
// gives a clearly positive one. (The heads are random: torchvision's zero head
// would make every logit 0 and the term 0 whatever the teacher computed.)
TEST(TrainRun, DistillationFromTheStudentsOwnStartIsZero) {
  REQUIRE_FMNIST();
  set_num_threads(2);
  const std::string dir = test::temp_dir();
  TrainConfig cfg = parse_train_config(small_toml("", 640, 200), "small.toml");  // 10 steps of 64 images
  cfg.lr = cfg.min_lr = cfg.warmup_lr = 1e-8f;
  cfg.opt.weight_decay = 0.f;
  cfg.label_smoothing = 0.f;
  cfg.augment = AugmentConfig{};
  cfg.distill.alpha = 1.f;
  cfg.distill.temperature = 2.f;
  auto random_vit = [&](uint64_t seed) {
    auto m = std::make_unique<ViT>(cfg.model);
    Rng rng(seed);
    init_weights(*m, rng);
    float* w = m->W(m->head);
    for (int64_t i = 0; i < int64_t(m->head.in) * m->head.out; ++i) w[i] = 0.5f * rng.normal();
    return m;
  };
  auto start = random_vit(21), other = random_vit(22);
  save_model(*start, dir + "/start.safetensors");
  save_model(*other, dir + "/other.safetensors");
  auto distill_loss = [&](const std::string& teacher, const std::string& name) {
    TrainConfig c = cfg;
    c.distill.teacher = dir + "/" + teacher;
    Trainer t(c, TrainPaths::beside(dir + "/" + name + ".safetensors"), start->clone());
    const auto& hist = t.run();
    EXPECT_EQ(hist.size(), 1u);
    return hist.empty() ? -1.0 : hist[0].train_loss;
  };
  const double same = distill_loss("start.safetensors", "a"), differs = distill_loss("other.safetensors", "b");
  std::printf("distillation loss: teacher = the student's start %.3g, another teacher %.3g\n", same, differs);
  EXPECT_GE(same, 0.0);
  EXPECT_LT(same, 1e-6);
  EXPECT_GT(differs, 0.01);
}

TEST(TrainRun, SameSeedAndThreadsGiveIdenticalWeights) {
  REQUIRE_FMNIST();
  set_num_threads(2);
  const std::string dir = test::temp_dir();
  auto train = [&](uint64_t seed, const std::string& name) {
    TrainConfig cfg = parse_train_config(small_toml("", 640, 200, 0.1f, 2), "small.toml");
    cfg.epochs = 2;
    cfg.seed = seed;
    Trainer t(cfg, TrainPaths::beside(dir + "/" + name + ".safetensors"));
    t.run();
    return params_of(t.model());
  };
  auto a = train(5, "a"), b = train(5, "b"), c = train(6, "c");
  EXPECT_TRUE(bitwise_equal(a, b)) << "two runs with seed 5 and 2 threads differ";
  EXPECT_FALSE(bitwise_equal(a, c)) << "seeds 5 and 6 gave the same weights";
}

TEST(TrainRun, ResumeContinuesExactly) {
  REQUIRE_FMNIST();
  set_num_threads(2);
  const std::string dir = test::temp_dir();
  // Dropout and augmentation on: their random streams must resume too.
  TrainConfig cfg = parse_train_config(small_toml("", 640, 200, 0.1f), "small.toml");
  cfg.epochs = 3;
  Trainer straight(cfg, TrainPaths::beside(dir + "/straight.safetensors"));
  const auto hist = straight.run();

  const TrainPaths parts = TrainPaths::beside(dir + "/parts.safetensors");
  {
    Trainer first(cfg, parts);
    first.run({.after_epoch = 1});
    EXPECT_EQ(first.epochs_done(), 1);
    EXPECT_EQ(first.stop_reason(), StopReason::Epoch);
    EXPECT_FALSE(file_exists(parts.model)) << "a stopped run wrote its final model";
  }
  Trainer rest(cfg, parts);
  rest.resume(parts.checkpoint);
  const auto& hist2 = rest.run();
  EXPECT_TRUE(bitwise_equal(params_of(straight.model()), params_of(rest.model())))
      << "1 epoch + resume for 2 differs from 3 epochs straight";
  ASSERT_EQ(hist2.size(), hist.size());
  for (size_t i = 0; i < hist.size(); ++i) {
    EXPECT_EQ(hist2[i].steps, hist[i].steps);
    EXPECT_EQ(hist2[i].train_loss, hist[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(hist2[i].lr, hist[i].lr);
  }
  EXPECT_TRUE(file_exists(parts.model));

  // Stopped in the middle of epochs: at step 15 (epoch 2 of 10 steps each), then
  // by request_stop() (as Ctrl-C does) after one more step, then to the end.
  const TrainPaths mid = TrainPaths::beside(dir + "/mid.safetensors");
  {
    Trainer a(cfg, mid);
    EXPECT_TRUE(a.run({.at_step = 15}).size() == 1);
    EXPECT_EQ(a.stop_reason(), StopReason::Step);
    EXPECT_EQ(a.epochs_done(), 1);
    EXPECT_EQ(a.epoch_step(), 5);
  }
  {
    Trainer b(cfg, mid);
    b.resume(mid.checkpoint);
    EXPECT_EQ(b.epoch_step(), 5);
    Trainer::request_stop();
    b.run();
    EXPECT_EQ(b.stop_reason(), StopReason::Signal);
    EXPECT_EQ(b.epoch_step(), 6);
    EXPECT_FALSE(file_exists(mid.model));
  }
  Trainer c(cfg, mid);
  c.resume(mid.checkpoint);
  const auto& hist3 = c.run();
  EXPECT_EQ(c.stop_reason(), StopReason::Finished);
  EXPECT_EQ(c.epoch_step(), 0);
  EXPECT_TRUE(bitwise_equal(params_of(straight.model()), params_of(c.model())))
      << "stops at steps 15 and 16 + resume differ from 3 epochs straight";
  ASSERT_EQ(hist3.size(), hist.size());
  for (size_t i = 0; i < hist.size(); ++i) {
    EXPECT_EQ(hist3[i].train_loss, hist[i].train_loss) << "epoch " << i + 1;
    EXPECT_EQ(hist3[i].train_top1, hist[i].train_top1) << "epoch " << i + 1;
    EXPECT_EQ(hist3[i].test_top1, hist[i].test_top1) << "epoch " << i + 1;
  }
}

TEST(TrainRun, ResumeRefusesAForeignCheckpoint) {
  REQUIRE_FMNIST();
  const std::string dir = test::temp_dir();
  TrainConfig cfg = parse_train_config(small_toml("", 128, 100), "small.toml");
  const TrainPaths p = TrainPaths::beside(dir + "/m.safetensors");
  {
    Trainer t(cfg, p);
    t.run();
  }
  // The final model is not a checkpoint.
  try {
    Trainer t(cfg, p);
    t.resume(p.model);
    FAIL() << "resumed from a model file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a vitkit training checkpoint"), std::string::npos) << e.what();
  }
  // A checkpoint of another architecture.
  TrainConfig other = cfg;
  other.model.mlp_dim = 96;
  try {
    Trainer t(other, TrainPaths::beside(dir + "/o.safetensors"));
    t.resume(p.checkpoint);
    FAIL() << "resumed a checkpoint of another architecture";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model config differs"), std::string::npos) << e.what();
  }
  // More epochs done than the config has.
  TrainConfig fewer = cfg;
  cfg.epochs = 2;
  {
    Trainer t(cfg, TrainPaths::beside(dir + "/two.safetensors"));
    t.run();
  }
  try {
    Trainer t(fewer, TrainPaths::beside(dir + "/x.safetensors"));
    t.resume(dir + "/two.ckpt.safetensors");
    FAIL() << "resumed 2 epochs into a 1-epoch config";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("epochs"), std::string::npos) << e.what();
  }
  // An epoch stopped in its middle continues only with the same data, batch and seed.
  const TrainPaths mid = TrainPaths::beside(dir + "/mid.safetensors");
  {
    Trainer t(fewer, mid);
    t.run({.at_step = 1});
    ASSERT_EQ(t.epoch_step(), 1);
  }
  TrainConfig batch = fewer, limit = fewer, seed = fewer;
  batch.batch = 32;
  limit.train_limit = 256;
  seed.seed = 4;
  for (auto [c, what] : {std::pair{batch, "batch = 64"}, std::pair{limit, "[data]"}, std::pair{seed, "seed = 3"}}) {
    try {
      Trainer t(c, TrainPaths::beside(dir + "/x.safetensors"));
      t.resume(mid.checkpoint);
      FAIL() << "resumed an unfinished epoch with other settings (" << what << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(mid.checkpoint), std::string::npos) << e.what();
    }
  }
}

TEST(TrainCli, TrainStopResumeThenEvalAgreesWithTheHistory) {
  REQUIRE_FMNIST();
  const std::string dir = test::temp_dir();
  const std::string cfg = write_config(dir, small_toml("", 1280, 500, 0.f, 2));
  const std::string out = dir + "/m.safetensors";
  auto r1 = test::run_cli("train --config " + cfg + " -o " + out + " --stop-after 1 --threads 2 --json");
  ASSERT_EQ(r1.code, 0) << r1.err;
  auto j1 = nlohmann::json::parse(r1.out);
  EXPECT_EQ(j1["finished"], false);
  EXPECT_EQ(j1["epochs_done"], 1);
  EXPECT_FALSE(file_exists(out));
  auto r2 = test::run_cli("train --config " + cfg + " -o " + out + " --resume " + dir +
                          "/m.ckpt.safetensors --threads 2 --json");
  ASSERT_EQ(r2.code, 0) << r2.err;
  auto j2 = nlohmann::json::parse(r2.out);
  EXPECT_EQ(j2["finished"], true);
  ASSERT_EQ(j2["history"].size(), 2u);
  const double top1 = j2["history"][1]["test_top1"];
  EXPECT_GT(top1, 0.3);
  // The history beside the model says the same.
  auto h = nlohmann::json::parse(read_text_file(dir + "/m.history.json"));
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[1]["test_top1"].get<double>(), top1);
  EXPECT_NE(read_text_file(dir + "/m.history.csv").find("epoch,steps,lr,train_loss"), std::string::npos);
  // eval on the same 500 test images: the same top-1.
  auto e = test::run_cli("eval " + out + " --data fashion-mnist --limit 500 --json -q");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NEAR(nlohmann::json::parse(e.out)["top1"].get<double>(), top1, 1e-9);
  // A missing config and a bad flag value are clear errors.
  auto bad = test::run_cli("train --config " + dir + "/nope.toml -o " + out);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("nope.toml"), std::string::npos) << bad.err;
  auto bad2 = test::run_cli("train --config " + cfg + " --epochs 0");
  EXPECT_NE(bad2.code, 0);
  EXPECT_NE(bad2.err.find("--epochs"), std::string::npos) << bad2.err;
  auto bad3 = test::run_cli("train --config " + cfg + " --max-minutes -1");
  EXPECT_NE(bad3.code, 0);
  EXPECT_NE(bad3.err.find("--max-minutes"), std::string::npos) << bad3.err;
}

// The real path of a long run cut short: Ctrl-C (SIGINT) mid-epoch exits 130
// with a checkpoint; --max-minutes stops it again; --resume then finishes it
// with the same weights as a run never stopped.
TEST(TrainCli, InterruptedAndTimeLimitedRunsResumeExactlySlow) {
  REQUIRE_FMNIST();
  const std::string dir = test::temp_dir();
  const std::string cfg = write_config(dir, small_toml("", 3200, 200, 0.f, 2));
  const std::string out = dir + "/m.safetensors", ckpt = dir + "/m.ckpt.safetensors";
  const std::string train = std::string(VITKIT_CLI) + " train --config " + cfg + " -o " + out + " --threads 2";
  // SIGINT 1 s in: data loaded, a few of the 100 steps done.
  int st = std::system(("timeout --preserve-status -s INT 1 " + train + " --json >" + dir + "/1.json 2>" + dir +
                        "/1.err").c_str());
  const std::string err1 = read_text_file(dir + "/1.err");
  ASSERT_TRUE(WIFEXITED(st)) << err1;
  ASSERT_EQ(WEXITSTATUS(st), 130) << err1;
  EXPECT_NE(err1.find("stopping after this step"), std::string::npos) << err1;
  auto j1 = nlohmann::json::parse(read_text_file(dir + "/1.json"));
  EXPECT_EQ(j1["stop_reason"], "signal");
  EXPECT_EQ(j1["finished"], false);
  EXPECT_FALSE(file_exists(out));
  ASSERT_TRUE(file_exists(ckpt));
  const int64_t at1 = j1["epochs_done"].get<int64_t>() * 50 + j1["epoch_step"].get<int64_t>();
  EXPECT_GT(at1, 0);
  // --max-minutes 0.01 (0.6 s) stops it again after a few steps; text output.
  auto r2 = test::run_cli("train --config " + cfg + " -o " + out + " --threads 2 --max-minutes 0.01 --resume " + ckpt);
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_NE(r2.out.find("stopped    (time)"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find("--resume " + ckpt), std::string::npos) << r2.out;
  auto r3 = test::run_cli("train --config " + cfg + " -o " + out + " --threads 2 --json --resume " + ckpt);
  ASSERT_EQ(r3.code, 0) << r3.err;
  auto j3 = nlohmann::json::parse(r3.out);
  EXPECT_EQ(j3["stop_reason"], "finished");
  ASSERT_EQ(j3["history"].size(), 2u);
  // The same weights as the run never stopped.
  set_num_threads(2);
  Trainer straight(parse_train_config(read_text_file(cfg), cfg), TrainPaths::beside(dir + "/s.safetensors"));
  const auto& hist = straight.run();
  auto m = load_model(out);
  EXPECT_TRUE(bitwise_equal(params_of(straight.model()), params_of(*m))) << "stopped twice and resumed";
  EXPECT_EQ(j3["history"][1]["train_loss"].get<double>(), hist[1].train_loss);
}

// The workflow of [repr]'s bug, as a user runs it: round the shipped model
// (weights and inputs to 2 decimals), fine-tune it with a [model]-less config,
// evaluate the result. Training must train what the model computes: the test
// top-1 the run reports is what eval of the saved file gives, every rounded
// weight is still on the 0.01 grid (the file says round:decimals=2), the
// weights did change (10 steps of lr 1e-3 move a latent weight across a
// 0.005 rounding boundary; at 1 decimal they would need 50), and a run stopped after one step and resumed without
// --init (the checkpoint holds the representations) ends in the same file.
// Before, the forward pass ran a frozen copy while AdamW updated a hidden
// dense weight: 24% top-1 during the run, 12% after reloading.
TEST(TrainCli, FineTuningARoundedModelTrainsWhatItComputesSlow) {
  REQUIRE_FMNIST();
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(shipped);
  const std::string dir = test::temp_dir();
  const std::string rounded = dir + "/r.safetensors", tuned = dir + "/t.safetensors", again = dir + "/a.safetensors";
  auto c = test::run_cli("compress " + shipped + " --pass round:decimals=2,activations=true -o " + rounded + " -q");
  ASSERT_EQ(c.code, 0) << c.err;
  const std::string cfg = write_config(
      dir, "[data]\ndataset = \"fashion-mnist\"\ntrain_limit = 640\ntest_limit = 300\n\n[train]\nepochs = 1\n"
           "batch = 64\nlr = 1e-3\nmin_lr = 1e-4\nwarmup_epochs = 0\nlabel_smoothing = 0.1\nseed = 1\n");
  auto t = test::run_cli("train --config " + cfg + " --init " + rounded + " -o " + tuned + " --threads 2 --json -q");
  ASSERT_EQ(t.code, 0) << t.err;
  const double run_top1 = test::parse_json(t)["history"][0]["test_top1"].get<double>();
  auto e = test::run_cli("eval " + tuned + " --data fashion-mnist --limit 300 --json -q");
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_EQ(test::parse_json(e)["top1"].get<double>(), run_top1) << "the run and its saved model disagree";
  EXPECT_GT(run_top1, 0.8) << "fine-tuning a rounded model must keep it working";

  auto before = load_model(rounded), after = load_model(tuned);
  int64_t changed = 0;
  std::vector<float> s0, s1;
  for (const Linear* l : after->linears()) {
    const Linear* o = before->find_linear(l->name);
    if (l->block < 0) continue;  // patch and head stay f32
    ASSERT_EQ(l->repr->kind(), "round") << l->name;
    const float* w = plain_weight(*l, s1);
    const float* w0 = plain_weight(*o, s0);
    for (int64_t i = 0; i < int64_t(l->out) * l->in; ++i) {
      ASSERT_EQ(w[i], kernels::round_decimal(w[i], 2)) << l->name << " weight " << i << " is off the 0.01 grid";
      changed += w[i] != w0[i];
    }
  }
  EXPECT_GT(changed, 0) << "training changed no rounded weight";

  // Stopped after the first step, resumed from the checkpoint alone.
  auto s = test::run_cli("train --config " + cfg + " --init " + rounded + " -o " + again +
                         " --threads 2 --max-minutes 0.0001 -q");
  ASSERT_EQ(s.code, 0) << s.err;
  ASSERT_FALSE(file_exists(again));
  auto r = test::run_cli("train --config " + cfg + " -o " + again + " --resume " + dir + "/a.ckpt.safetensors --threads 2 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_file(again), read_file(tuned)) << "a resumed fine-tune of a rounded model must end where one run ends";
}

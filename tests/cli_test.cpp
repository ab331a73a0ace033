// The command line end to end: info (MACs and parameters of vit_b_16, a file),
// predict (.npy and image files, against the library), eval (an image folder
// made here, Fashion-MNIST), --help for every command, and --threads.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include <stb/stb_image_write.h>

#include "test_util.h"
#include "vitkit/train/evaluate.h"
#include "vitkit/model/cost.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/image.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/model/forward.h"

using namespace vitkit;
namespace fs = std::filesystem;

namespace {

// Every parameter random (the head too), so that logits and predictions differ.
// dim 32, 2 blocks of 4 heads, MLP 64; Fashion-MNIST's statistics for one channel.
ViTConfig small_config(int image, int channels, int patch, int classes) {
  ViTConfig c = test::small_config(image, patch, 32, 2, 4, 64, classes, channels);
  c.name = "cli_small";
  if (channels == 1) {
    c.pre.mean = {0.286f};
    c.pre.std = {0.353f};
  }
  return c;
}

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (text)

void write_png(const std::string& path, int w, int h, int comp, const std::vector<uint8_t>& px) {
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, comp, px.data(), w * comp)) << path;
}

void write_jpg(const std::string& path, int w, int h, int comp, const std::vector<uint8_t>& px) {
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), w, h, comp, px.data(), 90)) << path;
}

std::vector<uint8_t> random_pixels(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng.below(256));
  return v;
}

double cpu_seconds(int who) {
  rusage ru{};
  getrusage(who, &ru);
  return double(ru.ru_utime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec) + double(ru.ru_stime.tv_sec) +
         1e-6 * double(ru.ru_stime.tv_usec);
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

// ---------------------------------------------------------------- info

TEST(CliInfo, VitB16MacsPerBlockAndParameters) {
  test::CliResult r = test::run_cli("info vit_b_16 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["parameters"], 86567656);  // sum(p.numel() for p in torchvision.models.vit_b_16().parameters())
  const auto& k = j["macs_by_kind"];
  EXPECT_EQ(k["qkv"]["macs_each"], 348585984);
  EXPECT_EQ(k["out_proj"]["macs_each"], 116195328);
  EXPECT_EQ(k["attn_scores"]["macs_each"], 29805312);
  EXPECT_EQ(k["attn_values"]["macs_each"], 29805312);
  EXPECT_EQ(k["fc1"]["macs_each"], 464781312);
  EXPECT_EQ(k["fc2"]["macs_each"], 464781312);
  for (const char* kind : {"qkv", "out_proj", "attn_scores", "attn_values", "fc1", "fc2"}) EXPECT_EQ(k[kind]["count"], 12);
  EXPECT_EQ(j["macs"], model_cost(*preset("vit_b_16")).macs);
  EXPECT_EQ(j["flops"], 2 * j["macs"].get<int64_t>());
  EXPECT_EQ(j["tokens"], 197);
  EXPECT_EQ(j["config"]["dim"], 768);
  int64_t sum = 0;
  for (auto& l : j["layers"]) sum += l["macs"].get<int64_t>();
  EXPECT_EQ(sum, j["macs"].get<int64_t>());

  r = test::run_cli("info vit_b_16");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"86,567,656", "348,585,984", "116,195,328", "29,805,312", "464,781,312", "vit_b_16 (preset)"})
    EXPECT_HAS(r.out, s);
  r = test::run_cli("info vit_b_16 --layers");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "encoder_layer_11");
}

TEST(CliInfo, OnAFile) {
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors";
  ViTConfig c = small_config(32, 3, 8, 7);
  c.pre.resize = 36;
  auto m = test::random_model(c, 1);
  save_model(*m, path);
  test::CliResult r = test::run_cli("info " + path + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["parameters"], m->params.count());
  EXPECT_EQ(j["parameters"], model_cost(c).params);
  EXPECT_EQ(j["file_bytes"], file_size(path));
  EXPECT_EQ(j["config"], config_to_json(c));
  EXPECT_EQ(j["macs"], model_cost(c).macs);
  r = test::run_cli("info " + path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "image 32, channels 3, patch 8, dim 32, depth 2, heads 4, mlp 64, classes 7");
  EXPECT_HAS(r.out, "resize 36, crop 32");
}

// ---------------------------------------------------------------- predict

TEST(CliPredict, NpyInputMatchesTheLibrary) {
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors";
  ViTConfig c = small_config(24, 3, 6, 9);
  auto m = test::random_model(c, 2);
  save_model(*m, path);
  Tensor x = Tensor::empty({5, 3, 24, 24});
  Rng rng(3);
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = rng.normal();
  write_npy(dir + "/x.npy", x);
  test::CliResult r = test::run_cli("predict " + path + " --input " + dir + "/x.npy -o " + dir +
                                    "/logits.npy --threads 1 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  set_num_threads(1);
  Tensor want = vit_predict(*load_model(path), x);
  set_num_threads(0);
  Tensor got = read_npy(dir + "/logits.npy");
  ASSERT_EQ(got.shape(), (Shape{5, 9}));
  EXPECT_EQ(got.dtype(), DType::F32);
  const float diff = test::max_abs_diff(got, want), scale = test::max_abs(want);
  std::printf("predict --input vs vit_predict: max|diff| %.3g (max|logit| %.3g)\n", diff, scale);
  EXPECT_LE(diff, 1e-6f * scale);
  nlohmann::json j = test::parse_json(r);
  ASSERT_EQ(j["predictions"].size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const float* l = want.f32() + i * 9;
    int best = int(std::max_element(l, l + 9) - l);
    EXPECT_EQ(j["predictions"][size_t(i)]["top"][0]["class"], best) << i;
    EXPECT_EQ(j["predictions"][size_t(i)]["top"].size(), 5u);
  }
  // A single CHW image is accepted as a batch of one.
  write_npy(dir + "/one.npy", x.slice(0, 1).reshape({3, 24, 24}).clone());
  r = test::run_cli("predict " + path + " --input " + dir + "/one.npy -o " + dir + "/one_logits.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_LE(test::max_abs_diff(read_npy(dir + "/one_logits.npy"), want.slice(0, 1).clone()), 1e-6f * scale);
}

TEST(CliPredict, ImageFilesEqualPreprocessThenForward) {
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors";
  ViTConfig c = small_config(16, 3, 8, 4);
  c.pre.resize = 20;
  c.pre.interpolation = Interpolation::Bicubic;
  c.pre.mean = {0.4f, 0.5f, 0.6f};
  c.pre.std = {0.2f, 0.25f, 0.3f};
  auto m = test::random_model(c, 4);
  save_model(*m, path);
  const std::vector<std::string> files = {dir + "/a.png", dir + "/b.jpg", dir + "/c.png", dir + "/d.jpeg"};
  write_png(files[0], 30, 22, 3, random_pixels(30 * 22 * 3, 1));
  write_jpg(files[1], 41, 33, 3, random_pixels(41 * 33 * 3, 2));
  write_png(files[2], 19, 25, 1, random_pixels(19 * 25, 3));  // gray, replicated to RGB
  write_jpg(files[3], 64, 48, 1, random_pixels(64 * 48, 4));
  std::string args;
  for (auto& f : files) args += " " + f;
  test::CliResult r = test::run_cli("predict " + path + args + " -o " + dir + "/logits.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  for (auto& f : files) EXPECT_HAS(r.out, f);
  Tensor x = Tensor::empty({4, 3, 16, 16});
  for (size_t i = 0; i < files.size(); ++i) preprocess_image(decode_image(files[i]), c, x.f32() + i * 3 * 16 * 16);
  set_num_threads(1);
  Tensor want = vit_predict(*load_model(path), x);
  set_num_threads(0);
  Tensor got = read_npy(dir + "/logits.npy");
  const float diff = test::max_abs_diff(got, want), scale = test::max_abs(want);
  std::printf("predict IMAGE... vs preprocess_image + vit_predict: max|diff| %.3g (max|logit| %.3g)\n", diff, scale);
  EXPECT_LE(diff, 1e-6f * scale);
}

// ---------------------------------------------------------------- eval

TEST(CliEval, ImageFolderJson) {
  const std::string dir = test::temp_dir(), root = dir + "/data", path = dir + "/m.safetensors";
  const std::vector<std::pair<std::string, int>> classes = {{"ant", 2}, {"bee", 3}, {"cat", 1}};
  int seed = 0;
  for (auto& [name, n] : classes) {
    fs::create_directories(root + "/" + name);
    for (int i = 0; i < n; ++i) {
      const std::string f = root + "/" + name + "/" + std::to_string(i);
      if (i % 2) write_jpg(f + ".jpg", 20, 18, 3, random_pixels(20 * 18 * 3, ++seed));
      else write_png(f + ".png", 17, 21, 3, random_pixels(17 * 21 * 3, ++seed));
    }
  }
  ViTConfig c = small_config(16, 3, 8, 3);
  auto m = test::random_model(c, 5);
  save_model(*m, path);
  test::CliResult r = test::run_cli("eval " + path + " --data " + root + " --batch 2 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["images"], 6);
  EXPECT_GE(j["top1"].get<double>(), 0.0);
  EXPECT_LE(j["top1"].get<double>(), 1.0);
  EXPECT_EQ(j["top5"], 1.0);  // 3 classes: the label is always in the top 5
  EXPECT_GT(j["images_per_s"].get<double>(), 0.0);
  ASSERT_EQ(j["per_class"].size(), 3u);
  ASSERT_EQ(j["confusion"].size(), 3u);
  int64_t correct = 0;
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(j["per_class"][t]["name"], classes[t].first);
    ASSERT_EQ(j["confusion"][t].size(), 3u);
    int64_t row = 0;
    for (auto& v : j["confusion"][t]) row += v.get<int64_t>();
    EXPECT_EQ(row, classes[t].second) << "row " << t;
    correct += j["confusion"][t][t].get<int64_t>();
    EXPECT_DOUBLE_EQ(j["per_class"][t]["top1"].get<double>(),
                     double(j["confusion"][t][t].get<int64_t>()) / classes[t].second);
  }
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), correct / 6.0);
  // The same numbers as the library's evaluation.
  auto ds = open_dataset(root, "test");
  EvalResult want = evaluate_dataset(*load_model(path), *ds, 0, 2, false);
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), want.top1);
  EXPECT_NEAR(j["loss"].get<double>(), want.loss, 1e-5 * std::max(1.0, want.loss));
  for (size_t t = 0; t < 3; ++t)
    for (size_t p = 0; p < 3; ++p) EXPECT_EQ(j["confusion"][t][p], want.confusion[t * 3 + p]);
  // Human output and the progress bar on stderr.
  r = test::run_cli("eval " + path + " --data " + root);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "top-1");
  EXPECT_HAS(r.out, "bee");
  EXPECT_HAS(r.err, "data: ");
}

TEST(CliEval, FashionMnistLimit500) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors";
  auto m = test::random_model(small_config(28, 1, 7, 10), 6);
  save_model(*m, path);
  const double t0 = now();
  test::CliResult r = test::run_cli("eval " + path + " --data fashion-mnist --limit 500 --json -q --threads 2");
  const double secs = now() - t0;
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["images"], 500);
  EXPECT_EQ(j["split"], "test");
  ASSERT_EQ(j["confusion"].size(), 10u);
  int64_t total = 0;
  for (auto& row : j["confusion"])
    for (auto& v : row) total += v.get<int64_t>();
  EXPECT_EQ(total, 500);
  EXPECT_EQ(j["per_class"][0]["name"], "T-shirt/top");
  EXPECT_EQ(j["per_class"][9]["name"], "Ankle boot");
  EXPECT_GE(j["top5"].get<double>(), j["top1"].get<double>());
  // Every weight packed for oneDNN on AVX-512 CPUs, none elsewhere.
  const int packed = j["packed_weights"].get<int>(), layers = static_cast<int>(m->linears().size());
  EXPECT_TRUE(packed == 0 || packed == layers) << packed << " of " << layers;
  std::printf("eval fashion-mnist --limit 500: top-1 %.3f (random weights), %.0f images/s model, %.2f s in all\n",
              j["top1"].get<double>(), j["images_per_s"].get<double>(), secs);
}

// ---------------------------------------------------------------- help

TEST(CliHelp, EveryCommandHelpExitsZero) {
  test::CliResult top = test::run_cli("--help");
  ASSERT_EQ(top.code, 0) << top.err;
  EXPECT_HAS(top.out, "Usage");
  // The subcommands listed by the top-level help, so new ones are covered too.
  std::vector<std::string> commands;
  std::istringstream in(top.out);
  bool in_list = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Subcommands:", 0) == 0 || line.rfind("SUBCOMMANDS:", 0) == 0) {
      in_list = true;
      continue;
    }
    if (in_list && line.size() > 2 && line[0] == ' ') {
      std::istringstream w(line);
      std::string name;
      w >> name;
      commands.push_back(name);
    } else if (in_list && !line.empty() && line[0] != ' ') {
      in_list = false;
    }
  }
  for (const char* must : {"info", "eval", "predict", "import"})
    EXPECT_NE(std::find(commands.begin(), commands.end(), must), commands.end()) << must << " not listed";
  for (auto& cmd : commands) {
    test::CliResult r = test::run_cli(cmd + " --help");
    EXPECT_EQ(r.code, 0) << cmd << ": " << r.err;
    EXPECT_HAS(r.out, "Usage");
    EXPECT_HAS(r.out, "--help");
    EXPECT_EQ(r.err, "") << cmd;
  }
  test::CliResult v = test::run_cli("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_HAS(v.out, VITKIT_VERSION);
  std::printf("--help exits 0 for: vitkit");
  for (auto& c : commands) std::printf(", %s", c.c_str());
  std::printf("\n");
}

// ---------------------------------------------------------------- --threads
//
// Whether --threads N holds is measured per thread, not as CPU time over wall
// time (which a busy machine drives down): /proc/PID/task/TID/stat gives each
// thread's CPU ticks, and the threads that did a share of the work are counted.

namespace {

// CPU ticks (utime + stime) of every thread of a process.
std::map<int, long> thread_ticks(int pid) {
  std::map<int, long> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream f(e.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream in(text.substr(close + 2));
    std::vector<std::string> fields;
    for (std::string w; in >> w;) fields.push_back(w);
    if (fields.size() < 13) continue;
    out[std::stoi(e.path().filename().string())] = std::stol(fields[11]) + std::stol(fields[12]);  // fields 14, 15
  }
  return out;
}

// Threads that used at least 10% of the busiest one's CPU (and 3 ticks).
int busy_threads(const std::map<int, long>& before, const std::map<int, long>& after, std::string* detail) {
  std::vector<long> d;
  for (auto& [tid, t] : after) {
    auto it = before.find(tid);
    d.push_back(t - (it == before.end() ? 0 : it->second));
  }
  const long mx = d.empty() ? 0 : *std::max_element(d.begin(), d.end());
  int busy = 0;
  for (long x : d) {
    busy += x >= 3 && x * 10 >= mx;
    *detail += std::to_string(x) + " ";
  }
  return busy;
}

// Repeated 512^3 GEMMs on n threads for about `secs`; returns the busy threads.
int gemm_busy_threads(int n, double secs) {
  set_num_threads(n);
  const int64_t S = 512;
  std::vector<float> A(S * S, 0.5f), B(S * S, 0.25f), C(S * S);
  kernels::gemm(false, false, S, S, S, 1.f, A.data(), S, B.data(), S, 0.f, C.data(), S);  // primitive, warm-up
  const auto t0 = thread_ticks(getpid());
  const double c0 = cpu_seconds(RUSAGE_SELF), w0 = now();
  int reps = 0;
  while (now() - w0 < secs || reps < 10) {
    kernels::gemm(false, false, S, S, S, 1.f, A.data(), S, B.data(), S, 0.f, C.data(), S);
    ++reps;
  }
  const double wall = now() - w0, cpu = cpu_seconds(RUSAGE_SELF) - c0;
  std::string ticks;
  const int busy = busy_threads(t0, thread_ticks(getpid()), &ticks);
  EXPECT_EQ(C[0], 0.5f * 0.25f * S);
  std::printf("gemm 512^3, set_num_threads(%d): %d reps, %.1f GFLOP/s, cpu/wall %.2f, busy threads %d (ticks: %s)\n",
              n, reps, 2.0 * S * S * S * reps / wall * 1e-9, cpu / wall, busy, ticks.c_str());
  return busy;
}

// Runs the CLI (output discarded), sampling its threads' CPU ticks until it exits.
int cli_busy_threads(const std::vector<std::string>& args, std::string* detail, int* code) {
  std::vector<std::string> all = {VITKIT_CLI};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  std::map<int, long> last;
  int st = 0;
  while (waitpid(pid, &st, WNOHANG) == 0) {
    for (auto& [tid, t] : thread_ticks(pid)) last[tid] = std::max(last[tid], t);
    usleep(5000);
  }
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return busy_threads({}, last, detail);
}

}  // namespace

// set_num_threads(n) holds for oneDNN GEMMs, also when the same GEMM shape
// ran before under another count: oneDNN fixes a primitive's thread count when
// the primitive is created, so the GEMM cache must not hand one created for 2
// threads to a caller that asked for 1, or the reverse.
TEST(Threads, GemmFollowsSetNumThreadsBothWays) {
  std::vector<int> counts = {1};
  if (hardware_threads() >= 2) counts = {1, 2, 1, 2};
  for (int n : counts) EXPECT_EQ(gemm_busy_threads(n, 0.3), n) << "set_num_threads(" << n << ")";
  set_num_threads(0);
}

TEST(Threads, CliThreadsFlagIsHonoured) {
  const std::string dir = test::temp_dir(), path = dir + "/m.safetensors";
  ViTConfig c = small_config(64, 3, 8, 10);
  c.dim = 192;
  c.heads = 3;
  c.mlp_dim = 768;
  c.depth = 3;
  save_model(*test::random_model(c, 7), path);
  write_npy(dir + "/x.npy", Tensor::zeros({96, 3, 64, 64}));
  for (int n : {1, 2}) {
    if (n > hardware_threads()) break;
    std::string ticks;
    int code = -1;
    const double w0 = now();
    const int busy = cli_busy_threads({"predict", path, "--input", dir + "/x.npy", "-o", dir + "/y.npy", "-q",
                                       "--threads", std::to_string(n)},
                                      &ticks, &code);
    ASSERT_EQ(code, 0);
    std::printf("vitkit predict (96 images 64x64, dim 192) --threads %d: %.2f s, busy threads %d (ticks: %s)\n", n,
                now() - w0, busy, ticks.c_str());
    EXPECT_EQ(busy, n);
  }
}

// Every option that names a file to write is checked when the command line is
// parsed: a missing or unwritable directory, a directory, an empty path are
// usage errors naming the flag before any work (a train run does not start
// its epoch, so no checkpoint appears).
TEST(CliArgs, OutputPathsAreCheckedBeforeAnyWork) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  const std::string cfg = test::source_dir() + "/configs/qat/qat-fmnist.toml", dir = test::temp_dir();
  struct Case {
    std::string args, flag, words;
  };
  const std::string gone = "/nonexistent-vitkit-dir/out";
  for (const Case& c : std::vector<Case>{
           {"train --config " + cfg + " --init " + shipped + " -o " + gone + ".safetensors", "--output", "does not exist"},
           {"compress " + shipped + " --pass f16 -o " + dir, "--output", "is a directory"},
           {"compress " + shipped + " --pass f16 -o ''", "--output", "empty"},
           {"compress " + shipped + " --pass f16 -o " + dir + "/c.safetensors --steps-csv " + gone + ".csv",
            "--steps-csv", "does not exist"},
           {"predict " + shipped + " --input x.npy -o " + gone + ".npy", "--output", "does not exist"},
           {"bench vit_b_16 -o " + gone + ".txt", "--output", "does not exist"},
           {"import " + shipped + " -o " + gone + ".safetensors", "--output", "does not exist"},
           {"analyze stats " + shipped + " --data fashion-mnist --csv " + gone + ".csv", "--csv", "does not exist"},
           {"analyze reuse " + shipped + " --plot " + dir, "--plot", "is a directory"}}) {
    const auto t0 = std::chrono::steady_clock::now();
    test::CliResult r = test::run_cli(c.args + " -q");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.err.find(c.flag), std::string::npos) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.words), std::string::npos) << c.args << ": " << r.err;
    EXPECT_LT(secs, 5.0) << c.args << ": the check came after work";
  }
  EXPECT_FALSE(file_exists(dir + "/c.safetensors"));
}

// More threads than cores is a warning, not an error; 0 means all cores in
// every command (bench included).
TEST(CliArgs, ThreadsAboveTheCoresWarnAndZeroMeansAllCores) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  const std::string dir = test::temp_dir();
  write_npy(dir + "/x.npy", Tensor::zeros({2, 1, 28, 28}));
  const int many = hardware_threads() + 3;
  test::CliResult r =
      test::run_cli(cat("predict ", shipped, " --input ", dir, "/x.npy -o ", dir, "/y.npy --threads ", many));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find(cat("--threads ", many, " is more than this machine's ", hardware_threads(), " cores")),
            std::string::npos)
      << r.err;
  r = test::run_cli("bench " + shipped + " --batch 1 --reps 1 --warmup 0 --threads 0 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  ASSERT_FALSE(j.is_null());
  EXPECT_EQ(j["rows"][0]["threads"], hardware_threads());
  r = test::run_cli("bench " + shipped + " --batch 1 --reps 1 --warmup 0 --threads -1 -q");
  EXPECT_EQ(r.code, 2) << r.err;
}

// Numbers out of range or not numbers: the flag, what is wrong and the value,
// not CLI11's "not in range 0.000000 to 1797...(300 digits)".
TEST(CliArgs, NumericOptionsSayWhatIsWrong) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  for (auto [args, want] : std::vector<std::pair<std::string, std::string>>{
           {"eval " + shipped + " --data fashion-mnist --limit abc", "--limit: 'abc' is not a whole number"},
           {"eval " + shipped + " --data fashion-mnist --threads -1", "--threads: must be >= 0 (got -1)"},
           {"predict " + shipped + " --input x.npy --top 0", "--top: must be >= 1 (got 0)"},
           {"train --config x.toml --epochs 2.5", "--epochs: '2.5' is not a whole number"},
           {"train --config x.toml --max-minutes -2", "--max-minutes: must be > 0 (got -2)"}}) {
    test::CliResult r = test::run_cli(args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_NE(r.err.find(want), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(r.err.find("179769"), std::string::npos) << r.err;
  }
}

// A mistyped flag is named, with the closest flag the command has (CLI11 alone
// says only that --data is required).
TEST(CliArgs, UnknownFlagsAreNamedWithASuggestion) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  for (auto [args, want] : std::vector<std::pair<std::string, std::string>>{
           {"eval " + shipped + " --dat fashion-mnist", "unknown option '--dat' for 'eval' (did you mean --data?)"},
           {"eval " + shipped + " --data fashion-mnist --limt 3", "unknown option '--limt' for 'eval' (did you mean --limit?)"},
           {"analyze stats " + shipped + " --dta x", "unknown option '--dta' for 'stats' (did you mean --data?)"},
           {"compress " + shipped + " --pass f16 -o x.safetensors --zzz", "unknown option '--zzz' for 'compress'"}}) {
    test::CliResult r = test::run_cli(args);
    EXPECT_EQ(r.code, 2) << args;
    EXPECT_NE(r.err.find(want), std::string::npos) << args << ": " << r.err;
  }
}

// --version says which build this is; every --json document carries the same.
TEST(CliArgs, VersionNamesTheBuildAndJsonCarriesIt) {
  test::CliResult r = test::run_cli("--version");
  EXPECT_EQ(r.code, 0);
  for (const char* w : {"vitkit ", "commit ", "g++ ", "built for ", "oneDNN "})
    EXPECT_NE(r.out.find(w), std::string::npos) << w << " in " << r.out;
  r = test::run_cli("info vit_b_16 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  ASSERT_TRUE(j.contains("vitkit"));
  for (const char* k : {"version", "commit", "compiler", "isa", "onednn"}) EXPECT_TRUE(j["vitkit"].contains(k)) << k;
}

// vitkit bench: a llama-bench-style sweep over precision x batch x threads.
// Each row is timed over `reps` repetitions after `warmup` untimed ones, the
// rows interleaved (A B C A B C ...) so that a noisy machine slows them alike;
// then each row's peak RSS is measured on its own. Rows report median, min and
// max latency, images/s, achieved GFLOP/s and its fraction of the machine's
// fp32 ceiling (analyze/ceiling.h), and optionally a per-op profile.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/profile.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/vit.h"
#include "vitkit/report/table.h"

namespace vitkit {

// The precisions a model can be benchmarked in, in one table (bench.cpp,
// precision_table()), each the shorthand of a pass: "fp32" (the model as
// loaded; for inference, dense weights packed where that is faster), "bf16",
// "f16" (compress/half.h). Adding one (int8) is one entry there.
std::vector<std::string> bench_precisions();
// Throws UsageError naming `flag` when p is not one of them.
void check_bench_precision(const std::string& p, const std::string& flag);


struct BenchOptions {
  std::vector<int64_t> batches{1};
  // Inference: at most this many images per forward pass (vit_infer), a row
  // per value; 0: vit_infer's default (infer_batch). Training runs whole batches.
  std::vector<int64_t> sub_batches{0};
  // Inference: how vit_infer uses the threads (per op or per image), a row per value.
  std::vector<InferThreads> parallel{InferThreads::Auto};
  std::vector<int> threads;  // empty: all cores
  std::vector<std::string> precisions{"fp32"};
  int reps = 5;
  int warmup = 1;
  // Time training steps (forward, cross-entropy, backward, AdamW) instead of
  // inference. The model's weights change.
  bool train = false;
  bool profile = false;  // per-op profile of the timed reps, per row
  bool memory = true;    // measure each row's peak RSS after the timing
  double ceiling_seconds = 0.1;  // per trial of the FMA micro-benchmark (5 trials)
  uint64_t seed = 0;             // random inputs and labels
  // Progress lines (the CLI prints them on stderr); may be empty.
  std::function<void(const std::string&)> progress;
};

// Median (mean of the middle two for an even count), min and max.
struct Stats {
  double median = 0, min = 0, max = 0;
};
Stats summarize(std::vector<double> v);

struct BenchRow {
  std::string model;      // as given: a file or a preset name
  int model_index = 0;    // which of the sweep's models
  std::string arch;       // the config's name
  std::string mode;       // "infer" or "train"
  std::string precision;  // "fp32", "bf16", "f16": the --precision shorthand
  std::string repr;       // what the layers are when the row runs (model_precision, model/vit.h)
  int64_t params = 0, model_bytes = 0, macs_per_image = 0;  // of the model the row runs
  int64_t batch = 0;
  int64_t sub_batch = 0;  // images per forward pass (inference: vit_infer's sub-batch; training: the batch)
  std::string parallel;   // "op" or "image": how the threads split the work (training: "op")
  int threads = 0, reps = 0, warmup = 0;
  std::vector<double> seconds;  // each timed rep
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double images_per_s = 0;    // batch / median
  double gflops = 0;          // flops per image x batch / median
  double ceiling_gflops = 0;  // the micro-benchmark at this thread count
  double ceiling_fraction = 0;
  double peak_rss_mib = -1;  // -1 when not measured
  std::vector<prof::Entry> profile;  // mean seconds per rep, by descending time; "other" is what no scope covered
  nlohmann::json to_json() const;
};

struct MachineInfo {
  std::string cpu;
  int cores = 0;
  bool native_bf16 = false;
  double load[3] = {0, 0, 0};  // /proc/loadavg when the run started
  std::string ceiling_isa;
  std::map<int, double> ceiling_gflops;  // per thread count
  bool rss_resettable = false;           // false: peaks are since the process started
  nlohmann::json to_json() const;
};

// The CPU, the load and the fp32 ceiling at each thread count.
MachineInfo machine_info(const std::vector<int>& threads, double ceiling_seconds = 0.1);

struct BenchReport {
  MachineInfo machine;
  std::string model, arch;  // the first model's (each row has its own)
  int64_t params = 0, macs_per_image = 0;
  double flops_per_image = 0;  // 2 x MACs (inference) or 6 x MACs (training: backward ~ 2 forwards)
  std::vector<BenchRow> rows;
  nlohmann::json to_json() const;
  Table table() const;
  // What was run and on what: model, machine, load, ceiling (lines of text).
  std::string header() const;
};

// One model of a sweep and how the rows name it (the file or preset it came from).
struct BenchModel {
  ViT* model;
  std::string label;
};
// The sweep: rows ordered model, precision, batch, sub-batch, thread split,
// threads, timed interleaved across all of them. The models may change:
// training updates their weights, and a precision that the model itself can
// take (fp32, or a sweep's only precision) converts it.
BenchReport run_bench(const std::vector<BenchModel>& models, const BenchOptions& o);
BenchReport run_bench(ViT& model, const std::string& label, const BenchOptions& o);

// A row's profile as a table (op, ms per rep, share, calls per rep).
Table profile_table(const BenchRow& r);

}  // namespace vitkit

// vitkit bench MODEL_OR_PRESET [--batch 1,8,256] [--sub-batch 0,5,20] [--threads 1,2] [--precision fp32,bf16]
//   [--reps N] [--warmup N] [--train] [--format text|md|csv|json] [--json] [--profile] [-o FILE]
// A llama-bench-style sweep (analyze/bench.h).
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "vitkit/analyze/bench.h"
#include "vitkit/compress/half.h"
#include "vitkit/core/cpu.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/progress.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"

namespace vitkit::cli {

namespace {

struct BenchCliOpts {
  std::vector<std::string> models;
  std::string format = "text", output;
  std::vector<int64_t> batches{1};
  std::vector<int64_t> sub_batches{0};
  std::vector<std::string> parallel{"auto"};
  std::vector<int> threads;
  std::vector<std::string> precisions{"fp32"};
  int reps = 5, warmup = 1;
  bool train = false, profile = false, json = false, quiet = false;
  LoadOptions load;
};

void check_cli(const BenchCliOpts& o) {
  for (int64_t b : o.batches)
    if (b < 1) throw UsageError(cat("--batch: batch sizes must be >= 1, got ", b));
  for (int64_t b : o.sub_batches)
    if (b < 0) throw UsageError(cat("--sub-batch: sizes must be >= 0 (0: the default), got ", b));
  if (o.train && o.sub_batches != std::vector<int64_t>{0})
    throw UsageError("--sub-batch is for inference; --train runs whole batches");
  for (auto& p : o.parallel) parse_infer_threads(p, "--parallel");
  if (o.train && o.parallel != std::vector<std::string>{"auto"})
    throw UsageError("--parallel is for inference; --train splits every op over the threads");
  for (int t : o.threads) {
    if (t < 0) throw UsageError(cat("--threads: thread counts must be >= 0 (0: all cores), got ", t));
    warn_threads(t, "--threads");
  }
  for (auto& p : o.precisions) check_bench_precision(p, "--precision");
  if (o.reps < 1) throw UsageError(cat("--reps must be >= 1, got ", o.reps));
  if (o.warmup < 0) throw UsageError(cat("--warmup must be >= 0, got ", o.warmup));
  if (o.json && o.format != "text" && o.format != "json")
    throw UsageError(cat("--json conflicts with --format ", o.format));
}

// The per-row profiles, as text or markdown tables.
std::string profiles(const BenchReport& r, bool md) {
  std::string s;
  for (auto& row : r.rows) {
    const std::string title = cat(row.model, " ", row.mode, " ", row.precision, " batch ", row.batch, " threads ",
                                  row.threads, ": per-op time, mean of ", row.reps, " reps");
    const Table t = profile_table(row);
    s += md ? cat("\n**", title, "**\n\n", t.markdown()) : cat("\n", title, "\n", t.text());
  }
  return s;
}

std::string render(const BenchReport& r, const std::string& format, bool profile) {
  if (format == "json") return r.to_json().dump(2) + "\n";
  if (format == "csv") return r.table().csv();
  if (format == "md") {
    std::string h;  // markdown line breaks
    for (char c : r.header()) h += c == '\n' ? std::string("  \n") : std::string(1, c);
    return h + "\n" + r.table().markdown() + (profile ? profiles(r, true) : "");
  }
  return r.header() + "\n" + r.table().text() + (profile ? profiles(r, false) : "");
}

// How rows name the model: the file or preset given, or for a preset changed by
// --config the config's name (the preset's name with "+config" when it has none).
std::string model_label(const BenchCliOpts& o, const std::string& spec, const ViT& m) {
  if (!is_preset_spec(spec) || o.load.config.empty()) return spec;
  return m.cfg.name != spec ? m.cfg.name : spec + "+config";
}

void run_bench_cmd(BenchCliOpts o) {
  check_cli(o);
  if (o.json) o.format = "json";
  set_progress_enabled(!o.quiet);
  if (o.threads.empty()) o.threads = {hardware_threads()};
  for (int& t : o.threads)  // 0 means all cores, as in every command
    if (t == 0) t = hardware_threads();
  for (auto& p : o.precisions)
    if (p == "bf16" && !cpu_has_native_bf16())
      warn(kernels::gemm_bf16_native()
               ? "this CPU has no native bf16 (AVX512_BF16 or AMX): oneDNN emulates it, expect bf16 slower than fp32"
               : "this CPU has no bf16 matmul in oneDNN (AVX2 only): bf16 values are multiplied by the fp32 GEMM "
                 "(bf16 numerics, slower than fp32)");
  std::vector<std::unique_ptr<ViT>> loaded;
  std::vector<BenchModel> models;
  for (const std::string& spec : o.models) {
    loaded.push_back(load_model(spec, o.load));
    models.push_back({loaded.back().get(), model_label(o, spec, *loaded.back())});
  }
  BenchOptions b;
  b.batches = o.batches;
  b.sub_batches = o.sub_batches;
  b.parallel.clear();
  for (auto& p : o.parallel) b.parallel.push_back(parse_infer_threads(p, "--parallel"));
  b.threads = o.threads;
  b.precisions = o.precisions;
  b.reps = o.reps;
  b.warmup = o.warmup;
  b.train = o.train;
  b.profile = o.profile;
  b.seed = o.load.seed;
  if (!o.quiet) b.progress = [](const std::string& s) { std::fprintf(stderr, "bench: %s\n", s.c_str()); };
  const BenchReport r = run_bench(models, b);
  const std::string out = render(r, o.format, o.profile);
  if (o.output.empty())
    std::fwrite(out.data(), 1, out.size(), stdout);
  else
    write_text_atomic(o.output, out);
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchCliOpts>();
  CLI::App* cmd = app.add_subcommand("bench", "Speed sweep: latency, images/s, GFLOP/s, peak memory per row");
  cmd->add_option("model", o->models,
                  "Model files (.safetensors, .pth) or presets (random weights): several are a sweep axis, a row each, "
                  "timed interleaved")
      ->required();
  cmd->add_option("--batch", o->batches, "Batch sizes, comma-separated (default 1)")->delimiter(',');
  cmd->add_option("--sub-batch", o->sub_batches,
                  "Inference: at most this many images per forward pass, comma-separated, a row each (default 0: "
                  "about 1,024 tokens per pass)")
      ->delimiter(',');
  cmd->add_option("--parallel", o->parallel,
                  "Inference: how threads split the work, comma-separated, a row each: op (every op over all "
                  "threads), image (each thread whole images), auto (default: image when each thread gets a full "
                  "sub-batch)")
      ->delimiter(',');
  cmd->add_option("--threads", o->threads, "Thread counts, comma-separated (0 or none: all cores)")->delimiter(',');
  cmd->add_option("--precision", o->precisions, "Precisions, comma-separated: fp32 (the model as loaded), bf16, f16 (shorthands for those passes; "
                  "default fp32)")
      ->delimiter(',');
  cmd->add_option("--reps", o->reps, "Timed repetitions per row (default 5)");
  cmd->add_option("--warmup", o->warmup, "Untimed repetitions per row first (default 1)");
  cmd->add_flag("--train", o->train,
                "Time training steps (forward, cross-entropy, backward, AdamW) on random data instead of inference");
  cmd->add_option("--format", o->format, "Output: text, md, csv or json (default text)")
      ->check(CLI::IsMember({"text", "md", "csv", "json"}));
  cmd->add_flag("--json", o->json, "Same as --format json");
  cmd->add_flag("--profile", o->profile, "Per-op time of each row (after the table; in JSON, per row)");
  cmd->add_option("-o,--output", o->output, "Write the output to FILE instead of stdout")->check(output_file());
  cmd->add_flag("-q,--quiet", o->quiet, "No progress output");
  add_model_opts(cmd, o->load);
  cmd->callback([o] { run_bench_cmd(*o); });
}

}  // namespace vitkit::cli

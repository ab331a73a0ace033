#include "common.h"

#include <cstdio>

#include "vitkit/core/profile.h"
#include "vitkit/core/progress.h"
#include "vitkit/report/table.h"
#include "vitkit/core/threads.h"

namespace vitkit::cli {

void add_common(CLI::App* cmd, CommonOpts& o) {
  cmd->add_option("--threads", o.threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o.json, "Print one JSON document on stdout");
  cmd->add_flag("-q,--quiet", o.quiet, "No progress output");
}

static int g_exit_status = 0;
void set_exit_status(int status) { g_exit_status = status; }
int exit_status() { return g_exit_status; }

void apply_common(const CommonOpts& o) {
  set_num_threads(o.threads);
  set_progress_enabled(!o.quiet);
}

void add_model_opts(CLI::App* cmd, LoadOptions& o) {
  cmd->add_option("--preset", o.preset, "Architecture preset for a file without vitkit metadata (vit_b_16, ...)");
  cmd->add_option("--config", o.config, "Architecture overrides: key=value,... or a TOML file");
  cmd->add_flag("--strict", o.strict, "Unused tensors in the file are errors");
  cmd->add_option("--seed", o.seed, "Seed for the random weights of a bare preset");
  cmd->add_option("--arch", o.arch,
                  "Tensor names of a foreign checkpoint (.pth or safetensors): torchvision, timm, hf, "
                  "torch-encoder, custom");
  cmd->add_option("--map", o.map, "Key map file: 'REGEX -> NAME' rules renaming tensors, tried before --arch's");
}

void print_profile() {
  auto entries = prof::report();
  double total = 0;
  for (auto& e : entries) total += e.seconds;
  Table t({"op", "seconds", "share", "calls", "ms/call"});
  t.right_align({1, 2, 3, 4});
  for (auto& e : entries)
    t.add({e.name, fmt_fixed(e.seconds, 3), fmt_fixed(100 * e.seconds / total, 1) + "%", std::to_string(e.calls),
           fmt_fixed(1e3 * e.seconds / double(e.calls), 3)});
  t.add({"total", fmt_fixed(total, 3), "100.0%", "", ""});
  std::fputs(t.text().c_str(), stderr);
}

void print_json(const nlohmann::json& j) {
  std::string s = j.dump(2);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace vitkit::cli

#include "common.h"

#include "version.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "vitkit/core/profile.h"
#include "vitkit/core/progress.h"
#include "vitkit/report/table.h"
#include "vitkit/core/threads.h"

namespace vitkit::cli {

void add_common(CLI::App* cmd, CommonOpts& o) {
  cmd->add_option("--threads", o.threads, "Threads (0 or none: all cores)")->check(whole_number(0));
  cmd->add_flag("--json", o.json, "Print one JSON document on stdout");
  cmd->add_flag("-q,--quiet", o.quiet, "No progress output");
}

const CLI::Validator& output_file() {
  static const CLI::Validator v(
      [](std::string& path) -> std::string {
        namespace fs = std::filesystem;
        if (path.empty()) return "the output path is empty";
        std::error_code ec;
        if (fs::is_directory(path, ec)) return "'" + path + "' is a directory; give a file name";
        const fs::path parent = fs::path(path).parent_path();
        const std::string dir = parent.empty() ? "." : parent.string();
        if (!fs::is_directory(dir, ec)) return "cannot write '" + path + "': directory '" + dir + "' does not exist";
        if (::access(dir.c_str(), W_OK | X_OK) != 0)
          return "cannot write '" + path + "': directory '" + dir + "' is not writable";
        return "";
      },
      "FILE");
  return v;
}

CLI::Validator whole_number(int64_t min) {
  return CLI::Validator(
      [min](std::string& text) -> std::string {
        int64_t v = 0;
        size_t used = 0;
        try {
          v = std::stoll(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return "'" + text + "' is not a whole number";
        if (v < min) return "must be >= " + std::to_string(min) + " (got " + text + ")";
        return "";
      },
      min == 0 ? "INT>=0" : "INT>=" + std::to_string(min));
}

CLI::Validator positive_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        size_t used = 0;
        try {
          v = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size() || !std::isfinite(v)) return "'" + text + "' is not a number";
        if (v <= 0) return "must be > 0 (got " + text + ")";
        return "";
      },
      "NUMBER>0");
}

static int g_exit_status = 0;
void set_exit_status(int status) { g_exit_status = status; }
int exit_status() { return g_exit_status; }

void warn_threads(int threads, const char* flag) {
  if (threads > hardware_threads())
    std::fprintf(stderr, "vitkit: warning: %s %d is more than this machine's %d cores; expect it to run slower\n", flag,
                 threads, hardware_threads());
}

void apply_common(const CommonOpts& o) {
  warn_threads(o.threads, "--threads");
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
  std::string s;
  if (j.is_object() && !j.contains("vitkit")) {  // which vitkit wrote it, in every document
    nlohmann::json with = j;
    with["vitkit"] = build_info();
    s = with.dump(2);
  } else {
    s = j.dump(2);
  }
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace vitkit::cli

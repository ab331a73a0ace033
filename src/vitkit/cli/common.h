// Flags shared by the subcommands and small output helpers.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "vitkit/io/model_io.h"

namespace vitkit::cli {

struct CommonOpts {
  int threads = 0;
  bool json = false;
  bool quiet = false;
};
// --threads, --json, --quiet
void add_common(CLI::App* cmd, CommonOpts& o);
// The process's exit status when a command ends without an error (default 0;
// e.g. 130 for a training run stopped by Ctrl-C).
void set_exit_status(int status);
int exit_status();
// More threads than cores only time-share them (an evaluation at 1000
// threads on 2 cores runs 100x slower): a warning on stderr, not an error.
void warn_threads(int threads, const char* flag);
// Sets the thread count (0: all cores; warn_threads) and progress display.
void apply_common(const CommonOpts& o);

// --preset, --config, --strict, --seed, --arch, --map: how a model file (.safetensors, .pth) or preset is read.
void add_model_opts(CLI::App* cmd, LoadOptions& o);

// A check for options that name a file to write (-o, --csv, --plot, ...),
// run when the command line is parsed, before any work: the path is not empty,
// not a directory, and its directory exists and is writable. (A run that
// trains for an hour and then cannot write its model is the worst case.)
const CLI::Validator& output_file();

// Checks for numeric options, with messages that say what is wrong:
// "'abc' is not a whole number", "must be >= 1 (got 0)", "must be > 0 (got -2)".
CLI::Validator whole_number(int64_t min);
CLI::Validator positive_number();

// The per-op profile (core/profile.h) as a table on stderr.
void print_profile();

// One JSON document on stdout.
void print_json(const nlohmann::json& j);

}  // namespace vitkit::cli

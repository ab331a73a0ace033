// Each subcommand lives in its own cli/cmd_*.cpp and registers itself here.
#pragma once
#include <CLI/CLI.hpp>

namespace vitkit::cli {

void register_info(CLI::App& app);
void register_eval(CLI::App& app);
void register_predict(CLI::App& app);
void register_train(CLI::App& app);
void register_import(CLI::App& app);
void register_bench(CLI::App& app);
void register_compress(CLI::App& app);
void register_analyze(CLI::App& app);

}  // namespace vitkit::cli

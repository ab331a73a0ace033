// vitkit: the command line. It parses arguments and calls libvitkit.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <vector>
#include <exception>
#include <string>

#include "commands.h"
#include "common.h"
#include "version.h"
#include "vitkit/core/error.h"

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// The first word of argv that looks like an option the parsed command does not
// have ("--dat"), with the closest one it has: CLI11 would report a missing
// required option instead, without naming the mistyped one.
bool report_unknown_option(CLI::App& app, int argc, char** argv) {
  CLI::App* cmd = &app;
  while (!cmd->get_subcommands().empty()) cmd = cmd->get_subcommands().front();
  if (cmd == &app) return false;
  for (int i = 1; i < argc; ++i) {
    std::string w = argv[i];
    if (w == "--") break;
    if (w.size() < 2 || w[0] != '-' || std::isdigit(static_cast<unsigned char>(w[1])) || w[1] == '.') continue;
    w = w.substr(0, w.find('='));
    if (cmd->get_option_no_throw(w) != nullptr || app.get_option_no_throw(w) != nullptr) continue;
    std::string best;
    size_t best_d = 3;  // suggest within 2 edits
    for (const CLI::Option* opt : cmd->get_options())
      for (const std::string& n : opt->get_lnames()) {
        const size_t d = edit_distance(w, "--" + n);
        if (d < best_d) best_d = d, best = "--" + n;
      }
    std::fprintf(stderr, "vitkit: error: unknown option '%s' for '%s'%s\n(run 'vitkit %s --help')\n", w.c_str(),
                 cmd->get_name().c_str(), best.empty() ? "" : (" (did you mean " + best + "?)").c_str(),
                 cmd->get_name().c_str());
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vitkit: train, compress, analyse and deploy Vision Transformers"};
  app.name("vitkit");
  app.set_version_flag("--version", vitkit::cli::version_text());
  app.require_subcommand(1);
  app.fallthrough(false);
  app.option_defaults()->always_capture_default();  // --help shows each option's default
  vitkit::cli::register_info(app);
  vitkit::cli::register_eval(app);
  vitkit::cli::register_predict(app);
  vitkit::cli::register_train(app);
  vitkit::cli::register_import(app);
  vitkit::cli::register_bench(app);
  vitkit::cli::register_compress(app);
  vitkit::cli::register_analyze(app);
  // `vitkit` alone and `vitkit help [COMMAND]`: the help, exit 0.
  if (argc == 1 || (argc <= 3 && std::string(argv[1]) == "help")) {
    if (argc <= 2) {
      std::fputs(app.help().c_str(), stdout);
      return 0;
    }
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
      if (sub->get_name() == argv[2]) {
        std::fputs(sub->help("vitkit").c_str(), stdout);
        return 0;
      }
    std::fprintf(stderr, "vitkit: error: 'help %s': no such command (run 'vitkit help')\n", argv[2]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A first word that names no command: CLI11 would only say that one is required.
    if (argc > 1 && argv[1][0] != '-' && app.get_subcommands().empty()) {
      std::string names;
      for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        names += (names.empty() ? "" : ", ") + sub->get_name();
      std::fprintf(stderr, "vitkit: error: unknown command '%s' (commands: %s)\n(run 'vitkit --help')\n", argv[1],
                   names.c_str());
      return 2;
    }
    // An option before any command (CLI11 would say that a subcommand is required).
    if (argc > 1 && argv[1][0] == '-' && app.get_subcommands().empty()) {
      std::fprintf(stderr, "vitkit: error: unknown option '%s' (before a command: --help, --version)\n(run 'vitkit "
                           "help')\n", argv[1]);
      return 2;
    }
    if (report_unknown_option(app, argc, argv)) return 2;
    std::fprintf(stderr, "vitkit: error: %s\n(run 'vitkit --help' or 'vitkit COMMAND --help')\n", e.what());
    return 2;
  } catch (const vitkit::UsageError& e) {
    std::fprintf(stderr, "vitkit: error: %s\n", e.what());
    return 2;
  } catch (const vitkit::Error& e) {
    std::fprintf(stderr, "vitkit: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "vitkit: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vitkit: error: %s\n", e.what());
    return 1;
  }
  return vitkit::cli::exit_status();
}

// vitkit: the command line. It parses arguments and calls libvitkit.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "commands.h"
#include "common.h"
#include "vitkit/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"vitkit: train, compress, analyse and deploy Vision Transformers"};
  app.name("vitkit");
  app.set_version_flag("--version", VITKIT_VERSION);
  app.require_subcommand(1);
  app.fallthrough(false);
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

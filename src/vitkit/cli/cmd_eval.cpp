// vitkit eval MODEL --data D: accuracy on a dataset. (Filled in with the datasets.)
#include "commands.h"
#include "common.h"

namespace vitkit::cli {
void register_eval(CLI::App&) {}
}  // namespace vitkit::cli

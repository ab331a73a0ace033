// vitkit predict MODEL --input X.npy -o logits.npy. (Filled in with npy and images.)
#include "commands.h"
#include "common.h"

namespace vitkit::cli {
void register_predict(CLI::App&) {}
}  // namespace vitkit::cli

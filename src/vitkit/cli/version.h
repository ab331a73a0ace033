// What this vitkit is: `vitkit --version`, and the "vitkit" object of every --json output.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace vitkit::cli {

// {"version", "commit" (git, when the build was configured), "compiler",
//  "isa" (the widest vector extension compiled for), "onednn"}.
const nlohmann::json& build_info();
// "vitkit 0.1.0 (commit abc123, g++ 12.2.0, built for AVX-512, oneDNN 3.0.0)"
std::string version_text();

}  // namespace vitkit::cli

#include "version.h"

#include <oneapi/dnnl/dnnl.h>

#include "vitkit/core/error.h"

#ifndef VITKIT_GIT_COMMIT
#define VITKIT_GIT_COMMIT "unknown"
#endif

namespace vitkit::cli {

static const char* compiled_isa() {
#if defined(__AVX512F__)
  return "AVX-512";
#elif defined(__AVX2__)
  return "AVX2";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__SSE4_2__)
  return "SSE4.2";
#else
  return "baseline x86-64";
#endif
}

const nlohmann::json& build_info() {
  static const nlohmann::json j = [] {
    const dnnl_version_t* v = dnnl_version();
    return nlohmann::json{{"version", VITKIT_VERSION},
                          {"commit", VITKIT_GIT_COMMIT},
                          {"compiler", cat("g++ ", __VERSION__)},
                          {"isa", compiled_isa()},
                          {"onednn", cat(v->major, ".", v->minor, ".", v->patch)}};
  }();
  return j;
}

std::string version_text() {
  const nlohmann::json& b = build_info();
  return cat("vitkit ", b["version"].get<std::string>(), " (commit ", b["commit"].get<std::string>(), ", ",
             b["compiler"].get<std::string>(), ", built for ", b["isa"].get<std::string>(), ", oneDNN ",
             b["onednn"].get<std::string>(), ")");
}

}  // namespace vitkit::cli

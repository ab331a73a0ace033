#include "vitkit/core/error.h"

#include <cstdio>

namespace vitkit {

void warn(const std::string& msg) { std::fprintf(stderr, "vitkit: warning: %s\n", msg.c_str()); }

}  // namespace vitkit

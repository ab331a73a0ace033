#include "vitkit/analyze/memory.h"

#include <malloc.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstring>

namespace vitkit {

namespace {

// The value in kB of a "Key:   123 kB" line of /proc/self/status, -1 when absent.
int64_t status_kb(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  const size_t n = std::strlen(key);
  int64_t kb = -1;
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, n) == 0 && line[n] == ':') {
      long long v = 0;
      if (std::sscanf(line + n + 1, "%lld", &v) == 1) kb = v;
      break;
    }
  }
  std::fclose(f);
  return kb;
}

}  // namespace

bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

bool peak_rss_resettable() {
  static const bool ok = reset_peak_rss() && status_kb("VmHWM") >= 0;
  return ok;
}

int64_t peak_rss_bytes() {
  const int64_t kb = status_kb("VmHWM");
  if (kb >= 0) return kb * 1024;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // kB on Linux
}

int64_t current_rss_bytes() {
  const int64_t kb = status_kb("VmRSS");
  return kb >= 0 ? kb * 1024 : 0;
}

void release_free_memory() { malloc_trim(0); }

}  // namespace vitkit

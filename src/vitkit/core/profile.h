// A per-op wall-time profile: scoped timers that add up under a name when
// profiling is on (vitkit bench --profile, train --profile). Off, a scope costs
// one branch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vitkit::prof {

void set_enabled(bool on);
bool enabled();
void reset();

struct Entry {
  std::string name;
  double seconds = 0;
  int64_t calls = 0;
};
// Entries by descending time.
std::vector<Entry> report();

class Scope {
 public:
  explicit Scope(const char* name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  int64_t start_ = -1;
};

}  // namespace vitkit::prof

#define VK_PROF_CAT2(a, b) a##b
#define VK_PROF_CAT(a, b) VK_PROF_CAT2(a, b)
#define VK_PROF(name) ::vitkit::prof::Scope VK_PROF_CAT(vk_prof_, __LINE__)(name)

#include "vitkit/core/profile.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>

namespace vitkit::prof {

namespace {
bool g_on = false;
std::mutex g_mu;
std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> t;
  return t;
}
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void set_enabled(bool on) { g_on = on; }
bool enabled() { return g_on; }

void reset() {
  std::lock_guard<std::mutex> l(g_mu);
  table().clear();
}

std::vector<Entry> report() {
  std::lock_guard<std::mutex> l(g_mu);
  std::vector<Entry> v;
  for (auto& [k, e] : table()) v.push_back(e);
  std::sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return v;
}

Scope::Scope(const char* name) : name_(name) {
  if (g_on) start_ = now_ns();
}

Scope::~Scope() {
  if (start_ < 0) return;
  const double s = double(now_ns() - start_) * 1e-9;
  std::lock_guard<std::mutex> l(g_mu);
  Entry& e = table()[name_];
  e.name = name_;
  e.seconds += s;
  e.calls++;
}

}  // namespace vitkit::prof

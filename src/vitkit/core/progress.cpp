#include "vitkit/core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace vitkit {

static bool g_progress = true;
void set_progress_enabled(bool on) { g_progress = on; }
bool progress_enabled() { return g_progress; }

std::string format_duration(double s) {
  char buf[32];
  if (s < 0) s = 0;
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total, int64_t already_done)
    : label_(std::move(label)), total_(total), start_done_(already_done), done_(already_done), tty_(::isatty(2)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_ && done_ > start_done_) finish();
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& info) {
  done_ = done;
  info_ = info;
  if (!g_progress) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since < (tty_ ? 0.1 : 10.0) && done < total_) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish(const std::string& info) {
  if (finished_) return;
  finished_ = true;
  if (!info.empty()) info_ = info;
  if (g_progress) draw(true);
}

void Progress::draw(bool final_line) {
  double el = elapsed_seconds();
  double frac = total_ > 0 ? double(done_) / double(total_) : 0.0;
  if (frac > 1) frac = 1;
  const int64_t now_done = done_ - start_done_;
  double eta = now_done > 0 ? el / double(now_done) * double(total_ - done_) : 0;
  std::string eta_s = final_line ? format_duration(el) : ("ETA " + format_duration(eta));
  if (tty_) {
    const int width = 24;
    int fill = static_cast<int>(frac * width);
    std::string bar(fill, '#');
    bar += std::string(width - fill, '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %s %s", label_.c_str(), bar.c_str(), (long long)done_,
                 (long long)total_, info_.c_str(), eta_s.c_str());
    if (final_line) std::fputc('\n', stderr);
  } else {
    std::fprintf(stderr, "%s: %lld/%lld (%.0f%%) %s %s\n", label_.c_str(), (long long)done_, (long long)total_,
                 frac * 100, info_.c_str(), eta_s.c_str());
  }
  std::fflush(stderr);
}

}  // namespace vitkit

// Progress on stderr: a redrawn bar on a terminal, a line every few seconds
// otherwise. Disabled with set_progress_enabled(false) (--quiet).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace vitkit {

void set_progress_enabled(bool on);
bool progress_enabled();

class Progress {
 public:
  // already_done: units finished before this bar started (a resumed job); the
  // ETA comes from the rate of the units done since.
  Progress(std::string label, int64_t total, int64_t already_done = 0);
  ~Progress();
  // done: units finished so far; info: extra text (loss, accuracy, ...).
  void update(int64_t done, const std::string& info = "");
  // Final redraw and newline.
  void finish(const std::string& info = "");
  double elapsed_seconds() const;

 private:
  void draw(bool final_line);
  std::string label_, info_;
  int64_t total_, start_done_, done_;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1h02m", "3m05s", "12.3s"
std::string format_duration(double seconds);

}  // namespace vitkit

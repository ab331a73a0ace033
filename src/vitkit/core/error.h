// vitkit::Error: every failure the library reports. The message says what went
// wrong, where (file, tensor, flag, line) and, where useful, a hint.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace vitkit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// A usage error (bad flag or argument): the CLI exits with 2 instead of 1.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& msg) : Error(msg) {}
};

// cat(a, b, c) streams its arguments into one string.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

// check(cond, parts...) throws Error(cat(parts...)) when cond is false.
template <typename... Args>
inline void check(bool cond, const Args&... args) {
  if (!cond) fail(args...);
}

// Prints a warning line on stderr ("vitkit: warning: ...").
void warn(const std::string& msg);

}  // namespace vitkit

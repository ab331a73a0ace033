#include "vitkit/report/table.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace vitkit {

std::string Table::text() const {
  std::vector<size_t> w(cols_.size());
  for (size_t c = 0; c < cols_.size(); ++c) w[c] = cols_[c].size();
  for (auto& r : rows_)
    for (size_t c = 0; c < r.size() && c < w.size(); ++c) w[c] = std::max(w[c], r[c].size());
  auto is_right = [&](size_t c) { return std::find(right_.begin(), right_.end(), int(c)) != right_.end(); };
  std::ostringstream os;
  auto line = [&](const std::vector<std::string>& r) {
    for (size_t c = 0; c < w.size(); ++c) {
      std::string v = c < r.size() ? r[c] : "";
      std::string pad(w[c] - std::min(w[c], v.size()), ' ');
      if (c) os << "  ";
      os << (is_right(c) ? pad + v : (c + 1 == w.size() ? v : v + pad));
    }
    os << "\n";
  };
  line(cols_);
  size_t total = 0;
  for (size_t c = 0; c < w.size(); ++c) total += w[c] + (c ? 2 : 0);
  os << std::string(total, '-') << "\n";
  for (auto& r : rows_) line(r);
  return os.str();
}

std::string Table::markdown() const {
  std::ostringstream os;
  os << "|";
  for (auto& c : cols_) os << " " << c << " |";
  os << "\n|";
  for (size_t c = 0; c < cols_.size(); ++c)
    os << (std::find(right_.begin(), right_.end(), int(c)) != right_.end() ? "---:|" : "---|");
  os << "\n";
  for (auto& r : rows_) {
    os << "|";
    for (auto& v : r) os << " " << v << " |";
    os << "\n";
  }
  return os.str();
}

static std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char ch : v) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

std::string Table::csv() const {
  std::ostringstream os;
  for (size_t c = 0; c < cols_.size(); ++c) os << (c ? "," : "") << csv_field(cols_[c]);
  os << "\n";
  for (auto& r : rows_) {
    for (size_t c = 0; c < r.size(); ++c) os << (c ? "," : "") << csv_field(r[c]);
    os << "\n";
  }
  return os.str();
}

std::string fmt_int(long long v) {
  std::string s = std::to_string(v < 0 ? -v : v);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string fmt_fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string fmt_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return buf;
}

std::string fmt_si(double v) {
  const char* units[] = {"", " k", " M", " G", " T"};
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g%s", v, units[u]);
  return buf;
}

}  // namespace vitkit

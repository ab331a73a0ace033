// Tables for reports: one set of rows rendered as aligned text, markdown or CSV.
#pragma once
#include <string>
#include <vector>

namespace vitkit {

class Table {
 public:
  explicit Table(std::vector<std::string> columns) : cols_(std::move(columns)) {}
  // Columns right-aligned in text output (numbers); the others are left-aligned.
  void right_align(const std::vector<int>& cols) { right_ = cols; }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  size_t size() const { return rows_.size(); }
  std::string text() const;
  std::string markdown() const;
  std::string csv() const;

 private:
  std::vector<std::string> cols_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<int> right_;
};

// Number formatting for tables: 1234567 -> "1,234,567"; fixed decimals.
std::string fmt_int(long long v);
std::string fmt_fixed(double v, int decimals);
// 1234567 bytes -> "1.18 MiB"
std::string fmt_bytes(double bytes);
// 1.23e9 -> "1.23 G"
std::string fmt_si(double v);

}  // namespace vitkit

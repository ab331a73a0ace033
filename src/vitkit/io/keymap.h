// Key maps: rules that turn a checkpoint's tensor names into vitkit's
// (torchvision's) names. The text form, one rule a line:
//
//   # comment                          blank lines and '#' lines are ignored
//   REGEX -> REPLACEMENT               REGEX must match the whole name (std::regex,
//                                      ECMAScript); REPLACEMENT may use $1..$99, $&
//   REGEX -> -                         drops the tensor (not reported as unused)
//   REGEX -> NAME[q]  (also [k], [v])  one third of a packed tensor: the three
//                                      parts are concatenated along dimension 0
//                                      in q, k, v order (separate query, key and
//                                      value projections -> in_proj_weight)
//
// A comment may also follow a rule after " #". Rules are tried in order and the
// first full match wins; a name no rule matches is kept as it is.
// std::regex backtracks, so patterns that can take exponential time are refused
// (a repeated group that repeats or alternates inside, like (a*)* or (a|b)+; a
// quantifier on a quantifier), as are more than three unbounded repetitions in
// one pattern; names longer than 256 characters are never matched.
#pragma once
#include <memory>
#include <regex>
#include <string>
#include <vector>

namespace vitkit {

struct KeyRule {
  std::string pattern;      // the regex as written
  std::shared_ptr<const std::regex> re;
  std::string replacement;  // empty when drop
  bool drop = false;
  std::string origin;       // file (or preset) and line, for messages: "my.map:3"
};

class KeyMap {
 public:
  // Parses rules; errors name origin and the line (a bad regex, no "->").
  static KeyMap parse(const std::string& text, const std::string& origin);
  // Reads and parses a key map file.
  static KeyMap load(const std::string& path);
  // Appends other's rules after this map's (they are tried later).
  void append(const KeyMap& other);

  struct Result {
    bool matched = false;  // a rule matched (otherwise name is the input)
    bool drop = false;     // the rule drops the tensor
    std::string name;      // the new name (with a [q]/[k]/[v] suffix for a packed part)
    const KeyRule* rule = nullptr;
  };
  Result apply(const std::string& name) const;
  const std::vector<KeyRule>& rules() const { return rules_; }

 private:
  std::vector<KeyRule> rules_;
};

// Splits "NAME[q]" into NAME and its part (0, 1, 2 for q, k, v); -1 when name
// has no part suffix.
int packed_part(const std::string& name, std::string* base);

}  // namespace vitkit

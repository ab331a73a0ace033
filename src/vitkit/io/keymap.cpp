#include "vitkit/io/keymap.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/unpickler.h"

namespace vitkit {

namespace {

constexpr size_t kMaxPattern = 1000;  // std::regex compiles recursively: bound its input
constexpr int kMaxNesting = 32;
constexpr int kMaxUnbounded = 3;      // * + {n,} per pattern: backtracking is O(name length ^ count)
constexpr size_t kMaxName = 256;      // longer names are never matched (kept as they are)

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Guards for std::regex, which compiles recursively, reads numbers without
// overflow checks and matches by backtracking: limits the group nesting depth,
// back-reference numbers (two digits) and brace counts (four digits), and
// refuses the shapes that backtrack exponentially or with a high polynomial
// degree: a repeated group that itself repeats or alternates ((a*)*, (a|b)+),
// a quantifier on a quantifier (a**), more than kMaxUnbounded unbounded
// repetitions (* + {n,}) in one pattern.
void check_pattern(const std::string& p, const std::string& where) {
  struct Group {
    bool repeats = false;  // holds an unbounded repetition or an alternation
  };
  std::vector<Group> groups(1);
  bool last_quant = false;          // the previous token was a quantifier
  bool last_group_repeats = false;  // the previous token was a group that repeats
  int unbounded = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    const bool quant_before = last_quant, group_before = last_group_repeats;
    last_quant = last_group_repeats = false;
    if (c == '\\') {
      size_t digits = 0;
      while (i + 1 + digits < p.size() && std::isdigit(static_cast<unsigned char>(p[i + 1 + digits]))) ++digits;
      if (digits > 2) fail(where, ": back-reference number with more than two digits");
      ++i;
    } else if (c == '[') {  // a class: up to its unescaped ']' (a leading ']' or '^]' is literal)
      size_t j = i + 1;
      if (j < p.size() && p[j] == '^') ++j;
      if (j < p.size() && p[j] == ']') ++j;
      while (j < p.size() && p[j] != ']') j += p[j] == '\\' ? 2 : 1;
      i = j;
    } else if (c == '(') {
      groups.emplace_back();
      if (groups.size() > static_cast<size_t>(kMaxNesting) + 1)
        fail(where, ": regular expression nests groups deeper than ", kMaxNesting, " levels");
      if (i + 1 < p.size() && p[i + 1] == '?') ++i;  // (?: (?= (?!
    } else if (c == ')') {
      if (groups.size() > 1) {
        const bool r = groups.back().repeats;
        groups.pop_back();
        groups.back().repeats = groups.back().repeats || r;
        last_group_repeats = r;
      }
    } else if (c == '|') {
      groups.back().repeats = true;
    } else if (c == '*' || c == '+' || c == '{') {
      bool unbounded_rep = c != '{', repeats = true;
      if (c == '{') {
        size_t j = i + 1, run = 0;
        std::string body;
        for (; j < p.size() && p[j] != '}'; ++j) {
          run = std::isdigit(static_cast<unsigned char>(p[j])) ? run + 1 : 0;
          if (run > 4) fail(where, ": repetition count in braces with more than four digits");
          body += p[j];
        }
        unbounded_rep = !body.empty() && body.back() == ',';
        repeats = unbounded_rep || (body != "0" && body != "1" && body != "0,1" && body != "1,1");
        i = j;
      }
      if (quant_before) fail(where, ": a quantifier on a quantifier (such as a** or a+*)");
      if (group_before && repeats)
        fail(where, ": a repeated group that itself repeats or alternates (such as (a*)* or (a|b)+) can take "
                    "exponential time; rewrite it, e.g. with a character class");
      if (unbounded_rep && ++unbounded > kMaxUnbounded)
        fail(where, ": more than ", kMaxUnbounded, " unbounded repetitions (*, +, {n,}) in one pattern");
      if (unbounded_rep) groups.back().repeats = true;
      last_quant = true;
    } else if (c == '?') {
      last_quant = !quant_before;  // after a quantifier: the lazy modifier
    }
  }
}

// "REGEX -> REPLACEMENT [# comment]" -> rule.
KeyRule parse_rule(const std::string& line, const std::string& where) {
  const size_t arrow = line.rfind("->");
  if (arrow == std::string::npos)
    fail(where, ": expected 'REGEX -> REPLACEMENT', got '", printable(line, 120), "'");
  KeyRule r;
  r.origin = where;
  r.pattern = trim(line.substr(0, arrow));
  std::string rep = line.substr(arrow + 2);
  size_t hash = rep.find(" #");
  if (hash == std::string::npos) hash = rep.find("\t#");
  if (hash != std::string::npos) rep = rep.substr(0, hash);
  rep = trim(rep);
  if (r.pattern.empty()) fail(where, ": empty regular expression before '->'");
  if (rep.empty()) fail(where, ": empty replacement after '->' (use '-' to drop a key)");
  if (rep.find_first_of(" \t") != std::string::npos)
    fail(where, ": the replacement '", printable(rep, 120), "' contains a space");
  if (r.pattern.size() > kMaxPattern) fail(where, ": regular expression longer than ", kMaxPattern, " characters");
  check_pattern(r.pattern, where);
  try {
    r.re = std::make_shared<const std::regex>(r.pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail(where, ": bad regular expression '", printable(r.pattern, 120), "': ", e.what());
  }
  r.drop = rep == "-";
  if (!r.drop) r.replacement = rep;
  return r;
}

}  // namespace

KeyMap KeyMap::parse(const std::string& text, const std::string& origin) {
  KeyMap m;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    const std::string s = trim(raw);
    if (s.empty() || s[0] == '#') continue;
    m.rules_.push_back(parse_rule(s, cat(origin, ":", line)));
  }
  return m;
}

KeyMap KeyMap::load(const std::string& path) {
  if (!file_exists(path)) throw UsageError(cat("--map: key map file ", path, " does not exist"));
  return parse(read_text_file(path), path);
}

void KeyMap::append(const KeyMap& other) { rules_.insert(rules_.end(), other.rules_.begin(), other.rules_.end()); }

KeyMap::Result KeyMap::apply(const std::string& name) const {
  Result r;
  r.name = name;
  if (name.size() > kMaxName) return r;
  for (const KeyRule& rule : rules_) {
    std::smatch m;
    bool hit = false;
    try {
      hit = std::regex_match(name, m, *rule.re);
    } catch (const std::regex_error& e) {
      fail(rule.origin, ": matching '", printable(name), "' failed: ", e.what());
    }
    if (!hit) continue;
    r.matched = true;
    r.rule = &rule;
    r.drop = rule.drop;
    if (!rule.drop) r.name = m.format(rule.replacement);
    return r;
  }
  return r;
}

int packed_part(const std::string& name, std::string* base) {
  const size_t n = name.size();
  if (n < 4 || name[n - 3] != '[' || name[n - 1] != ']') return -1;
  const char c = name[n - 2];
  const int part = c == 'q' ? 0 : c == 'k' ? 1 : c == 'v' ? 2 : -1;
  if (part >= 0 && base) *base = name.substr(0, n - 3);
  return part;
}

}  // namespace vitkit

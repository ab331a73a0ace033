#include "vitkit/io/keymap.h"

#include <sstream>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/unpickler.h"

namespace vitkit {

namespace {

constexpr size_t kMaxPattern = 1000;  // std::regex compiles recursively: bound its input
constexpr int kMaxNesting = 32;
constexpr size_t kMaxName = 1000;     // longer names are never matched (kept as they are)

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Deepest nesting of unescaped '(' and '[' (a guard for std::regex's recursive compiler).
int nesting(const std::string& p) {
  int depth = 0, deepest = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\') {
      ++i;
      continue;
    }
    if (p[i] == '(' || p[i] == '[') deepest = std::max(deepest, ++depth);
    if ((p[i] == ')' || p[i] == ']') && depth > 0) --depth;
  }
  return deepest;
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
  if (nesting(r.pattern) > kMaxNesting)
    fail(where, ": regular expression nests groups deeper than ", kMaxNesting, " levels");
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

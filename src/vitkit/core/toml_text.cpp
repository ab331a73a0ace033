#include "vitkit/core/toml_text.h"

#include <sstream>

#include "vitkit/core/error.h"

namespace vitkit {

std::string toml_text(const toml::node& n, const std::string& key, const std::string& where) {
  if (auto s = n.value<std::string>()) return *s;
  if (n.is_boolean()) return *n.value<bool>() ? "true" : "false";
  if (n.is_integer()) return std::to_string(*n.value<int64_t>());
  if (n.is_floating_point()) {
    std::ostringstream os;
    os.precision(9);
    os << *n.value<double>();
    return os.str();
  }
  if (auto arr = n.as_array()) {
    std::string out;
    for (auto& e : *arr) {
      if (!out.empty()) out += ':';
      out += toml_text(e, key, where);
    }
    return out;
  }
  throw UsageError(cat(where, ": key '", key, "' has an unsupported value type (line ", n.source().begin.line, ")"));
}

}  // namespace vitkit

// TOML values as the text form the key=value parsers take: strings as they
// are, numbers and booleans printed, arrays joined with ':'.
#pragma once
#include <string>
#include <toml++/toml.h>

namespace vitkit {

// Throws UsageError naming `where` and `key` for tables and other types.
std::string toml_text(const toml::node& n, const std::string& key, const std::string& where);

}  // namespace vitkit

// Compression passes: named transformations of a ViT in place (round, and later
// int8 / fixed-point quantization, low-rank, pruning, distillation), written on
// the command line as "name:key=value,key=value" and applied in order.
//
// Each pass returns a JSON record of what it did. The records form the model's
// compression log, a JSON list kept in ViT::extra_metadata["vitkit.compression"]
// and written by save_model as the file's `vitkit.compression` metadata;
// load_model hands it back to restore_compression, which lets every pass rebuild
// what plain weights cannot hold (a Linear's LinearRepr), so a compressed model
// runs identically after a save/load round trip.
//
// Adding a pass: implement Pass in compress/NAME.{h,cpp}, and add its factory to
// the list in pass.cpp (registered_passes).
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "vitkit/model/vit.h"

namespace vitkit {

inline constexpr const char* kCompressionKey = "vitkit.compression";

// One key a pass accepts.
struct PassKey {
  enum class Type { Int, Float, Bool, String, Regex };
  PassKey(std::string name_, Type type_, std::string default_value_, std::string help_)
      : name(std::move(name_)), type(type_), default_value(std::move(default_value_)), help(std::move(help_)) {}
  // Int and Float: the inclusive range of accepted values.
  PassKey& range(double lo, double hi) { return min = lo, max = hi, *this; }
  PassKey& require() { return required = true, *this; }

  std::string name;
  Type type = Type::String;
  std::string default_value;  // text form; "" (and not required): absent unless given
  std::string help;
  double min = -1e300, max = 1e300;
  bool required = false;
};
const char* to_string(PassKey::Type t);  // "int", "float", "bool", "string", "regex"

// A pass's arguments after validation: every key has a value (given or default).
class PassArgs {
 public:
  PassArgs(std::string pass, std::map<std::string, std::string> values, std::set<std::string> given)
      : pass_(std::move(pass)), values_(std::move(values)), given_(std::move(given)) {}
  const std::string& text(const std::string& key) const;
  int64_t integer(const std::string& key) const;
  double real(const std::string& key) const;
  bool boolean(const std::string& key) const;
  bool given(const std::string& key) const { return given_.count(key) > 0; }
  // {"key": value, ...} with numbers and booleans typed.
  nlohmann::json to_json(const std::vector<PassKey>& keys) const;

 private:
  std::string pass_;
  std::map<std::string, std::string> values_;
  std::set<std::string> given_;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string name() const = 0;
  virtual std::string summary() const = 0;  // one line for --help
  virtual std::vector<PassKey> keys() const = 0;
  // Transforms m in place. The record says what was done and holds everything
  // restore needs; the framework adds "pass", "spec" and "args" to it.
  virtual nlohmann::json apply(ViT& m, const PassArgs& args) const = 0;
  // After loading a model whose weights this pass already changed: rebuilds the
  // runtime state (LinearRepr) from the record. Throws Error on a bad record.
  virtual void restore(ViT& m, const nlohmann::json& record) const;
};

// "round:decimals=3,activations=true" -> name and (key, value) pairs. Throws
// UsageError naming the spec on a syntax error (no name, "key" without "=",
// empty key, a key given twice).
struct PassSpec {
  std::string text, name;
  std::vector<std::pair<std::string, std::string>> args;
};
PassSpec parse_pass_spec(const std::string& text);

// Every pass, in registration order.
const std::vector<const Pass*>& registered_passes();
// The pass of that name; UsageError listing the known passes otherwise.
const Pass& find_pass(const std::string& name);
// Checks keys and values against the pass's keys (UsageError naming the pass,
// the key and the expected type or range) and fills in defaults.
PassArgs validate_pass_args(const Pass& pass, const PassSpec& spec);

// Parses, validates and applies one spec; appends its record to m's
// compression log and returns it.
nlohmann::json apply_pass(ViT& m, const std::string& spec);
// All specs are parsed and validated before the first is applied.
std::vector<nlohmann::json> apply_passes(ViT& m, const std::vector<std::string>& specs);

// The records applied to m so far (a JSON list, empty when none).
nlohmann::json compression_log(const ViT& m);
// Rebuilds a loaded model's runtime state from its log (`where` names the file
// in errors) and keeps the log on m. Used by load_model.
void restore_compression(ViT& m, const nlohmann::json& log, const std::string& where);
// The same from a file's metadata: does nothing without `vitkit.compression`.
void restore_compression_metadata(ViT& m, const std::map<std::string, std::string>& metadata, const std::string& where);

// The passes and their keys, for `vitkit compress --help`.
std::string passes_help();

}  // namespace vitkit

// Compression passes: named transformations of a ViT in place (round, and later
// int8 / fixed-point quantization, low-rank, pruning, distillation), written on
// the command line as "name:key=value,key=value" and applied in order.
//
// A pass changes layers' representations (repr/: a rounded, bf16, f16 layer
// ...), which files store with their own tensors and metadata, so a loaded
// model runs exactly as the one written. Each pass also returns a JSON record
// of what it did; the records form the model's compression log (the file's
// `vitkit.compression` metadata, io/model_io.h), its history.
//
// Passes get a context: calibration images (chosen balanced over classes,
// their indices recorded in the log), a teacher model, the seed and whether to
// show progress.
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

#include "vitkit/core/tensor.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/vit.h"

namespace vitkit {


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

// A key's text as its type: false when it is not one (whole text, finite;
// booleans true/false, 1/0, yes/no, on/off).
bool parse_int(const std::string& s, int64_t* out);
bool parse_real(const std::string& s, double* out);
bool parse_bool(const std::string& s, bool* out);

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

// What a pass may use besides the model and its arguments.
struct PassContext {
  // Calibration images (N, C, S, S), preprocessed for the model; undefined when none.
  Tensor calib;
  std::vector<int> calib_labels;
  std::vector<int64_t> calib_indices;  // their indices in calib_source
  std::string calib_source;            // the dataset and split, described
  const ViT* teacher = nullptr;        // a reference model, when given
  uint64_t seed = 0;
  bool progress = true;
  bool has_calibration() const { return calib.defined() && calib.dim(0) > 0; }
};

// Fills ctx's calibration set: the first n images of `split` of dataset
// `data` in a class-balanced order (io/dataset.h balanced_indices),
// preprocessed for m, with their labels and indices.
void load_calibration(PassContext& ctx, const ViT& m, const std::string& data, const std::string& split, int64_t n);

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string name() const = 0;
  virtual std::string summary() const = 0;  // one line for --help
  virtual std::vector<PassKey> keys() const = 0;
  // Whether the pass needs calibration images for these arguments.
  virtual bool needs_calibration(const PassArgs&) const { return false; }
  // Whether its "layers" key chooses exactly the layers it changes (recipes'
  // per-layer overrides need that; compress/recipe.h).
  virtual bool layers_select() const { return false; }
  // Transforms m in place. The record says what was done; the framework adds
  // "pass", "spec", "args" and the calibration set used to it.
  virtual nlohmann::json apply(ViT& m, const PassArgs& args, const PassContext& ctx) const = 0;
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
nlohmann::json apply_pass(ViT& m, const std::string& spec, const PassContext& ctx = {});
// All specs are parsed and validated (and checked for the calibration they
// need) before the first is applied. origins (empty, or one per spec): where
// each spec came from (a recipe's step), kept as its record's "origin".
std::vector<nlohmann::json> apply_passes(ViT& m, const std::vector<std::string>& specs, const PassContext& ctx = {},
                                         const std::vector<nlohmann::json>& origins = {});
// Whether any of the specs needs calibration images (they are validated too).
bool passes_need_calibration(const std::vector<std::string>& specs);

// The passes and their keys, for `vitkit compress --help`.
std::string passes_help();

}  // namespace vitkit

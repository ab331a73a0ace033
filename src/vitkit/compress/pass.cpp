#include "vitkit/compress/pass.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <regex>

#include "vitkit/compress/half.h"
#include "vitkit/compress/lowrank.h"
#include "vitkit/compress/prune.h"
#include "vitkit/compress/prune_structured.h"
#include "vitkit/compress/quantize.h"
#include "vitkit/compress/round.h"
#include "vitkit/core/error.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/preprocess.h"

namespace vitkit {

const char* to_string(PassKey::Type t) {
  switch (t) {
    case PassKey::Type::Int: return "int";
    case PassKey::Type::Float: return "float";
    case PassKey::Type::Bool: return "bool";
    case PassKey::Type::String: return "string";
    case PassKey::Type::Regex: return "regex";
  }
  return "?";
}

// ---- Values ----------------------------------------------------------------

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

bool parse_real(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (errno || *end || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool parse_bool(const std::string& s, bool* out) {
  if (s == "true" || s == "1" || s == "yes" || s == "on") return *out = true, true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return *out = false, true;
  return false;
}

const std::string& PassArgs::text(const std::string& key) const {
  auto it = values_.find(key);
  check(it != values_.end(), "pass ", pass_, ": no key '", key, "'");
  return it->second;
}

int64_t PassArgs::integer(const std::string& key) const {
  int64_t v = 0;
  check(parse_int(text(key), &v), "pass ", pass_, ": ", key, "=", text(key), " is not an integer");
  return v;
}

double PassArgs::real(const std::string& key) const {
  double v = 0;
  check(parse_real(text(key), &v), "pass ", pass_, ": ", key, "=", text(key), " is not a number");
  return v;
}

bool PassArgs::boolean(const std::string& key) const {
  bool v = false;
  check(parse_bool(text(key), &v), "pass ", pass_, ": ", key, "=", text(key), " is not true or false");
  return v;
}

nlohmann::json PassArgs::to_json(const std::vector<PassKey>& keys) const {
  nlohmann::json j = nlohmann::json::object();
  for (const PassKey& k : keys) {
    if (!values_.count(k.name)) continue;
    switch (k.type) {
      case PassKey::Type::Int: j[k.name] = integer(k.name); break;
      case PassKey::Type::Float: j[k.name] = real(k.name); break;
      case PassKey::Type::Bool: j[k.name] = boolean(k.name); break;
      default: j[k.name] = text(k.name);
    }
  }
  return j;
}

// ---- Specs -------------------------------------------------------------------

PassSpec parse_pass_spec(const std::string& text) {
  PassSpec s;
  s.text = text;
  const size_t colon = text.find(':');
  s.name = text.substr(0, colon);
  if (s.name.empty()) throw UsageError(cat("--pass '", text, "': no pass name (expected NAME:key=value,...)"));
  if (colon == std::string::npos) return s;
  const std::string rest = text.substr(colon + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t comma = rest.find(',', pos);
    if (comma == std::string::npos) comma = rest.size();
    const std::string item = rest.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == rest.size()) break;
      continue;
    }
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw UsageError(cat("--pass '", text, "': '", item, "' is not key=value"));
    const std::string key = item.substr(0, eq);
    for (auto& [k, v] : s.args)
      if (k == key) throw UsageError(cat("--pass '", text, "': key '", key, "' given twice"));
    s.args.emplace_back(key, item.substr(eq + 1));
  }
  return s;
}

// ---- Registry ----------------------------------------------------------------

const std::vector<const Pass*>& registered_passes() {
  static const std::vector<std::unique_ptr<Pass>> owned = [] {
    std::vector<std::unique_ptr<Pass>> v;
    v.push_back(make_round_pass());
    v.push_back(make_bf16_pass());
    v.push_back(make_f16_pass());
    v.push_back(make_quantize_pass());
    v.push_back(make_prune_heads_pass());
    v.push_back(make_prune_mlp_pass());
    v.push_back(make_prune_pass());
    v.push_back(make_lowrank_pass());
    return v;
  }();
  static const std::vector<const Pass*> list = [] {
    std::vector<const Pass*> v;
    for (auto& p : owned) v.push_back(p.get());
    return v;
  }();
  return list;
}

static std::string pass_names() {
  std::string s;
  for (const Pass* p : registered_passes()) s += (s.empty() ? "" : ", ") + p->name();
  return s;
}

const Pass& find_pass(const std::string& name) {
  for (const Pass* p : registered_passes())
    if (p->name() == name) return *p;
  throw UsageError(cat("unknown pass '", name, "' (passes: ", pass_names(), ")"));
}

static std::string key_names(const Pass& pass) {
  std::string s;
  for (auto& k : pass.keys()) s += (s.empty() ? "" : ", ") + k.name;
  return s;
}

static void check_value(const Pass& pass, const PassKey& key, const std::string& v) {
  auto bad = [&](const std::string& what) {
    throw UsageError(cat("pass ", pass.name(), ": ", key.name, "=", v, " is not ", what));
  };
  switch (key.type) {
    case PassKey::Type::Int: {
      int64_t x = 0;
      if (!parse_int(v, &x)) bad("an integer");
      if (double(x) < key.min || double(x) > key.max) bad(cat("in ", int64_t(key.min), "..", int64_t(key.max)));
      break;
    }
    case PassKey::Type::Float: {
      double x = 0;
      if (!parse_real(v, &x)) bad("a number");
      if (x < key.min || x > key.max) bad(cat("in ", key.min, "..", key.max));
      break;
    }
    case PassKey::Type::Bool: {
      bool b = false;
      if (!parse_bool(v, &b)) bad("true or false");
      break;
    }
    case PassKey::Type::Regex: try { std::regex re(v, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        bad(cat("a valid regular expression (", e.what(), ")"));
      }
      break;
    case PassKey::Type::String: break;
  }
}

PassArgs validate_pass_args(const Pass& pass, const PassSpec& spec) {
  const std::vector<PassKey> keys = pass.keys();
  std::map<std::string, std::string> values;
  std::set<std::string> given;
  for (auto& [k, v] : spec.args) {
    const PassKey* key = nullptr;
    for (auto& pk : keys)
      if (pk.name == k) key = &pk;
    if (!key) throw UsageError(cat("pass ", pass.name(), ": unknown key '", k, "' (keys: ", key_names(pass), ")"));
    check_value(pass, *key, v);
    values[k] = v;
    given.insert(k);
  }
  for (auto& k : keys) {
    if (values.count(k.name)) continue;
    if (k.required) throw UsageError(cat("pass ", pass.name(), ": key '", k.name, "' is required"));
    if (!k.default_value.empty()) values[k.name] = k.default_value;
  }
  return PassArgs(pass.name(), std::move(values), std::move(given));
}

// ---- Calibration -----------------------------------------------------------

void load_calibration(PassContext& ctx, const ViT& m, const std::string& data, const std::string& split, int64_t n) {
  check(n > 0, "calibration: the number of images must be positive, got ", n);
  auto ds = open_dataset(data, split);
  check(ds->classes() <= m.cfg.classes, ds->describe(), " has ", ds->classes(), " classes but the model has ",
        m.cfg.classes);
  ctx.calib_indices = balanced_indices(*ds, n);
  ctx.calib = preprocess_batch(*ds, ctx.calib_indices, m.cfg);
  ctx.calib_labels.clear();
  for (int64_t i : ctx.calib_indices) ctx.calib_labels.push_back(ds->label(i));
  ctx.calib_source = ds->describe();
}

// ---- Applying -------------------------------------------------------------

static nlohmann::json run_pass(ViT& m, const Pass& pass, const PassSpec& spec, const PassArgs& args,
                               const PassContext& ctx, const nlohmann::json& origin = nullptr) {
  nlohmann::json rec = pass.apply(m, args, ctx);
  rec["pass"] = pass.name();
  rec["spec"] = spec.text;
  rec["args"] = args.to_json(pass.keys());
  if (!origin.is_null()) rec["origin"] = origin;
  if (pass.needs_calibration(args))
    rec["calibration"] = {{"source", ctx.calib_source},
                          {"images", ctx.calib.dim(0)},
                          {"indices", ctx.calib_indices}};
  append_compression_log(m, rec);
  return rec;
}

// Checks that ctx has the calibration images the pass needs.
static void check_calibration(const Pass& pass, const PassSpec& spec, const PassArgs& args, const PassContext& ctx) {
  if (pass.needs_calibration(args) && !ctx.has_calibration())
    throw UsageError(cat("pass '", spec.text, "' needs calibration images: give --data DATASET and --calib N"));
}

nlohmann::json apply_pass(ViT& m, const std::string& text, const PassContext& ctx) {
  const PassSpec spec = parse_pass_spec(text);
  const Pass& pass = find_pass(spec.name);
  const PassArgs args = validate_pass_args(pass, spec);
  check_calibration(pass, spec, args, ctx);
  return run_pass(m, pass, spec, args, ctx);
}

std::vector<nlohmann::json> apply_passes(ViT& m, const std::vector<std::string>& texts, const PassContext& ctx,
                                         const std::vector<nlohmann::json>& origins) {
  check(origins.empty() || origins.size() == texts.size(), "apply_passes: ", origins.size(), " origins for ",
        texts.size(), " passes");
  std::vector<PassSpec> specs;
  std::vector<PassArgs> args;
  for (auto& t : texts) {
    specs.push_back(parse_pass_spec(t));
    args.push_back(validate_pass_args(find_pass(specs.back().name), specs.back()));
    check_calibration(find_pass(specs.back().name), specs.back(), args.back(), ctx);
  }
  std::vector<nlohmann::json> records;
  for (size_t i = 0; i < specs.size(); ++i)
    records.push_back(run_pass(m, find_pass(specs[i].name), specs[i], args[i], ctx,
                               origins.empty() ? nlohmann::json() : origins[i]));
  return records;
}

bool passes_need_calibration(const std::vector<std::string>& texts) {
  bool need = false;
  for (auto& t : texts) {
    const PassSpec spec = parse_pass_spec(t);
    const Pass& pass = find_pass(spec.name);
    need = need || pass.needs_calibration(validate_pass_args(pass, spec));
  }
  return need;
}

std::string passes_help() {
  std::string s = "Passes (--pass NAME:key=value,...; repeat --pass to chain, applied in order):\n";
  for (const Pass* p : registered_passes()) {
    s += "  " + p->name() + ": " + p->summary() + "\n";
    for (const PassKey& k : p->keys()) {
      s += "    " + k.name + "=" + to_string(k.type);
      if (k.type == PassKey::Type::Int || k.type == PassKey::Type::Float)
        if (k.min > -1e299 && k.max < 1e299) s += cat(" (", k.min, "..", k.max, ")");
      s += k.required ? " (required)" : k.default_value.empty() ? "" : " (default " + k.default_value + ")";
      s += ": " + k.help + "\n";
    }
  }
  return s;
}

}  // namespace vitkit

#include "vitkit/compress/recipe.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/toml_text.h"
#include "vitkit/train/train_config.h"

namespace vitkit {

namespace {

using Keys = std::vector<std::pair<std::string, std::string>>;

const std::set<std::string> kSelectors = {"name", "layers", "kind", "block", "skip"};

// keys with `over`'s values replacing (or added after) the same keys.
Keys merged(Keys keys, const Keys& over) {
  for (auto& [k, v] : over) {
    auto it = std::find_if(keys.begin(), keys.end(), [&](auto& p) { return p.first == k; });
    if (it != keys.end()) it->second = v;
    else keys.emplace_back(k, v);
  }
  return keys;
}

std::string spec_text(const std::string& pass, const Keys& keys) {
  std::string s = pass;
  for (size_t i = 0; i < keys.size(); ++i) s += cat(i ? "," : ":", keys[i].first, "=", keys[i].second);
  return s;
}

// Validates pass:keys (UsageError prefixed with where).
void validate(const std::string& pass, const Keys& keys, const std::string& where) {
  try {
    PassSpec spec;
    spec.name = pass;
    spec.args = keys;
    spec.text = spec_text(pass, keys);
    validate_pass_args(find_pass(pass), spec);
  } catch (const UsageError& e) {
    throw UsageError(cat(where, ": ", e.what()));
  }
}

// A string or an array of strings (ints for blocks) as a list.
std::vector<std::string> strings(const toml::node& n, const std::string& key, const std::string& where) {
  std::vector<std::string> v;
  if (auto arr = n.as_array()) {
    for (auto& e : *arr) v.push_back(toml_text(e, key, where));
  } else {
    v.push_back(toml_text(n, key, where));
  }
  if (v.empty()) throw UsageError(cat(where, ": ", key, " is an empty list"));
  return v;
}

RecipeOverride parse_override(const toml::table& t, const RecipeStep& step, const std::string& where) {
  RecipeOverride o;
  for (auto& [k, node] : t) {
    const std::string key(k.str());
    if (key == "name") {
      o.names = strings(node, key, where);
    } else if (key == "kind") {
      for (const std::string& s : strings(node, key, where)) {
        bool known = false;
        for (LayerKind lk : {LayerKind::Patch, LayerKind::Qkv, LayerKind::Proj, LayerKind::Fc1, LayerKind::Fc2,
                             LayerKind::Head})
          known = known || s == to_string(lk);
        if (!known)
          throw UsageError(cat(where, ": kind '", s, "' is not a layer kind (patch, qkv, out_proj, fc1, fc2, head)"));
        o.kinds.push_back(s);
      }
    } else if (key == "block") {
      for (const std::string& s : strings(node, key, where)) {
        int64_t b = -1;
        if (!parse_int(s, &b) || b < 0 || b > 1000000)
          throw UsageError(cat(where, ": block ", s, " is not an encoder block index (0, 1, ...)"));
        o.blocks.push_back(int(b));
      }
    } else if (key == "layers") {
      o.layers = toml_text(node, key, where);
      try {
        std::regex re(o.layers, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw UsageError(cat(where, ": layers=", o.layers, " is not a valid regular expression (", e.what(), ")"));
      }
    } else if (key == "skip") {
      if (!node.is_boolean()) throw UsageError(cat(where, ": skip must be true or false"));
      o.skip = *node.value<bool>();
    } else {
      o.keys.emplace_back(key, toml_text(node, key, where));
    }
  }
  if (o.names.empty() && o.kinds.empty() && o.blocks.empty() && o.layers.empty())
    throw UsageError(cat(where, ": an override needs a selector (name, layers, kind or block)"));
  if (o.skip && !o.keys.empty())
    throw UsageError(cat(where, ": skip = true leaves the layers as they are; it takes no pass keys (got '",
                         o.keys[0].first, "')"));
  if (!o.skip && o.keys.empty()) throw UsageError(cat(where, ": an override needs pass keys or skip = true"));
  if (!o.skip) validate(step.pass, merged(step.keys, o.keys), where);
  return o;
}

// A fine-tuning step: its tables form a train config without [model].
RecipeStep parse_finetune_step(const toml::table& t, const std::string& where) {
  RecipeStep s;
  const toml::node* f = t.get("finetune");
  if (!f->is_boolean() || !*f->value<bool>())
    throw UsageError(cat(where, ": finetune must be true (its settings go in [step.train], [step.data], ...)"));
  toml::table cfg;
  for (auto& [k, node] : t) {
    const std::string key(k.str());
    if (key == "finetune") continue;
    if (key != "train" && key != "data" && key != "augment" && key != "distill")
      throw UsageError(cat(where, ": a finetune step takes [step.train], [step.data], [step.augment] and "
                                  "[step.distill] tables, not '", key, "'"));
    if (!node.is_table()) throw UsageError(cat(where, ": ", key, " must be a table ([step.", key, "])"));
    cfg.insert(key, *node.as_table());
  }
  std::ostringstream text;
  text << cfg << "\n";
  s.finetune = text.str();
  if (s.finetune.find_first_not_of(" \n") == std::string::npos) s.finetune = "[train]\n";
  try {
    TrainConfig c = parse_train_config(s.finetune, where, true);
    (void)c;
  } catch (const Error& e) {
    throw UsageError(cat(where, ": ", e.what()));
  }
  return s;
}

RecipeStep parse_step(const toml::table& t, const std::string& where) {
  if (t.get("finetune")) return parse_finetune_step(t, where);
  RecipeStep s;
  const toml::node* pass = t.get("pass");
  const toml::node* spec = t.get("spec");
  if (pass && spec) throw UsageError(cat(where, ": give pass = \"NAME\" (with keys) or spec = \"NAME:k=v,...\", not both"));
  if (!pass && !spec) throw UsageError(cat(where, ": a step needs pass = \"NAME\" or spec = \"NAME:k=v,...\""));
  if (spec) {
    PassSpec ps;
    try {
      ps = parse_pass_spec(toml_text(*spec, "spec", where));
    } catch (const UsageError& e) {
      throw UsageError(cat(where, ": ", e.what()));
    }
    s.pass = ps.name;
    s.keys = ps.args;
  } else {
    s.pass = toml_text(*pass, "pass", where);
  }
  for (auto& [k, node] : t) {
    const std::string key(k.str());
    if (key == "pass" || key == "spec" || key == "override") continue;
    if (spec) throw UsageError(cat(where, ": key '", key, "' beside spec = ...: put it in the spec"));
    s.keys.emplace_back(key, toml_text(node, key, where));
  }
  validate(s.pass, s.keys, where);
  if (const toml::node* ov = t.get("override")) {
    const toml::array* arr = ov->as_array();
    if (!arr || !arr->is_array_of_tables())
      throw UsageError(cat(where, ": override must be a list of tables ([[step.override]])"));
    if (!find_pass(s.pass).layers_select())
      throw UsageError(cat(where, ": pass ", s.pass,
                           " takes no per-layer overrides (its layers= does not choose exactly the layers it "
                           "changes); overrides work with quantize, bf16 and f16"));
    int i = 0;
    for (auto& e : *arr) s.overrides.push_back(parse_override(*e.as_table(), s, cat(where, ", override ", ++i)));
  }
  return s;
}

}  // namespace

std::string anchored_layers(const std::vector<std::string>& names) {
  static const std::string meta = R"(\^$.|?*+()[]{})";
  std::string re = "^(?:";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) re += '|';
    for (char c : names[i]) {
      if (meta.find(c) != std::string::npos) re += '\\';
      re += c;
    }
  }
  return re + ")$";
}

namespace {

// TOML text of a key's value: numbers and booleans bare, the rest quoted.
std::string toml_value(const std::string& v) {
  int64_t i = 0;
  double d = 0;
  if (parse_int(v, &i) || v == "true" || v == "false") return v;
  if (parse_real(v, &d) && v.find_first_not_of("0123456789.eE+-") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

std::string toml_list(const std::vector<std::string>& v, bool quote) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += cat(i ? ", " : "", quote ? toml_value(v[i]) : v[i]);
  return s + "]";
}

}  // namespace

bool RecipeOverride::selects(const Linear& l) const {
  if (!names.empty() && std::find(names.begin(), names.end(), l.name) == names.end()) return false;
  if (!kinds.empty() && std::find(kinds.begin(), kinds.end(), to_string(l.kind)) == kinds.end()) return false;
  if (!blocks.empty() && std::find(blocks.begin(), blocks.end(), l.block) == blocks.end()) return false;
  if (!layers.empty() && !std::regex_search(l.name, std::regex(layers, std::regex::ECMAScript))) return false;
  return true;
}

std::string RecipeOverride::describe() const {
  std::vector<std::string> parts;
  auto join = [](const auto& v) {
    std::string s;
    for (auto& e : v) s += cat(s.empty() ? "" : "|", e);
    return s;
  };
  if (!names.empty()) parts.push_back("name=" + join(names));
  if (!layers.empty()) parts.push_back("layers=" + layers);
  if (!kinds.empty()) parts.push_back("kind=" + join(kinds));
  if (!blocks.empty()) parts.push_back("block=" + join(blocks));
  std::string s;
  for (auto& p : parts) s += cat(s.empty() ? "" : " ", p);
  return s;
}

std::string RecipeStep::spec() const { return spec_text(pass, keys); }

Recipe parse_recipe(const std::string& text, const std::string& path) {
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    throw UsageError(cat(path, ": ", e.description(), " (line ", e.source().begin.line, ")"));
  }
  Recipe r;
  r.path = path;
  for (auto& [k, node] : root) {
    const std::string key(k.str());
    if (key == "description") {
      r.description = toml_text(node, key, path);
    } else if (key != "step") {
      throw UsageError(cat(path, ": unknown key '", key, "' (a recipe has description and [[step]] tables)"));
    }
  }
  const toml::node* steps = root.get("step");
  if (!steps) throw UsageError(cat(path, ": no [[step]] tables"));
  const toml::array* arr = steps->as_array();
  if (!arr || !arr->is_array_of_tables()) throw UsageError(cat(path, ": step must be a list of tables ([[step]])"));
  int i = 0;
  for (auto& e : *arr) r.steps.push_back(parse_step(*e.as_table(), cat(path, ": step ", ++i)));
  return r;
}

Recipe load_recipe(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError(cat(path, ": cannot open the recipe"));
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_recipe(ss.str(), path);
}

std::vector<RecipeSpec> compile_recipe(const Recipe& r, const ViT& m) {
  std::vector<RecipeSpec> out;
  for (size_t si = 0; si < r.steps.size(); ++si) {
    const RecipeStep& s = r.steps[si];
    const nlohmann::json origin{{"recipe", r.path}, {"step", si + 1}};
    if (s.is_finetune()) {
      out.push_back({"", s.finetune, origin});
      continue;
    }
    if (s.overrides.empty()) {
      out.push_back({s.spec(), "", origin});
      continue;
    }
    // The step's layers (its own layers= narrows them), each with its keys or skipped.
    std::string narrow;
    Keys base;
    for (auto& kv : s.keys) {
      if (kv.first == "layers") narrow = kv.second;
      else base.push_back(kv);
    }
    const std::regex re(narrow.empty() ? "." : narrow, std::regex::ECMAScript);
    std::vector<std::pair<std::string, std::optional<Keys>>> layers;
    std::vector<int> used(s.overrides.size(), 0);
    for (const Linear* l : m.linears()) {
      if (!std::regex_search(l->name, re)) continue;
      std::optional<Keys> k = base;
      for (size_t oi = 0; oi < s.overrides.size(); ++oi) {
        const RecipeOverride& o = s.overrides[oi];
        if (!o.selects(*l)) continue;
        ++used[oi];
        k = o.skip ? std::optional<Keys>() : std::optional<Keys>(merged(k ? *k : base, o.keys));
      }
      layers.emplace_back(l->name, k);
    }
    for (size_t oi = 0; oi < s.overrides.size(); ++oi)
      if (!used[oi])
        throw UsageError(cat(r.path, ": step ", si + 1, ", override ", oi + 1, " (", s.overrides[oi].describe(),
                             ") selects no layer of the model", narrow.empty() ? "" : " among the step's layers=" + narrow));
    // One spec per distinct set of keys, in the order their first layer comes.
    std::vector<std::pair<Keys, std::vector<std::string>>> groups;
    for (auto& [name, k] : layers) {
      if (!k) continue;
      Keys sorted = *k;
      std::sort(sorted.begin(), sorted.end());
      auto it = std::find_if(groups.begin(), groups.end(), [&](auto& g) {
        Keys gs = g.first;
        std::sort(gs.begin(), gs.end());
        return gs == sorted;
      });
      if (it == groups.end()) groups.push_back({*k, {name}});
      else it->second.push_back(name);
    }
    for (auto& [k, names] : groups) {
      Keys keys = k;
      keys.emplace_back("layers", anchored_layers(names));
      nlohmann::json o = origin;
      o["layers"] = names.size();
      out.push_back({spec_text(s.pass, keys), "", o});
    }
  }
  return out;
}

bool recipe_needs_calibration(const Recipe& r) {
  for (const RecipeStep& s : r.steps) {
    if (s.is_finetune()) continue;
    if (passes_need_calibration({s.spec()})) return true;
    for (const RecipeOverride& o : s.overrides)
      if (!o.skip && passes_need_calibration({spec_text(s.pass, merged(s.keys, o.keys))})) return true;
  }
  return false;
}

std::string recipe_toml(const Recipe& r) {
  std::string s;
  if (!r.description.empty()) s += "description = " + toml_value(r.description) + "\n";
  for (const RecipeStep& st : r.steps) {
    if (st.is_finetune()) {  // its tables as [step.NAME]
      s += "\n[[step]]\nfinetune = true\n";
      std::string t = st.finetune, line;
      std::istringstream in(t);
      while (std::getline(in, line)) s += (line.size() > 1 && line[0] == '[' ? "[step." + line.substr(1) : line) + "\n";
      continue;
    }
    s += "\n[[step]]\npass = " + toml_value(st.pass) + "\n";
    for (auto& [k, v] : st.keys) s += k + " = " + toml_value(v) + "\n";
    for (const RecipeOverride& o : st.overrides) {
      s += "\n[[step.override]]\n";
      if (!o.names.empty()) s += "name = " + toml_list(o.names, true) + "\n";
      if (!o.layers.empty()) s += "layers = " + toml_value(o.layers) + "\n";
      if (!o.kinds.empty()) s += "kind = " + toml_list(o.kinds, true) + "\n";
      if (!o.blocks.empty()) {
        std::vector<std::string> b;
        for (int x : o.blocks) b.push_back(std::to_string(x));
        s += "block = " + toml_list(b, false) + "\n";
      }
      if (o.skip) s += "skip = true\n";
      for (auto& [k, v] : o.keys) s += k + " = " + toml_value(v) + "\n";
    }
  }
  return s;
}

}  // namespace vitkit

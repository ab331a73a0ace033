#include "vitkit/io/model_io.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/importer.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/init.h"
#include "vitkit/repr/f32.h"
#include "vitkit/repr/f32_packed.h"
#include "vitkit/repr/registry.h"

namespace vitkit {

bool is_preset_spec(const std::string& spec) { return preset(spec).has_value() && !file_exists(spec); }

static ViTConfig config_from_metadata(const std::map<std::string, std::string>& md, const std::string& path) {
  auto it = md.find("vitkit.config");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": metadata vitkit.config is not valid JSON: ", e.what());
  }
  auto pre = md.find("vitkit.preprocess");
  if (pre != md.end()) {
    try {
      j["preprocess"] = nlohmann::json::parse(pre->second);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": metadata vitkit.preprocess is not valid JSON: ", e.what());
    }
  }
  try {
    return config_from_json(j);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

// --config SPEC on top of c; its errors (unknown key, bad value, missing TOML
// file) are usage errors that name the flag.
static void apply_config_flag(ViTConfig& c, const std::string& spec) {
  try {
    apply_config_spec(c, spec);
  } catch (const UsageError& e) {
    throw UsageError(cat("--config ", spec, ": ", e.what()));
  }
}

// The error for a spec that is neither an existing file nor a preset.
[[noreturn]] static void fail_no_model(const std::string& spec) {
  std::string names;
  for (auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
  fail(spec, ": no such file, and not a preset (", names, ")");
}

static ViTConfig resolve_config(const SafetensorsReader* r, const std::string& path, const LoadOptions& opt) {
  ViTConfig c;
  bool have = false;
  if (r && r->metadata().count("vitkit.config")) {
    c = config_from_metadata(r->metadata(), path);
    have = true;
  }
  if (!opt.preset.empty()) {
    auto p = preset(opt.preset);
    if (!p) throw UsageError(cat("--preset: unknown preset '", opt.preset, "'"));
    if (!have) c = *p;
    have = true;
  }
  if (!opt.config.empty()) {
    apply_config_flag(c, opt.config);
    have = true;
  }
  if (!have)
    fail(path, ": the file has no vitkit metadata (vitkit.config); give the architecture with --preset NAME or "
               "--config key=value,...");
  try {
    c.validate();
  } catch (const Error& e) {
    if (!opt.config.empty()) fail(path, ": ", e.what(), " (with --config ", opt.config, ")");
    fail(path, ": ", e.what());
  }
  return c;
}

ViTConfig load_config(const std::string& spec, const LoadOptions& opt) {
  if (is_preset_spec(spec)) {
    ViTConfig c = *preset(spec);
    if (!opt.config.empty()) {
      apply_config_flag(c, opt.config);
      try {
        c.validate();
      } catch (const Error& e) {
        throw UsageError(cat("--config ", opt.config, ": ", e.what()));
      }
    }
    return c;
  }
  if (!file_exists(spec)) fail_no_model(spec);
  const ImportOptions io{opt.arch, opt.map, opt.preset, opt.config};
  if (needs_import(spec, io)) return import_checkpoint(spec, io).cfg;
  SafetensorsReader r(spec);
  return resolve_config(&r, spec, opt);
}

static std::string name_list(const std::vector<std::string>& names) {
  std::string list;
  for (size_t i = 0; i < names.size() && i < 8; ++i) list += (i ? ", " : "") + names[i];
  if (names.size() > 8) list += cat(", ... (", names.size(), " in all)");
  return list;
}

// Warns about NaN or Inf values of an f32 tensor, naming it.
static void warn_non_finite(const std::string& where, const std::string& name, const float* v, int64_t n) {
  int64_t bad = 0;
  for (int64_t k = 0; k < n; ++k) bad += !std::isfinite(v[k]);
  if (bad) warn(cat(where, ": tensor '", name, "' has ", bad, " NaN or Inf values"));
}

void load_weights(ViT& m, const TensorSource& src, bool strict, const std::set<std::string>& loaded,
                  std::vector<std::string> missing, bool quiet_unused) {
  const std::vector<SourceTensor> all = src.list();
  std::set<std::string> used = loaded;
  for (int i = 0; i < m.params.size(); ++i) {
    const ParamInfo& p = m.params.info(i);
    if (loaded.count(p.name)) continue;
    const SourceTensor* t = src.find_in(all, p.name);
    if (!t) {
      missing.push_back(p.name);
      continue;
    }
    used.insert(p.name);
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16 && t->dtype != DType::F64)
      fail(src.path(), ": tensor '", p.name, "' has dtype ", dtype_name(t->dtype),
           ", expected a float type (F32, F16, BF16, F64)");
    if (t->shape != p.shape)
      fail(src.path(), ": tensor '", p.name, "' has shape ", shape_str(t->shape), " but the model config needs ",
           shape_str(p.shape));
    float* dst = m.params.ptr(i);
    src.read_f32(p.name, dst);
    warn_non_finite(src.path(), p.name, dst, p.numel);
  }
  if (!missing.empty()) fail(src.path(), ": missing tensors for the model config: ", name_list(missing));
  std::vector<std::string> unused;
  for (auto& t : all)
    if (!used.count(t.name)) unused.push_back(t.name);
  if (!unused.empty() && !quiet_unused) {
    if (strict) fail(src.path(), ": unused tensors (--strict): ", name_list(unused));
    warn(cat(src.path(), ": ignoring ", unused.size(), " unused tensor(s): ", name_list(unused)));
  }
}

// ---- the compression log and the layers' representations ------------------

nlohmann::json compression_log(const ViT& m) {
  auto it = m.extra_metadata.find(kCompressionKey);
  if (it == m.extra_metadata.end() || !it->is_array()) return nlohmann::json::array();
  return *it;
}

void append_compression_log(ViT& m, const nlohmann::json& record) {
  nlohmann::json log = compression_log(m);
  log.push_back(record);
  m.extra_metadata[kCompressionKey] = log;
}

// A metadata value parsed as JSON; Error naming the file and key otherwise.
static nlohmann::json metadata_json(const std::map<std::string, std::string>& md, const char* key,
                                    const std::string& path) {
  try {
    return nlohmann::json::parse(md.at(key));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": metadata ", key, " is not valid JSON: ", e.what());
  }
}

// The compression log of a file: a list of records, each with a pass name.
static nlohmann::json read_log(const std::map<std::string, std::string>& md, const std::string& path) {
  if (!md.count(kCompressionKey)) return nlohmann::json::array();
  nlohmann::json log = metadata_json(md, kCompressionKey, path);
  check(log.is_array(), path, ": metadata ", kCompressionKey, " is not a JSON list");
  for (size_t i = 0; i < log.size(); ++i)
    check(log[i].is_object() && log[i].contains("pass") && log[i]["pass"].is_string(), path, ": ", kCompressionKey,
          " record ", i, " has no \"pass\" name");
  return log;
}

// A file whose layers are all dense f32 has no vitkit.layers. Files written
// before vitkit.layers existed kept a layer's representation only in the log: the round pass's records (the only pass then) say which
// layers were rounded and whether their inputs were. Their weights are the
// f32 grid values.
static nlohmann::json layers_from_legacy_log(const nlohmann::json& log, const std::string& path) {
  nlohmann::json layers = nlohmann::json::object();
  for (size_t i = 0; i < log.size(); ++i) {
    const nlohmann::json& rec = log[i];
    const std::string name = rec["pass"].get<std::string>();
    const std::string where = cat(path, ": ", kCompressionKey, " record ", i, " (", name, ")");
    // Passes that leave every layer dense f32 (their shapes are in the config): nothing to rebuild.
    if (name == "prune-heads" || name == "prune-mlp" || name == "finetune") continue;
    check(name == "round", path, ": ", kCompressionKey, " record ", i, " is from pass '", name,
          "', which this vitkit does not know without vitkit.layers metadata (passes then: round)");
    try {
      const int d = rec.at("decimals").get<int>();
      const bool inputs = rec.at("activations").get<bool>();
      for (const auto& n : rec.at("layers")) layers[n.get<std::string>()] = {{"repr", "round"}, {"decimals", d},
                                                                              {"inputs", inputs}};
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": ", e.what());
    }
  }
  return layers;
}

// The layers' representations of a file: vitkit.layers, or for an older file
// its compression log. Every named layer must exist in cfg's model.
static nlohmann::json read_layers(const std::map<std::string, std::string>& md, const nlohmann::json& log,
                                  const std::string& path) {
  nlohmann::json layers = nlohmann::json::object();
  if (md.count(kLayersKey)) {
    layers = metadata_json(md, kLayersKey, path);
    check(layers.is_object(), path, ": metadata ", kLayersKey, " is not a JSON object");
    for (auto& [name, v] : layers.items())
      check(v.is_object() && v.contains("repr") && v["repr"].is_string(), path, ": metadata ", kLayersKey,
            " entry '", name, "' has no \"repr\" name");
  } else if (!log.empty()) {
    layers = layers_from_legacy_log(log, path);
  }
  return layers;
}

namespace {
// A layer's tensor that the file does not have (collected, then reported together).
struct MissingTensor {};
}  // namespace

// The representation maker of load_model for a vitkit file: each layer's
// representation read from the file by the registry, the tensors it reads
// noted; a layer with missing tensors gets a zero f32 stand-in and the names
// go to `missing`, so that one error lists them all.
static ReprMaker file_repr_maker(const SafetensorsReader& r, const nlohmann::json& layers,
                                 std::set<std::string>& read, std::vector<std::string>& missing) {
  return [&r, &layers, &read, &missing](const Linear& l) -> std::unique_ptr<LinearRepr> {
    ReprFile f;
    f.where = cat(r.path(), ": layer ", l.name);
    f.path = r.path();
    f.name = [&l](const std::string& role) { return l.tensor_name(role); };
    f.in = l.in;
    f.out = l.out;
    f.weight_shape = l.weight_shape;
    f.bias = l.has_bias;
    std::string kind = "f32";
    if (layers.contains(l.name)) {
      f.meta = layers[l.name];
      kind = f.meta["repr"].get<std::string>();
    }
    f.read = [&r, &read, &missing, &l](const std::string& role) {
      const std::string name = l.tensor_name(role);
      const StTensor* t = r.find(name);
      if (!t) {
        missing.push_back(name);
        throw MissingTensor{};
      }
      read.insert(name);
      return r.read(*t);
    };
    // A dense layer's tensors are all known: each missing one is listed.
    const size_t before = missing.size();
    if (kind == "f32")
      for (const std::string& role : {std::string("weight"), std::string("bias")})
        if ((role == "weight" || l.has_bias) && !r.find(l.tensor_name(role))) missing.push_back(l.tensor_name(role));
    std::unique_ptr<LinearRepr> repr;
    if (missing.size() == before) {
      try {
        repr = load_repr(kind, f);
      } catch (const MissingTensor&) {
      }
    }
    if (!repr) return std::make_unique<F32Linear>(l.in, l.out, l.weight_shape, l.has_bias);
    for (const ReprTensor& t : repr->tensors())
      if (t.t.dtype() == DType::F32) warn_non_finite(r.path(), l.tensor_name(t.role), t.t.f32(), t.t.numel());
    return repr;
  };
}

std::unique_ptr<ViT> load_model(const std::string& spec, const LoadOptions& opt) {
  if (is_preset_spec(spec)) {
    auto m = std::make_unique<ViT>(load_config(spec, opt));
    Rng rng(opt.seed);
    init_weights(*m, rng);
    return m;
  }
  if (!file_exists(spec)) fail_no_model(spec);
  const ImportOptions io{opt.arch, opt.map, opt.preset, opt.config};
  if (needs_import(spec, io)) {
    ImportedCheckpoint ck = import_checkpoint(spec, io);
    auto m = std::make_unique<ViT>(ck.cfg);
    load_weights(*m, *ck.source, opt.strict);
    return m;
  }
  SafetensorsReader r(spec);
  const ViTConfig cfg = resolve_config(&r, spec, opt);
  const nlohmann::json log = read_log(r.metadata(), spec);
  const nlohmann::json layers = read_layers(r.metadata(), log, spec);
  std::set<std::string> read;
  std::vector<std::string> missing;
  auto m = std::make_unique<ViT>(cfg, file_repr_maker(r, layers, read, missing));
  for (auto& [name, v] : layers.items())
    check(m->find_linear(name) != nullptr, spec, ": metadata ", kLayersKey, " names layer '", name,
          "', which the model does not have");
  for (const std::string& n : missing) read.insert(n);  // reported with the others' by load_weights
  load_weights(*m, r, opt.strict, read, missing, opt.quiet_unused);
  for (auto& [k, v] : r.metadata())
    if (k.rfind("vitkit.", 0) != 0) m->extra_metadata[k] = v;
  if (!log.empty()) m->extra_metadata[kCompressionKey] = log;
  read_attention(*m, r.metadata(), spec);
  return m;
}

nlohmann::json attention_metadata(const ViT& m) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t b = 0; b < m.blocks.size(); ++b)
    if (const auto& q = m.blocks[b].attn_quant) j[std::to_string(b)] = {{"bits", q->bits}, {"pbits", q->pbits}};
  return j;
}

// vitkit.attention: {"BLOCK": {"bits": B, "pbits": P}, ...}, the blocks whose
// attention runs on integer products.
void read_attention(ViT& m, const std::map<std::string, std::string>& md, const std::string& path) {
  if (!md.count(kAttentionKey)) return;
  const nlohmann::json j = metadata_json(md, kAttentionKey, path);
  check(j.is_object(), path, ": metadata ", kAttentionKey, " is not a JSON object");
  for (auto& [k, v] : j.items()) {
    int64_t b = -1;
    try {
      size_t used = 0;
      b = std::stoll(k, &used);
      if (used != k.size()) b = -1;
    } catch (const std::exception&) {
    }
    check(b >= 0 && b < int64_t(m.blocks.size()), path, ": metadata ", kAttentionKey, " names block '", k,
          "'; the model has blocks 0..", m.blocks.size() - 1);
    check(v.is_object() && v.contains("bits") && v["bits"].is_number_integer() && v.contains("pbits") &&
              v["pbits"].is_number_integer(),
          path, ": metadata ", kAttentionKey, " block ", k, " needs integer bits and pbits");
    kernels::AttentionQuant q;
    q.bits = v["bits"].get<int>();
    q.pbits = v["pbits"].get<int>();
    check(q.bits >= 2 && q.bits <= 16 && q.pbits >= 2 && q.pbits <= 16, path, ": metadata ", kAttentionKey,
          " block ", k, ": bits ", q.bits, " and pbits ", q.pbits, " must be in 2..16");
    m.blocks[size_t(b)].attn_quant = q;
  }
}

nlohmann::json layers_metadata(const ViT& m) {
  nlohmann::json layers = nlohmann::json::object();
  for (const Linear* l : m.linears()) {
    const std::string kind = stored_kind(*l->repr);
    if (kind == "f32") continue;
    nlohmann::json e = l->repr->meta();
    e["repr"] = kind;
    layers[l->name] = e;
  }
  return layers;
}

FileContents model_file_contents(const ViT& m, bool checkpoint, DType dtype) {
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, "save_model: dtype ", dtype_name(dtype),
        " is not a float type");
  FileContents fc;
  // f32 tensors in `dtype` (a smaller file that loads back as f32).
  auto add = [&](const std::string& name, const Tensor& t) {
    fc.tensors.emplace_back(name, dtype != DType::F32 && t.dtype() == DType::F32 ? t.to(dtype) : t);
  };
  // A layer's tensors, the weight in its file shape (conv_proj's (D, C, p, p)):
  // what a model file stores, and in a checkpoint the training state too
  // (latent weights, learned scales), so that a checkpoint loads as a model.
  // A parameter a file stores in another form (a rounded weight's codes) is
  // checkpointed as the parameter, which resuming reads.
  auto add_layer = [&](const Linear& l) {
    std::vector<ReprTensor> ts = l.repr->stored();
    if (checkpoint)
      for (const ReprTensor& t : l.repr->tensors()) {
        auto same = std::find_if(ts.begin(), ts.end(), [&](const ReprTensor& s) { return s.role == t.role; });
        if (same == ts.end()) {
          if (!t.in_model_file || t.param) ts.push_back(t);
        } else if (t.param) {
          *same = t;
        }
      }
    for (const ReprTensor& t : ts) {
      if (!checkpoint && !t.in_model_file) continue;
      const bool reshape = t.role == "weight" && t.t.numel() == shape_numel(l.weight_shape);
      add(l.tensor_name(t.role), reshape ? t.t.reshape(l.weight_shape) : t.t);
    }
  };
  // torchvision's order, which the parameter table follows: the other
  // parameters in place, each layer where its first parameter is (a layer
  // without any, such as a bias-free bf16 qkv, just before the next layer).
  std::map<std::string, size_t> layer_of;
  const std::vector<const Linear*> lin = m.linears();
  for (size_t i = 0; i < lin.size(); ++i)
    for (const ReprTensor& t : lin[i]->repr->tensors())
      if (t.param) layer_of[lin[i]->tensor_name(t.role)] = i;
  size_t next = 0;  // the first layer not written yet
  for (int i = 0; i < m.params.size(); ++i) {
    auto it = layer_of.find(m.params.info(i).name);
    if (it == layer_of.end()) {
      add(m.params.info(i).name, m.params.tensor(i));
    } else {
      for (; next <= it->second; ++next) add_layer(*lin[next]);
    }
  }
  for (; next < lin.size(); ++next) add_layer(*lin[next]);
  std::map<std::string, std::string>& md = fc.metadata;
  for (auto& [k, v] : m.extra_metadata.items()) md[k] = v.is_string() ? v.get<std::string>() : v.dump();
  if (auto log = compression_log(m); !log.empty()) md[kCompressionKey] = log.dump();
  if (const nlohmann::json layers = layers_metadata(m); !layers.empty()) md[kLayersKey] = layers.dump();
  if (const nlohmann::json att = attention_metadata(m); !att.empty()) md[kAttentionKey] = att.dump();
  nlohmann::json cj = config_to_json(m.cfg);
  md["vitkit.preprocess"] = cj["preprocess"].dump();
  cj.erase("preprocess");
  md["vitkit.config"] = cj.dump();
  md["vitkit.version"] = VITKIT_VERSION;
  return fc;
}

void save_model(const ViT& m, const std::string& path, DType dtype) {
  const FileContents fc = model_file_contents(m, false, dtype);
  std::vector<StEntry> entries;
  for (auto& [name, t] : fc.tensors) entries.push_back({name, t.dtype(), t.shape(), t.raw()});
  write_safetensors(path, entries, fc.metadata);
}

}  // namespace vitkit

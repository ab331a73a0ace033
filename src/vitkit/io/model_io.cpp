#include "vitkit/io/model_io.h"

#include <cmath>
#include <set>

#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/importer.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/init.h"

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

void load_weights(ViT& m, const TensorSource& src, bool strict) {
  const std::vector<SourceTensor> all = src.list();
  std::vector<std::string> missing;
  std::set<std::string> used;
  for (int i = 0; i < m.params.size(); ++i) {
    const ParamInfo& p = m.params.info(i);
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
    int64_t bad = 0;
    for (int64_t k = 0; k < p.numel; ++k) bad += !std::isfinite(dst[k]);
    if (bad) warn(cat(src.path(), ": tensor '", p.name, "' has ", bad, " NaN or Inf values"));
  }
  if (!missing.empty()) fail(src.path(), ": missing tensors for the model config: ", name_list(missing));
  std::vector<std::string> unused;
  for (auto& t : all)
    if (!used.count(t.name)) unused.push_back(t.name);
  if (!unused.empty()) {
    if (strict) fail(src.path(), ": unused tensors (--strict): ", name_list(unused));
    warn(cat(src.path(), ": ignoring ", unused.size(), " unused tensor(s): ", name_list(unused)));
  }
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
  auto m = std::make_unique<ViT>(resolve_config(&r, spec, opt));
  load_weights(*m, r, opt.strict);
  for (auto& [k, v] : r.metadata())
    if (k.rfind("vitkit.", 0) != 0) m->extra_metadata[k] = v;
  restore_compression_metadata(*m, r.metadata(), spec);  // vitkit.compression: rebuild LinearReprs
  return m;
}

void save_model(const ViT& m, const std::string& path, DType dtype) {
  check(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, "save_model: dtype ", dtype_name(dtype),
        " is not a float type");
  check(!m.packed_for_inference(), "save_model: ", path,
        ": the model's weights are packed for inference (oneDNN's layout); save the model as loaded");
  std::vector<StEntry> entries;
  std::vector<Tensor> converted;
  for (const ParamInfo& p : m.params.entries()) {
    const float* src = m.params.data() + p.offset;
    if (dtype == DType::F32) {
      entries.push_back({p.name, DType::F32, p.shape, src});
    } else {
      Tensor t = Tensor::empty(p.shape, dtype);
      convert_from_f32(dtype, src, t.raw(), p.numel);
      converted.push_back(t);
      entries.push_back({p.name, dtype, p.shape, converted.back().raw()});
    }
  }
  std::map<std::string, std::string> md;
  for (auto& [k, v] : m.extra_metadata.items()) md[k] = v.is_string() ? v.get<std::string>() : v.dump();
  if (auto log = compression_log(m); !log.empty()) md[kCompressionKey] = log.dump();
  nlohmann::json cj = config_to_json(m.cfg);
  md["vitkit.preprocess"] = cj["preprocess"].dump();
  cj.erase("preprocess");
  md["vitkit.config"] = cj.dump();
  md["vitkit.version"] = VITKIT_VERSION;
  write_safetensors(path, entries, md);
}

}  // namespace vitkit

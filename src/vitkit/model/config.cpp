#include "vitkit/model/config.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <toml++/toml.h>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/toml_text.h"

namespace vitkit {

const char* to_string(NormPlacement v) { return v == NormPlacement::Pre ? "pre" : "post"; }
const char* to_string(Pooling v) { return v == Pooling::Cls ? "cls" : "mean"; }
const char* to_string(Interpolation v) {
  return v == Interpolation::Nearest ? "nearest" : v == Interpolation::Bilinear ? "bilinear" : "bicubic";
}

void ViTConfig::validate() const {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) fail("invalid model config (", name, "): ", what);
  };
  need(image_size > 0 && image_size <= 16384, cat("image_size must be in 1..16384, got ", image_size));
  need(channels > 0 && channels <= 64, cat("channels must be in 1..64, got ", channels));
  need(patch > 0 && patch <= image_size, cat("patch must be in 1..image_size, got ", patch));
  need(image_size % patch == 0, cat("image_size ", image_size, " is not a multiple of patch ", patch));
  need(dim > 0 && dim <= 65536, cat("dim must be in 1..65536, got ", dim));
  need(depth >= 0 && depth <= 1024, cat("depth must be in 0..1024, got ", depth));
  need(heads > 0 && heads <= 4096, cat("heads must be in 1..4096, got ", heads));
  need(head_dim >= 0 && head_dim <= 65536, cat("head_dim must be in 0..65536 (0: dim / heads), got ", head_dim));
  need(!blocks.empty() || head_dim > 0 || dim % heads == 0,
       cat("heads must divide dim (dim ", dim, ", heads ", heads, ") unless head_dim is given"));
  need(mlp_dim > 0 && mlp_dim <= 1 << 20, cat("mlp_dim must be in 1..1048576, got ", mlp_dim));
  need(blocks.empty() || int(blocks.size()) == depth,
       cat("blocks gives ", blocks.size(), " block shapes for depth ", depth));
  for (size_t i = 0; i < blocks.size(); ++i) {
    const BlockShape& b = blocks[i];
    need(b.heads > 0 && b.heads <= 4096 && b.head_dim > 0 && b.head_dim <= 65536 && b.mlp_dim > 0 &&
             b.mlp_dim <= 1 << 20,
         cat("block ", i, " has heads ", b.heads, ", head_dim ", b.head_dim, ", mlp_dim ", b.mlp_dim,
             " (each must be positive)"));
  }
  need(classes > 0 && classes <= 1 << 20, cat("classes must be in 1..1048576, got ", classes));
  need(norm_eps > 0 && norm_eps < 1, cat("norm_eps must be in (0, 1), got ", norm_eps));
  need(class_token || pool == Pooling::Mean, "pool=cls needs class_token=true");
  need(dropout >= 0 && dropout < 1, cat("dropout must be in [0, 1), got ", dropout));
  need(pre.mean.size() == static_cast<size_t>(channels),
       cat("mean has ", pre.mean.size(), " values for ", channels, " channels"));
  need(pre.std.size() == static_cast<size_t>(channels),
       cat("std has ", pre.std.size(), " values for ", channels, " channels"));
  for (float s : pre.std) need(s > 0, "std values must be positive");
  need(pre.resize >= 0 && pre.crop >= 0, "resize and crop must be >= 0");
}

BlockShape ViTConfig::block(int i) const {
  if (!blocks.empty()) return blocks.at(size_t(i));
  return {heads, head_dim > 0 ? head_dim : dim / heads, mlp_dim};
}

int ViTConfig::max_heads() const {
  int v = 0;
  for (int i = 0; i < depth; ++i) v = std::max(v, block(i).heads);
  return v;
}

int ViTConfig::max_attn_dim() const {
  int v = 0;
  for (int i = 0; i < depth; ++i) v = std::max(v, block(i).attn_dim());
  return v;
}

int ViTConfig::max_mlp_dim() const {
  int v = 0;
  for (int i = 0; i < depth; ++i) v = std::max(v, block(i).mlp_dim);
  return v;
}

void ViTConfig::set_blocks(const std::vector<BlockShape>& b) {
  check(int(b.size()) == depth, "set_blocks: ", b.size(), " block shapes for depth ", depth);
  bool same = true;
  for (const BlockShape& x : b) same = same && x == b.front();
  if (!same) {
    blocks = b;
    return;
  }
  blocks.clear();
  if (b.empty()) return;
  heads = b.front().heads;
  mlp_dim = b.front().mlp_dim;
  head_dim = b.front().head_dim * heads == dim ? 0 : b.front().head_dim;
}

// "4x32x256:3x32x200": per-block shapes (heads x head_dim x mlp_dim).
static std::vector<BlockShape> parse_blocks(const std::string& key, const std::string& v) {
  std::vector<BlockShape> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ':')) {
    BlockShape b;
    char x1 = 0, x2 = 0;
    std::istringstream is(item);
    if (!(is >> b.heads >> x1 >> b.head_dim >> x2 >> b.mlp_dim) || x1 != 'x' || x2 != 'x' || is.peek() != EOF)
      throw UsageError(cat("config key '", key, "': '", item, "' is not HEADSxHEAD_DIMxMLP_DIM (e.g. 4x32x256)"));
    out.push_back(b);
  }
  if (out.empty()) throw UsageError(cat("config key '", key, "': expected HxDxM shapes separated by ':'"));
  return out;
}

static ViTConfig torchvision_vit(const std::string& name, int patch, int dim, int depth, int heads, int mlp,
                                 int image_size, int resize, Interpolation interp) {
  ViTConfig c;
  c.name = name;
  c.image_size = image_size;
  c.patch = patch;
  c.dim = dim;
  c.depth = depth;
  c.heads = heads;
  c.mlp_dim = mlp;
  c.classes = 1000;
  c.norm_eps = 1e-6f;
  c.pre.resize = resize;
  c.pre.crop = image_size;
  c.pre.interpolation = interp;
  return c;
}

// torchvision's builders and the preprocessing of their DEFAULT weights
// (IMAGENET1K_V1 for b_16, b_32, l_16; IMAGENET1K_SWAG_E2E_V1, at 518, for h_14,
// torchvision's only vit_h_14 weights).
static std::vector<ViTConfig> all_presets() {
  using I = Interpolation;
  return {
      torchvision_vit("vit_b_16", 16, 768, 12, 12, 3072, 224, 256, I::Bilinear),
      torchvision_vit("vit_b_32", 32, 768, 12, 12, 3072, 224, 256, I::Bilinear),
      torchvision_vit("vit_l_16", 16, 1024, 24, 16, 4096, 224, 242, I::Bilinear),
      torchvision_vit("vit_l_32", 32, 1024, 24, 16, 4096, 224, 256, I::Bilinear),
      torchvision_vit("vit_h_14", 14, 1280, 32, 16, 5120, 518, 518, I::Bicubic),
  };
}

std::vector<std::string> preset_names() {
  std::vector<std::string> v;
  for (auto& c : all_presets()) v.push_back(c.name);
  return v;
}

std::optional<ViTConfig> preset(const std::string& name) {
  for (auto& c : all_presets())
    if (c.name == name) return c;
  return std::nullopt;
}

static int parse_int(const std::string& key, const std::string& v) {
  try {
    size_t pos = 0;
    long long x = std::stoll(v, &pos);
    if (pos != v.size() || x < -2147483647LL || x > 2147483647LL) throw std::invalid_argument("");
    return static_cast<int>(x);
  } catch (const std::exception&) {
    throw UsageError(cat("config key '", key, "': expected an integer, got '", v, "'"));
  }
}

static float parse_float(const std::string& key, const std::string& v) {
  try {
    size_t pos = 0;
    float x = std::stof(v, &pos);
    if (pos != v.size() || !std::isfinite(x)) throw std::invalid_argument("");
    return x;
  } catch (const std::exception&) {
    throw UsageError(cat("config key '", key, "': expected a number, got '", v, "'"));
  }
}

static bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "true" || v == "1" || v == "on" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "off" || v == "no") return false;
  throw UsageError(cat("config key '", key, "': expected true or false, got '", v, "'"));
}

static std::vector<float> parse_floats(const std::string& key, const std::string& v) {
  std::vector<float> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ':')) out.push_back(parse_float(key, item));
  if (out.empty()) throw UsageError(cat("config key '", key, "': expected values separated by ':'"));
  return out;
}

template <typename E>
static E parse_enum(const std::string& key, const std::string& v,
                    std::initializer_list<std::pair<const char*, E>> options) {
  std::string names;
  for (auto& [n, e] : options) {
    if (v == n) return e;
    if (!names.empty()) names += '|';
    names += n;
  }
  throw UsageError(cat("config key '", key, "': expected ", names, ", got '", v, "'"));
}

void set_config_field(ViTConfig& c, const std::string& key, const std::string& value) {
  const std::string& v = value;
  if (key == "preset") {
    auto p = preset(v);
    if (!p) throw UsageError(cat("unknown preset '", v, "'"));
    c = *p;
  } else if (key == "name") c.name = v;
  else if (key == "image_size") c.image_size = parse_int(key, v);
  else if (key == "channels") c.channels = parse_int(key, v);
  else if (key == "patch" || key == "patch_size") c.patch = parse_int(key, v);
  else if (key == "dim" || key == "hidden_dim") c.dim = parse_int(key, v);
  else if (key == "depth" || key == "layers") c.depth = parse_int(key, v);
  else if (key == "heads") c.heads = parse_int(key, v);
  else if (key == "head_dim" || key == "dim_head") c.head_dim = parse_int(key, v);
  else if (key == "mlp_dim") c.mlp_dim = parse_int(key, v);
  else if (key == "blocks") c.blocks = parse_blocks(key, v);
  else if (key == "classes" || key == "num_classes") c.classes = parse_int(key, v);
  else if (key == "norm_eps") c.norm_eps = parse_float(key, v);
  else if (key == "norm")
    c.norm = parse_enum<NormPlacement>(key, v, {{"pre", NormPlacement::Pre}, {"post", NormPlacement::Post}});
  else if (key == "act" || key == "activation")
    c.act = parse_enum<Activation>(
        key, v, {{"gelu", Activation::Gelu}, {"gelu_tanh", Activation::GeluTanh}, {"relu", Activation::Relu}});
  else if (key == "pool")
    c.pool = parse_enum<Pooling>(key, v, {{"cls", Pooling::Cls}, {"mean", Pooling::Mean}});
  else if (key == "class_token") c.class_token = parse_bool(key, v);
  else if (key == "final_norm") c.final_norm = parse_bool(key, v);
  else if (key == "qkv_bias") c.qkv_bias = parse_bool(key, v);
  else if (key == "dropout") c.dropout = parse_float(key, v);
  else if (key == "mean") c.pre.mean = parse_floats(key, v);
  else if (key == "std") c.pre.std = parse_floats(key, v);
  else if (key == "resize") c.pre.resize = parse_int(key, v);
  else if (key == "crop") c.pre.crop = parse_int(key, v);
  else if (key == "interpolation")
    c.pre.interpolation = parse_enum<Interpolation>(
        key, v,
        {{"nearest", Interpolation::Nearest}, {"bilinear", Interpolation::Bilinear}, {"bicubic", Interpolation::Bicubic}});
  else
    throw UsageError(cat("unknown config key '", key,
                         "' (known: preset, image_size, channels, patch, dim, depth, heads, head_dim, mlp_dim, blocks, classes, "
                         "norm_eps, norm, act, pool, class_token, final_norm, qkv_bias, dropout, mean, std, "
                         "resize, crop, interpolation)"));
}

// A config that changes the channel count without giving mean and std gets
// mean 0.5, std 0.5 per channel (the ImageNet statistics only fit RGB).
static void fit_normalisation(ViTConfig& c, const std::vector<std::string>& keys) {
  auto given = [&](const char* k) { return std::find(keys.begin(), keys.end(), k) != keys.end(); };
  if (!given("mean") && c.pre.mean.size() != size_t(c.channels)) c.pre.mean.assign(c.channels, 0.5f);
  if (!given("std") && c.pre.std.size() != size_t(c.channels)) c.pre.std.assign(c.channels, 0.5f);
}

std::vector<std::string> apply_config_spec(ViTConfig& c, const std::string& spec) {
  std::vector<std::string> keys = apply_config_spec_raw(c, spec);
  fit_normalisation(c, keys);
  return keys;
}

std::vector<std::string> apply_config_spec_raw(ViTConfig& c, const std::string& spec) {
  std::vector<std::string> keys;
  bool is_file = spec.size() > 5 && spec.substr(spec.size() - 5) == ".toml";
  if (is_file) {
    if (!file_exists(spec)) throw UsageError(cat("config file ", spec, " does not exist"));
    toml::table tbl;
    try {
      tbl = toml::parse_file(spec);
    } catch (const toml::parse_error& e) {
      throw UsageError(cat(spec, ":", e.source().begin.line, ": TOML error: ", e.description()));
    }
    const toml::table* t = &tbl;
    if (auto m = tbl["model"].as_table()) t = m;
    std::vector<std::pair<std::string, std::string>> kv;
    for (auto& [k, v] : *t) {
      if (v.is_table()) continue;
      kv.emplace_back(std::string(k.str()), toml_text(v, std::string(k.str()), spec));
    }
    try {
      return apply_config_pairs_raw(c, kv);
    } catch (const UsageError& e) {
      throw UsageError(cat(spec, ": ", e.what()));
    }
  }
  std::stringstream ss(spec);
  std::string item;
  std::vector<std::pair<std::string, std::string>> kv;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError(cat("--config: expected key=value, got '", item, "'"));
    kv.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  return apply_config_pairs_raw(c, kv);
}

std::vector<std::string> apply_config_pairs_raw(ViTConfig& c,
                                                const std::vector<std::pair<std::string, std::string>>& kv) {
  std::vector<std::string> keys;
  for (auto& [k, v] : kv)
    if (k == "preset") set_config_field(c, k, v), keys.push_back(k);
  for (auto& [k, v] : kv)
    if (k != "preset") set_config_field(c, k, v), keys.push_back(k);
  return keys;
}

std::vector<std::string> apply_config_pairs(ViTConfig& c, const std::vector<std::pair<std::string, std::string>>& kv) {
  std::vector<std::string> keys = apply_config_pairs_raw(c, kv);
  fit_normalisation(c, keys);
  return keys;
}

nlohmann::json config_to_json(const ViTConfig& c) {
  nlohmann::json j;
  j["name"] = c.name;
  j["image_size"] = c.image_size;
  j["channels"] = c.channels;
  j["patch"] = c.patch;
  j["dim"] = c.dim;
  j["depth"] = c.depth;
  j["heads"] = c.heads;
  if (c.head_dim > 0 && c.head_dim * c.heads != c.dim) j["head_dim"] = c.head_dim;
  j["mlp_dim"] = c.mlp_dim;
  if (!c.blocks.empty()) {
    nlohmann::json b = nlohmann::json::array();
    for (const BlockShape& x : c.blocks) b.push_back({{"heads", x.heads}, {"head_dim", x.head_dim}, {"mlp_dim", x.mlp_dim}});
    j["blocks"] = b;
  }
  j["classes"] = c.classes;
  j["norm_eps"] = std::stod(cat(c.norm_eps));  // the float as written, not its double expansion
  j["norm"] = to_string(c.norm);
  j["act"] = to_string(c.act);
  j["pool"] = to_string(c.pool);
  j["class_token"] = c.class_token;
  j["final_norm"] = c.final_norm;
  j["qkv_bias"] = c.qkv_bias;
  j["dropout"] = c.dropout;
  j["preprocess"] = {{"mean", c.pre.mean},
                     {"std", c.pre.std},
                     {"resize", c.pre.resize},
                     {"crop", c.pre.crop},
                     {"interpolation", to_string(c.pre.interpolation)}};
  return j;
}

static std::string json_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    std::ostringstream os;
    os.precision(9);
    os << v.get<double>();
    return os.str();
  }
  if (v.is_array()) {
    std::string out;
    for (auto& e : v) {
      if (!out.empty()) out += ':';
      out += json_text(e);
    }
    return out;
  }
  fail("unsupported JSON value ", v.dump());
}

ViTConfig config_from_json(const nlohmann::json& j) {
  if (!j.is_object()) fail("model config is not a JSON object");
  ViTConfig c;
  std::vector<std::string> keys;
  try {
    for (auto& [k, v] : j.items()) {
      if (k == "preprocess") {
        if (!v.is_object()) fail("preprocess is not an object");
        for (auto& [pk, pv] : v.items()) set_config_field(c, pk, json_text(pv)), keys.push_back(pk);
      } else if (k == "blocks" && v.is_array()) {
        c.blocks.clear();
        for (auto& b : v) {
          if (!b.is_object() || !b.contains("heads") || !b.contains("head_dim") || !b.contains("mlp_dim") ||
              !b["heads"].is_number_integer() || !b["head_dim"].is_number_integer() ||
              !b["mlp_dim"].is_number_integer())
            fail("blocks: each entry must be {\"heads\": int, \"head_dim\": int, \"mlp_dim\": int}, got ", b.dump());
          c.blocks.push_back({b["heads"].get<int>(), b["head_dim"].get<int>(), b["mlp_dim"].get<int>()});
        }
      } else {
        set_config_field(c, k, json_text(v));
        keys.push_back(k);
      }
    }
  } catch (const UsageError& e) {
    fail("model config: ", e.what());
  }
  fit_normalisation(c, keys);
  c.validate();
  return c;
}

}  // namespace vitkit

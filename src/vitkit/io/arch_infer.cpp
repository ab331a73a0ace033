#include "vitkit/io/arch_infer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "vitkit/core/error.h"
#include "vitkit/io/unpickler.h"

namespace vitkit {

namespace {

const std::string kLayer = "encoder.layers.encoder_layer_";

// The block index of "encoder.layers.encoder_layer_N.<rest>", or -1.
int block_of(const std::string& name) {
  if (name.rfind(kLayer, 0) != 0) return -1;
  size_t i = kLayer.size(), j = i;
  while (j < name.size() && j - i < 6 && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j >= name.size() || name[j] != '.') return -1;
  return std::stoi(name.substr(i, j - i));
}

int to_int(int64_t v, const std::string& what) {
  if (v <= 0 || v > (1 << 24)) fail(what, ": dimension ", v, " is out of range");
  return static_cast<int>(v);
}

// Standard ViT sizes, for a hint when heads is missing.
std::string heads_hint(const ViTConfig& c) {
  struct Std {
    const char* name;
    int dim, depth, heads;
  };
  static const Std sizes[] = {{"ViT-Ti", 192, 12, 3}, {"ViT-S", 384, 12, 6}, {"ViT-B", 768, 12, 12},
                              {"ViT-L", 1024, 24, 16}, {"ViT-H", 1280, 32, 16}};
  for (auto& s : sizes)
    if (c.dim == s.dim && c.depth == s.depth)
      return cat(" (dim ", s.dim, " and depth ", s.depth, " are ", s.name, "'s, which uses heads=", s.heads, ")");
  return "";
}

}  // namespace

InferredArch infer_arch(const std::vector<SourceTensor>& tensors, const std::string& path) {
  InferredArch r;
  ViTConfig& c = r.cfg;
  std::map<std::string, const SourceTensor*> by;
  for (auto& t : tensors) by[t.name] = &t;
  auto get = [&](const std::string& n) -> const SourceTensor* {
    auto it = by.find(n);
    return it == by.end() ? nullptr : it->second;
  };
  auto where = [&](const SourceTensor* t) { return cat(path, ": tensor '", printable(t->name), "'"); };
  auto known = [&](const char* k) { r.keys.push_back(k); };

  for (auto& t : tensors)
    if (t.name.find(".ls1.gamma") != std::string::npos || t.name.find(".ls2.gamma") != std::string::npos)
      fail(path, ": tensor '", printable(t.name), "' is a LayerScale (timm's init_values), which vitkit's ViT "
                 "does not have");
  if (get("fc_norm.weight"))
    fail(path, ": a norm after pooling (fc_norm.weight: timm's global_pool='avg') is not supported; vitkit's "
               "final norm is applied to every token before pooling");

  if (const SourceTensor* w = get("conv_proj.weight")) {
    if (w->shape.size() != 4 || w->shape[2] != w->shape[3])
      fail(where(w), ": shape ", shape_str(w->shape), ", expected (dim, channels, patch, patch)");
    c.dim = to_int(w->shape[0], where(w));
    c.channels = to_int(w->shape[1], where(w));
    c.patch = to_int(w->shape[2], where(w));
    known("dim"), known("channels"), known("patch");
  } else {
    r.unknown.push_back("dim, channels, patch (no conv_proj.weight)");
  }

  c.class_token = get("class_token") != nullptr;
  known("class_token");
  c.final_norm = get("encoder.ln.weight") != nullptr;
  known("final_norm");

  int depth = 0;
  for (auto& t : tensors) depth = std::max(depth, block_of(t.name) + 1);
  if (depth > 1024) fail(path, ": encoder block ", depth - 1, " is beyond the 1024 vitkit supports");
  if (depth > 0) {
    c.depth = depth;
    known("depth");
    c.qkv_bias = get(kLayer + "0.self_attention.in_proj_bias") != nullptr;
    known("qkv_bias");
    if (const SourceTensor* w = get(kLayer + "0.mlp.0.weight")) {
      if (w->shape.size() != 2) fail(where(w), ": shape ", shape_str(w->shape), ", expected (mlp_dim, dim)");
      c.mlp_dim = to_int(w->shape[0], where(w));
      known("mlp_dim");
    } else {
      r.unknown.push_back("mlp_dim (no " + kLayer + "0.mlp.0.weight)");
    }
  } else {
    r.unknown.push_back("depth, mlp_dim (no " + kLayer + "N.* tensors: is --arch or the key map right?)");
  }

  if (const SourceTensor* w = get("heads.head.weight")) {
    if (w->shape.size() != 2) fail(where(w), ": shape ", shape_str(w->shape), ", expected (classes, dim)");
    c.classes = to_int(w->shape[0], where(w));
    known("classes");
  } else {
    r.unknown.push_back("classes (no heads.head.weight)");
  }

  const SourceTensor* pos = get("encoder.pos_embedding");
  if (pos && std::find(r.keys.begin(), r.keys.end(), "patch") != r.keys.end()) {
    if (pos->shape.size() != 3 || pos->shape[0] != 1)
      fail(where(pos), ": shape ", shape_str(pos->shape), ", expected (1, tokens, dim)");
    const int64_t T = pos->shape[1], P = T - (c.class_token ? 1 : 0);
    const int64_t g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(P, 0)))));
    if (P <= 0 || g * g != P) {
      const int64_t g2 = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(T))));
      if (c.class_token && g2 * g2 == T)
        fail(where(pos), ": ", T, " positions for ", T, " patches and a class token: a position embedding without "
                         "the class token's position (timm's no_embed_class) is not supported");
      fail(where(pos), ": ", T, " positions are not a square grid of patches", c.class_token ? " plus a class token" : "");
    }
    c.image_size = to_int(g * c.patch, where(pos));
    known("image_size");
  } else if (!pos) {
    r.unknown.push_back("image_size (no encoder.pos_embedding)");
  } else {
    r.unknown.push_back("image_size (the patch size is unknown)");
  }
  return r;
}

ViTConfig resolve_arch(const std::vector<SourceTensor>& tensors, const std::string& path, const Layout& layout,
                       const std::string& preset_name, const std::string& config, const ViTConfig* base) {
  ViTConfig c;
  std::set<std::string> known;
  if (base || !preset_name.empty()) {
    auto p = base ? std::optional<ViTConfig>(*base) : preset(preset_name);
    if (!p) throw UsageError(cat("--preset: unknown preset '", preset_name, "'"));
    c = *p;
    for (const char* k : {"image_size", "channels", "patch", "dim", "depth", "heads", "mlp_dim", "classes", "norm",
                          "act", "pool"})
      known.insert(k);
  }
  if (!base)
    for (auto& k : apply_config_spec(c, layout.defaults)) known.insert(k);

  const InferredArch inf = infer_arch(tensors, path);
  const ViTConfig& i = inf.cfg;
  for (const std::string& k : inf.keys) {
    known.insert(k);
    if (k == "dim") c.dim = i.dim;
    else if (k == "channels") c.channels = i.channels;
    else if (k == "patch") c.patch = i.patch;
    else if (k == "depth") c.depth = i.depth;
    else if (k == "mlp_dim") c.mlp_dim = i.mlp_dim;
    else if (k == "classes") c.classes = i.classes;
    else if (k == "image_size") c.image_size = i.image_size;
    else if (k == "class_token") c.class_token = i.class_token;
    else if (k == "final_norm") c.final_norm = i.final_norm;
    else if (k == "qkv_bias") c.qkv_bias = i.qkv_bias;
  }
  if ((base || !preset_name.empty()) && c.pre.crop != 0 && c.pre.crop != c.image_size) c.pre.crop = c.image_size;

  std::set<std::string> given;
  if (!config.empty())
    for (auto& k : apply_config_spec(c, config)) given.insert(k), known.insert(k);
  if (given.count("preset"))
    for (const char* k : {"heads", "norm", "act", "pool"}) known.insert(k);
  for (auto [k, alias] : std::initializer_list<std::pair<const char*, const char*>>{
           {"patch", "patch_size"}, {"dim", "hidden_dim"}, {"depth", "layers"}, {"classes", "num_classes"},
           {"act", "activation"}})
    if (known.count(alias)) known.insert(k);

  // Preprocessing for another channel count than the defaults' three.
  if (c.pre.mean.size() != static_cast<size_t>(c.channels) && !given.count("mean"))
    c.pre.mean.assign(static_cast<size_t>(c.channels), 0.f);
  if (c.pre.std.size() != static_cast<size_t>(c.channels) && !given.count("std"))
    c.pre.std.assign(static_cast<size_t>(c.channels), 1.f);

  // What is still missing: core sizes the shapes did not give, and the keys the layout requires.
  std::vector<std::string> missing;
  for (const std::string& u : inf.unknown) {
    std::string keys = u.substr(0, u.find(" ("));
    bool all_given = true;
    size_t b = 0;
    while (b < keys.size()) {
      size_t e = keys.find(", ", b);
      if (e == std::string::npos) e = keys.size();
      all_given = all_given && known.count(keys.substr(b, e - b));
      b = e + 2;
    }
    if (!all_given) missing.push_back(u);
  }
  static const std::map<std::string, std::string> how = {
      {"heads", "heads=N"}, {"norm", "norm=pre|post"}, {"act", "act=gelu|gelu_tanh|relu"}, {"pool", "pool=cls|mean"}};
  std::string example;
  for (const std::string& k : layout.required)
    if (!known.count(k)) {
      missing.push_back(k == "heads" ? "heads" + heads_hint(c) : k);
      example += (example.empty() ? "" : ",") + (how.count(k) ? how.at(k) : k + "=...");
    }
  if (!missing.empty()) {
    std::string list;
    for (auto& m : missing) list += (list.empty() ? "" : "; ") + m;
    fail(path, ": the tensors do not tell the architecture's ", list, ". Give ",
         missing.size() == 1 ? "it" : "them", " with --config ", example.empty() ? "key=value,..." : example,
         " (or a TOML file), or --preset NAME");
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  return c;
}

}  // namespace vitkit

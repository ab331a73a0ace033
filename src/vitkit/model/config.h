// ViTConfig: the architecture of a Vision Transformer and the preprocessing its
// inputs need. Presets give torchvision's models; key=value lists and TOML files
// override fields.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "vitkit/kernels/activations.h"

namespace vitkit {

enum class NormPlacement { Pre, Post };        // pre: torchvision/timm; post: nn.TransformerEncoderLayer
enum class Pooling { Cls, Mean };              // mean: average of the patch tokens (timm's "avg")
enum class Interpolation { Nearest, Bilinear, Bicubic };

struct Preprocess {
  std::vector<float> mean{0.485f, 0.456f, 0.406f};
  std::vector<float> std{0.229f, 0.224f, 0.225f};
  int resize = 0;  // shorter side resized to this (0: resize straight to the crop size when sizes differ)
  int crop = 0;    // center crop (0: image_size)
  Interpolation interpolation = Interpolation::Bilinear;
};

struct ViTConfig {
  std::string name = "custom";
  int image_size = 224;
  int channels = 3;
  int patch = 16;
  int dim = 768;
  int depth = 12;
  int heads = 12;
  int mlp_dim = 3072;
  int classes = 1000;
  float norm_eps = 1e-6f;
  NormPlacement norm = NormPlacement::Pre;
  Activation act = Activation::Gelu;
  Pooling pool = Pooling::Cls;
  bool class_token = true;
  bool final_norm = true;
  bool qkv_bias = true;
  float dropout = 0.f;  // training only: after embeddings, attention output and in the MLP
  Preprocess pre;

  int grid() const { return image_size / patch; }
  int patches() const { return grid() * grid(); }
  int tokens() const { return patches() + (class_token ? 1 : 0); }
  int head_dim() const { return dim / heads; }
  int patch_k() const { return channels * patch * patch; }  // inputs of one patch
  // Throws Error naming the first inconsistent field.
  void validate() const;
};

// Names of the presets ("vit_b_16", ...).
std::vector<std::string> preset_names();
// The preset of that name, or nullopt.
std::optional<ViTConfig> preset(const std::string& name);

// Sets one field from its text form ("dim", "192"; "mean", "0.5:0.5:0.5";
// "norm", "post"). Throws UsageError naming the key on an unknown key or bad value.
void set_config_field(ViTConfig& c, const std::string& key, const std::string& value);
// Applies "key=value,key=value" or a TOML file (when spec names an existing .toml
// file; a [model] table is used when present). "preset=vit_b_16" starts from a preset.
// Returns the keys that were set.
// A changed channel count without mean/std gets 0.5 per channel for both.
std::vector<std::string> apply_config_spec(ViTConfig& c, const std::string& spec);
// The same without that adjustment.
std::vector<std::string> apply_config_spec_raw(ViTConfig& c, const std::string& spec);
// Applies (key, text value) pairs, "preset" first; the _raw form does not adjust mean/std.
std::vector<std::string> apply_config_pairs(ViTConfig& c, const std::vector<std::pair<std::string, std::string>>& kv);
std::vector<std::string> apply_config_pairs_raw(ViTConfig& c,
                                                const std::vector<std::pair<std::string, std::string>>& kv);

nlohmann::json config_to_json(const ViTConfig& c);
ViTConfig config_from_json(const nlohmann::json& j);  // throws Error on bad fields

const char* to_string(NormPlacement v);
const char* to_string(Pooling v);
const char* to_string(Interpolation v);

}  // namespace vitkit

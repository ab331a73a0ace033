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

// One encoder block's attention and MLP widths: qkv is 3 x heads x head_dim
// wide (which need not be dim, as vit-pytorch's dim_head), the MLP mlp_dim.
struct BlockShape {
  int heads = 0, head_dim = 0, mlp_dim = 0;
  int attn_dim() const { return heads * head_dim; }  // width of q, k, v and of out_proj's input
  bool operator==(const BlockShape&) const = default;
};

struct ViTConfig {
  std::string name = "custom";
  int image_size = 224;
  int channels = 3;
  int patch = 16;
  int dim = 768;
  int depth = 12;
  int heads = 12;
  int head_dim = 0;  // 0: dim / heads
  int mlp_dim = 3072;
  // Per block, when the blocks differ (pruned heads or neurons, imports);
  // empty: every block is (heads, head_dim, mlp_dim). set_blocks() keeps it
  // empty for uniform blocks, so uniform files and presets stay as they are.
  std::vector<BlockShape> blocks;
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
  // Block i's shape; the largest heads, attention width and MLP width of any block.
  BlockShape block(int i) const;
  int max_heads() const;
  int max_attn_dim() const;
  int max_mlp_dim() const;
  bool uniform() const { return blocks.empty(); }
  // Sets per-block shapes (depth of them); uniform ones collapse into heads, head_dim, mlp_dim.
  void set_blocks(const std::vector<BlockShape>& b);
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

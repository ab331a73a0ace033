#include "vitkit/model/cost.h"

namespace vitkit {

std::vector<LayerCost> layer_costs(const ViTConfig& c) {
  const int64_t P = c.patches(), T = c.tokens(), D = c.dim, M = c.mlp_dim, K = c.patch_k();
  std::vector<LayerCost> v;
  v.push_back({"conv_proj", "patch", -1, P * K * D, K * D + D});
  for (int i = 0; i < c.depth; ++i) {
    std::string p = "encoder_layer_" + std::to_string(i) + ".";
    v.push_back({p + "qkv", "qkv", i, T * D * 3 * D, 3 * D * D + (c.qkv_bias ? 3 * D : 0)});
    v.push_back({p + "attn_scores", "attn_scores", i, T * T * D, 0});
    v.push_back({p + "attn_values", "attn_values", i, T * T * D, 0});
    v.push_back({p + "out_proj", "out_proj", i, T * D * D, D * D + D});
    v.push_back({p + "fc1", "fc1", i, T * D * M, D * M + M});
    v.push_back({p + "fc2", "fc2", i, T * M * D, M * D + D});
  }
  v.push_back({"head", "head", -1, D * c.classes, D * c.classes + c.classes});
  return v;
}

int64_t total_macs(const ViTConfig& c) {
  int64_t n = 0;
  for (auto& l : layer_costs(c)) n += l.macs;
  return n;
}

int64_t parameter_count(const ViTConfig& c) {
  const int64_t D = c.dim;
  int64_t n = (c.class_token ? D : 0) + int64_t(c.tokens()) * D + 4 * D * c.depth + (c.final_norm ? 2 * D : 0);
  for (auto& l : layer_costs(c)) n += l.params;
  return n;
}

}  // namespace vitkit

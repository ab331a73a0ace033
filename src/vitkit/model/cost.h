// Multiply-accumulates per layer of one image's forward pass.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitkit/model/config.h"

namespace vitkit {

struct LayerCost {
  std::string name;  // "conv_proj", "encoder_layer_0.qkv", ...
  std::string kind;  // patch, qkv, attn_scores (q.k^T), attn_values (attention.v), out_proj, fc1, fc2, head
  int block = -1;
  int64_t macs = 0;    // per image
  int64_t params = 0;  // weights and biases of the layer (0 for the attention products)
};

// Every matmul of the forward pass in order. Norms, softmax and activations
// are not multiply-accumulates and are not listed.
std::vector<LayerCost> layer_costs(const ViTConfig& c);
int64_t total_macs(const ViTConfig& c);
// Total parameters of the architecture.
int64_t parameter_count(const ViTConfig& c);

}  // namespace vitkit

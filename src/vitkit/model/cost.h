// What a model costs per image: multiply-accumulates, parameters and bytes of
// each layer, counted from the model (each linear layer's representation
// counts its own: a low-rank layer has fewer parameters and MACs, an int8 one
// fewer bytes), or for a config from the dense f32 model it describes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitkit/model/config.h"
#include "vitkit/model/vit.h"

namespace vitkit {

struct LayerCost {
  std::string name;  // "conv_proj", "encoder_layer_0.qkv", ...
  std::string kind;  // patch, qkv, attn_scores (q.k^T), attn_values (attention.v), out_proj, fc1, fc2, head
  int block = -1;
  int64_t macs = 0;    // per image
  int64_t params = 0;  // weights and biases of the layer (0 for the attention products)
  int64_t bytes = 0;   // in a model file (0 for the attention products)
  std::string repr;    // the linear layer's representation; attention products: "" (f32) or "int8" (integer products)
};

// Every matmul of the forward pass in order. Norms, softmax and activations
// are not multiply-accumulates and are not listed.
std::vector<LayerCost> layer_costs(const ViT& m);
// The same for the dense f32 model of a config (no weights needed).
std::vector<LayerCost> layer_costs(const ViTConfig& c);

struct ModelCost {
  int64_t macs = 0;        // per image, every matmul
  int64_t params = 0;      // every parameter: the layers' and the embeddings, norms and class token
  int64_t bytes = 0;       // of all of them as a model file stores them
  int64_t other_params = 0;  // embeddings, norms, class token (f32)
};
ModelCost model_cost(const ViT& m);
ModelCost model_cost(const ViTConfig& c);

}  // namespace vitkit

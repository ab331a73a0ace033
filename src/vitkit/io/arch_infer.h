// The architecture of a checkpoint without vitkit metadata, from its tensor
// shapes (torchvision names, after any renaming):
//   conv_proj.weight (dim, channels, patch, patch)  -> dim, channels, patch
//   encoder.layers.encoder_layer_N.*                -> depth (N + 1 of the last)
//   encoder_layer_0.mlp.0.weight (mlp_dim, dim)     -> mlp_dim
//   encoder_layer_0.self_attention.in_proj_bias     -> qkv_bias (present or not)
//   heads.head.weight (classes, dim)                -> classes
//   class_token, encoder.ln.weight                  -> class_token, final_norm (present or not)
//   encoder.pos_embedding (1, tokens, dim)          -> image_size = sqrt(tokens - class token) * patch
// Heads, norm placement, activation and pooling are not in the shapes: the
// layout fixes some of them (torchvision, timm and hf ViTs are pre-norm, GELU,
// class-token pooled), --preset or --config gives the rest.
#pragma once
#include <string>
#include <vector>

#include "vitkit/io/layouts.h"
#include "vitkit/io/tensor_source.h"
#include "vitkit/model/config.h"

namespace vitkit {

struct InferredArch {
  ViTConfig cfg;                    // the inferred fields set, the others default
  std::vector<std::string> keys;    // config keys inferred ("dim", "depth", ...)
  std::vector<std::string> unknown;  // core keys not inferred, each with the reason
};

// Throws Error naming the file and tensor when a shape contradicts the layout
// (a non-square patch, a position embedding that is not a square grid, ...).
InferredArch infer_arch(const std::vector<SourceTensor>& tensors, const std::string& path);

// The full architecture: a base (the file's own vitkit metadata, else the
// preset, if any), then the layout's defaults, then what the shapes tell, then
// config (key=value,... or a TOML file). Throws Error listing every key still
// missing (heads, norm, act, pool, or a core size the shapes did not give), with
// how to pass them; validates the result.
ViTConfig resolve_arch(const std::vector<SourceTensor>& tensors, const std::string& path, const Layout& layout,
                       const std::string& preset, const std::string& config, const ViTConfig* base = nullptr);

}  // namespace vitkit

// Loading and saving models: vitkit safetensors files (config in the metadata),
// torchvision-named files with the architecture given, and presets.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "vitkit/model/vit.h"

namespace vitkit {

struct LoadOptions {
  std::string preset;  // --preset NAME: the architecture for a file without vitkit metadata
  std::string config;  // --config key=value,... or FILE.toml: overrides on top
  bool strict = false;  // unused tensors are errors (they are warnings otherwise)
  uint64_t seed = 0;    // weights of a bare preset (random, torchvision's init)
  std::string arch;    // --arch LAYOUT: tensor names of a foreign checkpoint (io/layouts.h)
  std::string map;     // --map FILE: key map rules, tried before the layout's (io/keymap.h)
};

// spec: a .safetensors file, a .pth/.pt (torch.save), or a preset name (random
// weights, for info/bench). A .pth, a file without vitkit metadata, or --arch /
// --map go through io/importer.h (renaming and architecture inference).
std::unique_ptr<ViT> load_model(const std::string& spec, const LoadOptions& opt = {});
// The architecture alone (no weights read): for `info` on a file or a preset.
ViTConfig load_config(const std::string& spec, const LoadOptions& opt = {});
// True when spec names a preset rather than a file.
bool is_preset_spec(const std::string& spec);

// Writes the model as safetensors with torchvision names and vitkit metadata.
// dtype: F32, F16 or BF16 for the float parameters.
void save_model(const ViT& m, const std::string& path, DType dtype = DType::F32);

// Fills the parameters from a file's torchvision-named float tensors (any float
// dtype), checking names and shapes; missing tensors are errors, unused ones
// warnings (errors when strict). Warns on NaN/Inf, naming the tensor.
class TensorSource;
void load_weights(ViT& m, const TensorSource& src, bool strict);

}  // namespace vitkit

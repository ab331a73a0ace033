// Loading and saving models: vitkit safetensors files (config in the metadata),
// torchvision-named files with the architecture given, and presets.
#pragma once
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <string>
#include <vector>

#include "vitkit/model/vit.h"

namespace vitkit {

struct LoadOptions {
  std::string preset;  // --preset NAME: the architecture for a file without vitkit metadata
  std::string config;  // --config key=value,... or FILE.toml: overrides on top
  bool strict = false;  // unused tensors are errors (they are warnings otherwise)
  bool quiet_unused = false;  // unused tensors are neither (a training checkpoint's optimizer state)
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

// Metadata keys of vitkit files besides vitkit.config / vitkit.preprocess /
// vitkit.version: the per-layer representations ({"LAYER": {"repr": KIND,
// ...its meta}}, for layers that are not dense f32) and the compression log
// (the passes that made the model, a JSON list of their records).
inline constexpr const char* kLayersKey = "vitkit.layers";
// Blocks whose attention runs on integer products: {"BLOCK": {"bits", "pbits"}}.
inline constexpr const char* kAttentionKey = "vitkit.attention";
inline constexpr const char* kCompressionKey = "vitkit.compression";

// Writes the model as safetensors with torchvision names and vitkit metadata:
// each layer's representation's stored tensors (typed: BF16, F16, I8, ...),
// the other parameters in f32. dtype F16 or BF16 stores the f32 tensors in that
// type instead (a smaller file that loads back as f32; `import --dtype`).
void save_model(const ViT& m, const std::string& path, DType dtype = DType::F32);

// What save_model writes (tensors in file order, metadata); with checkpoint,
// the training-only tensors too (latent weights), for a trainer's checkpoint
// to which it adds its optimizer and train state.
struct FileContents {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;
};
FileContents model_file_contents(const ViT& m, bool checkpoint, DType dtype = DType::F32);

// m's vitkit.layers metadata: {"LAYER": {"repr": KIND, ...}} for every layer
// that is not dense f32 (a packed layer is stored as f32).
nlohmann::json layers_metadata(const ViT& m);
// The blocks' attention quantization as kAttentionKey holds it ({} when none),
// and read back into m (Error naming the file, the block and the field).
nlohmann::json attention_metadata(const ViT& m);
void read_attention(ViT& m, const std::map<std::string, std::string>& md, const std::string& path);

// The compression log of m (a JSON list, empty when none).
nlohmann::json compression_log(const ViT& m);
// Appends a pass's record to m's compression log.
void append_compression_log(ViT& m, const nlohmann::json& record);

// Fills the parameters from a file's torchvision-named float tensors (any float
// dtype), checking names and shapes; missing tensors are errors, unused ones
// warnings (errors when strict). Warns on NaN/Inf, naming the tensor. Tensors
// named in `loaded` were read already (by the layers' representations);
// `missing` are names found missing already, reported with the others.
class TensorSource;
void load_weights(ViT& m, const TensorSource& src, bool strict, const std::set<std::string>& loaded = {},
                  std::vector<std::string> missing = {}, bool quiet_unused = false);

}  // namespace vitkit

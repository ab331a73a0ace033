// Checkpoint layouts: how other code names a ViT's tensors, as key maps onto
// vitkit's torchvision names, plus the architecture settings each model class
// fixes. A RemappedSource presents another TensorSource under the new names,
// packing separate q, k, v projections, without copying anything up front.
//
// Presets (--arch):
//   torchvision    torchvision.models.VisionTransformer (vitkit's own names)
//   timm           timm's VisionTransformer: patch_embed.proj, cls_token, pos_embed,
//                  blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head
//   hf             transformers' ViTForImageClassification: vit.embeddings.*,
//                  vit.encoder.layer.N.attention.attention.{query,key,value} (packed),
//                  attention.output.dense, layernorm_before/after, intermediate.dense,
//                  output.dense, vit.layernorm, classifier
//   torch-encoder  a model built on nn.TransformerEncoder(Layer): any prefix before
//                  layers.N.{self_attn.in_proj_*, self_attn.out_proj, linear1, linear2,
//                  norm1, norm2}; the encoder's final norm as <prefix>.norm or norm.
//                  The rest of the model must use one of these names (else use --map):
//                    patch embedding (a Conv2d, kernel = stride = patch):
//                      patch_embed, patch_embed.proj, conv_proj, patch_embedding
//                    class token (1, 1, D): cls_token, class_token
//                    position embedding (1, T, D): pos_embed, pos_embedding, encoder.pos_embedding
//                    classifier (a Linear): head, heads.head, fc, classifier
//                  Norm placement, activation and pooling are not in the weights:
//                  give norm=, act= and pool= with --config.
//   custom         no rules: with --map FILE alone, the map does all the renaming.
// With --map FILE its rules are tried before the preset's. When every tensor name
// starts with "module." (DataParallel/DDP), the prefix is removed first.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "vitkit/io/keymap.h"
#include "vitkit/io/tensor_source.h"

namespace vitkit {

struct Layout {
  std::string name;
  std::string rules;     // key map text (keymap.h)
  std::string defaults;  // config "key=value,..." the model class fixes (norm placement, act, eps, ...)
  std::vector<std::string> required;  // config keys a user must give (beyond what shapes tell)
};

std::vector<std::string> layout_names();
// Throws UsageError listing the presets for an unknown name.
const Layout& layout(const std::string& name);

// The key map for a layout: the rules of map_file (if any) first, then the preset's.
KeyMap layout_keymap(const Layout& l, const std::string& map_file);

class RemappedSource : public TensorSource {
 public:
  // Renames inner's tensors with map. Throws Error naming the file and tensors
  // when two names become one, or a packed q/k/v triple is incomplete or its
  // parts differ in shape.
  RemappedSource(std::unique_ptr<TensorSource> inner, const KeyMap& map);
  std::string path() const override { return inner_->path(); }
  std::vector<SourceTensor> list() const override;
  void read_f32(const std::string& name, float* dst) const override;
  Tensor read(const std::string& name) const override;
  std::map<std::string, std::string> metadata() const override { return inner_->metadata(); }
  const TensorSource& inner() const { return *inner_; }
  // Source names that a "-" rule dropped.
  const std::vector<std::string>& dropped() const { return dropped_; }
  // The source name(s) behind a new name (three for a packed tensor).
  std::vector<std::string> sources(const std::string& name) const;

 private:
  struct Entry {
    SourceTensor out;                // the new name, dtype and shape
    std::vector<std::string> parts;  // source names: one, or q, k, v
    std::vector<int64_t> numel;      // elements of each part
  };
  const Entry& find(const std::string& name) const;
  std::unique_ptr<TensorSource> inner_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<std::string> dropped_;
};

}  // namespace vitkit

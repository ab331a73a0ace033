// ViT: a Vision Transformer's configuration, its parameters (torchvision names,
// one buffer) and the structure that indexes them.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/model/config.h"
#include "vitkit/model/params.h"

namespace vitkit {

enum class LayerKind { Patch, Qkv, Proj, Fc1, Fc2, Head };
const char* to_string(LayerKind k);  // "patch", "qkv", "out_proj", "fc1", "fc2", "head"

struct LinearRepr;  // a compressed representation (compress/), null for dense f32
namespace kernels {
class PackedWeight;  // a dense weight in oneDNN's packed layout (kernels/gemm.h)
}

// A linear layer Y = X W^T + b whose dense weight (out x in) and bias live in
// the model's ParamTable. conv_proj is one too: a patch's C*p*p values in.
struct Linear {
  std::string name;  // module path, e.g. "encoder.layers.encoder_layer_3.mlp.0"
  LayerKind kind = LayerKind::Fc1;
  int block = -1;     // encoder block, -1 outside the encoder
  int w = -1, b = -1;  // ParamTable indices; b = -1 when there is no bias
  int in = 0, out = 0;
  std::shared_ptr<LinearRepr> repr;
  // The dense weight packed for inference (pack_linears_for_inference in
  // model/linear_apply.h). packed_in_place: the weight's bytes in the ParamTable
  // are that layout, not the plain matrix, and W() refuses to hand them out.
  std::shared_ptr<const kernels::PackedWeight> packed;
  bool packed_in_place = false;
};

// Thrown by ViT::W for a weight packed in place: the model is for inference only.
[[noreturn]] void fail_packed_weight(const Linear& l);

struct Norm {
  int w = -1, b = -1;
};

struct Block {
  Norm ln1, ln2;
  Linear qkv, proj, fc1, fc2;
};

class ViT {
 public:
  // Validates cfg and lays out zero-filled parameters.
  explicit ViT(const ViTConfig& cfg);
  ViT(const ViT&) = delete;
  ViT& operator=(const ViT&) = delete;
  // A deep copy (parameters; representations and packed layouts shared until replaced).
  std::unique_ptr<ViT> clone() const;

  ViTConfig cfg;
  ParamTable params;
  Linear patch;
  int cls = -1;  // class token (1, 1, D), -1 without one
  int pos = -1;  // position embedding (1, T, D)
  std::vector<Block> blocks;
  Norm ln;  // final norm, w = -1 when final_norm is off
  Linear head;
  // Metadata from the file this model came from that vitkit does not interpret;
  // kept when the model is written again.
  nlohmann::json extra_metadata = nlohmann::json::object();

  // All linear layers in forward order (patch, per block qkv, proj, fc1, fc2, head).
  std::vector<Linear*> linears();
  std::vector<const Linear*> linears() const;
  // The plain weight (out, in); an error for a weight packed in place.
  float* W(const Linear& l) {
    if (l.packed_in_place) fail_packed_weight(l);
    return params.ptr(l.w);
  }
  const float* W(const Linear& l) const {
    if (l.packed_in_place) fail_packed_weight(l);
    return params.ptr(l.w);
  }
  // True when some weight is packed in place (the model cannot be saved or trained).
  bool packed_for_inference() const;
  float* B(const Linear& l) { return l.b >= 0 ? params.ptr(l.b) : nullptr; }
  const float* B(const Linear& l) const { return l.b >= 0 ? params.ptr(l.b) : nullptr; }
};

}  // namespace vitkit

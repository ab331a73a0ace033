// ViT: a Vision Transformer's configuration, its layers (each linear layer
// one representation, repr/linear_repr.h, owning its weight) and the table of
// its f32 parameters (torchvision names).
#pragma once
#include <optional>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/kernels/attention_int.h"
#include "vitkit/model/config.h"
#include "vitkit/model/params.h"
#include "vitkit/repr/linear_repr.h"

namespace vitkit {

enum class LayerKind { Patch, Qkv, Proj, Fc1, Fc2, Head };
const char* to_string(LayerKind k);  // "patch", "qkv", "out_proj", "fc1", "fc2", "head"

// A linear layer Y = act(X W^T + b). conv_proj is one too: a patch's C*p*p values in.
struct Linear {
  std::string name;  // module path, e.g. "encoder.layers.encoder_layer_3.mlp.0"
  std::string weight_name, bias_name;  // torchvision's tensor names ("...in_proj_weight", "conv_proj.weight")
  Shape weight_shape;                  // the weight's shape in files: (out, in), or conv_proj's (D, C, p, p)
  LayerKind kind = LayerKind::Fc1;
  int block = -1;  // encoder block, -1 outside the encoder
  int in = 0, out = 0;
  bool has_bias = true;
  std::unique_ptr<LinearRepr> repr;  // never null
  // ParamTable indices of repr's trainable tensors, in tensors() order (ViT::layout).
  std::vector<int> trainable_params;
  // A tensor's name in files: "weight" and "bias" give weight_name and
  // bias_name, another role ROLE gives NAME.ROLE.
  std::string tensor_name(const std::string& role) const;
  // "FILE: layer NAME (repr)": where a message about this layer points.
  std::string describe() const;
};

struct Norm {
  int w = -1, b = -1;
};

struct Block {
  BlockShape shape;  // heads, head_dim, mlp_dim
  Norm ln1, ln2;
  Linear qkv, proj, fc1, fc2;
  // Set: attention's QK^T and P.V in integers (kernels/attention_int.h;
  // quantize:attention=true); inference only. Files: vitkit.attention.
  std::optional<kernels::AttentionQuant> attn_quant;
};

// Makes a layer's representation when a model is built (load_model: from the
// file's tensors); the default is a zero dense f32 weight.
using ReprMaker = std::function<std::unique_ptr<LinearRepr>(const Linear& l)>;

class ViT {
 public:
  // Validates cfg and builds the layers: each linear layer's representation
  // from make (default: zero f32), other parameters zero, norm weights 1.
  explicit ViT(const ViTConfig& cfg, const ReprMaker& make = {});
  ViT(const ViT&) = delete;
  ViT& operator=(const ViT&) = delete;
  // A deep copy: every tensor and representation copied.
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
  // The layer of that name (Linear::name), or null.
  Linear* find_linear(const std::string& name);

  // Replaces l's representation (same in and out) and rebuilds the parameter table.
  void set_repr(Linear& l, std::unique_ptr<LinearRepr> r);
  // Gives block i a new shape (fewer heads or MLP neurons: compress/prune_structured.h)
  // with new representations of the matching sizes for its qkv (3 A, D),
  // out_proj (D, A), fc1 (M, D) and fc2 (D, M), A = s.attn_dim(), M = s.mlp_dim;
  // cfg's per-block shapes and the parameter table follow. Norms keep their tensors.
  void reshape_block(int i, const BlockShape& s, std::unique_ptr<LinearRepr> qkv, std::unique_ptr<LinearRepr> proj,
                     std::unique_ptr<LinearRepr> fc1, std::unique_ptr<LinearRepr> fc2);
  // Rebuilds the parameter table from the layers (after a representation's
  // tensors changed: set_repr, begin/end of training). Other parameters keep
  // their tensors and flags.
  void layout();

  // The dense f32 weight (out, in) of a layer whose representation is "f32";
  // an Error naming the layer and its representation otherwise.
  float* W(const Linear& l);
  const float* W(const Linear& l) const;
  float* B(const Linear& l) { return l.repr->bias(); }
  const float* B(const Linear& l) const { return static_cast<const LinearRepr&>(*l.repr).bias(); }
  // True when every linear layer is plain dense f32.
  bool dense() const;
};

// What m's layers are: "fp32" when all are dense f32 (packed or not), else
// their one representation ("bf16", "round", ...), or "mixed".
std::string model_precision(const ViT& m);

// The plain weight (l.out, l.in) of l for reading, whatever its
// representation: its own f32 weight, or dequantized into scratch.
const float* plain_weight(const Linear& l, std::vector<float>& scratch);

}  // namespace vitkit

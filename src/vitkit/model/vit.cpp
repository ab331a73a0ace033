#include "vitkit/model/vit.h"

#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/repr/f32.h"

namespace vitkit {

const char* to_string(LayerKind k) {
  switch (k) {
    case LayerKind::Patch: return "patch";
    case LayerKind::Qkv: return "qkv";
    case LayerKind::Proj: return "out_proj";
    case LayerKind::Fc1: return "fc1";
    case LayerKind::Fc2: return "fc2";
    case LayerKind::Head: return "head";
  }
  return "?";
}

std::string Linear::tensor_name(const std::string& role) const {
  if (role == "weight") return weight_name;
  if (role == "bias") return bias_name;
  return name + "." + role;
}

std::string Linear::describe() const {
  return cat("layer ", name, repr ? cat(" (", repr->kind(), ")") : std::string());
}

// The layer's structure; its representation comes from make.
static Linear make_linear(const std::string& module, const std::string& wname, const std::string& bname,
                          LayerKind kind, int block, int in, int out, bool bias, const ReprMaker& make,
                          const Shape& wshape = {}) {
  Linear l;
  l.name = module;
  l.weight_name = wname;
  l.bias_name = bname;
  l.weight_shape = wshape.empty() ? Shape{out, in} : wshape;
  l.kind = kind;
  l.block = block;
  l.in = in;
  l.out = out;
  l.has_bias = bias;
  l.repr = make ? make(l) : std::make_unique<F32Linear>(in, out, l.weight_shape, bias);
  check(l.repr && l.repr->in() == in && l.repr->out() == out, "layer ", module, ": its representation is ",
        l.repr ? cat(l.repr->out(), "x", l.repr->in()) : std::string("missing"), ", the model needs ", out, "x", in);
  check(bias == (l.repr->bias() != nullptr), "layer ", module, ": the representation ",
        bias ? "has no bias" : "has a bias", " but the model config says ", bias ? "it has one" : "it has none");
  return l;
}

ViT::ViT(const ViTConfig& c, const ReprMaker& make) : cfg(c) {
  cfg.validate();
  const int D = cfg.dim;
  patch = make_linear("conv_proj", "conv_proj.weight", "conv_proj.bias", LayerKind::Patch, -1, cfg.patch_k(), D, true,
                      make, Shape{D, cfg.channels, cfg.patch, cfg.patch});
  for (int i = 0; i < cfg.depth; ++i) {
    const std::string p = "encoder.layers.encoder_layer_" + std::to_string(i);
    Block b;
    b.shape = cfg.block(i);
    const int A = b.shape.attn_dim(), M = b.shape.mlp_dim;
    b.qkv = make_linear(p + ".self_attention.in_proj", p + ".self_attention.in_proj_weight",
                        p + ".self_attention.in_proj_bias", LayerKind::Qkv, i, D, 3 * A, cfg.qkv_bias, make);
    b.proj = make_linear(p + ".self_attention.out_proj", p + ".self_attention.out_proj.weight",
                         p + ".self_attention.out_proj.bias", LayerKind::Proj, i, A, D, true, make);
    b.fc1 = make_linear(p + ".mlp.0", p + ".mlp.0.weight", p + ".mlp.0.bias", LayerKind::Fc1, i, D, M, true, make);
    b.fc2 = make_linear(p + ".mlp.3", p + ".mlp.3.weight", p + ".mlp.3.bias", LayerKind::Fc2, i, M, D, true, make);
    blocks.push_back(std::move(b));
  }
  head = make_linear("heads.head", "heads.head.weight", "heads.head.bias", LayerKind::Head, -1, D, cfg.classes, true,
                     make);
  layout();
  // LayerNorm weights start at 1, as PyTorch's.
  auto ones = [&](const Norm& n) {
    if (n.w < 0) return;
    float* w = params.ptr(n.w);
    for (int k = 0; k < D; ++k) w[k] = 1.f;
  };
  for (auto& b : blocks) ones(b.ln1), ones(b.ln2);
  ones(ln);
}

void ViT::layout() {
  const ParamTable old = std::move(params);
  params = ParamTable();
  // A parameter that is not a layer's: kept from the old table (tensor and
  // flags), or new and zero.
  auto own = [&](const std::string& name, const Shape& shape, bool decay) {
    const int i = old.find(name);
    if (i >= 0 && old.info(i).shape == shape)
      return params.add_shared(name, old.tensor(i), old.info(i).decay, old.info(i).trainable);
    return params.add(name, shape, decay);
  };
  auto norm = [&](const std::string& prefix) {
    Norm n;
    n.w = own(prefix + ".weight", {cfg.dim}, false);
    n.b = own(prefix + ".bias", {cfg.dim}, false);
    return n;
  };
  auto linear = [&](Linear& l) {
    l.trainable_params.clear();
    for (const ReprTensor& t : l.repr->tensors()) {
      if (!t.param) continue;
      const int i = params.add_shared(l.tensor_name(t.role), t.t, t.decay, t.trainable);
      if (t.trainable) l.trainable_params.push_back(i);
    }
  };
  // torchvision's state_dict order.
  cls = cfg.class_token ? own("class_token", {1, 1, cfg.dim}, false) : -1;
  linear(patch);
  pos = own("encoder.pos_embedding", {1, cfg.tokens(), cfg.dim}, false);
  for (int i = 0; i < cfg.depth; ++i) {
    const std::string p = "encoder.layers.encoder_layer_" + std::to_string(i);
    Block& b = blocks[size_t(i)];
    b.ln1 = norm(p + ".ln_1");
    linear(b.qkv);
    linear(b.proj);
    b.ln2 = norm(p + ".ln_2");
    linear(b.fc1);
    linear(b.fc2);
  }
  ln = cfg.final_norm ? norm("encoder.ln") : Norm{};
  linear(head);
}

std::unique_ptr<ViT> ViT::clone() const {
  const std::vector<const Linear*> src = linears();
  size_t next = 0;
  auto m = std::make_unique<ViT>(cfg, [&](const Linear&) { return src[next++]->repr->clone(); });
  // Parameters that are not a layer's: their values and flags.
  for (int i = 0; i < params.size(); ++i) {
    const int j = m->params.find(params.info(i).name);
    check(j >= 0, "clone: parameter ", params.info(i).name, " missing in the copy");
    std::memcpy(m->params.ptr(j), params.ptr(i), sizeof(float) * size_t(params.info(i).numel));
  }
  for (size_t b = 0; b < blocks.size(); ++b) m->blocks[b].attn_quant = blocks[b].attn_quant;
  m->extra_metadata = extra_metadata;
  return m;
}

std::vector<Linear*> ViT::linears() {
  std::vector<Linear*> v{&patch};
  for (auto& b : blocks) v.insert(v.end(), {&b.qkv, &b.proj, &b.fc1, &b.fc2});
  v.push_back(&head);
  return v;
}

std::vector<const Linear*> ViT::linears() const {
  std::vector<const Linear*> v{&patch};
  for (auto& b : blocks) v.insert(v.end(), {&b.qkv, &b.proj, &b.fc1, &b.fc2});
  v.push_back(&head);
  return v;
}

Linear* ViT::find_linear(const std::string& name) {
  for (Linear* l : linears())
    if (l->name == name) return l;
  return nullptr;
}

void ViT::set_repr(Linear& l, std::unique_ptr<LinearRepr> r) {
  check(r && r->in() == l.in && r->out() == l.out, "set_repr: ", l.describe(), " is ", l.out, "x", l.in,
        ", the new representation ", r ? cat(r->out(), "x", r->in()) : std::string("is null"));
  check(l.has_bias == (r->bias() != nullptr), "set_repr: ", l.describe(), ": the new representation ",
        l.has_bias ? "lost the bias" : "has a bias the layer does not");
  l.repr = std::move(r);
  layout();
}

void ViT::reshape_block(int i, const BlockShape& s, std::unique_ptr<LinearRepr> qkv, std::unique_ptr<LinearRepr> proj,
                        std::unique_ptr<LinearRepr> fc1, std::unique_ptr<LinearRepr> fc2) {
  check(i >= 0 && i < cfg.depth, "reshape_block: block ", i, " of ", cfg.depth);
  check(s.heads >= 1 && s.head_dim >= 1 && s.mlp_dim >= 1, "reshape_block: block ", i, " would have ", s.heads,
        " heads of ", s.head_dim, " and ", s.mlp_dim, " MLP neurons");
  Block& b = blocks[size_t(i)];
  check(!b.attn_quant || s.heads == b.shape.heads, "reshape_block: block ", i,
        " has integer attention (per-head scales); its heads cannot change");
  const int D = cfg.dim, A = s.attn_dim(), M = s.mlp_dim;
  auto put = [&](Linear& l, std::unique_ptr<LinearRepr> r, int in, int out) {
    check(r && r->in() == in && r->out() == out, "reshape_block: ", l.describe(), " needs ", out, "x", in,
          ", the new representation is ", r ? cat(r->out(), "x", r->in()) : std::string("null"));
    check(l.has_bias == (r->bias() != nullptr), "reshape_block: ", l.describe(), ": the new representation ",
          l.has_bias ? "has no bias" : "has a bias");
    l.in = in;
    l.out = out;
    l.weight_shape = {out, in};
    l.repr = std::move(r);
  };
  put(b.qkv, std::move(qkv), D, 3 * A);
  put(b.proj, std::move(proj), A, D);
  put(b.fc1, std::move(fc1), D, M);
  put(b.fc2, std::move(fc2), M, D);
  b.shape = s;
  std::vector<BlockShape> shapes;
  for (int j = 0; j < cfg.depth; ++j) shapes.push_back(j == i ? s : cfg.block(j));
  cfg.set_blocks(shapes);
  cfg.validate();
  layout();
}

[[noreturn]] static void fail_not_dense(const Linear& l) {
  fail(l.describe(), ": holds a '", l.repr->kind(), "' representation (", l.repr->describe(),
       "), not a dense f32 weight");
}

float* ViT::W(const Linear& l) {
  float* w = l.repr->dense_weight();
  if (!w) fail_not_dense(l);
  return w;
}

const float* ViT::W(const Linear& l) const {
  float* w = l.repr->dense_weight();
  if (!w) fail_not_dense(l);
  return w;
}

bool ViT::dense() const {
  for (const Linear* l : linears())
    if (l->repr->kind() != "f32") return false;
  return true;
}

std::string model_precision(const ViT& m) {
  std::string kind;
  for (const Linear* l : m.linears()) {
    const std::string k = l->repr->kind() == "f32_packed" ? "f32" : l->repr->kind();
    if (kind.empty()) kind = k;
    else if (kind != k) return "mixed";
  }
  return kind == "f32" ? "fp32" : kind;
}

const float* plain_weight(const Linear& l, std::vector<float>& scratch) { return l.repr->plain_weight(scratch); }

}  // namespace vitkit

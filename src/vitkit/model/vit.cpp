#include "vitkit/model/vit.h"

#include <cstring>

#include "vitkit/core/error.h"

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

static Linear make_linear(ParamTable& p, const std::string& module, const std::string& wname,
                          const std::string& bname, LayerKind kind, int block, int in, int out, bool bias,
                          const Shape& wshape = {}) {
  Linear l;
  l.name = module;
  l.kind = kind;
  l.block = block;
  l.in = in;
  l.out = out;
  l.w = p.add(wname, wshape.empty() ? Shape{out, in} : wshape, true);
  if (bias) l.b = p.add(bname, {out}, false);
  return l;
}

static Norm make_norm(ParamTable& p, const std::string& prefix, int dim) {
  Norm n;
  n.w = p.add(prefix + ".weight", {dim}, false);
  n.b = p.add(prefix + ".bias", {dim}, false);
  return n;
}

ViT::ViT(const ViTConfig& c) : cfg(c) {
  cfg.validate();
  const int D = cfg.dim, M = cfg.mlp_dim;
  // Order follows torchvision's state_dict.
  if (cfg.class_token) cls = params.add("class_token", {1, 1, D}, false);
  patch = make_linear(params, "conv_proj", "conv_proj.weight", "conv_proj.bias", LayerKind::Patch, -1,
                      cfg.patch_k(), D, true, Shape{D, cfg.channels, cfg.patch, cfg.patch});
  pos = params.add("encoder.pos_embedding", {1, cfg.tokens(), D}, false);
  for (int i = 0; i < cfg.depth; ++i) {
    std::string p = "encoder.layers.encoder_layer_" + std::to_string(i);
    Block b;
    b.ln1 = make_norm(params, p + ".ln_1", D);
    b.qkv = make_linear(params, p + ".self_attention.in_proj", p + ".self_attention.in_proj_weight",
                        p + ".self_attention.in_proj_bias", LayerKind::Qkv, i, D, 3 * D, cfg.qkv_bias);
    b.proj = make_linear(params, p + ".self_attention.out_proj", p + ".self_attention.out_proj.weight",
                         p + ".self_attention.out_proj.bias", LayerKind::Proj, i, D, D, true);
    b.ln2 = make_norm(params, p + ".ln_2", D);
    b.fc1 = make_linear(params, p + ".mlp.0", p + ".mlp.0.weight", p + ".mlp.0.bias", LayerKind::Fc1, i, D, M, true);
    b.fc2 = make_linear(params, p + ".mlp.3", p + ".mlp.3.weight", p + ".mlp.3.bias", LayerKind::Fc2, i, M, D, true);
    blocks.push_back(std::move(b));
  }
  if (cfg.final_norm) ln = make_norm(params, "encoder.ln", D);
  head = make_linear(params, "heads.head", "heads.head.weight", "heads.head.bias", LayerKind::Head, -1, D,
                     cfg.classes, true);
  params.allocate();
  // LayerNorm weights start at 1, as PyTorch's.
  auto ones = [&](const Norm& n) {
    if (n.w < 0) return;
    float* w = params.ptr(n.w);
    for (int k = 0; k < D; ++k) w[k] = 1.f;
  };
  for (auto& b : blocks) ones(b.ln1), ones(b.ln2);
  ones(ln);
}

std::unique_ptr<ViT> ViT::clone() const {
  auto m = std::make_unique<ViT>(cfg);
  std::memcpy(m->params.data(), params.data(), sizeof(float) * params.total());
  auto src = linears();
  auto dst = m->linears();
  for (size_t i = 0; i < src.size(); ++i) {
    dst[i]->repr = src[i]->repr;
    dst[i]->packed = src[i]->packed;  // layout (and a padded copy) shared; bytes in place were copied above
    dst[i]->packed_in_place = src[i]->packed_in_place;
  }
  m->extra_metadata = extra_metadata;
  return m;
}

void fail_packed_weight(const Linear& l) {
  fail("layer ", l.name, ": its weight is packed for inference (oneDNN's blocked layout, not the plain ",
       l.out, "x", l.in, " matrix); use the model as loaded to save, train, compress or analyse it");
}

bool ViT::packed_for_inference() const {
  for (const Linear* l : linears())
    if (l->packed_in_place) return true;
  return false;
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

}  // namespace vitkit

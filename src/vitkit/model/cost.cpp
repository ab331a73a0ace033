#include "vitkit/model/cost.h"

#include <functional>

#include "vitkit/core/error.h"

namespace vitkit {

namespace {

// One linear layer's counts for `rows` rows per image.
struct LinearCount {
  int64_t macs, params, bytes;
  std::string repr;
};
using CountLinear = std::function<LinearCount(LayerKind kind, int block, int64_t rows)>;

// The layers of config c in forward order, each linear counted by `count`.
std::vector<LayerCost> costs(const ViTConfig& c, const CountLinear& count) {
  const int64_t P = c.patches(), T = c.tokens();
  std::vector<LayerCost> v;
  auto linear = [&](const std::string& name, LayerKind kind, int block, int64_t rows) {
    const LinearCount n = count(kind, block, rows);
    v.push_back({name, to_string(kind), block, n.macs, n.params, n.bytes, n.repr});
  };
  linear("conv_proj", LayerKind::Patch, -1, P);
  for (int i = 0; i < c.depth; ++i) {
    const std::string p = "encoder_layer_" + std::to_string(i) + ".";
    const int64_t A = c.block(i).attn_dim();
    linear(p + "qkv", LayerKind::Qkv, i, T);
    v.push_back({p + "attn_scores", "attn_scores", i, T * T * A, 0, 0, ""});
    v.push_back({p + "attn_values", "attn_values", i, T * T * A, 0, 0, ""});
    linear(p + "out_proj", LayerKind::Proj, i, T);
    linear(p + "fc1", LayerKind::Fc1, i, T);
    linear(p + "fc2", LayerKind::Fc2, i, T);
  }
  linear("head", LayerKind::Head, -1, 1);
  return v;
}

// Embeddings, norms and the class token.
int64_t other_params(const ViTConfig& c) {
  const int64_t D = c.dim;
  return (c.class_token ? D : 0) + int64_t(c.tokens()) * D + 4 * D * c.depth + (c.final_norm ? 2 * D : 0);
}

const Linear& linear_of(const ViT& m, LayerKind kind, int block) {
  switch (kind) {
    case LayerKind::Patch: return m.patch;
    case LayerKind::Qkv: return m.blocks[size_t(block)].qkv;
    case LayerKind::Proj: return m.blocks[size_t(block)].proj;
    case LayerKind::Fc1: return m.blocks[size_t(block)].fc1;
    case LayerKind::Fc2: return m.blocks[size_t(block)].fc2;
    case LayerKind::Head: return m.head;
  }
  return m.head;
}

ModelCost total(const std::vector<LayerCost>& v, int64_t other) {
  ModelCost t;
  for (const LayerCost& l : v) {
    t.macs += l.macs;
    t.params += l.params;
    t.bytes += l.bytes;
  }
  t.other_params = other;
  t.params += other;
  t.bytes += 4 * other;
  return t;
}

}  // namespace

std::vector<LayerCost> layer_costs(const ViT& m) {
  std::vector<LayerCost> v = costs(m.cfg, [&](LayerKind kind, int block, int64_t rows) {
    const Linear& l = linear_of(m, kind, block);
    return LinearCount{l.repr->macs(rows), l.repr->weight_params() + (l.has_bias ? l.out : 0), l.repr->file_bytes(),
                       l.repr->kind()};
  });
  // Attention's products: "" (f32), or "intB" on integer products (quantize:attention=true).
  for (LayerCost& c : v)
    if ((c.kind == "attn_scores" || c.kind == "attn_values") && m.blocks[size_t(c.block)].attn_quant)
      c.repr = cat("int", m.blocks[size_t(c.block)].attn_quant->bits);
  return v;
}

std::vector<LayerCost> layer_costs(const ViTConfig& c) {
  return costs(c, [&](LayerKind kind, int block, int64_t rows) {
    const int64_t D = c.dim;
    int64_t in = D, out = D;
    bool bias = true;
    switch (kind) {
      case LayerKind::Patch: in = c.patch_k(); break;
      case LayerKind::Qkv: out = 3 * c.block(block).attn_dim(), bias = c.qkv_bias; break;
      case LayerKind::Proj: in = c.block(block).attn_dim(); break;
      case LayerKind::Fc1: out = c.block(block).mlp_dim; break;
      case LayerKind::Fc2: in = c.block(block).mlp_dim; break;
      case LayerKind::Head: out = c.classes; break;
    }
    const int64_t params = in * out + (bias ? out : 0);
    return LinearCount{rows * in * out, params, 4 * params, "f32"};
  });
}

ModelCost model_cost(const ViT& m) { return total(layer_costs(m), other_params(m.cfg)); }
ModelCost model_cost(const ViTConfig& c) { return total(layer_costs(c), other_params(c)); }

}  // namespace vitkit

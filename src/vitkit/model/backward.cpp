#include "vitkit/model/backward.h"

#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/core/profile.h"
#include "vitkit/kernels/activations.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/kernels/dropout.h"
#include "vitkit/kernels/layernorm.h"
#include "vitkit/model/layers.h"

namespace vitkit {

void BackWork::plan(const ViTConfig& c, int64_t B) {
  // Sized for the largest block (per-block heads x head_dim A and MLP width M).
  const int64_t T = c.tokens(), D = c.dim, M = c.max_mlp_dim(), P = c.patches(), A = c.max_attn_dim();
  const int64_t sizes[9] = {B * T * D,     B * T * D, B * T * D, B * T * A, 3 * B * T * A,
                            B * T * M, B * P * D, B * D,     c.dropout > 0 ? B * T * D : 0};
  int64_t off = 0;
  for (int i = 0; i < 9; ++i) {
    off_[i] = off;
    off += (sizes[i] + 15) / 16 * 16;
  }
  if (!mem_.defined() || mem_.numel() < off) mem_ = Tensor::empty({off});
}

namespace {

struct Ctx {
  const ViT& m;
  Acts& a;
  float* g;  // gradient buffer
  BackWork& w;
  // The gradient of parameter idx, null when there is none (absent or frozen).
  float* G(int idx) const {
    if (idx < 0) return nullptr;
    const int64_t off = m.params.info(idx).offset;
    return off >= 0 ? g + off : nullptr;
  }
  const float* P(int idx) const { return m.params.ptr(idx); }
};

// LayerNorm backward (kernels/layernorm.h), profiled.
void ln_backward(const float* dout, const float* x, const float* mean, const float* rstd, const float* w, float* dx,
                 float* dw, float* db, int64_t N, int64_t D, bool accumulate) {
  VK_PROF("bwd.layernorm");
  kernels::layernorm_backward(dout, x, mean, rstd, w, dx, dw, db, N, D, accumulate);
}

// Linear backward through layer l's representation: dY (rows, out), X (rows,
// in) -> dX (rows, in) (overwritten, or added to when accumulate; skipped when
// null); the gradients of its trainable tensors accumulated.
void linear_back(const Ctx& c, const Linear& l, const float* dY, const float* X, float* dX, int64_t rows,
                 bool accumulate = false) {
  VK_PROF("bwd.linear");
  float* grads[8] = {};
  check(l.trainable_params.size() <= 8, l.describe(), ": more than 8 trainable tensors");
  for (size_t i = 0; i < l.trainable_params.size(); ++i) grads[i] = c.G(l.trainable_params[i]);
  l.repr->backward(dY, X, dX, rows, accumulate, grads);
}

// The gradient d (n) through a dropout mask (into work.ddrop()), or d itself
// without dropout.
const float* through_mask(const Ctx& c, const float* d, const uint8_t* mask, int64_t n) {
  if (!c.a.dropout()) return d;
  float* out = c.w.ddrop();
  std::memcpy(out, d, sizeof(float) * n);
  kernels::dropout_backward(out, mask, n, c.m.cfg.dropout);
  return out;
}

// MLP backward: d (B,T,D) gradient of fc2's output; in (B,T,D) fc1's input.
// dX_in (B,T,D) gets fc1's input gradient (overwritten or accumulated).
void mlp_back(const Ctx& c, int l, const float* d, const float* in, float* din, bool accumulate) {
  const Block& blk = c.m.blocks[l];
  const int64_t BT = c.a.batch() * c.m.cfg.tokens(), M = blk.shape.mlp_dim;
  float* dfc = c.w.dfc();
  const float* dy = through_mask(c, d, c.a.mask_fc2(l), BT * c.m.cfg.dim);
  linear_back(c, blk.fc2, dy, c.a.fc1_act(l), dfc, BT);  // dfc = d W2
  if (c.a.dropout()) kernels::dropout_backward(dfc, c.a.mask_act(l), BT * M, c.m.cfg.dropout);
  {
    VK_PROF("bwd.act");
    kernels::act_backward(c.m.cfg.act, c.a.fc1(l), dfc, dfc, BT * M);  // dfc = act'(h) dfc
  }
  linear_back(c, blk.fc1, dfc, in, din, BT, accumulate);                    // din (+)= dfc W1
}

// Attention backward: d (B,T,D) gradient of out_proj's output; in (B,T,D) the
// qkv projection's input; din (B,T,D) gets its gradient (overwritten or accumulated).
void attn_back(const Ctx& c, int l, const float* d, const float* in, float* din, bool accumulate) {
  const Block& blk = c.m.blocks[l];
  const ViTConfig& cfg = c.m.cfg;
  const int64_t B = c.a.batch(), T = cfg.tokens(), D = cfg.dim, BT = B * T;
  linear_back(c, blk.proj, through_mask(c, d, c.a.mask_attn(l), BT * D), c.a.att(l), c.w.datt(), BT);
  {
    VK_PROF("bwd.attention");
    kernels::attention_backward(c.w.datt(), c.a.qkv(l), c.a.att(l), c.a.lse(l), c.w.dqkv(), B, T, blk.shape.heads,
                                blk.shape.head_dim);
  }
  linear_back(c, blk.qkv, c.w.dqkv(), in, din, BT, accumulate);
}

// Pre-norm block backward. dres (B,T,D) holds d out on entry and d x on exit.
void block_back_pre(const Ctx& c, int l) {
  const Block& blk = c.m.blocks[l];
  const int64_t BT = c.a.batch() * c.m.cfg.tokens(), D = c.m.cfg.dim;
  float* dres = c.w.dres();
  float* dln = c.w.dln();
  // out = mid + mlp(ln2(mid)):  dmid = dout + ln2^T(mlp^T(dout))
  mlp_back(c, l, dres, c.a.ln2(l), dln, false);
  ln_backward(dln, c.a.res1(l), c.a.ln2_mean(l), c.a.ln2_rstd(l), c.P(blk.ln2.w), dres,
                              c.G(blk.ln2.w), c.G(blk.ln2.b), BT, D, true);
  // mid = x + attn(ln1(x)):  dx = dmid + ln1^T(attn^T(dmid))
  attn_back(c, l, dres, c.a.ln1(l), dln, false);
  ln_backward(dln, c.a.stream(l), c.a.ln1_mean(l), c.a.ln1_rstd(l), c.P(blk.ln1.w), dres,
                              c.G(blk.ln1.w), c.G(blk.ln1.b), BT, D, true);
}

// Post-norm block backward. dres (B,T,D) holds d out on entry and d x on exit.
void block_back_post(const Ctx& c, int l) {
  const Block& blk = c.m.blocks[l];
  const int64_t BT = c.a.batch() * c.m.cfg.tokens(), D = c.m.cfg.dim;
  float* dres = c.w.dres();
  float* ds = c.w.dtmp();
  // out = ln2(s2), s2 = mid + mlp(mid):  ds2 = ln2^T(dout); dmid = ds2 + mlp^T(ds2)
  ln_backward(dres, c.a.res2(l), c.a.ln2_mean(l), c.a.ln2_rstd(l), c.P(blk.ln2.w), ds,
                              c.G(blk.ln2.w), c.G(blk.ln2.b), BT, D, false);
  mlp_back(c, l, ds, c.a.ln1(l), ds, true);
  // mid = ln1(s1), s1 = x + attn(x):  ds1 = ln1^T(dmid); dx = ds1 + attn^T(ds1)
  ln_backward(ds, c.a.res1(l), c.a.ln1_mean(l), c.a.ln1_rstd(l), c.P(blk.ln1.w), dres,
                              c.G(blk.ln1.w), c.G(blk.ln1.b), BT, D, false);
  attn_back(c, l, dres, c.a.stream(l), dres, true);
}

}  // namespace

void vit_backward(const ViT& m, Acts& a, const float* dlogits, float* grads, BackWork& w) {
  const ViTConfig& cfg = m.cfg;
  check(a.train(), "vit_backward needs a training-mode forward pass");
  const int64_t B = a.batch(), T = cfg.tokens(), D = cfg.dim, P = cfg.patches(), BT = B * T;
  w.plan(cfg, B);
  Ctx c{m, a, grads, w};
  // head: logits = pooled W^T + b
  linear_back(c, m.head, dlogits, a.pooled(), w.dpooled(), B);
  // pooling, final norm
  if (m.ln.w >= 0) {
    pool_backward(cfg.pool, w.dpooled(), w.dln(), B, T, D, cfg.class_token);
    ln_backward(w.dln(), a.stream(cfg.depth), a.lnf_mean(), a.lnf_rstd(), c.P(m.ln.w), w.dres(),
                                c.G(m.ln.w), c.G(m.ln.b), BT, D, false);
  } else {
    pool_backward(cfg.pool, w.dpooled(), w.dres(), B, T, D, cfg.class_token);
  }
  for (int l = cfg.depth - 1; l >= 0; --l) {
    if (cfg.norm == NormPlacement::Pre) block_back_pre(c, l);
    else block_back_post(c, l);
  }
  // tokens: stream(0) = dropout([cls; emb] + pos); patch embedding: emb = cols Wp^T + bp
  if (a.dropout()) kernels::dropout_backward(w.dres(), a.mask_emb(), BT * D, cfg.dropout);
  tokens_backward(w.dres(), w.demb(), c.G(m.cls), c.G(m.pos), B, P, D, cfg.class_token);
  linear_back(c, m.patch, w.demb(), a.cols(), nullptr, B * P);
}

}  // namespace vitkit

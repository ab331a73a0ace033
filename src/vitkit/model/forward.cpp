#include "vitkit/model/forward.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <omp.h>

#include "vitkit/core/error.h"
#include "vitkit/core/profile.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/activations.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/kernels/attention_int.h"
#include "vitkit/kernels/dropout.h"
#include "vitkit/kernels/layernorm.h"
#include "vitkit/model/layers.h"
#include "vitkit/model/linear_apply.h"

namespace vitkit {

void Acts::plan(const ViTConfig& c, int64_t B, bool train) {
  // Blocks may differ (per-block heads, head_dim, mlp_dim): buffers fit the largest.
  const int64_t P = c.patches(), T = c.tokens(), D = c.dim, M = c.max_mlp_dim(), K = c.patch_k(), H = c.max_heads(),
                A = c.max_attn_dim();
  const int64_t L = c.depth, nb = train ? L : 1;
  int64_t off = 0;
  auto slot = [&](Slot& s, int64_t per, int64_t count) {
    s.size = (per + 15) / 16 * 16;
    s.offset = off;
    off += s.size * count;
  };
  const int64_t BT = B * T, BTD = BT * D;
  slot(cols_, B * P * K, 1);
  slot(emb_, B * P * D, 1);
  slot(stream_, BTD, train ? L + 1 : 1);
  slot(ln1_, BTD, nb);
  slot(ln1m_, BT, nb);
  slot(ln1r_, BT, nb);
  slot(qkv_, 3 * BT * A, nb);
  slot(att_, BT * A, nb);
  slot(lse_, train ? B * H * T : 0, nb);
  slot(res1_, train ? BTD : 0, nb);
  slot(ln2_, BTD, nb);
  slot(ln2m_, BT, nb);
  slot(ln2r_, BT, nb);
  slot(fc1_, BT * M, nb);
  slot(fc1a_, train ? BT * M : 0, nb);
  slot(res2_, train && c.norm == NormPlacement::Post ? BTD : 0, nb);
  slot(lnf_, BTD, 1);
  slot(lnfm_, BT, 1);
  slot(lnfr_, BT, 1);
  slot(pooled_, B * D, 1);
  slot(logits_, B * c.classes, 1);
  if (!mem_.defined() || mem_.numel() < off) mem_ = Tensor::empty({off});
  drop_ = train && c.dropout > 0;
  if (drop_) {
    int64_t moff = 0;
    auto mslot = [&](Slot& s, int64_t per, int64_t count) {
      s.size = (per + 63) / 64 * 64;
      s.offset = moff;
      moff += s.size * count;
    };
    mslot(memb_, BTD, 1);
    mslot(mattn_, BTD, L);
    mslot(mact_, BT * M, L);
    mslot(mfc2_, BTD, L);
    if (!masks_.defined() || masks_.numel() < moff) masks_ = Tensor::empty({moff}, DType::U8);
  }
  B_ = B;
  btd_ = stream_.size;
  train_ = train;
}

// One encoder block, pre-norm (torchvision, timm):
//   x (B,T,D) -> ln1 -> qkv (B,T,3D) -> attention (B,T,D) -> out_proj, + x = mid
//   mid -> ln2 -> fc1 (B,T,M) -> act -> fc2 (B,T,D), + mid = out
// Post-norm (nn.TransformerEncoderLayer): mid = ln1(x + attn(x)), out = ln2(mid + mlp(mid)).
// linear_apply, its input shown to on_linear first and its output (without
// the residual it accumulates into) to on_linear_output after, unless
// output_hook is false (the caller shows it: training's separate activation).
// Accumulation is used without an activation only.
static void lin(const ViT& m, const ForwardHooks* hooks, const Linear& l, const float* X, float* Y, int64_t M,
                Activation act = Activation::None, bool accumulate = false, bool output_hook = true) {
  if (hooks && hooks->on_linear) hooks->on_linear(l, X, M);
  (void)m;
  if (!output_hook || !hooks || !hooks->on_linear_output) {
    linear_apply(l, X, Y, M, act, accumulate);
    return;
  }
  if (!accumulate) {
    linear_apply(l, X, Y, M, act, false);
    hooks->on_linear_output(l, Y, M);
    return;
  }
  // Y (M, out) += X W^T + b: the hook sees Y after - Y before, so that the
  // forward runs exactly as without it.
  thread_local std::vector<float> before, own;
  const size_t n = size_t(M) * size_t(l.out);
  before.assign(Y, Y + n);
  linear_apply(l, X, Y, M, act, true);
  own.resize(n);
  for (size_t i = 0; i < n; ++i) own[i] = Y[i] - before[i];
  hooks->on_linear_output(l, own.data(), M);
}

// A layer norm's output Y (rows, D) shown to on_norm.
static void norm_hook(const ForwardHooks* hooks, int block, int which, const float* Y, int64_t rows) {
  if (hooks && hooks->on_norm) hooks->on_norm(block, which, Y, rows);
}

// Inference, pre-norm, class-token pooling: after the last block only the
// class token's row is read, so the last block's attention runs for the class
// token's query alone (every token's k and v still count) and the rest of the
// block on the B class-token rows (about 10% of the default model's MACs
// saved). Gathered rows live in ln1's buffer (free once qkv is computed:
// 2 B D <= B T D) and fc1's; the result goes back to row 0.
//   xc (B,D) = x[:,0], ac (B,D) = att (the class-token rows only); xc += out_proj(ac);
//   xc += fc2(act(fc1(ln2(xc)))); x[:,0] = xc
static void last_block_cls_only(const ViT& m, int l, Acts& a) {
  const ViTConfig& c = m.cfg;
  const Block& blk = m.blocks[l];
  const int64_t B = a.batch(), T = c.tokens(), D = c.dim;
  float* x = a.stream(l);
  float* xc = a.ln1(l);
  float* lc = xc + B * D;
  const float* ac = a.att(l);  // (B, heads x head_dim): attention_forward with q_rows = 1
  for (int64_t b = 0; b < B; ++b) std::memcpy(xc + b * D, x + b * T * D, sizeof(float) * D);
  lin(m, nullptr, blk.proj, ac, xc, B, Activation::None, /*accumulate=*/true);
  {
    VK_PROF("fwd.layernorm");
    kernels::layernorm_forward(xc, m.params.ptr(blk.ln2.w), m.params.ptr(blk.ln2.b), lc, a.ln2_mean(l),
                               a.ln2_rstd(l), B, D, c.norm_eps);
  }
  lin(m, nullptr, blk.fc1, lc, a.fc1(l), B, c.act);
  lin(m, nullptr, blk.fc2, a.fc1_act(l), xc, B, Activation::None, /*accumulate=*/true);
  float* out = a.stream(l + 1);  // == x in inference
  for (int64_t b = 0; b < B; ++b) std::memcpy(out + b * T * D, xc + b * D, sizeof(float) * D);
}

static void block_forward(const ViT& m, int l, Acts& a, const ForwardHooks* hooks) {
  const ViTConfig& c = m.cfg;
  const Block& blk = m.blocks[l];
  const int64_t B = a.batch(), T = c.tokens(), D = c.dim, M = blk.shape.mlp_dim, BT = B * T;
  const bool train = a.train(), pre = c.norm == NormPlacement::Pre;
  const float eps = c.norm_eps;
  auto P = [&](int i) { return m.params.ptr(i); };
  float* x = a.stream(l);
  float* out = a.stream(l + 1);  // == x in inference

  const float* attn_in = x;
  if (pre) {
    VK_PROF("fwd.layernorm");
    kernels::layernorm_forward(x, P(blk.ln1.w), P(blk.ln1.b), a.ln1(l), a.ln1_mean(l), a.ln1_rstd(l), BT, D, eps);
    attn_in = a.ln1(l);
    norm_hook(hooks, l, 1, attn_in, BT);
  }
  lin(m, hooks, blk.qkv, attn_in, a.qkv(l), BT);
  const bool cls_only = !train && !hooks && pre && l == c.depth - 1 && c.pool == Pooling::Cls && c.class_token && T >= 3;
  {
    VK_PROF("fwd.attention");
    if (hooks && hooks->on_attention) hooks->on_attention(l, a.qkv(l), B);
    // cls_only: the class token's query alone; att (B,1,D)
    if (blk.attn_quant) {  // integer products (inference only: begin_training refuses these blocks)
      check(!train, "block ", l, ": attention with integer products has no backward pass");
      kernels::attention_forward_int(a.qkv(l), a.att(l), B, T, blk.shape.heads, blk.shape.head_dim, *blk.attn_quant,
                                     cls_only ? 1 : T);
    } else {
      kernels::attention_forward(a.qkv(l), a.att(l), train ? a.lse(l) : nullptr, B, T, blk.shape.heads,
                                 blk.shape.head_dim, cls_only ? 1 : T);
    }
  }
  if (cls_only) {
    last_block_cls_only(m, l, a);
    return;
  }

  // mid = x + out_proj(att)   [post-norm: then mid = ln1(mid)]
  float* mid;
  if (train) {
    mid = a.res1(l);
    lin(m, hooks, blk.proj, a.att(l), mid, BT);
    if (a.dropout()) kernels::dropout_forward(mid, a.mask_attn(l), BT * D, c.dropout, a.dropout_seed, 1 + 4 * l);
    VK_PROF("fwd.add");
    add_forward(mid, x, mid, BT * D);
  } else {
    mid = x;
    lin(m, hooks, blk.proj, a.att(l), mid, BT, Activation::None, /*accumulate=*/true);
  }
  if (!pre) {
    VK_PROF("fwd.layernorm");
    float* dst = train ? a.ln1(l) : mid;
    kernels::layernorm_forward(mid, P(blk.ln1.w), P(blk.ln1.b), dst, a.ln1_mean(l), a.ln1_rstd(l), BT, D, eps);
    mid = dst;
    norm_hook(hooks, l, 1, mid, BT);
  }

  // out = mid + fc2(act(fc1(ln2(mid))))   [post-norm: fc1 reads mid, then out = ln2(out)]
  const float* mlp_in = mid;
  if (pre) {
    VK_PROF("fwd.layernorm");
    kernels::layernorm_forward(mid, P(blk.ln2.w), P(blk.ln2.b), a.ln2(l), a.ln2_mean(l), a.ln2_rstd(l), BT, D, eps);
    mlp_in = a.ln2(l);
    norm_hook(hooks, l, 2, mlp_in, BT);
  }
  if (train) {
    lin(m, hooks, blk.fc1, mlp_in, a.fc1(l), BT, Activation::None, false, /*output_hook=*/false);
    {
      VK_PROF("fwd.act");
      kernels::act_forward(c.act, a.fc1(l), a.fc1_act(l), BT * M);
    }
    if (hooks && hooks->on_linear_output) hooks->on_linear_output(blk.fc1, a.fc1_act(l), BT);
    if (a.dropout()) kernels::dropout_forward(a.fc1_act(l), a.mask_act(l), BT * M, c.dropout, a.dropout_seed, 2 + 4 * l);
  } else {
    lin(m, hooks, blk.fc1, mlp_in, a.fc1(l), BT, c.act);
  }
  float* sum2 = train ? (pre ? out : a.res2(l)) : mid;
  if (train) {
    lin(m, hooks, blk.fc2, a.fc1_act(l), sum2, BT);
    if (a.dropout()) kernels::dropout_forward(sum2, a.mask_fc2(l), BT * D, c.dropout, a.dropout_seed, 3 + 4 * l);
    VK_PROF("fwd.add");
    add_forward(sum2, mid, sum2, BT * D);
  } else {
    lin(m, hooks, blk.fc2, a.fc1_act(l), sum2, BT, Activation::None, /*accumulate=*/true);
  }
  VK_PROF("fwd.layernorm");
  if (!pre) {
    kernels::layernorm_forward(sum2, P(blk.ln2.w), P(blk.ln2.b), out, a.ln2_mean(l), a.ln2_rstd(l), BT, D, eps);
    norm_hook(hooks, l, 2, out, BT);
  } else if (!train && out != sum2)
    std::memcpy(out, sum2, sizeof(float) * BT * D);
}

void vit_forward(const ViT& m, const float* images, int64_t B, Acts& a, const ForwardHooks* hooks) {
  const ViTConfig& c = m.cfg;
  check(a.batch() == B, "vit_forward: activations planned for batch ", a.batch(), ", called with ", B);
  const int64_t P = c.patches(), T = c.tokens(), D = c.dim, BT = B * T;
  // Patch embedding: (B,C,S,S) -> cols (B*P, K) -> emb (B*P, D)
  {
    VK_PROF("fwd.im2col");
    im2col_forward(images, a.cols(), B, c.channels, c.image_size, c.patch);
  }
  lin(m, hooks, m.patch, a.cols(), a.emb(), B * P);
  // Tokens: stream(0) (B,T,D) = [class token; emb] + pos
  tokens_forward(a.emb(), m.cls >= 0 ? m.params.ptr(m.cls) : nullptr, m.params.ptr(m.pos), a.stream(0), B, P, D);
  if (a.dropout()) kernels::dropout_forward(a.stream(0), a.mask_emb(), BT * D, c.dropout, a.dropout_seed, 0);
  for (int l = 0; l < c.depth; ++l) block_forward(m, l, a, hooks);
  // Final norm (B,T,D), pooling (B,D), head (B,classes)
  const float* enc = a.stream(c.depth);
  if (m.ln.w >= 0) {
    VK_PROF("fwd.layernorm");
    kernels::layernorm_forward(enc, m.params.ptr(m.ln.w), m.params.ptr(m.ln.b), a.lnf(), a.lnf_mean(), a.lnf_rstd(),
                               BT, D, c.norm_eps);
    enc = a.lnf();
    norm_hook(hooks, -1, 0, enc, BT);
  }
  pool_forward(c.pool, enc, a.pooled(), B, T, D, c.class_token);
  lin(m, hooks, m.head, a.pooled(), a.logits(), B);
}

int64_t infer_batch(const ViTConfig& c) {
  const int64_t tokens = std::max<int64_t>(kInferTokens, kInferTokensPerDim * c.dim);
  return std::max<int64_t>(1, tokens / c.tokens());
}

int64_t sub_batch_size(int64_t N, int64_t max_batch) {
  check(max_batch >= 1, "sub_batch_size: max_batch must be >= 1, got ", max_batch);
  if (N <= 0) return 0;
  const int64_t parts = (N + max_batch - 1) / max_batch;
  return (N + parts - 1) / parts;
}

// Images [0, N) in sub-batches of at most max_batch, one after the other.
static void infer_serial(const ViT& m, const float* images, int64_t N, int64_t max_batch, Acts& acts,
                         float* logits, const ForwardHooks* hooks) {
  const ViTConfig& c = m.cfg;
  const int64_t per_image = int64_t(c.channels) * c.image_size * c.image_size;
  const int64_t sub = sub_batch_size(N, max_batch);
  for (int64_t i = 0; i < N; i += sub) {
    const int64_t b = std::min(sub, N - i);
    acts.plan(c, b, false);
    vit_forward(m, images + i * per_image, b, acts, hooks);
    std::memcpy(logits + i * c.classes, acts.logits(), sizeof(float) * b * c.classes);
  }
}

const char* infer_threads_name(InferThreads t) {
  switch (t) {
    case InferThreads::Auto: return "auto";
    case InferThreads::PerOp: return "op";
    case InferThreads::PerImage: return "image";
  }
  return "?";
}

InferThreads parse_infer_threads(const std::string& s, const std::string& flag) {
  for (InferThreads t : {InferThreads::Auto, InferThreads::PerOp, InferThreads::PerImage})
    if (s == infer_threads_name(t)) return t;
  throw UsageError(cat(flag, ": '", s, "' is not auto, op or image"));
}

bool infer_per_image(int64_t N, int64_t max_batch, int nt, const ForwardHooks* hooks,
                     InferThreads threads) {
  // Each op then runs on its calling thread only: nested parallel regions
  // must be inactive (OpenMP's default), as oneDNN expects.
  if (threads == InferThreads::PerOp || nt < 2 || hooks || omp_in_parallel() || omp_get_max_active_levels() > 1)
    return false;
  if (threads == InferThreads::PerImage) return N >= nt;
  return N >= int64_t(nt) * max_batch;
}

void vit_infer(const ViT& m, const float* images, int64_t N, int64_t max_batch, Acts& acts, float* logits,
               const ForwardHooks* hooks, InferThreads threads) {
  if (!infer_per_image(N, max_batch, num_threads(), hooks, threads)) {
    infer_serial(m, images, N, max_batch, acts, logits, hooks);
    return;
  }
  // Thread t: images [N t / nt, N (t+1) / nt), through its own activations.
  const ViTConfig& c = m.cfg;
  const int64_t per_image = int64_t(c.channels) * c.image_size * c.image_size;
  const int nt = num_threads();
  if (int(acts.per_thread.size()) < nt) acts.per_thread.resize(nt);
  std::exception_ptr error;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t i0 = N * t / k, i1 = N * (t + 1) / k;
    try {
      infer_serial(m, images + i0 * per_image, i1 - i0, max_batch, acts.per_thread[t], logits + i0 * c.classes,
                   nullptr);
    } catch (...) {
#pragma omp critical(vit_infer_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

Tensor vit_predict(const ViT& m, const Tensor& images, int64_t max_batch, const ForwardHooks* hooks) {
  Acts acts;
  return vit_predict(m, images, acts, max_batch, hooks);
}

Tensor vit_predict(const ViT& m, const Tensor& images, Acts& acts, int64_t max_batch, const ForwardHooks* hooks) {
  const ViTConfig& c = m.cfg;
  check(images.ndim() == 4 && images.dim(1) == c.channels && images.dim(2) == c.image_size &&
            images.dim(3) == c.image_size,
        "input has shape ", shape_str(images.shape()), ", the model needs (N, ", c.channels, ", ", c.image_size,
        ", ", c.image_size, ")");
  check(images.dtype() == DType::F32, "input must be float32, got ", dtype_name(images.dtype()));
  const int64_t N = images.dim(0);
  Tensor logits = Tensor::empty({N, c.classes});
  vit_infer(m, images.f32(), N, max_batch > 0 ? max_batch : infer_batch(c), acts, logits.f32(), hooks);
  return logits;
}

}  // namespace vitkit

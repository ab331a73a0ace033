#include "vitkit/compress/prune_scores.h"

#include <cmath>
#include <optional>

#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/model/backward.h"
#include "vitkit/model/forward.h"
#include "vitkit/train/losses.h"

namespace vitkit {

void check_dense_for_pruning(const ViT& m, const char* pass, bool heads) {
  for (const Block& b : m.blocks) {
    for (const Linear* l : heads ? std::vector<const Linear*>{&b.qkv, &b.proj} : std::vector<const Linear*>{&b.fc1, &b.fc2})
      check(l->repr->kind() == "f32", pass, ": ", l->describe(), " is not dense f32 (", l->repr->describe(),
            "); prune before quantizing or rounding (put ", pass, " first in the recipe)");
    check(!heads || !b.attn_quant, pass, ": block ", b.qkv.block,
          " has integer attention (quantize:attention=true); prune heads before quantizing");
  }
}

// Sum of squares of rows [r0, r1) of W (rows, cols), or of its columns [c0, c1).
static double rows_sq(const float* W, int cols, int r0, int r1) {
  double s = 0;
  for (int64_t i = int64_t(r0) * cols; i < int64_t(r1) * cols; ++i) s += double(W[i]) * W[i];
  return s;
}
static double cols_sq(const float* W, int rows, int cols, int c0, int c1) {
  double s = 0;
  for (int r = 0; r < rows; ++r)
    for (int c = c0; c < c1; ++c) s += double(W[int64_t(r) * cols + c]) * W[int64_t(r) * cols + c];
  return s;
}

// Head h of block b: rows h*d.. of q, k and v (qkv (3A, D)) and columns h*d.. of out_proj (D, A).
UnitScores head_scores_l2(const ViT& m) {
  check_dense_for_pruning(m, "prune-heads", true);
  UnitScores s;
  for (const Block& b : m.blocks) {
    const int H = b.shape.heads, d = b.shape.head_dim, A = b.shape.attn_dim(), D = m.cfg.dim;
    const float *Wqkv = m.W(b.qkv), *Wo = m.W(b.proj);
    std::vector<double> v(static_cast<size_t>(H));
    for (int h = 0; h < H; ++h) {
      double sq = cols_sq(Wo, D, A, h * d, (h + 1) * d);
      for (int part = 0; part < 3; ++part) sq += rows_sq(Wqkv, D, part * A + h * d, part * A + (h + 1) * d);
      v[size_t(h)] = std::sqrt(sq);
    }
    s.push_back(std::move(v));
  }
  return s;
}

// Neuron n of block b: row n of fc1 (M, D) and column n of fc2 (D, M).
UnitScores neuron_scores_l2(const ViT& m) {
  check_dense_for_pruning(m, "prune-mlp", false);
  UnitScores s;
  for (const Block& b : m.blocks) {
    const int M = b.shape.mlp_dim, D = m.cfg.dim;
    const float *W1 = m.W(b.fc1), *W2 = m.W(b.fc2);
    std::vector<double> v(static_cast<size_t>(M));
    for (int n = 0; n < M; ++n) v[size_t(n)] = std::sqrt(rows_sq(W1, D, n, n + 1) + cols_sq(W2, D, M, n, n + 1));
    s.push_back(std::move(v));
  }
  return s;
}

// A copy of m that scores can run training-mode passes on: no dropout (the
// scores are of the model as it computes), every parameter of out_proj and
// fc2 given a gradient.
static std::unique_ptr<ViT> scoring_copy(const ViT& m) {
  auto c = m.clone();
  c->cfg.dropout = 0.f;
  return c;
}

// Per image: forward, cross-entropy, backward (every layer must train: the
// caller checked the pruned ones are dense f32); then per unit |sum of W .* dW|
// over its columns of out_proj (heads) and fc2 (neurons), summed over images.
TaylorScores taylor_scores(const ViT& m0, const Tensor& images, const std::vector<int>& labels, bool progress) {
  const auto mp = scoring_copy(m0);
  const ViT& m = *mp;
  const int64_t N = images.dim(0), per = images.numel() / std::max<int64_t>(N, 1), C = m.cfg.classes;
  check(int64_t(labels.size()) == N, "taylor scores: ", labels.size(), " labels for ", N, " images");
  TaylorScores out;
  for (const Block& b : m.blocks) {
    out.heads.emplace_back(size_t(b.shape.heads), 0.0);
    out.neurons.emplace_back(size_t(b.shape.mlp_dim), 0.0);
  }
  Acts acts;
  acts.plan(m.cfg, 1, true);
  BackWork work;
  work.plan(m.cfg, 1);
  Tensor grads = m.params.zeros_like();
  std::vector<float> dlogits(static_cast<size_t>(C));
  std::optional<Progress> bar;
  if (progress) bar.emplace("taylor scores", N);
  auto grad_of = [&](const Linear& l) {
    check(!l.trainable_params.empty(), "taylor scores: ", l.describe(), " has no trainable weight");
    return grads.f32() + m.params.info(l.trainable_params[0]).offset;
  };
  for (int64_t i = 0; i < N; ++i) {
    std::fill(grads.f32(), grads.f32() + grads.numel(), 0.f);
    vit_forward(m, images.f32() + i * per, 1, acts);
    cross_entropy_forward_backward(acts.logits(), &labels[size_t(i)], 1, C, 0.f, dlogits.data());
    vit_backward(m, acts, dlogits.data(), grads.f32(), work);
    for (size_t bi = 0; bi < m.blocks.size(); ++bi) {
      const Block& b = m.blocks[bi];
      const int D = m.cfg.dim, d = b.shape.head_dim, A = b.shape.attn_dim(), M = b.shape.mlp_dim;
      const float *Wo = m.W(b.proj), *dWo = grad_of(b.proj), *W2 = m.W(b.fc2), *dW2 = grad_of(b.fc2);
      std::vector<double> gh(size_t(b.shape.heads), 0.0), gn(size_t(M), 0.0);
      for (int r = 0; r < D; ++r) {
        for (int c = 0; c < A; ++c) gh[size_t(c / d)] += double(Wo[int64_t(r) * A + c]) * dWo[int64_t(r) * A + c];
        for (int c = 0; c < M; ++c) gn[size_t(c)] += double(W2[int64_t(r) * M + c]) * dW2[int64_t(r) * M + c];
      }
      for (size_t h = 0; h < gh.size(); ++h) out.heads[bi][h] += std::fabs(gh[h]);
      for (size_t n = 0; n < gn.size(); ++n) out.neurons[bi][n] += std::fabs(gn[n]);
    }
    if (bar) bar->update(i + 1);
  }
  if (bar) bar->finish();
  return out;
}

// Per block, from the packed qkv (B, T, 3A) the hook sees: for each image,
// head and query, the entropy -sum p log p of its attention probabilities.
UnitScores head_attention_entropy(const ViT& m, const Tensor& images, bool progress) {
  check_dense_for_pruning(m, "prune-heads", true);
  const int64_t N = images.dim(0), per = images.numel() / std::max<int64_t>(N, 1), T = m.cfg.tokens();
  UnitScores sum;
  for (const Block& b : m.blocks) sum.emplace_back(size_t(b.shape.heads), 0.0);
  ForwardHooks hooks;
  std::vector<float> probs;
  hooks.on_attention = [&](int block, const float* qkv, int64_t B) {
    const BlockShape s = m.blocks[size_t(block)].shape;
    const int64_t H = s.heads;
    probs.resize(size_t(B * T * H * T));
    kernels::attention_probs(qkv, B, T, H, s.head_dim, probs.data());  // (B, T, H, T)
    for (int64_t r = 0; r < B * T; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const float* p = probs.data() + (r * H + h) * T;
        double e = 0;
        for (int64_t u = 0; u < T; ++u)
          if (p[u] > 0) e -= double(p[u]) * std::log(double(p[u]));
        sum[size_t(block)][size_t(h)] += e;
      }
  };
  Acts acts;
  const int64_t batch = 16;
  std::optional<Progress> bar;
  if (progress) bar.emplace("attention entropy", N);
  for (int64_t i0 = 0; i0 < N; i0 += batch) {
    const int64_t B = std::min(batch, N - i0);
    acts.plan(m.cfg, B, false);
    vit_forward(m, images.f32() + i0 * per, B, acts, &hooks);
    if (bar) bar->update(i0 + B);
  }
  if (bar) bar->finish();
  for (auto& v : sum)
    for (double& x : v) x /= double(std::max<int64_t>(N, 1) * T);
  return sum;
}

}  // namespace vitkit

// Pruning (compress/prune_structured.h, compress/prune.h, repr/sparse.h):
// heads and neurons removed physically give the logits of the unpruned model
// with their contributions zeroed; the scores against independent
// computations (finite differences for Taylor); masks exact through
// fine-tuning and save/load; counts; reproducibility; bad specs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/prune_scores.h"
#include "vitkit/compress/prune_structured.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/sparse.h"
#include "vitkit/train/losses.h"
#include "vitkit/train/step.h"

using namespace vitkit;

namespace {

// 4 heads of 8, MLP 64, 3 blocks, 17 tokens.
ViTConfig config() { return test::small_config(16, 4, 32, 3, 4, 64, 10); }

std::vector<int> labels_of(int64_t n) {
  std::vector<int> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(int(i % 10));
  return v;
}

// |a - b| <= tol * max|b| elementwise.
void expect_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_LE(test::max_abs_diff(a, b), tol * std::max(1.f, test::max_abs(b))) << what;
}

// Zeroes head h of block b's contribution: its columns of out_proj.
void zero_head(ViT& m, int b, int h) {
  const Block& blk = m.blocks[size_t(b)];
  const int d = blk.shape.head_dim, A = blk.shape.attn_dim();
  float* W = m.W(blk.proj);
  for (int r = 0; r < m.cfg.dim; ++r)
    for (int e = 0; e < d; ++e) W[int64_t(r) * A + h * d + e] = 0.f;
}

// Zeroes neuron n of block b's contribution: its column of fc2.
void zero_neuron(ViT& m, int b, int n) {
  const Block& blk = m.blocks[size_t(b)];
  const int M = blk.shape.mlp_dim;
  float* W = m.W(blk.fc2);
  for (int r = 0; r < m.cfg.dim; ++r) W[int64_t(r) * M + n] = 0.f;
}

// Mean cross-entropy of m on one image.
double loss_of(const ViT& m, const Tensor& x, int label) {
  Tensor lg = vit_predict(m, x);
  return cross_entropy_forward_backward(lg.f32(), &label, 1, m.cfg.classes, 0.f, nullptr);
}

Tensor one_image(const Tensor& images, int64_t i) {
  const int64_t per = images.numel() / images.dim(0);
  Shape s = images.shape();
  s[0] = 1;
  Tensor t = Tensor::zeros(s);
  std::memcpy(t.f32(), images.f32() + i * per, sizeof(float) * size_t(per));
  return t;
}

}  // namespace

// ---------------------------------------------------------------- removal

TEST(PruneHeads, RemovedHeadsGiveTheLogitsOfZeroedHeads) {
  auto m = test::random_model(config(), 1, 0.3f);
  const Tensor x = test::random_images(m->cfg, 5, 2);
  auto zeroed = m->clone();
  // Block 0 loses heads 1 and 3, block 2 head 0; block 1 keeps all.
  zero_head(*zeroed, 0, 1), zero_head(*zeroed, 0, 3), zero_head(*zeroed, 2, 0);
  remove_heads(*m, {{0, 2}, {0, 1, 2, 3}, {1, 2, 3}});
  EXPECT_EQ(m->blocks[0].shape.heads, 2);
  EXPECT_EQ(m->blocks[1].shape.heads, 4);
  EXPECT_EQ(m->blocks[2].shape.heads, 3);
  EXPECT_EQ(m->blocks[0].qkv.out, 3 * 16);
  EXPECT_EQ(m->blocks[0].proj.in, 16);
  expect_close(vit_predict(*m, x), vit_predict(*zeroed, x), 2e-6, "heads removed vs zeroed");
  // The smaller model saves, loads and runs the same.
  const std::string path = test::temp_dir() + "/heads.safetensors";
  save_model(*m, path);
  auto back = load_model(path);
  EXPECT_EQ(back->cfg.block(0).heads, 2);
  EXPECT_EQ(back->cfg.block(2).heads, 3);
  EXPECT_TRUE(test::bit_equal(vit_predict(*back, x), vit_predict(*m, x)));
}

TEST(PruneMlp, RemovedNeuronsGiveTheLogitsOfZeroedNeurons) {
  auto m = test::random_model(config(), 3, 0.3f);
  const Tensor x = test::random_images(m->cfg, 4, 4);
  auto zeroed = m->clone();
  std::vector<std::vector<int>> keep(3);
  for (int b = 0; b < 3; ++b)
    for (int n = 0; n < 64; ++n) {
      if ((n * 7 + b) % 3 == 0) zero_neuron(*zeroed, b, n);
      else keep[size_t(b)].push_back(n);
    }
  remove_neurons(*m, keep);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(m->blocks[size_t(b)].shape.mlp_dim, int(keep[size_t(b)].size()));
  expect_close(vit_predict(*m, x), vit_predict(*zeroed, x), 2e-6, "neurons removed vs zeroed");
}

// Parameters and MACs fall by exactly the removed tensors' sizes.
TEST(PruneHeads, CountsFallByTheRemovedRowsAndColumns) {
  auto m = test::random_model(config(), 5);
  const ModelCost before = model_cost(*m);
  const nlohmann::json rec = apply_pass(*m, "prune-heads:count=1,scope=layer");
  const ModelCost after = model_cost(*m);
  const int64_t D = 32, d = 8, T = m->cfg.tokens(), L = 3;
  // Per block one head: 3 d rows of qkv (D weights + 1 bias each), d columns of out_proj (D weights).
  EXPECT_EQ(before.params - after.params, L * (3 * d * (D + 1) + d * D));
  // MACs: qkv and out_proj 4 d D per token, scores and values 2 T d per token.
  EXPECT_EQ(before.macs - after.macs, L * (T * 4 * d * D + 2 * T * T * d));
  EXPECT_EQ(rec["removed_count"], 3);
  EXPECT_EQ(rec["params_after"], after.params);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(m->cfg.block(b).heads, 3);
}

// ---------------------------------------------------------------- scores

TEST(PruneScores, L2IsTheNormOfTheGroupedWeights) {
  auto m = test::random_model(config(), 7);
  const UnitScores s = head_scores_l2(*m);
  const UnitScores n = neuron_scores_l2(*m);
  const int D = 32, d = 8, A = 32, M = 64;
  for (int b = 0; b < 3; ++b) {
    const Block& blk = m->blocks[size_t(b)];
    for (int h = 0; h < 4; ++h) {
      double sq = 0;
      for (int r = 0; r < 3 * A; ++r)
        if ((r % A) / d == h)
          for (int c = 0; c < D; ++c) sq += std::pow(double(m->W(blk.qkv)[r * D + c]), 2);
      for (int r = 0; r < D; ++r)
        for (int c = h * d; c < (h + 1) * d; ++c) sq += std::pow(double(m->W(blk.proj)[r * A + c]), 2);
      EXPECT_NEAR(s[size_t(b)][size_t(h)], std::sqrt(sq), 1e-9 * std::sqrt(sq));
    }
    for (int k = 0; k < M; k += 13) {
      double sq = 0;
      for (int c = 0; c < D; ++c) sq += std::pow(double(m->W(blk.fc1)[k * D + c]), 2);
      for (int r = 0; r < D; ++r) sq += std::pow(double(m->W(blk.fc2)[r * M + k]), 2);
      EXPECT_NEAR(n[size_t(b)][size_t(k)], std::sqrt(sq), 1e-9 * std::sqrt(sq));
    }
  }
  // The pass's record carries the head scores it ranked by, and removes the lowest.
  auto p = m->clone();
  const nlohmann::json rec = apply_pass(*p, "prune-heads:count=2");
  std::vector<std::tuple<double, int, int>> all;
  for (int b = 0; b < 3; ++b)
    for (int h = 0; h < 4; ++h) all.emplace_back(s[size_t(b)][size_t(h)], b, h);
  std::sort(all.begin(), all.end());
  for (int k = 0; k < 2; ++k) {
    const auto& [sc, b, h] = all[size_t(k)];
    const auto& r = rec["removed"][size_t(b)];
    EXPECT_NE(std::find(r.begin(), r.end(), h), r.end()) << "head " << h << " of block " << b << " (score " << sc << ")";
  }
  EXPECT_NEAR(rec["scores"][0][0].get<double>(), s[0][0], 1e-12);
}

// Taylor importance = sum over images of |dL/dg|, g a gate on the unit's
// output; dL/dg by central differences of the loss with the unit's out_proj
// (fc2) columns scaled by 1 +- eps.
TEST(PruneScores, TaylorIsTheGateGradientByFiniteDifferences) {
  auto m = test::random_model(config(), 9, 0.3f);
  const int64_t N = 3;
  const Tensor x = test::random_images(m->cfg, N, 10);
  const std::vector<int> y = labels_of(N);
  const TaylorScores t = taylor_scores(*m, x, y, false);
  auto gate_grad = [&](bool head, int b, int u) {
    double sum = 0;
    for (int64_t i = 0; i < N; ++i) {
      const Tensor xi = one_image(x, i);
      double l[2];
      for (int side = 0; side < 2; ++side) {
        auto c = m->clone();
        const Block& blk = c->blocks[size_t(b)];
        const double eps = 1e-2, g = side ? 1 + eps : 1 - eps;
        const int D = c->cfg.dim;
        if (head) {
          const int d = blk.shape.head_dim, A = blk.shape.attn_dim();
          for (int r = 0; r < D; ++r)
            for (int e = 0; e < d; ++e) c->W(blk.proj)[r * A + u * d + e] *= float(g);
        } else {
          const int M = blk.shape.mlp_dim;
          for (int r = 0; r < D; ++r) c->W(blk.fc2)[r * M + u] *= float(g);
        }
        l[side] = loss_of(*c, xi, y[size_t(i)]);
      }
      sum += std::fabs((l[1] - l[0]) / 2e-2);
    }
    return sum;
  };
  for (auto [b, u] : {std::pair{0, 0}, std::pair{1, 2}, std::pair{2, 3}}) {
    const double fd = gate_grad(true, b, u);
    EXPECT_NEAR(t.heads[size_t(b)][size_t(u)], fd, 2e-3 * fd + 1e-4) << "head " << u << " of block " << b;
  }
  for (auto [b, u] : {std::pair{0, 5}, std::pair{2, 40}}) {
    const double fd = gate_grad(false, b, u);
    EXPECT_NEAR(t.neurons[size_t(b)][size_t(u)], fd, 2e-3 * fd + 1e-4) << "neuron " << u << " of block " << b;
  }
}

// Zero q weights and biases: every score is 0, attention uniform, entropy log T.
// Otherwise the entropy of softmax(q k / sqrt(d)) recomputed here from a
// training-mode pass's qkv.
TEST(PruneScores, EntropyIsTheMeanAttentionEntropy) {
  auto m = test::random_model(config(), 11, 0.4f);
  const Tensor x = test::random_images(m->cfg, 2, 12);
  const UnitScores e = head_attention_entropy(*m, x, false);
  Acts acts;
  acts.plan(m->cfg, 2, true);
  vit_forward(*m, x.f32(), 2, acts);
  const int64_t T = m->cfg.tokens(), d = 8, A = 32;
  for (int b = 0; b < 3; ++b)
    for (int h = 0; h < 4; ++h) {
      double sum = 0;
      const float* qkv = acts.qkv(b);
      for (int64_t img = 0; img < 2; ++img)
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> s(static_cast<size_t>(T));
          for (int64_t u = 0; u < T; ++u) {
            double dot = 0;
            for (int64_t k = 0; k < d; ++k)
              dot += double(qkv[(img * T + t) * 3 * A + h * d + k]) * qkv[(img * T + u) * 3 * A + A + h * d + k];
            s[size_t(u)] = dot / std::sqrt(double(d));
          }
          const double mx = *std::max_element(s.begin(), s.end());
          double z = 0;
          for (double v : s) z += std::exp(v - mx);
          for (double v : s) {
            const double p = std::exp(v - mx) / z;
            if (p > 0) sum -= p * std::log(p);
          }
        }
      EXPECT_NEAR(e[size_t(b)][size_t(h)], sum / double(2 * T), 1e-6) << "block " << b << " head " << h;
    }
  // Uniform attention: q = 0.
  auto u = m->clone();
  for (Block& blk : u->blocks) {
    std::memset(u->W(blk.qkv), 0, sizeof(float) * size_t(A) * 32);
    std::memset(blk.qkv.repr->bias(), 0, sizeof(float) * size_t(A));
  }
  for (auto& v : head_attention_entropy(*u, x, false))
    for (double h : v) EXPECT_NEAR(h, std::log(double(T)), 1e-6);  // probabilities in f32
}

// ---------------------------------------------------------------- passes

TEST(PruneHeads, PassesSelectByScopeAndKeepMinimums) {
  auto m = test::random_model(config(), 13);
  // ratio 0.5 of 12 heads globally: 6, wherever the lowest scores are, none below 1 per block.
  auto g = m->clone();
  nlohmann::json rec = apply_pass(*g, "prune-heads:ratio=0.5");
  EXPECT_EQ(rec["removed_count"], 6);
  int heads = 0;
  for (int b = 0; b < 3; ++b) heads += g->cfg.block(b).heads;
  EXPECT_EQ(heads, 6);
  // Layer scope: 2 of 4 in every block.
  auto l = m->clone();
  apply_pass(*l, "prune-heads:ratio=0.5,scope=layer");
  for (int b = 0; b < 3; ++b) EXPECT_EQ(l->cfg.block(b).heads, 2);
  // min_heads=3 stops a count of 9: one per block goes.
  auto k = m->clone();
  rec = apply_pass(*k, "prune-heads:count=9,min_heads=3");
  EXPECT_EQ(rec["removed_count"], 3);
  EXPECT_EQ(rec["limited_by_min"], true);
  // MLP neurons alike.
  auto n = m->clone();
  rec = apply_pass(*n, "prune-mlp:ratio=0.25,scope=layer");
  for (int b = 0; b < 3; ++b) EXPECT_EQ(n->cfg.block(b).mlp_dim, 48);
  EXPECT_LT(rec["params_after"].get<int64_t>(), rec["params_before"].get<int64_t>());
}

TEST(PruneHeads, TaylorAndEntropyNeedCalibrationImages) {
  auto m = test::random_model(config(), 14);
  EXPECT_THROW(apply_pass(*m, "prune-heads:ratio=0.25,score=taylor"), UsageError);
  const PassContext ctx = test::random_calibration(m->cfg, 8, 15);
  auto t = m->clone();
  nlohmann::json rec = apply_pass(*t, "prune-heads:ratio=0.25,score=taylor", ctx);
  EXPECT_EQ(rec["removed_count"], 3);
  EXPECT_EQ(rec["calibration"]["images"], 8);
  auto e = m->clone();
  rec = apply_pass(*e, "prune-heads:ratio=0.25,score=entropy", ctx);
  EXPECT_EQ(rec["removed_count"], 3);
  auto n = m->clone();
  apply_pass(*n, "prune-mlp:count=10,score=taylor,scope=layer", ctx);
  EXPECT_EQ(n->cfg.block(1).mlp_dim, 54);
}

TEST(PruneHeads, BadSpecsAreClearErrors) {
  auto m = test::random_model(config(), 16);
  auto error_of = [&](const std::string& spec) {
    auto c = m->clone();
    try {
      apply_pass(*c, spec);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("prune-heads:ratio=1.0").find("ratio=1.0 is not in 0..0.999"), std::string::npos)
      << error_of("prune-heads:ratio=1.0");
  EXPECT_NE(error_of("prune-heads:ratio=0.5,min_heads=5").find("min_heads=5 is above block 0's 4 heads"),
            std::string::npos)
      << error_of("prune-heads:ratio=0.5,min_heads=5");
  EXPECT_NE(error_of("prune-heads:ratio=0.5,score=magic").find("unknown score 'magic'"), std::string::npos);
  EXPECT_NE(error_of("prune-mlp:ratio=0.5,score=entropy").find("unknown score 'entropy'"), std::string::npos);
  EXPECT_NE(error_of("prune-heads:score=l2").find("give ratio=R"), std::string::npos);
  EXPECT_NE(error_of("prune-heads:ratio=0.5,count=2").find("give ratio=R"), std::string::npos);
  EXPECT_NE(error_of("prune-heads:ratio=0.5,scope=block").find("unknown scope 'block'"), std::string::npos);
  // A quantized model cannot lose heads: prune first.
  auto q = m->clone();
  apply_pass(*q, "quantize:bits=8");
  try {
    apply_pass(*q, "prune-heads:ratio=0.5");
    FAIL() << "pruned a quantized layer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prune before quantizing"), std::string::npos) << e.what();
  }
}

// A head-pruned model trains (per-block shapes through the backward pass).
TEST(PruneHeads, APrunedModelFineTunes) {
  auto m = test::random_model(config(), 17);
  apply_pass(*m, "prune-heads:ratio=0.5");
  apply_pass(*m, "prune-mlp:ratio=0.5");
  const Tensor x = test::random_images(m->cfg, 8, 18);
  const std::vector<int> y = labels_of(8);
  TrainStep step(*m, AdamWConfig{});
  StepOptions o;
  o.lr = 1e-3f;
  const float first = step.run(x.f32(), y.data(), 8, o).loss;
  float last = first;
  for (int i = 0; i < 20; ++i) last = step.run(x.f32(), y.data(), 8, o).loss;
  EXPECT_LT(last, first);
}

// ---------------------------------------------------------------- unstructured

TEST(PruneSparse, L1RemovesTheSmallestWeightsOfEachLayer) {
  auto dense = test::random_model(config(), 19);
  auto m = dense->clone();
  const nlohmann::json rec = apply_pass(*m, "prune:sparsity=0.6");
  for (size_t i = 0; i < m->linears().size(); ++i) {
    const Linear& l = *m->linears()[i];
    if (l.block < 0) {
      EXPECT_EQ(l.repr->kind(), "f32") << l.name << ": only the encoder's layers by default";
      continue;
    }
    ASSERT_EQ(l.repr->kind(), "sparse") << l.name;
    const auto& s = static_cast<const SparseLinear&>(*l.repr);
    const int64_t n = int64_t(l.in) * l.out;
    EXPECT_EQ(s.nnz(), n - std::llround(0.6 * double(n))) << l.name;
    std::vector<float> scratch;
    const float* w = l.repr->plain_weight(scratch);
    const float* w0 = dense->W(*dense->linears()[i]);
    float max_pruned = 0, min_kept = 1e30f;
    for (int64_t k = 0; k < n; ++k) {
      if (s.kept(int(k / l.in), int(k % l.in))) {
        EXPECT_EQ(w[k], w0[k]);
        min_kept = std::min(min_kept, std::fabs(w0[k]));
      } else {
        EXPECT_EQ(w[k], 0.f);
        max_pruned = std::max(max_pruned, std::fabs(w0[k]));
      }
    }
    EXPECT_LE(max_pruned, min_kept) << l.name;
    EXPECT_EQ(l.repr->weight_params(), s.nnz());
  }
  EXPECT_NEAR(rec["sparsity"].get<double>(), 0.6, 1e-3);
}

TEST(PruneSparse, GlobalL1IsOneThresholdAndRandomIsSeeded) {
  auto dense = test::random_model(config(), 20);
  auto g = dense->clone();
  apply_pass(*g, "prune:sparsity=0.5,scope=global");
  float max_pruned = 0, min_kept = 1e30f;
  int64_t zero = 0, total = 0;
  for (size_t i = 0; i < g->linears().size(); ++i) {
    const Linear& l = *g->linears()[i];
    if (l.block < 0) continue;
    const auto& s = static_cast<const SparseLinear&>(*l.repr);
    const float* w0 = dense->W(*dense->linears()[i]);
    for (int64_t k = 0; k < int64_t(l.in) * l.out; ++k) {
      const bool kept = s.kept(int(k / l.in), int(k % l.in));
      (kept ? min_kept : max_pruned) = kept ? std::min(min_kept, std::fabs(w0[k])) : std::max(max_pruned, std::fabs(w0[k]));
      zero += !kept;
      ++total;
    }
  }
  EXPECT_LE(max_pruned, min_kept);
  EXPECT_EQ(zero, std::llround(0.5 * double(total)));
  // Random: the same seed the same mask, another seed another.
  auto masks = [&](uint64_t seed) {
    auto c = dense->clone();
    PassContext ctx;
    ctx.seed = seed;
    apply_pass(*c, "prune:sparsity=0.5,method=random", ctx);
    std::vector<float> all, scratch;
    for (const Linear* l : c->linears()) {
      const float* w = l->repr->plain_weight(scratch);
      all.insert(all.end(), w, w + int64_t(l->in) * l->out);
    }
    return all;
  };
  EXPECT_EQ(masks(1), masks(1));
  EXPECT_NE(masks(1), masks(2));
}

// Iterative: 0.5 then 0.8 keeps the first mask's pruned weights pruned; lower is an error.
TEST(PruneSparse, IterativePruningOnlyAddsZeros) {
  auto m = test::random_model(config(), 21);
  apply_pass(*m, "prune:sparsity=0.5,method=random");
  auto first = m->clone();
  apply_pass(*m, "prune:sparsity=0.8");
  for (size_t i = 0; i < m->linears().size(); ++i) {
    const Linear& l = *m->linears()[i];
    if (l.block < 0) continue;
    const auto& a = static_cast<const SparseLinear&>(*first->linears()[i]->repr);
    const auto& b = static_cast<const SparseLinear&>(*l.repr);
    for (int o = 0; o < l.out; ++o)
      for (int j = 0; j < l.in; ++j)
        if (!a.kept(o, j)) { EXPECT_FALSE(b.kept(o, j)) << l.name; }
    EXPECT_NEAR(1.0 - b.density(), 0.8, 1e-3);
  }
  EXPECT_THROW(apply_pass(*m, "prune:sparsity=0.5"), UsageError);
  EXPECT_THROW(apply_pass(*m, "prune:sparsity=0.5,method=magnitude"), UsageError);
  EXPECT_THROW(apply_pass(*m, "prune:sparsity=1"), UsageError);
  EXPECT_THROW(apply_pass(*m, "prune:method=l1"), UsageError);
}

// Fine-tuning changes the kept weights and no pruned one; a save/load keeps
// both exactly, and the sparse file is much smaller than the dense one.
TEST(PruneSparse, MasksHoldThroughFineTuningAndFiles) {
  auto m = test::random_model(config(), 22);
  const std::string dir = test::temp_dir();
  save_model(*m, dir + "/dense.safetensors");
  apply_pass(*m, "prune:sparsity=0.9,layers=.");
  auto before = m->clone();
  const Tensor x = test::random_images(m->cfg, 8, 23);
  const std::vector<int> y = labels_of(8);
  {
    TrainStep step(*m, AdamWConfig{});
    StepOptions o;
    o.lr = 1e-2f;
    for (int i = 0; i < 5; ++i) step.run(x.f32(), y.data(), 8, o);
  }
  end_training(*m);
  int64_t changed = 0;
  std::vector<float> s0, s1;
  for (size_t i = 0; i < m->linears().size(); ++i) {
    const Linear& l = *m->linears()[i];
    const auto& r = static_cast<const SparseLinear&>(*l.repr);
    const float* w = l.repr->plain_weight(s1);
    const float* w0 = before->linears()[i]->repr->plain_weight(s0);
    for (int64_t k = 0; k < int64_t(l.in) * l.out; ++k) {
      if (!r.kept(int(k / l.in), int(k % l.in))) { ASSERT_EQ(w[k], 0.f) << l.name << " weight " << k; }
      changed += w[k] != w0[k];
    }
  }
  EXPECT_GT(changed, 0);
  save_model(*m, dir + "/sparse.safetensors");
  auto back = load_model(dir + "/sparse.safetensors");
  EXPECT_TRUE(test::bit_equal(vit_predict(*back, x), vit_predict(*m, x)));
  for (size_t i = 0; i < m->linears().size(); ++i) {
    EXPECT_EQ(back->linears()[i]->repr->kind(), "sparse");
    EXPECT_EQ(static_cast<const SparseLinear&>(*back->linears()[i]->repr).nnz(),
              static_cast<const SparseLinear&>(*m->linears()[i]->repr).nnz());
  }
  // The layers' weights take a bit a weight plus the kept values: 1/32 + 0.1 of f32's 4 bytes.
  int64_t wbytes = 0, dense_bytes = 0;
  for (const Linear* l : back->linears()) {
    wbytes += l->repr->file_bytes() - (l->has_bias ? 4 * l->out : 0);
    dense_bytes += 4 * int64_t(l->in) * l->out;
  }
  EXPECT_LT(double(wbytes) / double(dense_bytes), 0.14);
  EXPECT_LT(file_size(dir + "/sparse.safetensors"), file_size(dir + "/dense.safetensors") / 3);
}

// The sparse layer computes what the dense layer with the masked weight computes.
TEST(PruneSparse, SparseForwardEqualsTheMaskedDenseProduct) {
  auto m = test::random_model(config(), 24);
  const Tensor x = test::random_images(m->cfg, 3, 25);
  for (const char* s : {"0.3", "0.95"}) {
    auto p = m->clone();
    apply_pass(*p, std::string("prune:sparsity=") + s);
    auto d = test::random_model(config(), 24);
    std::vector<float> scratch;
    for (size_t i = 0; i < p->linears().size(); ++i) {
      const float* w = p->linears()[i]->repr->plain_weight(scratch);
      const Linear& l = *p->linears()[i];
      std::memcpy(d->W(*d->linears()[i]), w, sizeof(float) * size_t(l.in) * size_t(l.out));
    }
    expect_close(vit_predict(*p, x), vit_predict(*d, x), 1e-5, cat("sparsity ", s));
  }
}

// ---------------------------------------------------------------- the real path

// The shipped default model through the CLI: heads, neurons and weights pruned
// by compress, then every consumer takes the file: info --layers (per-block
// heads), eval, bench, predict, a fine-tuning run (masks exact, heads still
// gone), and the log says what each pass did.
TEST(PruneCli, APrunedShippedModelGoesThroughEveryCommand) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(shipped);
  const bool fmnist = file_exists(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz");
  const std::string dir = test::temp_dir(), out = dir + "/p.safetensors";
  test::CliResult r = test::run_cli("compress " + shipped +
                                    " --pass prune-heads:ratio=0.25,scope=layer --pass prune-mlp:ratio=0.5 "
                                    "--pass prune:sparsity=0.5 -o " + out + " -q --json");
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = test::parse_json(r);
  ASSERT_EQ(j["passes"].size(), 3u);
  EXPECT_EQ(j["passes"][0]["removed_count"], 6);  // one of 4 heads in each of 6 blocks
  auto m = load_model(out);
  for (int b = 0; b < 6; ++b) EXPECT_EQ(m->cfg.block(b).heads, 3);
  EXPECT_EQ(m->blocks[0].fc1.repr->kind(), "sparse");
  EXPECT_LT(file_size(out), file_size(shipped) / 2);

  r = test::run_cli("info " + out + " --layers");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("3 heads x 32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sparse"), std::string::npos) << r.out;
  r = test::run_cli("info " + out + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::parse_json(r)["blocks"][2]["heads"], 3);
  EXPECT_EQ(test::parse_json(r)["parameters"], model_cost(*m).params);

  r = test::run_cli("bench " + out + " --batch 4 --reps 2 --warmup 0 --threads 2 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::parse_json(r)["rows"][0]["params"], model_cost(*m).params);

  const Tensor x = test::random_images(m->cfg, 3, 40);
  write_npy(dir + "/x.npy", x);
  r = test::run_cli("predict " + out + " --input " + dir + "/x.npy -o " + dir + "/y.npy --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  if (!fmnist) GTEST_SKIP() << "Fashion-MNIST not installed: eval and train not run";
  r = test::run_cli("eval " + out + " --data fashion-mnist --limit 500 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(test::parse_json(r)["top1"].get<double>(), 0.5) << "a quarter of the heads, half the neurons and half "
                                                                "the weights gone: still far above chance";
  // Fine-tuning keeps the structure and the masks.
  const std::string cfg = dir + "/ft.toml", tuned = dir + "/t.safetensors";
  write_text_atomic(cfg, "[data]\ndataset = \"fashion-mnist\"\ntrain_limit = 256\ntest_limit = 200\n\n[train]\nepochs = 1\n"
                  "batch = 64\nlr = 1e-4\nmin_lr = 1e-5\nwarmup_epochs = 0\nseed = 1\n");
  r = test::run_cli("train --config " + cfg + " --init " + out + " -o " + tuned + " --threads 2 -q --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto t = load_model(tuned);
  EXPECT_EQ(t->cfg.block(4).heads, 3);
  std::vector<float> s0, s1;
  int64_t changed = 0;
  for (size_t i = 0; i < t->linears().size(); ++i) {
    const Linear& a = *m->linears()[i];
    const Linear& b = *t->linears()[i];
    ASSERT_EQ(a.repr->kind(), b.repr->kind()) << a.name;
    if (a.repr->kind() != "sparse") continue;
    const auto& sa = static_cast<const SparseLinear&>(*a.repr);
    const auto& sb = static_cast<const SparseLinear&>(*b.repr);
    ASSERT_EQ(sa.nnz(), sb.nnz()) << a.name;
    const float* w0 = a.repr->plain_weight(s0);
    const float* w1 = b.repr->plain_weight(s1);
    for (int64_t k = 0; k < int64_t(a.in) * a.out; ++k) {
      ASSERT_EQ(sa.kept(int(k / a.in), int(k % a.in)), sb.kept(int(k / a.in), int(k % a.in))) << a.name;
      if (!sb.kept(int(k / a.in), int(k % a.in))) { ASSERT_EQ(w1[k], 0.f); }
      changed += w0[k] != w1[k];
    }
  }
  EXPECT_GT(changed, 0);
}

// The iterative schedule of the issue as a recipe on the shipped model:
// prune-heads, fine-tune (distilled from the original), prune-heads again,
// fine-tune; a row per step (JSON and CSV), the rows in the file's log, the
// output holding exactly the heads the steps left; the same seed the same file.
TEST(PruneCli, IterativeRecipeWithFineTuningGivesARowPerStepSlow) {
  const std::string shipped = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(shipped);
  if (!file_exists(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  const std::string dir = test::temp_dir(), recipe = dir + "/r.toml";
  const std::string ft =
      "[[step]]\nfinetune = true\n[step.train]\nepochs = 1\nbatch = 64\nlr = 2e-4\nwarmup_epochs = 0\nseed = 3\n"
      "[step.data]\ntrain_limit = 384\ntest_limit = 100\n[step.distill]\nteacher = \"original\"\n";
  write_text_atomic(recipe, "[[step]]\npass = \"prune-heads\"\ncount = 6\n\n" + ft +
                                "\n[[step]]\npass = \"prune-heads\"\ncount = 6\nscope = \"global\"\n\n" + ft);
  auto run = [&](const std::string& out) {
    return test::run_cli("compress " + shipped + " --recipe " + recipe + " --data fashion-mnist --compare-limit 300 " +
                         "--steps-csv " + out + ".csv -o " + out + " --threads 2 -q --json");
  };
  test::CliResult r = run(dir + "/a.safetensors");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  ASSERT_EQ(j["steps"].size(), 5u);  // the input and four steps
  const int64_t p0 = j["steps"][0]["params"];
  EXPECT_LT(j["steps"][1]["params"].get<int64_t>(), p0);
  EXPECT_EQ(j["steps"][2]["params"], j["steps"][1]["params"]) << "fine-tuning keeps the structure";
  EXPECT_LT(j["steps"][3]["params"].get<int64_t>(), j["steps"][2]["params"].get<int64_t>());
  for (auto& s : j["steps"]) {
    EXPECT_EQ(s["images"], 300);
    EXPECT_GT(s["top3"].get<double>(), s["top1"].get<double>() - 1e-12);
    EXPECT_GT(s["latency_ms"].get<double>(), 0);
    EXPECT_GT(s["agreement"].get<double>(), 0.5);
    EXPECT_LE(s["agreement"].get<double>(), 1.0);
  }
  EXPECT_EQ(j["steps"][0]["agreement"], 1.0) << "the input agrees with itself";
  EXPECT_EQ(j["passes"][1]["pass"], "finetune");
  EXPECT_EQ(j["passes"][1]["config"]["distill"]["teacher"], "original");
  EXPECT_EQ(j["passes"][1]["history"].size(), 1u);
  auto m = load_model(dir + "/a.safetensors");
  int heads = 0;
  for (int b = 0; b < 6; ++b) heads += m->cfg.block(b).heads;
  EXPECT_EQ(heads, 24 - 12);
  const nlohmann::json log = compression_log(*m);
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[3]["after"]["params"], j["steps"][4]["params"]);
  EXPECT_EQ(log[3]["after"]["params"], model_cost(*m).params);
  const std::string csv = read_text_file(dir + "/a.safetensors.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 6);
  EXPECT_EQ(csv.rfind("step,what,params,bytes,macs,images,top1,top3,agreement,latency_ms", 0), 0u) << csv;
  // Reproducible: the same seeds, the same weights.
  r = run(dir + "/b.safetensors");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::param_values(*load_model(dir + "/b.safetensors")), test::param_values(*m));
}

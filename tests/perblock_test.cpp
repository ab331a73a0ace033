// Models whose encoder blocks each have their own heads, head_dim and mlp_dim
// (ViTConfig::blocks; q, k, v heads x head_dim wide, which need not be dim),
// against plain PyTorch (tests/ref/perblock_ref.py, RefViT in _models.py):
//   * the file's config and layer shapes, and the text form of the blocks;
//   * forward logits within 1e-4 of max|logit| (inference paths and training mode);
//   * the loss and every parameter's gradient (vit_backward) within 1e-3 of
//     the tensor's max|grad|, as train_grad_test;
//   * parameters and MACs counted from the model (model/cost.h) against
//     PyTorch's parameter count and an analytic MAC count;
//   * save/load keeps the blocks (and the metadata is what the reference wrote);
//   * `vitkit info` on the file;
//   * a double-precision finite-difference check of the whole model's
//     gradient on tiny per-block models, through a plain double forward pass
//     written here (itself checked against PyTorch's logits);
//   * TrainStep lowers the loss on a fixed batch in 20 steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/backward.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/train/step.h"

using namespace vitkit;

namespace {

// ---------------------------------------------------------------------------
// The reference cases: the block shapes perblock_ref.py builds them with.

struct RefCase {
  std::string name;
  std::vector<BlockShape> blocks;
  std::string text;  // the blocks in config text form (set_config_field "blocks")
};

const RefCase kCases[] = {
    {"pre_gelu_cls", {{4, 16, 256}, {3, 16, 200}, {2, 16, 96}}, "4x16x256:3x16x200:2x16x96"},
    {"post_relu_mean", {{2, 24, 64}, {5, 8, 120}, {1, 20, 50}}, "2x24x64:5x8x120:1x20x50"},
};

std::string model_file(const RefCase& rc) { return test::ref_path("perblock/" + rc.name + ".safetensors"); }
std::string io_file(const RefCase& rc) { return test::ref_path("perblock/" + rc.name + ".io.safetensors"); }

int64_t read_i64(const SafetensorsReader& r, const std::string& name) { return r.read(name).data<int64_t>()[0]; }

// vitkit.config with vitkit.preprocess folded in, as config_to_json writes it.
nlohmann::json file_config_json(const std::string& path) {
  const auto md = SafetensorsReader(path).metadata();
  nlohmann::json j = nlohmann::json::parse(md.at("vitkit.config"));
  if (md.count("vitkit.preprocess")) j["preprocess"] = nlohmann::json::parse(md.at("vitkit.preprocess"));
  return j;
}

// Multiply-accumulates per image of every matmul, from the block shapes:
// linear layers rows x in x out, attention's q.k^T and attention.v T x T x A each.
int64_t analytic_macs(const ViTConfig& c, const std::vector<BlockShape>& blocks) {
  const int64_t P = c.patches(), T = c.tokens(), D = c.dim;
  int64_t macs = P * c.patch_k() * D + D * c.classes;
  for (const BlockShape& b : blocks) {
    const int64_t A = b.attn_dim(), M = b.mlp_dim;
    macs += T * D * 3 * A + 2 * T * T * A + T * A * D + 2 * T * D * M;
  }
  return macs;
}

// ---------------------------------------------------------------------------
// Config, layer shapes and costs.

// Each block's layers are sized by its own shape, and agree with the file's tensors.
void check_layer_shapes(const ViT& m, const RefCase& rc, const SafetensorsReader& file) {
  const int D = m.cfg.dim;
  ASSERT_EQ(m.blocks.size(), rc.blocks.size());
  for (size_t i = 0; i < rc.blocks.size(); ++i) {
    SCOPED_TRACE("block " + std::to_string(i));
    const Block& b = m.blocks[i];
    const int A = rc.blocks[i].attn_dim(), M = rc.blocks[i].mlp_dim;
    EXPECT_EQ(b.shape, rc.blocks[i]);
    EXPECT_EQ(m.cfg.block(int(i)), rc.blocks[i]);
    const std::pair<const Linear*, std::pair<int, int>> want[] = {
        {&b.qkv, {D, 3 * A}}, {&b.proj, {A, D}}, {&b.fc1, {D, M}}, {&b.fc2, {M, D}}};
    for (const auto& [l, io] : want) {
      EXPECT_EQ(l->in, io.first) << l->name;
      EXPECT_EQ(l->out, io.second) << l->name;
      const StTensor* w = file.find(l->weight_name);
      ASSERT_NE(w, nullptr) << l->weight_name;
      EXPECT_EQ(w->shape, (Shape{l->out, l->in})) << l->weight_name;
      EXPECT_EQ(file.find(l->bias_name) != nullptr, l->has_bias) << l->bias_name;
    }
  }
  int max_heads = 0, max_attn = 0, max_mlp = 0;
  for (const BlockShape& b : rc.blocks)
    max_heads = std::max(max_heads, b.heads), max_attn = std::max(max_attn, b.attn_dim()),
    max_mlp = std::max(max_mlp, b.mlp_dim);
  EXPECT_EQ(m.cfg.max_heads(), max_heads);
  EXPECT_EQ(m.cfg.max_attn_dim(), max_attn);
  EXPECT_EQ(m.cfg.max_mlp_dim(), max_mlp);
}

TEST(PerBlock, ConfigAndLayerShapes) {
  for (const RefCase& rc : kCases) {
    SCOPED_TRACE(rc.name);
    VITKIT_REQUIRE_FILE(model_file(rc));
    auto m = load_model(model_file(rc));
    EXPECT_FALSE(m->cfg.uniform());
    EXPECT_EQ(m->cfg.blocks, rc.blocks);
    check_layer_shapes(*m, rc, SafetensorsReader(model_file(rc)));
    // The reference wrote exactly what config_to_json writes for this config.
    EXPECT_EQ(config_to_json(m->cfg), file_config_json(model_file(rc)));
    // The text form gives the same blocks.
    ViTConfig t = m->cfg;
    t.blocks.clear();
    apply_config_spec(t, "blocks=" + rc.text);
    EXPECT_EQ(t.blocks, rc.blocks);
  }
}

TEST(PerBlock, CostsMatchPyTorch) {
  for (const RefCase& rc : kCases) {
    SCOPED_TRACE(rc.name);
    VITKIT_REQUIRE_FILE(io_file(rc));
    auto m = load_model(model_file(rc));
    SafetensorsReader io(io_file(rc)), file(model_file(rc));
    const int64_t torch_params = read_i64(io, "param_count"), torch_macs = read_i64(io, "macs");
    const ModelCost cost = model_cost(*m);
    EXPECT_EQ(cost.params, torch_params);
    EXPECT_EQ(m->params.count(), torch_params);
    EXPECT_EQ(cost.macs, torch_macs);
    EXPECT_EQ(cost.macs, analytic_macs(m->cfg, rc.blocks));
    EXPECT_EQ(cost.bytes, 4 * torch_params);  // all f32
    // The config alone counts the same (the dense f32 model it describes).
    const ModelCost from_cfg = model_cost(m->cfg);
    EXPECT_EQ(from_cfg.params, torch_params);
    EXPECT_EQ(from_cfg.macs, torch_macs);
    // Per layer: patch, 6 per block (qkv, scores, values, out_proj, fc1, fc2), head;
    // a layer's parameters are its file tensors'.
    const std::vector<LayerCost> layers = layer_costs(*m);
    ASSERT_EQ(layers.size(), 2 + 6 * rc.blocks.size());
    const int64_t T = m->cfg.tokens();
    for (const Linear* l : m->linears()) {
      if (l->block < 0) continue;
      const std::string name = "encoder_layer_" + std::to_string(l->block) + "." + to_string(l->kind);
      auto it = std::find_if(layers.begin(), layers.end(), [&](const LayerCost& c) { return c.name == name; });
      ASSERT_NE(it, layers.end()) << name;
      int64_t numel = file.find(l->weight_name)->numel();
      if (const StTensor* b = file.find(l->bias_name)) numel += b->numel();
      EXPECT_EQ(it->params, numel) << name;
      EXPECT_EQ(it->macs, T * l->in * l->out) << name;
    }
    for (const LayerCost& c : layers) {
      if (c.kind == "attn_scores" || c.kind == "attn_values") {
        EXPECT_EQ(c.macs, T * T * rc.blocks[size_t(c.block)].attn_dim()) << c.name;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Forward and gradients against PyTorch.

void expect_logits(const Tensor& got, const Tensor& want, const std::string& what) {
  const float scale = test::max_abs(want), diff = test::max_abs_diff(got, want);
  std::printf("  %-44s max|diff| %.3g, max|logit| %.3g, ratio %.2e\n", what.c_str(), diff, scale, diff / scale);
  EXPECT_LE(diff, 1e-4f * scale) << what << ": max|diff| " << diff << ", max|logit| " << scale;
}

// Training-mode forward (every block's activations kept, no class-token shortcut).
Tensor train_mode_logits(const ViT& m, const Tensor& x) {
  const int64_t B = x.dim(0);
  Acts acts;
  acts.plan(m.cfg, B, true);
  vit_forward(m, x.f32(), B, acts);
  return Tensor::from({B, m.cfg.classes}, std::vector<float>(acts.logits(), acts.logits() + B * m.cfg.classes));
}

TEST(PerBlock, ForwardMatchesPyTorch) {
  for (const RefCase& rc : kCases) {
    VITKIT_REQUIRE_FILE(io_file(rc));
    auto m = load_model(model_file(rc));
    SafetensorsReader r(io_file(rc));
    int checked = 0;
    for (const StTensor& t : r.tensors()) {
      if (t.name.rfind("input_b", 0) != 0) continue;
      const std::string b = t.name.substr(5);  // "_b4"
      const Tensor x = r.read(t), want = r.read("logits" + b);
      const std::string tag = rc.name + " " + t.name;
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        const std::string tt = tag + " threads " + std::to_string(threads);
        expect_logits(vit_predict(*m, x), want, tt);
        expect_logits(vit_predict(*m, x, 1), want, tt + " sub-batch 1");  // per-image threads when B >= 2
      }
      expect_logits(train_mode_logits(*m, x), want, tag + " training mode");
      ++checked;
    }
    EXPECT_EQ(checked, 2) << rc.name;
  }
  set_num_threads(0);
}

TEST(PerBlock, GradientsMatchPyTorch) {
  for (const RefCase& rc : kCases) {
    VITKIT_REQUIRE_FILE(io_file(rc));
    auto m = load_model(model_file(rc));
    SafetensorsReader r(io_file(rc));
    const Tensor x = r.read("input"), y = r.read("labels"), want_loss = r.read("loss");
    Tensor grads;
    const float loss = test::loss_and_grads(*m, x, y.data<int>(), 0.1f, grads);
    EXPECT_NEAR(loss, want_loss.f32()[0], 1e-5 * std::fabs(want_loss.f32()[0])) << rc.name;
    double worst = 0;
    int checked = 0;
    for (const ParamInfo& p : m->params.entries()) {
      const Tensor want = r.read("grad." + p.name);
      const Tensor got = Tensor::from(p.shape, std::vector<float>(grads.f32() + p.offset, grads.f32() + p.offset + p.numel));
      const float scale = test::max_abs(want), diff = test::max_abs_diff(got, want);
      EXPECT_GT(scale, 0.f) << rc.name << " " << p.name << ": PyTorch's gradient is zero";
      EXPECT_LE(diff, 1e-3f * scale + 1e-9f) << rc.name << " " << p.name << ": max|diff| " << diff << " max|grad| "
                                            << scale;
      worst = std::max(worst, double(diff) / std::max(double(scale), 1e-30));
      ++checked;
    }
    // Every gradient PyTorch wrote was compared (the model has no extra or missing parameter).
    int in_file = 0;
    for (const StTensor& t : r.tensors()) in_file += t.name.rfind("grad.", 0) == 0;
    EXPECT_EQ(checked, in_file) << rc.name;
    std::printf("  %-16s loss %.6f (PyTorch %.6f), worst gradient max|diff| / max|grad| %.2e over %d tensors\n",
                rc.name.c_str(), loss, want_loss.f32()[0], worst, checked);
  }
}

// ---------------------------------------------------------------------------
// Files and the CLI.

TEST(PerBlock, SaveLoadKeepsBlocks) {
  for (const RefCase& rc : kCases) {
    SCOPED_TRACE(rc.name);
    VITKIT_REQUIRE_FILE(io_file(rc));
    auto m = load_model(model_file(rc));
    const std::string path = test::temp_dir() + "/" + rc.name + ".safetensors";
    save_model(*m, path);
    // The metadata vitkit writes is what the reference wrote.
    EXPECT_EQ(file_config_json(path), file_config_json(model_file(rc)));
    auto back = load_model(path);
    EXPECT_EQ(back->cfg.blocks, rc.blocks);
    EXPECT_EQ(config_to_json(back->cfg), config_to_json(m->cfg));
    check_layer_shapes(*back, rc, SafetensorsReader(path));
    EXPECT_EQ(test::param_values(*back), test::param_values(*m));
    const Tensor x = SafetensorsReader(io_file(rc)).read("input_b1");
    EXPECT_TRUE(test::bit_equal(vit_predict(*back, x), vit_predict(*m, x)));
  }
}

TEST(PerBlock, InfoShowsBlocksAndCounts) {
  const RefCase& rc = kCases[0];
  VITKIT_REQUIRE_FILE(io_file(rc));
  SafetensorsReader io(io_file(rc));
  const int64_t torch_params = read_i64(io, "param_count"), torch_macs = read_i64(io, "macs");
  test::CliResult r = test::run_cli("info " + model_file(rc) + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j.value("parameters", int64_t(-1)), torch_params);
  EXPECT_EQ(j.value("macs", int64_t(-1)), torch_macs);
  ASSERT_TRUE(j.contains("config") && j["config"].contains("blocks")) << r.out;
  ASSERT_EQ(j["config"]["blocks"].size(), rc.blocks.size());
  for (size_t i = 0; i < rc.blocks.size(); ++i) {
    EXPECT_EQ(j["config"]["blocks"][i]["heads"], rc.blocks[i].heads);
    EXPECT_EQ(j["config"]["blocks"][i]["head_dim"], rc.blocks[i].head_dim);
    EXPECT_EQ(j["config"]["blocks"][i]["mlp_dim"], rc.blocks[i].mlp_dim);
  }
  // The layers' parameters are the file's linear-layer tensors (all but the
  // embeddings, class token and norms); those of the qkv layers their in_proj tensors.
  SafetensorsReader file(model_file(rc));
  int64_t layer_params = 0, qkv_params = 0, file_layer_params = 0, file_qkv_params = 0;
  for (const auto& l : j["layers"]) {
    layer_params += l["params"].get<int64_t>();
    if (l["kind"] == "qkv") qkv_params += l["params"].get<int64_t>();
  }
  for (const StTensor& t : file.tensors()) {
    const bool other = t.name == "class_token" || t.name == "encoder.pos_embedding" ||
                       t.name.find(".ln") != std::string::npos;
    if (!other) file_layer_params += t.numel();
    if (t.name.find(".in_proj_") != std::string::npos) file_qkv_params += t.numel();
  }
  EXPECT_EQ(layer_params, file_layer_params);
  EXPECT_EQ(qkv_params, file_qkv_params);
  EXPECT_EQ(j["macs_by_kind"]["qkv"]["params"].get<int64_t>(), file_qkv_params);
  r = test::run_cli("info " + model_file(rc));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("4x16 mlp 256; 3x16 mlp 200; 2x16 mlp 96"), std::string::npos) << r.out;
}

// ---------------------------------------------------------------------------
// Finite differences in double, end to end.
//
// DoubleViT is the forward pass of PyTorch's RefViT written as plain loops in
// double over a model's parameters (by torchvision name). The loss is
// L = sum(v * logits) for a random v, so vit_backward gets dlogits = v.
// Central differences of the double L (h = 1e-4: truncation h^2/6 |L'''| ~
// 2e-9, cancellation ~1e-12) give the exact gradient at the model's float
// parameters to ~1e-8, so what is measured is vitkit's float backward's own
// rounding through the whole model. A tensor passes when max|got - fd| <=
// 1e-4 * max|fd| (the design asks 1e-3; op_grad_test uses 1e-4 per op).

class DoubleViT {
 public:
  explicit DoubleViT(const ViT& m) : c_(m.cfg) {
    for (int i = 0; i < m.params.size(); ++i)
      p_[m.params.info(i).name].assign(m.params.ptr(i), m.params.ptr(i) + m.params.info(i).numel);
  }
  std::vector<double>& param(const std::string& name) { return p_.at(name); }

  // images (B, C, S, S) -> logits (B, classes).
  std::vector<double> logits(const std::vector<double>& images, int64_t B) const {
    const int64_t T = c_.tokens(), D = c_.dim;
    std::vector<double> out;
    for (int64_t b = 0; b < B; ++b) {
      const size_t per = size_t(c_.channels) * c_.image_size * c_.image_size;
      std::vector<double> x = tokens(&images[b * per]);
      for (int l = 0; l < c_.depth; ++l) x = block(x, l);
      if (c_.final_norm) x = layernorm(x, "encoder.ln");
      // cls: token 0; mean: the average of the patch tokens.
      const int64_t first = c_.pool == Pooling::Cls ? 0 : (c_.class_token ? 1 : 0);
      const int64_t last = c_.pool == Pooling::Cls ? 1 : T;
      std::vector<double> pooled(size_t(D), 0.0);
      for (int64_t t = first; t < last; ++t)
        for (int64_t k = 0; k < D; ++k) pooled[k] += x[t * D + k] / double(last - first);
      const std::vector<double> y = linear(pooled, "heads.head.weight", "heads.head.bias", D, c_.classes);
      out.insert(out.end(), y.begin(), y.end());
    }
    return out;
  }

 private:
  const std::vector<double>* find(const std::string& n) const {
    auto it = p_.find(n);
    return it == p_.end() ? nullptr : &it->second;
  }
  const std::vector<double>& P(const std::string& n) const { return p_.at(n); }

  // X (rows, in) W^T + b: W (out, in) as nn.Linear; no bias when b is absent.
  std::vector<double> linear(const std::vector<double>& X, const std::string& w, const std::string& b, int64_t in,
                             int64_t out) const {
    const std::vector<double>& W = P(w);
    const std::vector<double>* bias = find(b);
    const int64_t rows = int64_t(X.size()) / in;
    std::vector<double> Y(size_t(rows * out));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = bias ? (*bias)[o] : 0.0;
        for (int64_t k = 0; k < in; ++k) s += X[r * in + k] * W[o * in + k];
        Y[r * out + o] = s;
      }
    return Y;
  }

  // nn.LayerNorm over the last dim (biased variance).
  std::vector<double> layernorm(const std::vector<double>& X, const std::string& prefix) const {
    const std::vector<double>&w = P(prefix + ".weight"), &b = P(prefix + ".bias");
    const int64_t D = c_.dim, rows = int64_t(X.size()) / D;
    std::vector<double> Y(X.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t k = 0; k < D; ++k) mean += X[r * D + k];
      mean /= double(D);
      for (int64_t k = 0; k < D; ++k) var += (X[r * D + k] - mean) * (X[r * D + k] - mean);
      const double rstd = 1.0 / std::sqrt(var / double(D) + double(c_.norm_eps));
      for (int64_t k = 0; k < D; ++k) Y[r * D + k] = (X[r * D + k] - mean) * rstd * w[k] + b[k];
    }
    return Y;
  }

  // Conv2d(C, D, p, stride p) on one image, flattened row-major over the
  // patch grid, [class token;] then + the position embedding: (T, D).
  std::vector<double> tokens(const double* img) const {
    const int64_t S = c_.image_size, p = c_.patch, G = c_.grid(), D = c_.dim, K = c_.patch_k();
    std::vector<double> cols;
    for (int64_t gy = 0; gy < G; ++gy)
      for (int64_t gx = 0; gx < G; ++gx)
        for (int64_t ch = 0; ch < c_.channels; ++ch)
          for (int64_t ky = 0; ky < p; ++ky)
            for (int64_t kx = 0; kx < p; ++kx) cols.push_back(img[(ch * S + gy * p + ky) * S + gx * p + kx]);
    const std::vector<double> emb = linear(cols, "conv_proj.weight", "conv_proj.bias", K, D);
    std::vector<double> x;
    if (c_.class_token) x = P("class_token");
    x.insert(x.end(), emb.begin(), emb.end());
    const std::vector<double>& pos = P("encoder.pos_embedding");
    for (size_t i = 0; i < x.size(); ++i) x[i] += pos[i];
    return x;
  }

  // Self-attention of one image: x (T, D) -> out_proj(heads concatenated) (T, D).
  std::vector<double> attention(const std::vector<double>& x, int l, const std::string& pre) const {
    const BlockShape s = c_.block(l);
    const int64_t T = c_.tokens(), D = c_.dim, H = s.heads, d = s.head_dim, A = s.attn_dim();
    const std::vector<double> qkv =
        linear(x, pre + "self_attention.in_proj_weight", pre + "self_attention.in_proj_bias", D, 3 * A);
    std::vector<double> o(size_t(T * A), 0.0);
    std::vector<double> w(static_cast<size_t>(T));  // one query's scores, then weights
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < T; ++j) {
          double dot = 0;
          for (int64_t k = 0; k < d; ++k) dot += qkv[i * 3 * A + h * d + k] * qkv[j * 3 * A + A + h * d + k];
          w[j] = dot / std::sqrt(double(d));
          mx = std::max(mx, w[j]);
        }
        for (int64_t j = 0; j < T; ++j) sum += (w[j] = std::exp(w[j] - mx));
        for (int64_t j = 0; j < T; ++j)
          for (int64_t k = 0; k < d; ++k) o[i * A + h * d + k] += w[j] / sum * qkv[j * 3 * A + 2 * A + h * d + k];
      }
    return linear(o, pre + "self_attention.out_proj.weight", pre + "self_attention.out_proj.bias", A, D);
  }

  double act(double v) const {
    switch (c_.act) {
      case Activation::Relu: return v > 0 ? v : 0.0;
      case Activation::Gelu: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      case Activation::GeluTanh: return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
      case Activation::None: return v;
    }
    return v;
  }

  std::vector<double> mlp(const std::vector<double>& x, int l, const std::string& pre) const {
    const int64_t D = c_.dim, M = c_.block(l).mlp_dim;
    std::vector<double> h = linear(x, pre + "mlp.0.weight", pre + "mlp.0.bias", D, M);
    for (double& v : h) v = act(v);
    return linear(h, pre + "mlp.3.weight", pre + "mlp.3.bias", M, D);
  }

  static std::vector<double> add(std::vector<double> a, const std::vector<double>& b) {
    for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  }

  // Pre-norm: x + attn(ln1(x)), then + mlp(ln2(.)); post-norm: ln1(x + attn(x)), then ln2(. + mlp(.)).
  std::vector<double> block(const std::vector<double>& x, int l) const {
    const std::string pre = "encoder.layers.encoder_layer_" + std::to_string(l) + ".";
    if (c_.norm == NormPlacement::Pre) {
      const std::vector<double> mid = add(x, attention(layernorm(x, pre + "ln_1"), l, pre));
      return add(mid, mlp(layernorm(mid, pre + "ln_2"), l, pre));
    }
    const std::vector<double> mid = layernorm(add(x, attention(x, l, pre)), pre + "ln_1");
    return layernorm(add(mid, mlp(mid, l, pre)), pre + "ln_2");
  }

  ViTConfig c_;
  std::map<std::string, std::vector<double>> p_;
};

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// The double reference is PyTorch's model: on the reference files, its logits
// are PyTorch's within float rounding.
TEST(PerBlock, DoubleReferenceIsPyTorch) {
  for (const RefCase& rc : kCases) {
    VITKIT_REQUIRE_FILE(io_file(rc));
    auto m = load_model(model_file(rc));
    SafetensorsReader r(io_file(rc));
    const Tensor x = r.read("input_b1"), want = r.read("logits_b1");
    const std::vector<double> got = DoubleViT(*m).logits(std::vector<double>(x.f32(), x.f32() + x.numel()), 1);
    double diff = 0;
    for (int64_t i = 0; i < want.numel(); ++i) diff = std::max(diff, std::fabs(got[size_t(i)] - want.f32()[i]));
    const double scale = test::max_abs(want);
    std::printf("  %-16s double reference vs PyTorch: max|diff| / max|logit| %.2e\n", rc.name.c_str(), diff / scale);
    EXPECT_LE(diff, 1e-5 * scale) << rc.name;
  }
}

struct TinyCase {
  const char* name;
  NormPlacement norm;
  Activation act;
  Pooling pool;
  bool class_token, qkv_bias;
};

// A tiny per-block model (q, k, v 15, 7 and 8 wide with dim 12; one block a
// single head), randomized with the shared fixture.
std::unique_ptr<ViT> tiny_model(const TinyCase& tc, uint64_t seed) {
  ViTConfig c = test::small_config(/*image=*/8, /*patch=*/4, /*dim=*/12, /*depth=*/3, /*heads=*/3, /*mlp=*/20,
                                   /*classes=*/5, /*channels=*/2);
  c.name = tc.name;
  c.norm = tc.norm, c.act = tc.act, c.pool = tc.pool, c.class_token = tc.class_token, c.qkv_bias = tc.qkv_bias;
  c.norm_eps = 1e-5f;
  c.set_blocks({{3, 5, 20}, {1, 7, 9}, {2, 4, 16}});
  return test::random_model(c, seed, 0.25f, 0.5f);
}

void check_fd_double(const TinyCase& tc, uint64_t seed) {
  SCOPED_TRACE(tc.name);
  auto m = tiny_model(tc, seed);
  ASSERT_FALSE(m->cfg.uniform());
  const int64_t B = 2, K = m->cfg.classes;
  const Tensor images = test::random_images(m->cfg, B, seed + 1);
  Rng rng(seed + 2);
  std::vector<float> v(size_t(B * K));
  for (float& e : v) e = rng.normal();

  // vitkit: float forward (training mode) and backward with dlogits = v.
  Acts acts;
  acts.plan(m->cfg, B, true);
  vit_forward(*m, images.f32(), B, acts);
  Tensor grads = m->params.zeros_like();
  BackWork work;
  vit_backward(*m, acts, v.data(), grads.f32(), work);

  DoubleViT ref(*m);
  const std::vector<double> img(images.f32(), images.f32() + images.numel());
  auto loss = [&] {
    const std::vector<double> y = ref.logits(img, B);
    double L = 0;
    for (size_t i = 0; i < y.size(); ++i) L += double(v[i]) * y[i];
    return L;
  };
  // Forward: vitkit's float logits against the double reference.
  const std::vector<double> y = ref.logits(img, B);
  double fdiff = 0;
  for (size_t i = 0; i < y.size(); ++i) fdiff = std::max(fdiff, std::fabs(double(acts.logits()[i]) - y[i]));
  EXPECT_LE(fdiff, 1e-5 * max_abs(y)) << "forward: max|diff| " << fdiff << ", max|logit| " << max_abs(y);

  const double h = 1e-4;
  double worst = 0;
  std::string worst_name;
  int64_t coords = 0;
  for (const ParamInfo& p : m->params.entries()) {
    std::vector<double>& w = ref.param(p.name);
    std::vector<double> fd(w.size());
    for (size_t k = 0; k < w.size(); ++k) {
      const double w0 = w[k];
      w[k] = w0 + h;
      const double Lp = loss();
      w[k] = w0 - h;
      const double Lm = loss();
      w[k] = w0;
      fd[k] = (Lp - Lm) / (2 * h);
    }
    coords += int64_t(w.size());
    const float* g = grads.f32() + p.offset;
    double diff = 0;
    for (size_t k = 0; k < w.size(); ++k) diff = std::max(diff, std::fabs(double(g[k]) - fd[k]));
    const double scale = max_abs(fd), rel = diff / std::max(scale, 1e-12);
    EXPECT_GT(scale, 1e-6) << p.name << ": no gradient at all";
    EXPECT_LE(rel, 1e-4) << p.name << ": max|backward - FD| " << diff << ", max|FD| " << scale;
    if (rel > worst) worst = rel, worst_name = p.name;
  }
  std::printf("  %-34s forward vs double %.2e; %lld coordinates, worst gradient rel. error %.2e (%s)\n", tc.name,
              fdiff / max_abs(y), static_cast<long long>(coords), worst, worst_name.c_str());
}

TEST(PerBlock, FiniteDifferenceDoubleEndToEnd) {
  // Smooth activations: central differences never straddle a ReLU kink.
  check_fd_double({"pre_gelu_cls_bias", NormPlacement::Pre, Activation::Gelu, Pooling::Cls, true, true}, 31);
  check_fd_double({"post_tanh_mean_nocls_nobias", NormPlacement::Post, Activation::GeluTanh, Pooling::Mean, false,
                   false},
                  32);
}

// ---------------------------------------------------------------------------
// Training.

// TrainStep on the per-block PyTorch model: 20 AdamW steps on one fixed random
// batch lower the loss (the model can fit 8 labels), and the blocks keep their shapes.
TEST(PerBlock, TrainStepLowersLoss) {
  const RefCase& rc = kCases[0];
  VITKIT_REQUIRE_FILE(model_file(rc));
  auto m = load_model(model_file(rc));
  const int64_t B = 8;
  const Tensor x = test::random_images(m->cfg, B, 41);
  Rng rng(42);
  std::vector<int> labels(B);
  for (int& y : labels) y = int(rng.below(uint64_t(m->cfg.classes)));
  TrainStep step(*m, AdamWConfig{});
  StepOptions o;
  o.lr = 1e-3f;
  std::vector<float> losses;
  for (int s = 0; s < 20; ++s) losses.push_back(step.run(x.f32(), labels.data(), B, o).loss);
  for (float l : losses) EXPECT_TRUE(std::isfinite(l));
  std::printf("  loss %.4f -> %.4f over 20 steps\n", losses.front(), losses.back());
  EXPECT_LT(losses.back(), 0.5f * losses.front());
  EXPECT_EQ(m->cfg.blocks, rc.blocks);
  for (size_t i = 0; i < rc.blocks.size(); ++i) EXPECT_EQ(m->blocks[i].qkv.out, 3 * rc.blocks[i].attn_dim());
}

}  // namespace

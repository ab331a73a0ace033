#include "test_util.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/model/backward.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/init.h"
#include "vitkit/train/losses.h"

namespace vitkit::test {

std::string source_dir() { return VITKIT_SOURCE_DIR; }
std::string ref_dir() { return VITKIT_REF_DIR; }
std::string ref_path(const std::string& name) { return std::string(VITKIT_REF_DIR) + "/" + name; }
std::string data_dir() { return VITKIT_DATA_DIR; }
std::string fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "test";
  std::filesystem::path p = std::filesystem::path(VITKIT_BINARY_DIR) / "test_tmp" / name;
  static std::set<std::string> fresh;  // wiped once per test, then reused
  if (fresh.insert(name).second) std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

static std::string slurp(const std::string& path) {
  return file_exists(path) ? read_text_file(path) : std::string();
}

CliResult run_cli(const std::string& args) {
  std::string dir = temp_dir() + "/.cli";
  std::filesystem::create_directories(dir);
  std::string out = dir + "/stdout", err = dir + "/stderr";
  std::string cmd = std::string(VITKIT_CLI) + " " + args + " >" + out + " 2>" + err;
  int st = std::system(cmd.c_str());
  CliResult r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  Tensor fa = a.to(DType::F32), fb = b.to(DType::F32);
  float m = 0;
  for (int64_t i = 0; i < fa.numel(); ++i) {
    float d = std::fabs(fa.f32()[i] - fb.f32()[i]);
    if (!(d <= m)) m = d;  // NaN propagates as max
  }
  return m;
}

float max_abs(const Tensor& a) {
  Tensor f = a.to(DType::F32);
  float m = 0;
  for (int64_t i = 0; i < f.numel(); ++i) m = std::max(m, std::fabs(f.f32()[i]));
  return m;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

nlohmann::json parse_json(const CliResult& r) {
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON document: " << e.what() << "\n" << r.out;
    return {};
  }
}

ViTConfig small_config(int image, int patch, int dim, int depth, int heads, int mlp, int classes, int channels) {
  ViTConfig c;
  c.name = "small";
  c.image_size = image;
  c.channels = channels;
  c.patch = patch;
  c.dim = dim;
  c.depth = depth;
  c.heads = heads;
  c.mlp_dim = mlp;
  c.classes = classes;
  c.pre.mean.assign(size_t(channels), 0.5f);
  c.pre.std.assign(size_t(channels), 0.5f);
  return c;
}

void randomize(ViT& m, uint64_t seed, float scale, float embed) {
  Rng rng(seed);
  if (embed < 0) embed = scale;
  for (int i = 0; i < m.params.size(); ++i) {
    const ParamInfo& p = m.params.info(i);
    float* d = m.params.ptr(i);
    const bool norm_w = p.shape.size() == 1 && p.name.find(".ln") != std::string::npos &&
                        p.name.rfind("weight") == p.name.size() - 6;
    const bool emb = p.name.find("pos_embedding") != std::string::npos || p.name == "class_token";
    for (int64_t k = 0; k < p.numel; ++k) d[k] = norm_w ? 1.f + 0.1f * rng.normal() : (emb ? embed : scale) * rng.normal();
  }
}

std::unique_ptr<ViT> random_model(const ViTConfig& c, uint64_t seed, float scale, float embed) {
  auto m = std::make_unique<ViT>(c);
  randomize(*m, seed, scale, embed);
  return m;
}

std::unique_ptr<ViT> init_model(const ViTConfig& c, uint64_t seed, float head) {
  auto m = std::make_unique<ViT>(c);
  Rng rng(seed);
  init_weights(*m, rng);
  float* w = m->W(m->head);
  for (int64_t i = 0; i < int64_t(m->head.in) * m->head.out; ++i) w[i] = head * rng.normal();
  return m;
}

std::vector<float> param_values(const ViT& m) {
  std::vector<float> v;
  for (int i = 0; i < m.params.size(); ++i) v.insert(v.end(), m.params.ptr(i), m.params.ptr(i) + m.params.info(i).numel);
  return v;
}

Tensor random_images(const ViTConfig& c, int64_t B, uint64_t seed) {
  Tensor x = Tensor::empty({B, c.channels, c.image_size, c.image_size});
  Rng rng(seed);
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = rng.normal();
  return x;
}

float loss_and_grads(const ViT& m, const Tensor& x, const int* labels, float smoothing, Tensor& grads) {
  const int64_t B = x.dim(0), C = m.cfg.classes;
  Acts acts;
  acts.plan(m.cfg, B, true);
  vit_forward(m, x.f32(), B, acts);
  std::vector<float> dlogits(size_t(B * C));
  const float loss = cross_entropy_forward_backward(acts.logits(), labels, B, C, smoothing, dlogits.data());
  grads = m.params.zeros_like();
  BackWork work;
  vit_backward(m, acts, dlogits.data(), grads.f32(), work);
  return loss;
}

PassContext random_calibration(const ViTConfig& c, int64_t n, uint64_t seed) {
  PassContext ctx;
  ctx.calib = random_images(c, n, seed);
  ctx.calib_labels.assign(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) ctx.calib_indices.push_back(i);
  ctx.calib_source = cat("random images (seed ", seed, ")");
  ctx.progress = false;
  return ctx;
}

// clamp(v, 0, qmax) as the kernels write it (v > 0 ? v : 0, then v < qmax ? v : qmax).
static float clamp_code(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  return v < hi ? v : hi;
}

RefIntWeight ref_int_weight(const float* W, int out, int in, int bits, kernels::ScaleGranularity g, int64_t group,
                            bool symmetric) {
  using kernels::ScaleGranularity;
  RefIntWeight r;
  const int64_t n = int64_t(out) * in;
  r.per_scale = g == ScaleGranularity::Tensor ? n : g == ScaleGranularity::Channel ? in : group;
  const int64_t groups = n / r.per_scale;
  r.codes.resize(size_t(n));
  r.scales.resize(size_t(groups));
  r.zeros.assign(size_t(groups), 0);
  const float qs = float((1 << (bits - 1)) - 1), qu = float((1 << bits) - 1);
  for (int64_t c = 0; c < groups; ++c) {
    const float* w = W + c * r.per_scale;
    float s = 1.f, zf = 0.f;
    if (symmetric) {
      float amax = 0.f;
      for (int64_t i = 0; i < r.per_scale; ++i) amax = std::max(amax, std::fabs(w[i]));
      if (amax > 0.f) s = amax / qs;
    } else {
      float lo = 0.f, hi = 0.f;
      for (int64_t i = 0; i < r.per_scale; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
      if (hi > lo) {
        s = (hi - lo) / qu;
        zf = clamp_code(std::nearbyint(-lo / s), 0.f, qu);
      }
    }
    r.scales[size_t(c)] = s;
    r.zeros[size_t(c)] = int32_t(zf);
    for (int64_t i = 0; i < r.per_scale; ++i) {
      const float q = symmetric ? clamp_code(std::nearbyint(w[i] / s), -qs, qs)
                                : clamp_code(std::nearbyint(w[i] / s) + zf, 0.f, qu);
      r.codes[size_t(c * r.per_scale + i)] = int32_t(q);
    }
  }
  return r;
}

RefRowQuant ref_input_row(const float* x, int64_t K, int bits, bool is_static, float scale, int32_t zero) {
  RefRowQuant r;
  const float qmax = float((1 << bits) - 1);
  if (is_static) {
    r.s = scale;
    r.z = zero;
  } else {
    float lo = 0.f, hi = 0.f;
    for (int64_t k = 0; k < K; ++k) lo = std::min(lo, x[k]), hi = std::max(hi, x[k]);
    const float s = (hi - lo) / qmax;
    if (s != 0.f) {
      r.s = s;
      r.z = int32_t(clamp_code(std::nearbyint(-lo / s), 0.f, qmax));
    }
  }
  r.q.resize(size_t(K));
  for (int64_t k = 0; k < K; ++k) r.q[size_t(k)] = int32_t(clamp_code(std::nearbyint(x[k] / r.s) + float(r.z), 0.f, qmax));
  return r;
}

}  // namespace vitkit::test

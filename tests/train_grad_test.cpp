// Whole-model gradients and AdamW steps against PyTorch autograd and
// torch.optim.AdamW (tests/ref/grad_ref.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "test_util.h"
#include "vitkit/core/file.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/backward.h"
#include "vitkit/model/forward.h"
#include "vitkit/train/adamw.h"
#include "vitkit/train/losses.h"

using namespace vitkit;

namespace {

void check_grads(const std::string& name) {
  const std::string io = test::ref_path("grad/" + name + ".io.safetensors");
  VITKIT_REQUIRE_FILE(io);
  auto m = load_model(test::ref_path("grad/" + name + ".safetensors"));
  SafetensorsReader r(io);
  Tensor x = r.read("input"), y = r.read("labels"), want_loss = r.read("loss");
  Tensor grads;
  float loss = test::loss_and_grads(*m, x, y.data<int>(), 0.1f, grads);
  EXPECT_NEAR(loss, want_loss.f32()[0], 1e-5 * std::fabs(want_loss.f32()[0])) << name;
  for (const ParamInfo& p : m->params.entries()) {
    Tensor want = r.read("grad." + p.name);
    Tensor got = Tensor::from(p.shape, std::vector<float>(grads.f32() + p.offset, grads.f32() + p.offset + p.numel));
    const float scale = test::max_abs(want), diff = test::max_abs_diff(got, want);
    EXPECT_LE(diff, 1e-3f * scale + 1e-9f) << name << " " << p.name << ": max|diff| " << diff << " max|grad| " << scale;
  }
}

}  // namespace

TEST(TrainGrad, PreNormGeluCls) { check_grads("pre_gelu_cls"); }
TEST(TrainGrad, PostNormReluNoFinalNorm) { check_grads("post_relu_nofinal"); }
TEST(TrainGrad, PostNormGeluFinalNorm) { check_grads("post_gelu_final"); }
TEST(TrainGrad, TanhMeanNoClsNoBias) { check_grads("tanh_mean_nocls_nobias"); }
TEST(TrainGrad, MeanPoolWithClsGray) { check_grads("mean_cls_gray"); }

// 20 AdamW steps with warmup + cosine learning rates and gradient clipping:
// the loss before each step matches torch.optim.AdamW within 1e-4, and so do
// the final weights (relative to their scale).
TEST(TrainGrad, AdamWTwentyStepsMatchPyTorch) {
  const std::string io = test::ref_path("grad/adamw.io.safetensors");
  VITKIT_REQUIRE_FILE(io);
  auto m = load_model(test::ref_path("grad/adamw.safetensors"));
  SafetensorsReader r(io);
  Tensor xs = r.read("inputs"), ys = r.read("labels"), lrs = r.read("lrs").to(DType::F32),
         losses = r.read("losses").to(DType::F32);
  const int64_t steps = xs.dim(0), B = xs.dim(1);
  AdamW opt(m->params, AdamWConfig{0.9f, 0.999f, 1e-8f, 0.05f});
  for (int64_t s = 0; s < steps; ++s) {
    Tensor x = xs.slice(s, s + 1).reshape({B, xs.dim(2), xs.dim(3), xs.dim(4)});
    Tensor grads;
    float loss = test::loss_and_grads(*m, x, ys.data<int>() + s * B, 0.1f, grads);
    EXPECT_NEAR(loss, losses.f32()[s], 1e-4) << "step " << s;
    clip_grad_norm(m->params, grads.f32(), 1.0f);
    opt.step(m->params, grads.f32(), lrs.f32()[s]);
  }
  // The key part of in_proj_bias does not change the output (softmax is
  // shift-invariant), so its gradient is rounding noise that Adam normalises
  // into lr-sized random steps in both implementations: it is left out.
  const int64_t D = m->cfg.dim;
  for (const ParamInfo& p : m->params.entries()) {
    Tensor want = r.read("final." + p.name).to(DType::F32);
    Tensor got = m->params.tensor(m->params.find(p.name)).clone();
    if (p.name.find("in_proj_bias") != std::string::npos)
      for (int64_t k = D; k < 2 * D; ++k) got.f32()[k] = want.f32()[k];
    EXPECT_LE(test::max_abs_diff(got, want), 1e-4f * std::max(1.0f, test::max_abs(want))) << p.name;
  }
}

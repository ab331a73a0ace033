// vitkit's forward pass against PyTorch (tests/ref/vit_ref.py): torchvision's
// VisionTransformer and plain-PyTorch variants, batch 1 and batch > 1.
#include <gtest/gtest.h>

#include <cstdio>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/forward.h"

using namespace vitkit;

namespace {

void check_case(const std::string& name, const LoadOptions& opt = {}) {
  const std::string w = test::ref_path("vit/" + name + ".safetensors");
  const std::string io = test::ref_path("vit/" + name + ".io.safetensors");
  VITKIT_REQUIRE_FILE(io);
  auto model = load_model(w, opt);
  SafetensorsReader r(io);
  int checked = 0;
  for (auto& t : r.tensors()) {
    if (t.name.rfind("input_b", 0) != 0) continue;
    const std::string b = t.name.substr(5);  // "_b1"
    Tensor x = r.read(t);
    Tensor want = r.read("logits" + b);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      Tensor got = vit_predict(*model, x);
      const float scale = test::max_abs(want);
      const float diff = test::max_abs_diff(got, want);
      std::printf("%-24s %-10s threads %d: max|diff| %.3g, max|logit| %.3g, ratio %.2e\n", name.c_str(),
                  t.name.c_str(), threads, diff, scale, diff / scale);
      EXPECT_LE(diff, 1e-4f * scale) << name << " " << t.name << " threads " << threads << ": max|diff| " << diff
                                     << ", max|logit| " << scale;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  set_num_threads(0);
}

}  // namespace

TEST(ModelParity, TorchvisionSmall) { check_case("tv_small"); }
TEST(ModelParity, PreNormGeluCls) { check_case("pre_gelu_cls"); }
TEST(ModelParity, PostNormReluNoFinalNorm) { check_case("post_relu_nofinal"); }
TEST(ModelParity, PostNormGeluFinalNorm) { check_case("post_gelu_final"); }
TEST(ModelParity, TanhGeluMeanPoolNoFinalNorm) { check_case("pre_tanh_mean_nofinal"); }
TEST(ModelParity, MeanPoolNoClassTokenNoQkvBias) { check_case("mean_nocls_noqkvbias"); }
TEST(ModelParity, GrayscaleOddSizes) { check_case("gray28_p7_odd"); }
TEST(ModelParity, SmallPatchesManyHeads) { check_case("p4_depth6_long"); }
TEST(ModelParity, VitB16) { check_case("vit_b_16"); }
TEST(ModelParity, VitB32WithoutMetadataGivenPreset) {
  LoadOptions opt;
  opt.preset = "vit_b_32";
  check_case("vit_b_32_nometa", opt);
}

TEST(ModelParity, FileWithoutMetadataNeedsArchitecture) {
  const std::string w = test::ref_path("vit/vit_b_32_nometa.safetensors");
  VITKIT_REQUIRE_FILE(w);
  try {
    load_model(w);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--preset"), std::string::npos) << e.what();
  }
}

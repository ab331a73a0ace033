// The shipped default model (models/vit-tiny-fmnist.safetensors): it loads
// into torchvision unchanged and gives the same logits there
// (tests/ref/default_model_ref.py), and it scores what its model card says on
// the Fashion-MNIST test set. Skipped where the model or the dataset is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "test_util.h"
#include "vitkit/analyze/evaluate.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/model/forward.h"

using namespace vitkit;

namespace {

std::string model_path() { return test::source_dir() + "/models/vit-tiny-fmnist.safetensors"; }

// Measured test-set top-1 written in models/README.md (10,000 images).
constexpr double kCardTop1 = 0.9103;
}  // namespace

TEST(DefaultModel, SameLogitsAsTorchvision) {
  VITKIT_REQUIRE_FILE(model_path());
  const std::string ref = test::ref_path("default_model/result.json");
  VITKIT_REQUIRE_FILE(ref);
  auto res = nlohmann::json::parse(read_text_file(ref));
  const int64_t n = res["images"];
  Tensor want = read_npy(test::ref_path("default_model/logits.npy"));
  ASSERT_EQ(want.dim(0), n);

  auto m = load_model(model_path());
  auto ds = open_dataset("fashion-mnist", "test");
  std::vector<int64_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  Tensor x = preprocess_batch(*ds, idx, m->cfg);
  Tensor got = vit_predict(*m, x);
  ASSERT_EQ(got.shape(), want.shape());
  const float tol = 1e-4f * test::max_abs(want);
  EXPECT_LE(test::max_abs_diff(got, want), tol);

  // The same predictions, except where torchvision's top two are within tol.
  const int64_t K = want.dim(1);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* w = want.f32() + i * K;
    const float* g = got.f32() + i * K;
    const int64_t wa = std::max_element(w, w + K) - w, ga = std::max_element(g, g + K) - g;
    correct += ga == ds->label(i);
    if (wa != ga) {
      EXPECT_LE(std::fabs(w[wa] - w[ga]), 2 * tol) << "image " << i;
    }
  }
  EXPECT_NEAR(double(correct) / n, res["top1"].get<double>(), 2.0 / n);
}

TEST(DefaultModel, ScoresItsModelCardOnTheFashionMnistTestSet) {
  VITKIT_REQUIRE_FILE(model_path());
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz");
  auto m = load_model(model_path());
  auto ds = open_dataset("fashion-mnist", "test");
  EvalResult e = evaluate_dataset(*m, *ds, 0, 256, false);
  EXPECT_EQ(e.images, 10000);
  EXPECT_NEAR(e.top1, kCardTop1, 0.5e-4) << "models/README.md records the test top-1";
}

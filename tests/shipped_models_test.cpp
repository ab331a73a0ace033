// The shipped models (models/*.safetensors, model cards in models/README.md):
// each loads into torchvision unchanged and gives the same logits there
// (tests/ref/shipped_models_ref.py), and each scores what its model card says
// on the Fashion-MNIST test set. Skipped where a model or the dataset is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "test_util.h"
#include "vitkit/train/evaluate.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/model/forward.h"

using namespace vitkit;

namespace {

struct Shipped {
  const char* name;  // models/NAME.safetensors
  double card_top1;  // measured test-set top-1 written in models/README.md (10,000 images)
};

// The default model and the teacher for distillation (models/README.md).
const Shipped kShipped[] = {{"vit-tiny-fmnist", 0.9103}, {"vit-small-fmnist", 0.9109}};

void PrintTo(const Shipped& s, std::ostream* os) { *os << s.name; }

std::string model_path(const Shipped& s) { return test::source_dir() + "/models/" + s.name + ".safetensors"; }
std::string ref_file(const Shipped& s, const char* file) {
  return test::ref_path(std::string("shipped_models/") + s.name + "/" + file);
}

class ShippedModel : public testing::TestWithParam<Shipped> {};

}  // namespace

TEST_P(ShippedModel, SameLogitsAsTorchvision) {
  const Shipped& s = GetParam();
  VITKIT_REQUIRE_FILE(model_path(s));
  VITKIT_REQUIRE_FILE(ref_file(s, "result.json"));
  auto res = nlohmann::json::parse(read_text_file(ref_file(s, "result.json")));
  const int64_t n = res["images"];
  Tensor want = read_npy(ref_file(s, "logits.npy"));
  ASSERT_EQ(want.dim(0), n);

  auto m = load_model(model_path(s));
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

TEST_P(ShippedModel, ScoresItsModelCardOnTheFashionMnistTestSetSlow) {
  const Shipped& s = GetParam();
  VITKIT_REQUIRE_FILE(model_path(s));
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz");
  auto m = load_model(model_path(s));
  auto ds = open_dataset("fashion-mnist", "test");
  EvalResult e = evaluate_dataset(*m, *ds, 0, 256, false);
  EXPECT_EQ(e.images, 10000);
  EXPECT_NEAR(e.top1, s.card_top1, 0.5e-4) << "models/README.md records the test top-1 of " << s.name;
}

INSTANTIATE_TEST_SUITE_P(Models, ShippedModel, testing::ValuesIn(kShipped),
                         [](const testing::TestParamInfo<Shipped>& i) {
                           std::string n = i.param.name;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

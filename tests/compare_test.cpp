// analyze/compare.h and `vitkit analyze compare`: the logits comparison against
// torch (tests/ref/compare_ref.py: per-image KL, its statistics, agreement,
// top-1/top-5, per class), non-finite logits reported, models compared with
// themselves and with a rounded copy on images made here (the same numbers as
// compare_logits and evaluate_dataset), the shipped default model against
// round:decimals=1 on Fashion-MNIST through the CLI (B's top-1 = eval of the
// compressed file), and the CLI's errors; per-layer SQNR: inf for identical
// models, the known noise's at a perturbed layer, quantize:bits=8 on the
// shipped model (analyze compare and compress --data).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include <stb/stb_image_write.h>

#include "test_util.h"
#include "vitkit/analyze/compare.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/config.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/init.h"
#include "vitkit/report/table.h"
#include "vitkit/train/evaluate.h"

using namespace vitkit;
namespace fs = std::filesystem;

namespace {

#define EXPECT_HAS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (text)

// Images drawn at random (8 x 8 gray), held in memory.
class RandomImages : public Dataset {
 public:
  RandomImages(int64_t n, int classes, uint64_t seed) : classes_(classes) {
    Rng rng(seed);
    for (int64_t i = 0; i < n; ++i) {
      Image im{8, 8, 1, std::vector<uint8_t>(64)};
      for (auto& p : im.pixels) p = uint8_t(rng.below(256));
      images_.push_back(std::move(im));
      labels_.push_back(int(rng.below(uint64_t(classes))));
    }
  }
  int64_t size() const override { return int64_t(images_.size()); }
  int classes() const override { return classes_; }
  std::vector<std::string> class_names() const override {
    std::vector<std::string> v;
    for (int c = 0; c < classes_; ++c) v.push_back("class" + std::to_string(c));
    return v;
  }
  int label(int64_t i) const override { return labels_.at(size_t(i)); }
  Image image(int64_t i) const override { return images_.at(size_t(i)); }
  std::string describe() const override { return "random images"; }

 private:
  int classes_;
  std::vector<Image> images_;
  std::vector<int> labels_;
};

ViTConfig tiny_config(int classes) {
  ViTConfig c;
  c.name = "tiny";
  apply_config_spec(c, cat("image_size=8,channels=1,patch=4,dim=16,depth=2,heads=2,mlp_dim=32,mean=0.5,std=0.25,",
                           "classes=", classes));
  return c;
}

// torchvision's init, with a random head (its init is zero) so that predictions vary.
std::unique_ptr<ViT> tiny_model(int classes, uint64_t seed) {
  auto m = std::make_unique<ViT>(tiny_config(classes));
  Rng rng(seed);
  init_weights(*m, rng);
  float* w = m->W(m->head);
  for (int64_t i = 0; i < int64_t(m->head.out) * m->head.in; ++i) w[i] = 0.5f * rng.normal();
  return m;
}

// An image folder of 8 x 8 gray PNGs, `per_class` per class.
std::string write_image_folder(const std::string& root, int classes, int per_class) {
  const RandomImages src(classes * per_class, classes, 9);
  for (int64_t i = 0; i < src.size(); ++i) {
    const std::string dir = root + "/c" + std::to_string(i % classes);
    fs::create_directories(dir);
    const std::string path = dir + "/" + std::to_string(i) + ".png";
    EXPECT_TRUE(stbi_write_png(path.c_str(), 8, 8, 1, src.image(i).pixels.data(), 8)) << path;
  }
  return root;
}

nlohmann::json json_of(const test::CliResult& r) {
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not one JSON document: " << e.what() << "\n" << r.out << r.err;
    return {};
  }
}

// |got - want| within 1e-9 relative; 1e-15 absolute for KL values near zero,
// where the sum's rounding (about 1e-16 per term) is all that is left.
void expect_kl(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * std::fabs(want) + 1e-15) << what;
}

std::vector<int> to_ints(const Tensor& t) {
  std::vector<int> v(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[size_t(i)] = t.dtype() == DType::I32 ? t.data<int32_t>()[i]
                                                                                 : int(t.data<int64_t>()[i]);
  return v;
}

}  // namespace

// ---------------------------------------------------------------- logits

TEST(CompareLogits, MatchesTorchReference) {
  const std::string path = test::ref_path("compare/logits.safetensors");
  VITKIT_REQUIRE_FILE(path);
  SafetensorsReader f(path);
  const Tensor a = f.read("a"), b = f.read("b"), kl = f.read("kl"), st = f.read("kl_stats");
  const std::vector<int> labels = to_ints(f.read("labels")), counts = to_ints(f.read("counts")),
                         per_class = to_ints(f.read("class_counts"));
  const int64_t N = a.dim(0), C = a.dim(1);
  ASSERT_EQ(C, 10);
  const CompareResult r = compare_logits(a, b, labels);
  EXPECT_EQ(r.images, N);
  EXPECT_EQ(r.finite_images, N);
  EXPECT_EQ(r.agreement, double(counts[0]) / N);
  EXPECT_EQ(r.top1_a, double(counts[1]) / N);
  EXPECT_EQ(r.top1_b, double(counts[2]) / N);
  EXPECT_EQ(r.top5_a, double(counts[3]) / N);
  EXPECT_EQ(r.top5_b, double(counts[4]) / N);
  for (int c = 0; c < C; ++c) {
    const int images = per_class[3 * c], hit_a = per_class[3 * c + 1], hit_b = per_class[3 * c + 2];
    EXPECT_EQ(r.per_class[c].images, images) << "class " << c;
    EXPECT_EQ(r.per_class[c].top1_a, images ? double(hit_a) / images : 0) << "class " << c;
    EXPECT_EQ(r.per_class[c].top1_b, images ? double(hit_b) / images : 0) << "class " << c;
  }
  EXPECT_EQ(r.max_abs_diff, f.read("max_abs_diff").data<double>()[0]);
  const double* want = st.data<double>();
  expect_kl(r.kl.mean, want[0], "mean");
  expect_kl(r.kl.median, want[1], "median");
  expect_kl(r.kl.p99, want[2], "p99");
  expect_kl(r.kl.max, want[3], "max");
  // Per image: one row at a time, its KL is the mean.
  double worst_rel = 0, worst_abs = 0;  // for KL above 1e-9; below it
  int zeros = 0;
  for (int64_t i = 0; i < N; ++i) {
    const CompareResult one = compare_logits(a.slice(i, i + 1).clone(), b.slice(i, i + 1).clone(), {labels[i]});
    const double w = kl.data<double>()[i], err = std::fabs(one.kl.mean - w);
    expect_kl(one.kl.mean, w, cat("image ", i));
    if (w > 1e-9) worst_rel = std::max(worst_rel, err / w);
    else worst_abs = std::max(worst_abs, err);
    zeros += one.kl.mean == 0;
  }
  EXPECT_GE(zeros, 50);  // the identical rows
  std::printf("compare_logits vs torch: %lld images, agreement %.4f, KL mean %.6g p99 %.6g; per image: worst "
              "relative error %.3g (KL > 1e-9), worst absolute error %.3g (KL <= 1e-9)\n",
              (long long)N, r.agreement, r.kl.mean, r.kl.p99, worst_rel, worst_abs);
}

TEST(CompareLogits, NonFiniteLogitsAreReportedNotNan) {
  // 3 images, 3 classes: finite; NaN in B; +inf in A.
  const Tensor a = Tensor::from({3, 3}, {1, 2, 3, 0, 5, 1, INFINITY, 0, 0});
  const Tensor b = Tensor::from({3, 3}, {1, 2, 2.5f, 0, NAN, 1, 0, 1, 0});
  const CompareResult r = compare_logits(a, b, {2, 1, 0});
  EXPECT_EQ(r.nonfinite_a, 1);
  EXPECT_EQ(r.nonfinite_b, 1);
  EXPECT_EQ(r.finite_images, 1);
  EXPECT_DOUBLE_EQ(r.top1_a, 2.0 / 3);  // images 0 and 1; image 2's row is not finite
  EXPECT_DOUBLE_EQ(r.top1_b, 1.0 / 3);  // image 0
  EXPECT_DOUBLE_EQ(r.agreement, 1.0 / 3);
  EXPECT_DOUBLE_EQ(r.max_abs_diff, 0.5);
  EXPECT_GT(r.kl.mean, 0);
  EXPECT_TRUE(std::isfinite(r.kl.mean) && std::isfinite(r.kl.max));
  const std::string json = r.to_json().dump();
  EXPECT_EQ(json.find("null"), std::string::npos) << json;
  EXPECT_EQ(r.to_json()["b"]["nonfinite_images"], 1);
  EXPECT_HAS(r.text(), "non-finite 1 image(s) with NaN or infinite logits in B");
  EXPECT_HAS(compare_summary(r), "NaN or infinite");
  EXPECT_EQ(r.text().find("nan"), std::string::npos) << r.text();
  // No image finite in both: KL absent, not NaN.
  const CompareResult none = compare_logits(a.slice(1, 3).clone(), b.slice(1, 3).clone(), {1, 0});
  EXPECT_EQ(none.finite_images, 0);
  EXPECT_TRUE(none.to_json()["kl"].is_null());
  EXPECT_HAS(none.text(), "no image has finite logits in both");
  EXPECT_EQ(none.text().find("nan"), std::string::npos) << none.text();
}

TEST(CompareLogits, RejectsMismatchedShapesAndLabels) {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({2, 4});
  EXPECT_THROW(compare_logits(a, b, {0, 1}), Error);
  EXPECT_THROW(compare_logits(a, a, {0}), Error);
  try {
    compare_logits(a, a, {0, 3});
    ADD_FAILURE() << "no error for label 3 of 3 classes";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "label 3");
  }
}

// ---------------------------------------------------------------- models

TEST(CompareModels, ModelWithItselfAgreesExactly) {
  const auto m = tiny_model(5, 1);
  const RandomImages ds(40, 5, 2);
  CompareOptions o;
  o.batch = 16;
  const auto copy = m->clone();
  for (const ViT* b : {m.get(), copy.get()}) {
    const CompareResult r = compare_models(*m, *b, ds, o);
    EXPECT_EQ(r.images, 40);
    EXPECT_EQ(r.agreement, 1.0);
    EXPECT_EQ(r.kl.max, 0.0);
    EXPECT_EQ(r.kl.mean, 0.0);
    EXPECT_EQ(r.max_abs_diff, 0.0);
    EXPECT_EQ(r.top1_a, r.top1_b);
    EXPECT_EQ(r.top1_diff_points(), 0.0);
    EXPECT_EQ(r.class_names[4], "class4");
    EXPECT_EQ(r.data, "random images");
  }
}

TEST(CompareModels, RoundedCopyMatchesLogitsAndEvaluate) {
  const auto a = tiny_model(4, 3);
  auto b = a->clone();
  apply_passes(*b, {"round:decimals=1"});
  const RandomImages ds(30, 4, 4);
  // One batch: the same logits as vit_predict on all images.
  CompareOptions o;
  o.batch = 64;
  const CompareResult r = compare_models(*a, *b, ds, o);
  std::vector<int64_t> idx(30);
  std::iota(idx.begin(), idx.end(), 0);
  const Tensor x = preprocess_batch(ds, idx, a->cfg);
  std::vector<int> labels;
  for (int64_t i = 0; i < 30; ++i) labels.push_back(ds.label(i));
  const CompareResult want = compare_logits(vit_predict(*a, x), vit_predict(*b, x), labels);
  EXPECT_EQ(r.agreement, want.agreement);
  EXPECT_EQ(r.top1_b, want.top1_b);
  EXPECT_EQ(r.kl.mean, want.kl.mean);
  EXPECT_EQ(r.kl.p99, want.kl.p99);
  EXPECT_EQ(r.max_abs_diff, want.max_abs_diff);
  EXPECT_GT(r.kl.mean, 0);
  // Batches of 7: top-1 of each model as evaluate_dataset finds it, per class too.
  o.batch = 7;
  const CompareResult r7 = compare_models(*a, *b, ds, o);
  const EvalResult ea = evaluate_dataset(*a, ds, 0, 7, false), eb = evaluate_dataset(*b, ds, 0, 7, false);
  EXPECT_EQ(r7.top1_a, ea.top1);
  EXPECT_EQ(r7.top1_b, eb.top1);
  EXPECT_EQ(r7.top5_b, eb.top5);
  for (int c = 0; c < 4; ++c) EXPECT_EQ(r7.per_class[c].top1_b, eb.per_class[c]) << c;
  // B with its own preprocessing (another normalisation) is fed its own inputs.
  b->cfg.pre.mean = {0.3f};
  const CompareResult own = compare_models(*a, *b, ds, o);
  EXPECT_EQ(own.top1_b, evaluate_dataset(*b, ds, 0, 7, false).top1);
  // --limit: the first images only.
  o.limit = 11;
  EXPECT_EQ(compare_models(*a, *b, ds, o).images, 11);
  const std::string summary = compare_summary(r);
  EXPECT_HAS(summary, "B against A on 30 images: top-1 ");
  EXPECT_HAS(summary, "B agrees with A's prediction on " + fmt_fixed(100 * r.agreement, 2) + "%");
  std::printf("summary: %s", summary.c_str());
  EXPECT_HAS(r.text(), "class3");
}

TEST(CompareModels, ClassMismatchesAreErrors) {
  const auto a = tiny_model(4, 5), b = tiny_model(3, 6);
  CompareOptions o;
  o.name_a = "ref.safetensors";
  o.name_b = "small.safetensors";
  try {
    compare_models(*a, *b, RandomImages(4, 3, 7), o);
    ADD_FAILURE() << "no error for 4 against 3 classes";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "ref.safetensors has 4 classes but small.safetensors has 3");
  }
  try {
    compare_models(*b, *b, RandomImages(8, 5, 7), o);
    ADD_FAILURE() << "no error for a dataset of 5 classes";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "has 5 classes but the models only 3");
  }
}

// ---------------------------------------------------------------- CLI

TEST(CompareCli, ShippedModelAgainstRound1OnFashionMnist) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  const std::string dir = test::temp_dir(), rounded = dir + "/round1.safetensors";
  const std::string data = " --data fashion-mnist --limit 500 --json -q";
  test::CliResult r = test::run_cli("compress " + model + " --pass round:decimals=1 -o " + rounded + " -q");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("eval " + rounded + data);
  ASSERT_EQ(r.code, 0) << r.err;
  const double eval_b = json_of(r)["top1"].get<double>();
  r = test::run_cli("eval " + model + data);
  ASSERT_EQ(r.code, 0) << r.err;
  const double eval_a = json_of(r)["top1"].get<double>();

  // B as a pass spec, as --pass, and as the compressed file: the same comparison.
  const std::vector<std::string> forms = {"round:decimals=1", "--pass round:decimals=1", rounded};
  nlohmann::json first;
  for (const std::string& b : forms) {
    r = test::run_cli("analyze compare " + model + " " + b + data);
    ASSERT_EQ(r.code, 0) << b << ": " << r.err;
    const nlohmann::json j = json_of(r);
    EXPECT_EQ(j["images"], 500) << b;
    EXPECT_EQ(j["a"]["top1"].get<double>(), eval_a) << b;
    EXPECT_EQ(j["b"]["top1"].get<double>(), eval_b) << b;
    EXPECT_LT(j["agreement"].get<double>(), 1.0) << b;
    EXPECT_GT(j["kl"]["mean"].get<double>(), 0.0) << b;
    EXPECT_GE(j["kl"]["p99"].get<double>(), j["kl"]["median"].get<double>()) << b;
    EXPECT_EQ(j["per_class"][9]["name"], "Ankle boot") << b;
    if (first.is_null()) {
      first = j;
      EXPECT_EQ(j["b"]["passes"].size(), 1u);
      std::printf("fashion-mnist --limit 500, vit-tiny-fmnist vs round:decimals=1: top-1 A %.2f%%, B %.2f%% "
                  "(%+.2f points), agreement %.2f%%, KL mean %.6g, median %.6g, p99 %.6g, max %.6g, "
                  "max |dlogit| %.4g\n",
                  100 * eval_a, 100 * eval_b, j["diff_points"]["top1"].get<double>(),
                  100 * j["agreement"].get<double>(), j["kl"]["mean"].get<double>(),
                  j["kl"]["median"].get<double>(), j["kl"]["p99"].get<double>(), j["kl"]["max"].get<double>(),
                  j["max_abs_logit_diff"].get<double>());
      continue;
    }
    for (const char* k : {"agreement", "kl", "max_abs_logit_diff", "per_class"}) EXPECT_EQ(j[k], first[k]) << b << " " << k;
  }
  // Text: the tables and the statistics.
  r = test::run_cli("analyze compare " + model + " round:decimals=1 --data fashion-mnist --limit 500 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"top-1", "top-5", "B - A", "agreement", "KL(A||B)", "p99", "max |dA-B|", "Ankle boot"})
    EXPECT_HAS(r.out, s);
}

TEST(CompareCli, ErrorsNameTheProblem) {
  const std::string dir = test::temp_dir(), a = dir + "/a.safetensors", b = dir + "/b.safetensors";
  save_model(*tiny_model(3, 1), a);
  save_model(*tiny_model(2, 2), b);
  const std::string data = " --data " + write_image_folder(dir + "/images", 3, 2) + " -q";
  struct Case {
    std::string args;
    int code;
    std::vector<std::string> says;
  };
  const Case cases[] = {
      {a + " " + b + data, 1, {"has 3 classes but B (" + b + ") has 2"}},
      {b + " --pass round:decimals=2" + data, 1, {"has 3 classes but the models only 2"}},
      {a + " shrink:x=1" + data, 2, {"shrink:x=1", "unknown pass 'shrink'", "round"}},
      {a + " --pass shrink:x=1" + data, 2, {"unknown pass 'shrink'"}},
      {a + " round:decimal=1" + data, 2, {"unknown key 'decimal'", "decimals"}},
      {a + " round:decimals=99" + data, 2, {"decimals=99"}},
      {a + " round:decimals=1 --pass round:decimals=2" + data, 2, {"not both"}},
      {a + data, 2, {"--pass"}},
      {a + " round:decimals=1 -q", 2, {"--data"}},
      {a + " " + dir + "/missing.safetensors" + data, 1, {"missing.safetensors"}},
  };
  for (const Case& c : cases) {
    const test::CliResult r = test::run_cli("analyze compare " + c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.err;
    for (const std::string& s : c.says) EXPECT_HAS(r.err, s);
  }
  // And it works on the same files.
  const test::CliResult ok = test::run_cli("analyze compare " + a + " round:decimals=2 --json" + data);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(json_of(ok)["images"], 6);
  const test::CliResult help = test::run_cli("analyze compare --help");
  EXPECT_EQ(help.code, 0);
  for (const char* s : {"--data", "--pass", "--limit", "--batch", "--split", "--json", "--threads", "KL", "round"})
    EXPECT_HAS(help.out, s);
}

// ---------------------------------------------------------------- per-layer SQNR

TEST(CompareSqnr, IdenticalModelsAreInfinite) {
  const auto m = tiny_model(5, 1);
  const auto copy = m->clone();
  const RandomImages ds(20, 5, 2);
  const CompareResult r = compare_models(*m, *copy, ds);
  ASSERT_EQ(r.layers.size(), 10u);  // patch, 2 blocks x (qkv, out_proj, fc1, fc2), head
  for (const LayerSqnr& l : r.layers) {
    EXPECT_EQ(l.db(), INFINITY) << l.name;
    EXPECT_EQ(l.noise, 0.0) << l.name;
    EXPECT_GT(l.signal, 0.0) << l.name;
  }
  EXPECT_EQ(r.layers[0].name, "conv_proj");
  EXPECT_EQ(r.layers[2].kind, "out_proj");
  EXPECT_EQ(r.layers[2].block, 0);
  const nlohmann::json j = r.to_json();
  ASSERT_EQ(j["layers"].size(), 10u);
  EXPECT_TRUE(j["layers"][3]["sqnr_db"].is_null());
  EXPECT_EQ(j["layers"][3]["identical"], true);
  EXPECT_EQ(j["layers"][3]["kind"], "fc1");
  EXPECT_HAS(r.layers_text(), "inf");
  EXPECT_HAS(r.text(), "SQNR");
  EXPECT_HAS(compare_summary(r), "qkv inf dB");
  // Without layers: none, and the same logits' statistics.
  CompareOptions o;
  o.layers = false;
  const CompareResult plain = compare_models(*m, *copy, ds, o);
  EXPECT_TRUE(plain.layers.empty());
  EXPECT_EQ(plain.agreement, r.agreement);
}

TEST(CompareSqnr, PerturbedLayerHasTheNoisesSqnr) {
  // B = A with block 0's fc2 weight + N(0, sigma^2) noise: the layers before it
  // are identical (inf); at fc2, noise = sum (x dW^T)^2, whose expectation is
  // sigma^2 x out x sum |x|^2 over its input rows x.
  const auto a = tiny_model(4, 3);
  auto b = a->clone();
  const Linear& fc2 = b->blocks[0].fc2;
  const double sigma = 0.01;
  std::vector<double> dw(size_t(fc2.out) * fc2.in);
  Rng rng(11);
  for (size_t i = 0; i < dw.size(); ++i) {
    const float w = b->W(fc2)[i];
    b->W(fc2)[i] = w + float(sigma * rng.normal());
    dw[i] = double(b->W(fc2)[i]) - double(w);  // the noise as stored
  }
  const RandomImages ds(40, 4, 4);
  const CompareResult r = compare_models(*a, *b, ds);
  // A's fc2 inputs and outputs on the same images.
  std::vector<int64_t> idx(40);
  std::iota(idx.begin(), idx.end(), 0);
  double signal = 0, noise = 0, expected_noise = 0;
  ForwardHooks h;
  const std::string name = a->blocks[0].fc2.name;
  h.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
    if (l.name != name) return;
    for (int64_t i = 0; i < rows; ++i) {
      double x2 = 0;
      for (int k = 0; k < l.in; ++k) x2 += double(X[i * l.in + k]) * X[i * l.in + k];
      expected_noise += sigma * sigma * l.out * x2;
      for (int o = 0; o < l.out; ++o) {
        double d = 0;
        for (int k = 0; k < l.in; ++k) d += double(X[i * l.in + k]) * dw[size_t(o) * l.in + k];
        noise += d * d;
      }
    }
  };
  h.on_linear_output = [&](const Linear& l, const float* Y, int64_t rows) {
    if (l.name != name) return;
    for (int64_t i = 0; i < rows * l.out; ++i) signal += double(Y[i]) * Y[i];
  };
  vit_predict(*a, preprocess_batch(ds, idx, a->cfg), 0, &h);
  const double exact = 10 * std::log10(signal / noise), analytic = 10 * std::log10(signal / expected_noise);
  const LayerSqnr* got = nullptr;
  for (const LayerSqnr& l : r.layers) {
    if (l.name == name) got = &l;
    if (!got) {
      EXPECT_EQ(l.db(), INFINITY) << l.name << " comes before the perturbed layer";
    }
  }
  ASSERT_NE(got, nullptr);
  EXPECT_NEAR(got->db(), exact, 0.01);
  EXPECT_NEAR(got->db(), analytic, 1.0);
  EXPECT_TRUE(std::isfinite(r.layers.back().db()));  // the head sees the error carried on
  std::printf("fc2 of block 0 + N(0, %.2g^2): SQNR %.3f dB (exact %.3f, expected from sigma %.3f); head %.2f dB\n",
              sigma, got->db(), exact, analytic, r.layers.back().db());
}

TEST(CompareSqnr, Quantize8OnTheShippedModel) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  test::CliResult r =
      test::run_cli("analyze compare " + model + " quantize:bits=8 --data fashion-mnist --limit 100 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = json_of(r);
  ASSERT_EQ(j["layers"].size(), 26u);
  std::map<std::string, std::pair<double, double>> kinds;  // min, max dB
  for (const auto& l : j["layers"]) {
    ASSERT_FALSE(l["sqnr_db"].is_null()) << l["name"];
    const double db = l["sqnr_db"].get<double>();
    EXPECT_GT(db, 30.0) << l["name"];
    EXPECT_LT(db, 50.0) << l["name"];
    EXPECT_EQ(l["identical"], false);
    auto [it, fresh] = kinds.try_emplace(l["kind"].get<std::string>(), db, db);
    if (!fresh) it->second = {std::min(it->second.first, db), std::max(it->second.second, db)};
  }
  std::printf("vit-tiny-fmnist, quantize:bits=8, 100 test images, SQNR dB per kind (min..max):");
  for (auto& [k, mm] : kinds) std::printf(" %s %.1f..%.1f", k.c_str(), mm.first, mm.second);
  std::printf("\n");
  // Text with --layers: every layer.
  r = test::run_cli("analyze compare " + model + " quantize:bits=8 --data fashion-mnist --limit 20 --layers -q");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* s : {"SQNR", "layer kind", "encoder.layers.encoder_layer_5.mlp.3", "heads.head"}) EXPECT_HAS(r.out, s);
  // compress --data prints it in its summary, and its JSON has the layers.
  const std::string q = test::temp_dir() + "/q8.safetensors";
  r = test::run_cli("compress " + model + " --pass quantize:bits=8 -o " + q + " --data fashion-mnist --compare-limit 20 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "layer output SQNR, lowest per kind: patch ");
  r = test::run_cli("compress " + model + " --pass quantize:bits=8 -o " + q +
                    " --data fashion-mnist --compare-limit 20 -q --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json_of(r)["compare"]["layers"].size(), 26u);
}

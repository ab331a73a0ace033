// analyze/sensitivity.h and `vitkit analyze sensitivity`: a layer scaled x100
// comes out most sensitive, by=kind gives the six kinds, the greedy meets a
// target average bits (and bytes) as computed here, the recipe it writes
// parses and `compress --recipe` gives exactly the chosen formats, held-out
// images never overlap the calibration ones, the flags' errors, and the CLI
// end to end on the shipped default model.
#include <gtest/gtest.h>

#include <filesystem>
#include <algorithm>
#include <cmath>
#include <set>

#include "test_util.h"
#include "vitkit/analyze/sensitivity.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/config.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/init.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/repr/int.h"

using namespace vitkit;

namespace {

#define EXPECT_HAS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (text)

const char* const kLow = "quantize:bits=4,granularity=group,group=16";

// 8 x 8 gray images drawn at random, labels cycling over the classes.
class RandomImages : public Dataset {
 public:
  RandomImages(int64_t n, int classes, uint64_t seed) : classes_(classes) {
    Rng rng(seed);
    for (int64_t i = 0; i < n; ++i) {
      Image im{8, 8, 1, std::vector<uint8_t>(64)};
      for (auto& p : im.pixels) p = uint8_t(rng.below(256));
      images_.push_back(std::move(im));
    }
  }
  int64_t size() const override { return int64_t(images_.size()); }
  int classes() const override { return classes_; }
  std::vector<std::string> class_names() const override { return std::vector<std::string>(size_t(classes_), "c"); }
  int label(int64_t i) const override { return labels_.empty() ? int(i % classes_) : labels_.at(size_t(i)); }
  // Labels: m's own predictions (top-1 loss = disagreement with the reference).
  void label_with(const ViT& m) {
    std::vector<int64_t> idx(images_.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
    const Tensor logits = vit_predict(m, preprocess_batch(*this, idx, m.cfg));
    labels_.clear();
    for (int64_t i = 0; i < logits.dim(0); ++i) {
      const float* row = logits.f32() + i * logits.dim(1);
      labels_.push_back(int(std::max_element(row, row + logits.dim(1)) - row));
    }
  }
  Image image(int64_t i) const override { return images_.at(size_t(i)); }
  std::string describe() const override { return "random images"; }

 private:
  int classes_;
  std::vector<Image> images_;
  std::vector<int> labels_;
};

// image 8, patch 4 (16 inputs), dim 16, depth 2, MLP 32: group=16 divides every layer's inputs.
std::unique_ptr<ViT> tiny_model(uint64_t seed) {
  ViTConfig c;
  c.name = "tiny";
  apply_config_spec(c, "image_size=8,channels=1,patch=4,dim=16,depth=2,heads=2,mlp_dim=32,mean=0.5,std=0.25,"
                       "classes=10");
  auto m = std::make_unique<ViT>(c);
  Rng rng(seed);
  init_weights(*m, rng);
  float* w = m->W(m->head);
  for (int64_t i = 0; i < int64_t(m->head.out) * m->head.in; ++i) w[i] = 0.5f * rng.normal();
  return m;
}

SensitivityResult study(const ViT& m, SensitivityBy by, SensitivityRank rank = SensitivityRank::Kl,
                        const std::string& pass = kLow) {
  RandomImages ds(64, 10, 5);
  ds.label_with(m);
  SensitivityOptions o;
  o.pass = pass;
  o.by = by;
  o.rank = rank;
  o.progress = false;
  return run_sensitivity(m, ds, {}, o);
}

const Linear* layer(const ViT& m, const std::string& name) {
  for (const Linear* l : m.linears())
    if (l->name == name) return l;
  ADD_FAILURE() << "no layer " << name;
  return nullptr;
}

std::string usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "no error";
}

// Makes layer `name` the one whose quantization hurts most, the function
// kept: its weights x100 (so its output dominates the residual stream) and
// its input 0, which is always 0 (the row of the layer before it that feeds it
// is zeroed: V's channel 0 for out_proj, fc1's unit 0 with bias -20 for fc2,
// GELU(-20) ~ 0), set to 1000 x max|w| — an outlier in every row, so 4-bit
// scales round the rest of its group to 0. (Scaling alone would not do:
// per-channel and per-group scales make quantization scale-invariant.)
void make_sensitive(ViT& m, const std::string& name) {
  Block& blk = m.blocks[name.find("encoder_layer_0") != std::string::npos ? 0 : 1];
  const bool fc2 = name.find("mlp.3") != std::string::npos;
  Linear& before = fc2 ? blk.fc1 : blk.qkv;
  const int row = fc2 ? 0 : 2 * m.cfg.dim;  // fc1's unit 0, or V's channel 0 in the packed q,k,v
  float* wb = before.repr->dense_weight();
  for (int k = 0; k < before.in; ++k) wb[int64_t(row) * before.in + k] = 0;
  before.repr->bias()[row] = fc2 ? -20.f : 0.f;
  Linear& l = fc2 ? blk.fc2 : blk.proj;
  ASSERT_EQ(l.name, name);
  float* w = l.repr->dense_weight();
  float amax = 0;
  for (int64_t i = 0; i < int64_t(l.in) * l.out; ++i) w[i] *= 100, amax = std::max(amax, std::fabs(w[i]));
  for (int o = 0; o < l.out; ++o) w[int64_t(o) * l.in] = 1000 * amax;
}

TEST(Sensitivity, ScaledLayerRanksFirst) {
  for (const char* name : {"encoder.layers.encoder_layer_0.mlp.3", "encoder.layers.encoder_layer_1.self_attention.out_proj"}) {
    auto m = tiny_model(3);
    make_sensitive(*m, name);
    for (SensitivityRank rank : {SensitivityRank::Kl, SensitivityRank::Top1, SensitivityRank::Sqnr}) {
      const SensitivityResult r = study(*m, SensitivityBy::Layer, rank);
      ASSERT_EQ(r.units.size(), 2u * 4 + 2);
      EXPECT_EQ(r.units[0].name, name) << to_string(rank);
      EXPECT_EQ(r.units[0].layers, std::vector<std::string>{name});
      if (rank == SensitivityRank::Kl) {
        EXPECT_GT(r.units[0].kl_mean, 2 * r.units[1].kl_mean);
      }
    }
  }
}

TEST(Sensitivity, ByKindGivesSixUnits) {
  auto m = tiny_model(4);
  const SensitivityResult r = study(*m, SensitivityBy::Kind);
  ASSERT_EQ(r.units.size(), 6u);
  std::set<std::string> names;
  for (const SensitivityUnit& u : r.units) {
    names.insert(u.name);
    EXPECT_EQ(u.layers.size(), u.name == "patch" || u.name == "head" ? 1u : 2u) << u.name;
    EXPECT_EQ(u.low.size(), u.layers.size());
    for (const LayerWidth& w : u.low) EXPECT_EQ(w.bits, 4) << w.name;
    EXPECT_TRUE(u.sqnr_db() > 0 && std::isfinite(u.sqnr_db())) << u.name;
  }
  EXPECT_EQ(names, (std::set<std::string>{"patch", "qkv", "out_proj", "fc1", "fc2", "head"}));
  for (size_t i = 1; i < r.units.size(); ++i) EXPECT_GE(r.units[i - 1].kl_mean, r.units[i].kl_mean);
  // Blocks: the two encoder blocks, four layers each.
  const std::vector<SensitivityUnit> blocks = sensitivity_units(*m, SensitivityBy::Block);
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks[1].name, "block 1");
  EXPECT_EQ(blocks[1].layers.size(), 4u);
  // SQNR ranking: lowest first.
  const SensitivityResult s = study(*m, SensitivityBy::Kind, SensitivityRank::Sqnr);
  for (size_t i = 1; i < s.units.size(); ++i) EXPECT_LE(s.units[i - 1].sqnr_db(), s.units[i].sqnr_db());
}

// The expected greedy, written here: every layer at 8 bits, then units from
// the least sensitive down to 4 bits until the average is <= B.
std::set<std::string> expected_low(const SensitivityResult& r, const ViT& m, double B, double* bits) {
  double bw = 0, w = 0;
  for (const Linear* l : m.linears()) bw += 8.0 * l->in * l->out, w += double(l->in) * l->out;
  std::set<std::string> low;
  for (size_t i = r.units.size(); i-- > 0 && bw / w > B;)
    for (const std::string& name : r.units[i].layers) {
      const Linear* l = layer(m, name);
      bw -= 4.0 * l->in * l->out;
      low.insert(name);
    }
  *bits = bw / w;
  return low;
}

// Each layer of m: 4-bit groups of 16 when in `low`, else 8-bit per channel.
void expect_formats(const ViT& m, const std::set<std::string>& low) {
  for (const Linear* l : m.linears()) {
    const auto* q = dynamic_cast<const IntLinear*>(l->repr.get());
    ASSERT_NE(q, nullptr) << l->name;
    const bool is_low = low.count(l->name) > 0;
    EXPECT_EQ(q->format().bits, is_low ? 4 : 8) << l->name;
    EXPECT_EQ(q->format().granularity,
              is_low ? kernels::ScaleGranularity::Group : kernels::ScaleGranularity::Channel)
        << l->name;
    EXPECT_EQ(q->format().group, is_low ? 16 : 0) << l->name;
  }
}

std::unique_ptr<ViT> applied(const ViT& m, const Recipe& rec) {
  auto b = m.clone();
  std::vector<std::string> specs;
  for (const RecipeSpec& s : compile_recipe(rec, *b)) specs.push_back(s.spec);
  apply_passes(*b, specs);
  return b;
}

TEST(Sensitivity, GreedyMeetsTargetBits) {
  auto m = tiny_model(5);
  const SensitivityResult r = study(*m, SensitivityBy::Layer);
  auto high = m->clone();
  apply_pass(*high, "quantize:bits=8");
  for (double B : {7.5, 6.0, 5.0, 4.0, 8.0}) {
    const MixedPlan p =
        plan_mixed(r, layer_widths(*high), model_cost(*high).bytes, "quantize:bits=8", {MixedTarget::Kind::Bits, B});
    double want_bits = 0;
    const std::set<std::string> want = expected_low(r, *m, B, &want_bits);
    EXPECT_EQ(std::set<std::string>(p.low_layers.begin(), p.low_layers.end()), want) << B;
    EXPECT_DOUBLE_EQ(p.bits, want_bits) << B;
    EXPECT_LE(p.bits, B);
    EXPECT_DOUBLE_EQ(p.high_bits, 8);
    EXPECT_DOUBLE_EQ(p.low_bits, 4);
    // The recipe as written, read back and applied: the chosen formats, the planned bits and bytes.
    const Recipe back = parse_recipe(recipe_toml(p.recipe), "back.toml");
    ASSERT_EQ(back.steps.size(), 1u);
    auto b = applied(*m, back);
    expect_formats(*b, want);
    EXPECT_DOUBLE_EQ(average_bits(layer_widths(*b)), p.bits) << B;
    EXPECT_EQ(model_cost(*b).bytes, p.bytes) << B;
  }
}

TEST(Sensitivity, GreedyMeetsTargetBytes) {
  // Against f32 (--high none): every layer at the pass saves bytes.
  auto m = tiny_model(6);
  const SensitivityResult r = study(*m, SensitivityBy::Kind, SensitivityRank::Kl, "quantize:bits=4");
  const int64_t hb = model_cost(*m).bytes;
  const MixedPlan all = plan_mixed(r, layer_widths(*m), hb, "", {MixedTarget::Kind::Bytes, double(hb)});
  EXPECT_TRUE(all.low_units.empty());
  EXPECT_DOUBLE_EQ(all.high_bits, 32);
  const double target = double(all.low_bytes + hb) / 2;
  const MixedPlan p = plan_mixed(r, layer_widths(*m), hb, "", {MixedTarget::Kind::Bytes, target});
  EXPECT_LE(double(p.bytes), target);
  ASSERT_FALSE(p.low_units.empty());
  ASSERT_EQ(p.recipe.steps.size(), 1u);
  auto b = applied(*m, p.recipe);
  EXPECT_EQ(model_cost(*b).bytes, p.bytes);
  EXPECT_DOUBLE_EQ(average_bits(layer_widths(*b)), p.bits);
  // The least sensitive units, in rank order.
  for (size_t i = 0; i < p.low_units.size(); ++i)
    EXPECT_EQ(p.low_units[i], r.units[r.units.size() - p.low_units.size() + i].name);
  for (const Linear* l : b->linears())
    EXPECT_EQ(l->repr->kind(), std::count(p.low_layers.begin(), p.low_layers.end(), l->name) ? "int" : "f32");
}

// --high none keeps the rest f32 (32 bits); a different pass for --high gives two steps.
TEST(Sensitivity, MixedRecipeForms) {
  auto m = tiny_model(7);
  const std::vector<std::string> low = {"heads.head", "conv_proj"};
  const Recipe none = mixed_recipe(kLow, "", low, "d");
  ASSERT_EQ(none.steps.size(), 1u);
  auto b = applied(*m, none);
  for (const Linear* l : b->linears())
    EXPECT_EQ(l->repr->kind(), l->kind == LayerKind::Head || l->kind == LayerKind::Patch ? "int" : "f32") << l->name;
  const Recipe two = mixed_recipe(kLow, "bf16", low, "d");
  ASSERT_EQ(two.steps.size(), 2u);
  b = applied(*m, two);
  for (const Linear* l : b->linears())
    EXPECT_EQ(l->repr->kind(), l->kind == LayerKind::Head || l->kind == LayerKind::Patch ? "int" : "bf16") << l->name;
  // --high's keys that --pass leaves at their defaults are reset for the chosen layers.
  const Recipe abits = mixed_recipe("quantize:bits=4", "quantize:bits=8,abits=0", low, "d");
  b = applied(*m, abits);
  for (const Linear* l : b->linears()) {
    const auto* q = dynamic_cast<const IntLinear*>(l->repr.get());
    ASSERT_NE(q, nullptr);
    const bool is_low = l->kind == LayerKind::Head || l->kind == LayerKind::Patch;
    EXPECT_EQ(q->format().abits, is_low ? 8 : 0) << l->name;
  }
}

TEST(Sensitivity, HeldOutImagesAvoidCalibration) {
  const RandomImages ds(200, 10, 1);
  const std::vector<int64_t> calib = balanced_indices(ds, 50);
  const std::vector<int64_t> held = heldout_indices(ds, 100, calib);
  ASSERT_EQ(held.size(), 100u);
  std::set<int64_t> c(calib.begin(), calib.end());
  std::vector<int> per_class(10);
  for (int64_t i : held) {
    EXPECT_EQ(c.count(i), 0u) << i;
    ++per_class[size_t(ds.label(i))];
  }
  for (int n : per_class) EXPECT_EQ(n, 10);
  EXPECT_EQ(held.back(), 199);  // from the end
  // Asking for more than is left gives what is left.
  EXPECT_EQ(heldout_indices(ds, 1000, calib).size(), 150u);
  const auto sub = subset_dataset(ds, held, "held out");
  EXPECT_EQ(sub->size(), 100);
  EXPECT_EQ(sub->label(3), ds.label(held[3]));
}

TEST(Sensitivity, Errors) {
  EXPECT_HAS(usage_error([] { check_sensitivity_pass("round:decimals=2"); }), "--pass");
  EXPECT_HAS(usage_error([] { check_sensitivity_pass("round:decimals=2"); }), "round");
  EXPECT_HAS(usage_error([] { check_sensitivity_pass("quantize:bits=4,layers=mlp"); }), "layers=");
  EXPECT_HAS(usage_error([] { check_sensitivity_pass("quantize:bits=99"); }), "bits");
  EXPECT_HAS(usage_error([] { parse_sensitivity_by("row"); }), "--by");
  EXPECT_HAS(usage_error([] { parse_sensitivity_rank("loss"); }), "--rank");
  auto m = tiny_model(8);
  const SensitivityResult r = study(*m, SensitivityBy::Kind);
  auto high = m->clone();
  apply_pass(*high, "quantize:bits=8");
  for (double B : {3.0, 9.0}) {
    const std::string e = usage_error([&] {
      plan_mixed(r, layer_widths(*high), model_cost(*high).bytes, "quantize:bits=8", {MixedTarget::Kind::Bits, B});
    });
    EXPECT_HAS(e, "--target-bits");
    EXPECT_HAS(e, "out of range");
  }
}

// The CLI's usage errors name the flag; the recipe it writes goes through compress --recipe.
TEST(Sensitivity, CliErrorsAndRecipe) {
  const std::string dir = test::temp_dir();
  auto m = tiny_model(9);
  save_model(*m, dir + "/m.safetensors");
  const std::string base = "analyze sensitivity " + dir + "/m.safetensors ";
  struct Case {
    std::string args, want;
  } cases[] = {
      {"--data fashion-mnist --pass round:decimals=2", "round"},
      {"--data fashion-mnist --pass quantize:bits=4 --by row", "--by"},
      {"--data fashion-mnist --pass quantize:bits=4 --target-bits 40", "--target-bits"},
      {"--data fashion-mnist --pass quantize:bits=4 --target-bits 6 --target-bytes 100", "--target-bytes"},
      {"--data fashion-mnist --pass quantize:bits=4 --recipe-out r.toml", "--recipe-out"},
      {"--pass quantize:bits=4", "--data"},
  };
  for (const Case& c : cases) {
    const test::CliResult r = test::run_cli(base + c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_HAS(r.err, c.want);
  }
  // compress --recipe of a plan's recipe: exactly the chosen formats.
  const SensitivityResult r = study(*m, SensitivityBy::Layer);
  auto high = m->clone();
  apply_pass(*high, "quantize:bits=8");
  const MixedPlan p =
      plan_mixed(r, layer_widths(*high), model_cost(*high).bytes, "quantize:bits=8", {MixedTarget::Kind::Bits, 6});
  write_text_atomic(dir + "/mixed.toml", recipe_toml(p.recipe));
  const test::CliResult c =
      test::run_cli("compress " + dir + "/m.safetensors --recipe " + dir + "/mixed.toml -o " + dir + "/c.safetensors");
  ASSERT_EQ(c.code, 0) << c.err;
  auto out = load_model(dir + "/c.safetensors");
  expect_formats(*out, std::set<std::string>(p.low_layers.begin(), p.low_layers.end()));
  EXPECT_DOUBLE_EQ(average_bits(layer_widths(*out)), p.bits);
}

// End to end on the shipped default model: 6 kinds, a 6-bit recipe written and measured.
TEST(Sensitivity, CliShippedModelByKindSlow) {
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const std::string dir = test::temp_dir();
  const test::CliResult r = test::run_cli(
      "analyze sensitivity " + model + " --data fashion-mnist --limit 200 --by kind --pass quantize:bits=4 "
      "--target-bits 6 --recipe-out " + dir + "/r.toml --csv " + dir + "/s.csv --json --threads 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  ASSERT_EQ(j["units"].size(), 6u);
  EXPECT_EQ(j["images"], 200);
  EXPECT_EQ(j["split"], "train");
  EXPECT_HAS(j["data"].get<std::string>(), "held out");
  EXPECT_LE(j["mixed"]["bits"].get<double>(), 6.0);
  ASSERT_EQ(j["mixed"]["measured"].size(), 3u);
  for (auto& u : j["units"]) EXPECT_GT(u["sqnr_db"].get<double>(), 0) << u["unit"];
  const Recipe rec = load_recipe(dir + "/r.toml");
  EXPECT_EQ(rec.steps.size(), 1u);
  EXPECT_TRUE(file_exists(dir + "/s.csv"));
  EXPECT_HAS(r.err, "[6/6]");
  // Text output too.
  const test::CliResult t = test::run_cli("analyze sensitivity " + model +
                                          " --data fashion-mnist --limit 50 --by kind --pass quantize:bits=4 -q");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_HAS(t.out, "ranked by KL mean");
  EXPECT_HAS(t.out, "fc1");
}

}  // namespace

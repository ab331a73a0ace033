// Compression recipes (compress/recipe.h): parsing and its errors, per-layer
// overrides by name, regex, kind and block compiled to one spec per set of
// keys, the layers each gets, the log's origins, TOML written back, and
// `vitkit compress --recipe` in command-line order with --pass.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/model_io.h"
#include "vitkit/repr/int.h"
#include "vitkit/train/train_config.h"

namespace vitkit {
namespace {

using kernels::ScaleGranularity;

std::string usage_error(const std::string& text) {
  try {
    Recipe r = parse_recipe(text, "r.toml");
    auto m = test::random_model(test::small_config(), 1);
    compile_recipe(r, *m);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "no error";
}

void expect_error(const std::string& text, const std::vector<std::string>& parts) {
  const std::string e = usage_error(text);
  for (const std::string& p : parts) EXPECT_NE(e.find(p), std::string::npos) << "want '" << p << "' in: " << e;
}

const IntLinear* int_repr(const Linear& l) { return dynamic_cast<const IntLinear*>(l.repr.get()); }

// The shipped recipe: int8 everywhere, 4-bit MLPs in groups of 32, f32 head.
TEST(Recipe, ShippedMixedPrecisionRecipe) {
  const Recipe r = load_recipe(test::source_dir() + "/configs/recipes/int8-mlp4.toml");
  ASSERT_EQ(r.steps.size(), 1u);
  EXPECT_EQ(r.steps[0].pass, "quantize");
  ASSERT_EQ(r.steps[0].overrides.size(), 2u);
  auto m = test::random_model(test::small_config(16, 8, 64, 2, 4, 128), 3);
  const std::vector<RecipeSpec> specs = compile_recipe(r, *m);
  ASSERT_EQ(specs.size(), 2u);  // {patch, qkv, out_proj} int8 and {fc1, fc2} int4; the head is skipped
  EXPECT_EQ(specs[0].origin["step"], 1);
  EXPECT_EQ(specs[0].origin["layers"], 1 + 2 * 2);
  EXPECT_EQ(specs[1].origin["layers"], 2 * 2);
  std::vector<std::string> texts;
  std::vector<nlohmann::json> origins;
  for (auto& s : specs) texts.push_back(s.spec), origins.push_back(s.origin);
  apply_passes(*m, texts, {}, origins);
  for (const Linear* l : m->linears()) {
    if (l->kind == LayerKind::Head) {
      EXPECT_EQ(l->repr->kind(), "f32") << l->name;
      continue;
    }
    const IntLinear* q = int_repr(*l);
    ASSERT_NE(q, nullptr) << l->name;
    const bool mlp = l->kind == LayerKind::Fc1 || l->kind == LayerKind::Fc2;
    EXPECT_EQ(q->format().bits, mlp ? 4 : 8) << l->name;
    EXPECT_EQ(q->format().granularity, mlp ? ScaleGranularity::Group : ScaleGranularity::Channel) << l->name;
    EXPECT_EQ(q->format().group, mlp ? 32 : 0) << l->name;
    EXPECT_EQ(q->format().abits, 8) << l->name;
  }
  const nlohmann::json log = compression_log(*m);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0]["origin"]["recipe"], r.path);
  EXPECT_EQ(log[1]["layers"].size(), 4u);
}

// Overrides apply in order, each on top of the earlier ones; skip leaves a
// layer alone unless a later override selects it again; name, layers, kind
// and block all select, together only where all match.
TEST(Recipe, OverridesInOrder) {
  const std::string text = R"(
description = "test"
[[step]]
pass = "quantize"
bits = 8
[[step.override]]
block = 1
bits = 6
[[step.override]]
kind = "fc2"
block = [1]
abits = 0
[[step.override]]
layers = "encoder_layer_0\\.mlp"
skip = true
[[step.override]]
name = ["encoder.layers.encoder_layer_0.mlp.3"]
bits = 3
)";
  const Recipe r = parse_recipe(text, "r.toml");
  EXPECT_EQ(r.description, "test");
  auto m = test::random_model(test::small_config(), 2);
  std::vector<std::string> texts;
  for (auto& s : compile_recipe(r, *m)) texts.push_back(s.spec);
  apply_passes(*m, texts);
  for (const Linear* l : m->linears()) {
    int bits = 8, abits = 8;
    bool skipped = false;
    if (l->block == 1) bits = 6;
    if (l->block == 1 && l->kind == LayerKind::Fc2) abits = 0;
    if (l->block == 0 && l->kind == LayerKind::Fc1) skipped = true;
    if (l->block == 0 && l->kind == LayerKind::Fc2) bits = 3;  // selected again after the skip
    if (skipped) {
      EXPECT_EQ(l->repr->kind(), "f32") << l->name;
      continue;
    }
    const IntLinear* q = int_repr(*l);
    ASSERT_NE(q, nullptr) << l->name;
    EXPECT_EQ(q->format().bits, bits) << l->name;
    EXPECT_EQ(q->format().abits, abits) << l->name;
  }
}

// A step without overrides is its spec as written; spec = "..." is the same as pass and keys; TOML written back
// compiles to the same specs.
TEST(Recipe, SpecsAndTomlRoundTrip) {
  const std::string text = R"(
[[step]]
spec = "f16:layers=conv_proj"
[[step]]
pass = "bf16"
layers = "heads"
[[step]]
pass = "quantize"
bits = 8
act = "static"
calib = "percentile:99.9"
layers = "encoder"
[[step.override]]
kind = ["qkv", "out_proj"]
bits = 4
granularity = "group"
group = 16
)";
  const Recipe r = parse_recipe(text, "r.toml");
  EXPECT_TRUE(recipe_needs_calibration(r));
  EXPECT_EQ(r.steps[0].spec(), "f16:layers=conv_proj");
  auto m = test::random_model(test::small_config(), 4);
  const std::vector<RecipeSpec> a = compile_recipe(r, *m);
  const Recipe back = parse_recipe(recipe_toml(r), "back.toml");
  const std::vector<RecipeSpec> b = compile_recipe(back, *m);
  ASSERT_EQ(a.size(), b.size()) << recipe_toml(r);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].spec, b[i].spec) << recipe_toml(r);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a[1].spec, "bf16:layers=heads");
  // The quantize step's layers= narrows what the overrides choose from: the encoder's layers only.
  EXPECT_NE(a[2].spec.find("layers=^(?:encoder\\.layers\\.encoder_layer_0\\.self_attention\\.in_proj|"),
            std::string::npos)
      << a[2].spec;
  PassContext ctx = test::random_calibration(m->cfg, 8, 5);
  std::vector<std::string> texts;
  for (auto& s : a) texts.push_back(s.spec);
  apply_passes(*m, texts, ctx);
  EXPECT_EQ(m->patch.repr->kind(), "f16");
  EXPECT_EQ(m->head.repr->kind(), "bf16");
  EXPECT_EQ(int_repr(m->blocks[0].qkv)->format().bits, 4);
  EXPECT_EQ(int_repr(m->blocks[1].fc1)->format().bits, 8);
  EXPECT_TRUE(int_repr(m->blocks[1].fc1)->format().static_inputs);
}

TEST(Recipe, ClearErrors) {
  expect_error("[[step]]\npass = \"shrink\"\n", {"r.toml: step 1", "unknown pass 'shrink'"});
  expect_error("[[step]]\npass = \"quantize\"\nbitz = 4\n", {"step 1", "unknown key 'bitz'"});
  expect_error("[[step]]\npass = \"quantize\"\nbits = 17\n", {"step 1", "bits=17"});
  expect_error("[[step]]\npass = \"quantize\"\n[[step.override]]\nkind = \"fc1\"\nbits = 1\n",
               {"step 1, override 1", "bits=1"});
  expect_error("[[step]]\npass = \"quantize\"\n[[step.override]]\nbits = 4\n", {"override 1", "needs a selector"});
  expect_error("[[step]]\npass = \"quantize\"\n[[step.override]]\nkind = \"mlp\"\nbits = 4\n",
               {"kind 'mlp' is not a layer kind"});
  expect_error("[[step]]\npass = \"quantize\"\n[[step.override]]\nblock = 7\nbits = 4\n",
               {"step 1, override 1 (block=7) selects no layer"});
  expect_error("[[step]]\npass = \"quantize\"\n[[step.override]]\nkind = \"head\"\nskip = true\nbits = 4\n",
               {"skip = true", "takes no pass keys"});
  expect_error("[[step]]\npass = \"round\"\ndecimals = 2\n[[step.override]]\nkind = \"fc1\"\ndecimals = 1\n",
               {"pass round takes no per-layer overrides"});
  expect_error("[[step]]\npass = \"quantize\"\nspec = \"quantize:bits=8\"\n", {"not both"});
  expect_error("[[step]]\nbits = 8\n", {"needs pass ="});
  expect_error("[[step]]\npass = \"quantize\"\nbits = \n", {"r.toml", "line"});
  expect_error("steps = 1\n", {"unknown key 'steps'"});
  expect_error("description = \"x\"\n", {"no [[step]]"});
  expect_error("[[step]]\npass = \"quantize\"\n[[step.override]]\nlayers = \"(\"\nbits = 4\n",
               {"not a valid regular expression"});
  EXPECT_THROW(load_recipe("/nonexistent/r.toml"), UsageError);
}

// The CLI: --recipe and --pass apply in command-line order (a recipe that
// leaves the head alone, then bf16 on it; the other order is refused, since
// quantize converts dense layers only); the log names each spec's origin.
TEST(Recipe, CliOrderWithPasses) {
  const std::string dir = test::temp_dir();
  auto m = test::random_model(test::small_config(16, 8, 64, 2, 4, 128), 6);
  save_model(*m, dir + "/m.safetensors");
  const std::string recipe = test::source_dir() + "/configs/recipes/int8-mlp4.toml";
  test::CliResult r = test::run_cli("compress " + dir + "/m.safetensors --recipe " + recipe +
                                    " --pass bf16:layers=heads -o " + dir + "/a.safetensors --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  ASSERT_EQ(j["passes"].size(), 3u);
  EXPECT_EQ(j["passes"][0]["origin"]["step"], 1);
  EXPECT_EQ(j["passes"][2]["origin"]["option"], "--pass");
  auto a = load_model(dir + "/a.safetensors");
  EXPECT_EQ(a->head.repr->kind(), "bf16");
  EXPECT_EQ(int_repr(a->blocks[1].fc2)->format().bits, 4);
  EXPECT_EQ(compression_log(*a).size(), 3u);
  r = test::run_cli("compress " + dir + "/m.safetensors --pass bf16:layers=encoder_layer_0.mlp.0 --recipe " + recipe +
                    " -o " + dir + "/b.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("already has a 'bf16'"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(dir + "/b.safetensors"));
  r = test::run_cli("compress " + dir + "/m.safetensors --recipe " + dir + "/none.toml -o " + dir + "/c.safetensors");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("none.toml"), std::string::npos) << r.err;
  std::ofstream(dir + "/bad.toml") << "[[step]]\npass = \"quantize\"\nact = \"static\"\n";
  r = test::run_cli("compress " + dir + "/m.safetensors --recipe " + dir + "/bad.toml -o " + dir + "/c.safetensors");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--data"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vitkit

namespace vitkit {
namespace {

// Fine-tuning steps: their tables form a train config without [model],
// validated with the recipe; they compile to an entry of their own, and the
// TOML written back parses to the same steps.
TEST(Recipe, FinetuneStepsAreTrainConfigs) {
  const std::string text =
      "[[step]]\npass = \"prune-heads\"\ncount = 2\n\n[[step]]\nfinetune = true\n[step.train]\nepochs = 2\n"
      "lr = 3e-4\n[step.data]\ntrain_limit = 100\n[step.distill]\nteacher = \"original\"\nalpha = 0.7\n\n"
      "[[step]]\npass = \"prune\"\nsparsity = 0.5\n";
  const Recipe r = parse_recipe(text, "r.toml");
  ASSERT_EQ(r.steps.size(), 3u);
  ASSERT_TRUE(r.steps[1].is_finetune());
  const TrainConfig c = parse_train_config(r.steps[1].finetune, "ft", true);
  EXPECT_EQ(c.epochs, 2);
  EXPECT_FLOAT_EQ(c.lr, 3e-4f);
  EXPECT_EQ(c.train_limit, 100);
  EXPECT_EQ(c.distill.teacher, "original");
  EXPECT_FLOAT_EQ(c.distill.alpha, 0.7f);
  auto m = test::random_model(test::small_config(), 1);
  const std::vector<RecipeSpec> specs = compile_recipe(r, *m);
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].spec, "prune-heads:count=2");
  EXPECT_TRUE(specs[1].spec.empty());
  EXPECT_EQ(specs[1].finetune, r.steps[1].finetune);
  EXPECT_EQ(specs[1].origin["step"], 2);
  const Recipe back = parse_recipe(recipe_toml(r), "back.toml");
  ASSERT_EQ(back.steps.size(), 3u);
  EXPECT_EQ(back.steps[1].finetune, r.steps[1].finetune) << recipe_toml(r);
  EXPECT_FALSE(recipe_needs_calibration(r));
}

TEST(Recipe, BadFinetuneStepsAreErrorsNamingTheStep) {
  expect_error("[[step]]\nfinetune = false\n", {"r.toml: step 1", "finetune must be true"});
  expect_error("[[step]]\nfinetune = true\nepochs = 1\n", {"step 1", "not 'epochs'"});
  expect_error("[[step]]\nfinetune = true\n[step.train]\nepochs = 0\n", {"step 1", "epochs"});
  expect_error("[[step]]\nfinetune = true\n[step.train]\nlearning_rate = 1\n", {"step 1", "learning_rate"});
  expect_error("[[step]]\nfinetune = true\n[step.model]\ndim = 8\n", {"step 1", "not 'model'"});
}

}  // namespace
}  // namespace vitkit

// The importer: PyTorch checkpoints (.pth) in the torchvision, timm, hf,
// torch-encoder and custom (key map) layouts, compared with PyTorch's logits;
// the .pth reader's views, dtypes and errors; key maps; architecture inference;
// the `import`, `info` and `predict` commands. References: tests/ref/import_ref.py.
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/arch_infer.h"
#include "vitkit/io/importer.h"
#include "vitkit/io/keymap.h"
#include "vitkit/io/layouts.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/pth.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/forward.h"

namespace vitkit {
namespace {

using test::ref_path;

std::string imp(const std::string& f) { return ref_path("import/" + f); }

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text_file(path)); }

// The error message of f(), or "" when it does not throw.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg)

// ------------------------------------------------------------ reference models

nlohmann::json find_case(const std::string& name) {
  for (auto& c : read_json(imp("cases.json")))
    if (c["name"] == name) return c;
  ADD_FAILURE() << "no case " << name << " in cases.json";
  return {};
}

// The case's --arch/--map/--config flags as LoadOptions.
LoadOptions case_options(const nlohmann::json& c) {
  LoadOptions o;
  auto flags = c["flags"].get<std::vector<std::string>>();
  for (size_t i = 0; i + 1 < flags.size(); i += 2) {
    std::string v = flags[i + 1];
    if (auto p = v.find("@SOURCE@"); p != std::string::npos) v.replace(p, 8, test::source_dir());
    if (flags[i] == "--arch") o.arch = v;
    if (flags[i] == "--map") o.map = v;
    if (flags[i] == "--config") o.config = v;
  }
  return o;
}

// Imports a case, runs vitkit's forward pass and compares with PyTorch's
// logits: max|diff| <= 1e-4 * max|logit|.
void check_case(const std::string& name) {
  const nlohmann::json c = find_case(name);
  auto m = load_model(imp(c["file"].get<std::string>()), case_options(c));
  SafetensorsReader io(imp(name + ".io.safetensors"));
  Tensor x = io.read("images"), want = io.read("logits");
  Tensor got = vit_predict(*m, x);
  const float d = test::max_abs_diff(got, want), mx = test::max_abs(want);
  std::printf("[ import   ] %-18s max|diff| %.3g, max|logit| %.3g, ratio %.2e\n", name.c_str(), d, mx, d / mx);
  ::testing::Test::RecordProperty("max_abs_diff", std::to_string(d));
  EXPECT_GT(mx, 0.1f);
  EXPECT_LE(d, 1e-4f * mx) << name;
}

#define REF_CASE(test, name)                  \
  TEST(ImportRef, test) {                     \
    VITKIT_REQUIRE_FILE(imp("cases.json"));   \
    check_case(name);                         \
  }

REF_CASE(TorchvisionStateDict, "tv_sd")
REF_CASE(TorchvisionCheckpointDict, "tv_ckpt")
REF_CASE(TorchvisionSafetensorsWithoutMetadata, "tv_st")
REF_CASE(TorchvisionViewsAndSharedStorages, "tv_views")
REF_CASE(TimmLayout, "timm")
REF_CASE(TimmFp16, "timm_f16")
REF_CASE(HfLayout, "hf")
REF_CASE(HfBf16, "hf_bf16")
REF_CASE(TorchEncoderPostNormRelu, "enc_post_relu")
REF_CASE(TorchEncoderPreNormTanhGeluMeanPoolNoFinalNorm, "enc_pre_tanh_mean")
REF_CASE(CustomNamesThroughKeyMap, "custom_map")

// The same weights as .pth and as safetensors read identically.
TEST(ImportRef, PthMatchesSafetensors) {
  VITKIT_REQUIRE_FILE(imp("tv_sd.pth"));
  PthReader p(imp("tv_sd.pth"));
  SafetensorsReader s(imp("tv_nometa.safetensors"));
  ASSERT_EQ(p.list().size(), s.list().size());
  for (auto& t : s.list()) {
    Tensor a = p.read(t.name), b = s.read(t.name);
    ASSERT_EQ(a.shape(), b.shape()) << t.name;
    EXPECT_EQ(test::max_abs_diff(a, b), 0.f) << t.name;
  }
}

// ------------------------------------------------------------ the .pth reader

// Views (transposed, strided, offset, one storage shared by three tensors)
// read the same values as the contiguous originals.
TEST(PthReader, StridedOffsetAndSharedViews) {
  VITKIT_REQUIRE_FILE(imp("tv_views.pth"));
  PthReader views(imp("tv_views.pth")), plain(imp("tv_sd.pth"));
  int noncontig = 0;
  for (auto& t : views.tensors()) noncontig += !t.contiguous;
  EXPECT_GE(noncontig, 3);
  const std::string L = "encoder.layers.encoder_layer_0.";
  const PthTensor* w = nullptr;
  const PthTensor* b = nullptr;
  for (auto& t : views.tensors()) {
    if (t.name == L + "ln_1.weight") w = &t;
    if (t.name == L + "ln_1.bias") b = &t;
  }
  ASSERT_TRUE(w && b);
  EXPECT_EQ(w->storage, b->storage);
  EXPECT_EQ(b->offset, 64);
  for (auto& t : plain.list()) {
    Tensor a = views.read(t.name), e = plain.read(t.name);
    EXPECT_EQ(test::max_abs_diff(a, e), 0.f) << t.name;
    std::vector<float> f(static_cast<size_t>(shape_numel(t.shape)));
    views.read_f32(t.name, f.data());
    EXPECT_EQ(0, std::memcmp(f.data(), e.raw(), f.size() * 4)) << t.name;
  }
}

// Every supported dtype, a transposed 2x2 view of each, a broadcast view
// (stride 0) and an empty tensor; an archive folder not named after the file.
TEST(PthReader, DtypesBroadcastAndEmptyViews) {
  VITKIT_REQUIRE_FILE(imp("dtypes.pth"));
  PthReader r(imp("dtypes.pth"));
  auto ints = [&](const std::string& name, DType dt) {
    Tensor t = r.read(name);
    EXPECT_EQ(t.dtype(), dt) << name;
    EXPECT_EQ(t.shape(), (Shape{2, 2})) << name;
    Tensor f = t.to(DType::F32);
    return std::vector<float>(f.f32(), f.f32() + 4);
  };
  EXPECT_EQ(ints("i8", DType::I8), (std::vector<float>{-1, -3, 2, 4}));
  EXPECT_EQ(ints("u8", DType::U8), (std::vector<float>{1, 3, 2, 250}));
  EXPECT_EQ(ints("i16", DType::I16), (std::vector<float>{-300, 3, 2, 4}));
  EXPECT_EQ(ints("i32", DType::I32), (std::vector<float>{1, 3, -2, 70000}));
  EXPECT_EQ(ints("f64", DType::F64), (std::vector<float>{0.5, 2, 1, 3}));
  EXPECT_EQ(ints("bool", DType::BOOL), (std::vector<float>{1, 1, 0, 1}));
  Tensor i64 = r.read("i64");
  EXPECT_EQ(i64.data<int64_t>()[3], int64_t(1) << 40);
  EXPECT_EQ(i64.data<int64_t>()[1], -3);
  Tensor bc = r.read("broadcast");
  ASSERT_EQ(bc.shape(), (Shape{3, 2}));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(bc.f32()[2 * i], 2.5f);
    EXPECT_EQ(bc.f32()[2 * i + 1], 3.5f);
  }
  EXPECT_EQ(r.read("empty").shape(), (Shape{0, 5}));
}

TEST(PthReader, FindsTheStateDictInCheckpointDicts) {
  VITKIT_REQUIRE_FILE(imp("tv_ckpt.pth"));
  EXPECT_EQ(PthReader(imp("tv_sd.pth")).state_dict_key(), "");
  EXPECT_EQ(PthReader(imp("tv_ckpt.pth")).state_dict_key(), "model");
  EXPECT_EQ(PthReader(imp("timm.pth")).state_dict_key(), "state_dict");
  PthReader custom(imp("custom.pth"));
  EXPECT_EQ(custom.state_dict_key(), "model_state_dict");
  // Non-float buffers are listed with their dtype (and dropped by the key map).
  bool steps = false;
  for (auto& t : custom.list()) steps |= t.name == "steps" && t.dtype == DType::I64;
  EXPECT_TRUE(steps);
  // Nothing but the state dict's tensors: no epoch, optimizer entries.
  EXPECT_EQ(PthReader(imp("tv_ckpt.pth")).list().size(), PthReader(imp("tv_sd.pth")).list().size());
}

TEST(PthReader, FromMemoryMatchesFile) {
  VITKIT_REQUIRE_FILE(imp("timm_f16.pth"));
  std::vector<uint8_t> bytes = read_file(imp("timm_f16.pth"));
  PthReader mem("timm_f16 (memory)", bytes.data(), bytes.size()), file(imp("timm_f16.pth"));
  ASSERT_EQ(mem.list().size(), file.list().size());
  for (auto& t : file.list()) {
    EXPECT_EQ(t.dtype, DType::F16);
    EXPECT_EQ(test::max_abs_diff(mem.read(t.name), file.read(t.name)), 0.f);
  }
}

// Truncated zips, missing entries, size lies, views past their storage, legacy
// and TorchScript files: each a vitkit::Error naming the file and the problem.
TEST(PthReader, CorruptFilesAreClearErrors) {
  VITKIT_REQUIRE_FILE(imp("corrupt.json"));
  for (auto& c : read_json(imp("corrupt.json"))) {
    const std::string path = imp(c["file"].get<std::string>()), expect = c["expect"];
    std::string msg = error_of([&] { PthReader r(path); });
    EXPECT_ERROR_HAS(msg, path);
    EXPECT_ERROR_HAS(msg, expect);
    // The same through load_model (any layout).
    LoadOptions o;
    o.config = "heads=4";
    msg = error_of([&] { load_model(path, o); });
    EXPECT_ERROR_HAS(msg, path);
  }
}

// A truncated copy at many lengths, and a safetensors file renamed .pth: never a crash.
TEST(PthReader, EveryTruncationIsAnError) {
  VITKIT_REQUIRE_FILE(imp("dtypes.pth"));
  std::vector<uint8_t> bytes = read_file(imp("dtypes.pth"));
  for (size_t n = 0; n < bytes.size(); n += 7) {
    std::string msg = error_of([&] { PthReader r("cut", bytes.data(), n); });
    EXPECT_ERROR_HAS(msg, "cut");
  }
}

// ------------------------------------------------------------ key maps

// A TensorSource in memory: tensor i is filled with i*1000 + k.
class MemSource : public TensorSource {
 public:
  void add(const std::string& name, const Shape& shape, DType dt = DType::F32) {
    tensors_.push_back({name, dt, shape});
  }
  std::string path() const override { return "mem.pth"; }
  std::vector<SourceTensor> list() const override { return tensors_; }
  void read_f32(const std::string& name, float* dst) const override {
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (tensors_[i].name == name) {
        for (int64_t k = 0; k < shape_numel(tensors_[i].shape); ++k) dst[k] = float(i * 1000 + k);
        return;
      }
    fail("mem.pth: no tensor ", name);
  }

 private:
  std::vector<SourceTensor> tensors_;
};

TEST(Keymap, RulesGroupsDropsAndFirstMatch) {
  KeyMap m = KeyMap::parse(
      "# a comment\n"
      "\n"
      "  blocks\\.(\\d+)\\.fc\\.(weight|bias) -> enc.$1.mlp.$2   # trailing comment\n"
      "blocks\\.0\\.fc\\.weight -> never.used\n"
      "aux\\..* -> -\n"
      "(.*)\\.gamma -> $1.weight\n",
      "test.map");
  ASSERT_EQ(m.rules().size(), 4u);
  auto r = m.apply("blocks.12.fc.bias");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.name, "enc.12.mlp.bias");
  EXPECT_EQ(m.apply("blocks.0.fc.weight").name, "enc.0.mlp.weight");  // the first rule wins
  EXPECT_TRUE(m.apply("aux.head.weight").drop);
  EXPECT_EQ(m.apply("norm.gamma").name, "norm.weight");
  auto u = m.apply("xblocks.1.fc.bias");  // full match only
  EXPECT_FALSE(u.matched);
  EXPECT_EQ(u.name, "xblocks.1.fc.bias");
}

TEST(Keymap, ErrorsNameFileAndLine) {
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse("a -> b\n\n(unclosed -> x\n", "my.map"); }), "my.map:3");
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse("a -> b\nno arrow here\n", "my.map"); }), "my.map:2");
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse(" -> b\n", "m"); }), "m:1");
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse("a ->  \n", "m"); }), "empty replacement");
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse("[z-a] -> b\n", "m"); }), "bad regular expression");
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse(std::string(40, '(') + "a" + std::string(40, ')') + " -> b", "m"); }),
                   "nests");
  // Numbers std::regex would overflow on (found by fuzzing); small ones are fine.
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse("(a)\\123 -> b\n", "m"); }), "back-reference");
  EXPECT_ERROR_HAS(error_of([] { KeyMap::parse("a{4444444444444444444} -> b\n", "m"); }), "repetition count");
  EXPECT_EQ(KeyMap::parse("(a)\\1x{2,3} -> b\n", "m").apply("aaxxx").name, "b");
  // Shapes that backtrack exponentially (one found by fuzzing: .** on a 24-character name).
  for (const char* bad : {".**x -> b", "(a*)* -> b", "(a|b)+ -> b", "(?:x+y)* -> b", "(a*){2,} -> b",
                          ".*a.*b.*c.*d -> b"})
    EXPECT_ERROR_HAS(error_of([&] { KeyMap::parse(bad, "m"); }), "m:1") << bad;
  for (const char* good : {"(?:.*\\.)?layers\\.(\\d+)\\.x -> b", "(a|b)c* -> b", "(ab)+ -> b", "[(*+]+ -> b",
                           "a.*?b -> b", "(a*)? -> b"})
    EXPECT_NO_THROW(KeyMap::parse(good, "m")) << good;
  EXPECT_THROW(KeyMap::load("/nonexistent/x.map"), UsageError);
}

TEST(Keymap, PacksQueryKeyValueInOrder) {
  auto src = std::make_unique<MemSource>();
  src->add("module.l.0.v.w", {4, 4});  // listed out of order, with a DataParallel prefix
  src->add("module.l.0.q.w", {4, 4});
  src->add("module.l.0.k.w", {4, 4}, DType::F16);
  src->add("module.other", {2});
  src->add("module.drop.me", {3});
  KeyMap m = KeyMap::parse("l\\.(\\d+)\\.(q|k|v)\\.w -> in_proj_weight_$1[$2]\ndrop\\..* -> -\n", "t.map");
  RemappedSource r(std::move(src), m);
  auto list = r.list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "in_proj_weight_0");
  EXPECT_EQ(list[0].shape, (Shape{12, 4}));
  EXPECT_EQ(list[0].dtype, DType::F32);  // mixed dtypes read as f32
  EXPECT_EQ(list[1].name, "other");
  EXPECT_EQ(r.dropped(), (std::vector<std::string>{"module.drop.me"}));
  std::vector<float> v(48);
  r.read_f32("in_proj_weight_0", v.data());
  EXPECT_EQ(v[0], 1000.f);   // q: source index 1
  EXPECT_EQ(v[16], 2000.f);  // k: index 2
  EXPECT_EQ(v[32], 0.f);     // v: index 0
  EXPECT_EQ(v[47], 15.f);
  EXPECT_EQ(r.sources("in_proj_weight_0"), (std::vector<std::string>{"module.l.0.q.w", "module.l.0.k.w", "module.l.0.v.w"}));
}

TEST(Keymap, PackingAndCollisionErrors) {
  auto make = [](std::vector<std::pair<std::string, Shape>> ts) {
    auto s = std::make_unique<MemSource>();
    for (auto& [n, sh] : ts) s->add(n, sh);
    return s;
  };
  KeyMap m = KeyMap::parse("(q|k|v) -> w[$1]\n(a|b) -> same\n", "t.map");
  std::string msg = error_of([&] { RemappedSource r(make({{"q", {2, 2}}, {"k", {2, 2}}}), m); });
  EXPECT_ERROR_HAS(msg, "no v part");
  EXPECT_ERROR_HAS(msg, "mem.pth");
  msg = error_of([&] { RemappedSource r(make({{"q", {2, 2}}, {"k", {2, 2}}, {"v", {3, 2}}}), m); });
  EXPECT_ERROR_HAS(msg, "differ in shape");
  msg = error_of([&] { RemappedSource r(make({{"a", {2}}, {"b", {2}}}), m); });
  EXPECT_ERROR_HAS(msg, "both become 'same'");
}

// Every preset's rules parse, and map their model's names to torchvision's.
TEST(Keymap, PresetsMapTheirNames) {
  for (auto& n : layout_names()) EXPECT_NO_THROW(layout_keymap(layout(n), "")) << n;
  EXPECT_THROW(layout("keras"), UsageError);
  auto name = [](const char* arch, const char* src) { return layout_keymap(layout(arch), "").apply(src).name; };
  const std::string L = "encoder.layers.encoder_layer_";
  EXPECT_EQ(name("timm", "blocks.11.attn.qkv.weight"), L + "11.self_attention.in_proj_weight");
  EXPECT_EQ(name("timm", "patch_embed.proj.bias"), "conv_proj.bias");
  EXPECT_EQ(name("hf", "vit.encoder.layer.3.attention.attention.key.bias"), L + "3.self_attention.in_proj_bias[k]");
  EXPECT_EQ(name("hf", "vit.encoder.layer.3.output.dense.weight"), L + "3.mlp.3.weight");
  EXPECT_EQ(name("hf", "classifier.weight"), "heads.head.weight");
  EXPECT_EQ(name("torch-encoder", "model.transformer.layers.2.linear1.bias"), L + "2.mlp.0.bias");
  EXPECT_EQ(name("torch-encoder", "transformer.norm.weight"), "encoder.ln.weight");
  EXPECT_EQ(name("torch-encoder", "fc.weight"), "heads.head.weight");
  EXPECT_EQ(name("torchvision", "heads.head.weight"), "heads.head.weight");
}

// Missing and unused tensors are listed by name; --strict makes unused ones errors.
TEST(Keymap, MissingAndUnusedTensorsAreNamed) {
  VITKIT_REQUIRE_FILE(imp("custom.pth"));
  const std::string dir = test::temp_dir();
  // The committed map without its "-" rules: two buffers are left unused.
  std::string text = read_text_file(test::source_dir() + "/tests/data/custom_vit.map"), kept;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find("-> -") == std::string::npos) kept += line + "\n";
  write_text_atomic(dir + "/nodrop.map", kept);
  LoadOptions o;
  o.map = dir + "/nodrop.map";
  o.config = "heads=4,norm=pre,act=gelu,pool=cls,norm_eps=1e-5";
  EXPECT_NO_THROW(load_model(imp("custom.pth"), o));
  o.strict = true;
  std::string msg = error_of([&] { load_model(imp("custom.pth"), o); });
  EXPECT_ERROR_HAS(msg, "unused tensors");
  EXPECT_ERROR_HAS(msg, "steps");
  EXPECT_ERROR_HAS(msg, "trunk.0.rel_scale");
  // Dropping the head leaves it missing, by name.
  write_text_atomic(dir + "/nohead.map", "heads\\.head\\.weight -> -\n");
  LoadOptions h;
  h.map = dir + "/nohead.map";
  h.arch = "torchvision";
  h.config = "heads=4,classes=10";
  msg = error_of([&] { load_model(imp("tv_sd.pth"), h); });
  EXPECT_ERROR_HAS(msg, "missing tensors");
  EXPECT_ERROR_HAS(msg, "heads.head.weight");
}

// ------------------------------------------------------------ architecture inference

std::vector<SourceTensor> tv_like(int D, int depth, int M, int K, int C, int p, int tokens, bool cls = true) {
  std::vector<SourceTensor> v;
  v.push_back({"conv_proj.weight", DType::F32, {D, C, p, p}});
  if (cls) v.push_back({"class_token", DType::F32, {1, 1, D}});
  v.push_back({"encoder.pos_embedding", DType::F32, {1, tokens, D}});
  for (int i = 0; i < depth; ++i) {
    std::string L = "encoder.layers.encoder_layer_" + std::to_string(i) + ".";
    v.push_back({L + "self_attention.in_proj_weight", DType::F32, {3 * D, D}});
    v.push_back({L + "mlp.0.weight", DType::F32, {M, D}});
  }
  v.push_back({"encoder.ln.weight", DType::F32, {D}});
  v.push_back({"heads.head.weight", DType::F32, {K, D}});
  return v;
}

TEST(ImportArch, InfersSizesFromShapes) {
  InferredArch a = infer_arch(tv_like(96, 5, 200, 13, 1, 7, 17), "f.pth");
  EXPECT_EQ(a.cfg.dim, 96);
  EXPECT_EQ(a.cfg.depth, 5);
  EXPECT_EQ(a.cfg.mlp_dim, 200);
  EXPECT_EQ(a.cfg.classes, 13);
  EXPECT_EQ(a.cfg.channels, 1);
  EXPECT_EQ(a.cfg.patch, 7);
  EXPECT_EQ(a.cfg.image_size, 28);
  EXPECT_TRUE(a.cfg.class_token);
  EXPECT_TRUE(a.cfg.final_norm);
  EXPECT_FALSE(a.cfg.qkv_bias);  // no in_proj_bias
  EXPECT_TRUE(a.unknown.empty());
  ViTConfig c = resolve_arch(tv_like(96, 5, 200, 13, 1, 7, 17), "f.pth", layout("torchvision"), "", "heads=8");
  EXPECT_EQ(c.heads, 8);
  EXPECT_EQ(c.pre.mean.size(), 1u);  // one channel: preprocessing follows
  // Without a class token the positions are the patches alone.
  EXPECT_EQ(infer_arch(tv_like(8, 1, 8, 2, 3, 4, 16, false), "f").cfg.image_size, 16);
}

TEST(ImportArch, SaysWhichKeysAreMissing) {
  auto t = tv_like(768, 12, 3072, 1000, 3, 16, 197);
  std::string msg = error_of([&] { resolve_arch(t, "big.pth", layout("torchvision"), "", ""); });
  EXPECT_ERROR_HAS(msg, "big.pth");
  EXPECT_ERROR_HAS(msg, "heads");
  EXPECT_ERROR_HAS(msg, "heads=12");  // the ViT-B hint
  EXPECT_ERROR_HAS(msg, "--config");
  EXPECT_EQ(resolve_arch(t, "big.pth", layout("torchvision"), "vit_b_16", "").heads, 12);
  msg = error_of([&] { resolve_arch(t, "enc.pth", layout("torch-encoder"), "", "heads=12"); });
  EXPECT_ERROR_HAS(msg, "norm");
  EXPECT_ERROR_HAS(msg, "act");
  EXPECT_ERROR_HAS(msg, "pool");
  EXPECT_EQ(msg.find("heads"), std::string::npos);
  // A checkpoint the layout does not fit: the core sizes are missing, with why.
  std::vector<SourceTensor> odd{{"foo.weight", DType::F32, {4, 4}}};
  msg = error_of([&] { resolve_arch(odd, "odd.pth", layout("timm"), "", "heads=2"); });
  EXPECT_ERROR_HAS(msg, "conv_proj.weight");
  EXPECT_ERROR_HAS(msg, "depth");
}

TEST(ImportArch, RejectsShapesItCannotRepresent) {
  EXPECT_ERROR_HAS(error_of([] { infer_arch(tv_like(8, 1, 8, 2, 3, 4, 15), "f.pth"); }), "not a square grid");
  EXPECT_ERROR_HAS(error_of([] { infer_arch(tv_like(8, 1, 8, 2, 3, 4, 16), "f.pth"); }), "no_embed_class");
  auto t = tv_like(8, 1, 8, 2, 3, 4, 17);
  t[0].shape = {8, 3, 4, 5};
  EXPECT_ERROR_HAS(error_of([&] { infer_arch(t, "f.pth"); }), "conv_proj.weight");
  t = tv_like(8, 1, 8, 2, 3, 4, 17);
  t.push_back({"fc_norm.weight", DType::F32, {8}});
  EXPECT_ERROR_HAS(error_of([&] { infer_arch(t, "f.pth"); }), "fc_norm");
  t = tv_like(8, 1, 8, 2, 3, 4, 17);
  t.push_back({"blocks.0.ls1.gamma", DType::F32, {8}});
  EXPECT_ERROR_HAS(error_of([&] { infer_arch(t, "f.pth"); }), "LayerScale");
}

// ------------------------------------------------------------ the CLI

TEST(ImportCli, ImportThenInfoAndPredict) {
  VITKIT_REQUIRE_FILE(imp("timm.pth"));
  const std::string dir = test::temp_dir(), out = dir + "/timm.safetensors";
  auto r = test::run_cli("import " + imp("timm.pth") + " --arch timm --config heads=3 -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("state dict under 'state_dict'"), std::string::npos) << r.out;
  // The written file is a native vitkit model: no flags needed.
  r = test::run_cli("info " + out + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["heads"], 3);
  EXPECT_EQ(j["config"]["patch"], 4);
  EXPECT_EQ(j["config"]["classes"], 7);
  // Through the importer (--arch), a vitkit file's own config is the base.
  LoadOptions via;
  via.arch = "torchvision";
  EXPECT_EQ(load_config(out, via).heads, 3);
  auto m = load_model(out);
  SafetensorsReader io(imp("timm.io.safetensors"));
  Tensor want = io.read("logits");
  EXPECT_LE(test::max_abs_diff(vit_predict(*m, io.read("images")), want), 1e-4f * test::max_abs(want));
  // predict on the imported file and on the .pth directly give the same top class.
  if (test::run_cli("predict --help").out.find("--input") == std::string::npos)
    GTEST_SKIP() << "vitkit predict has no --input yet";
  for (std::string model : {out, imp("timm.pth") + " --arch timm --config heads=3"}) {
    r = test::run_cli("predict " + model + " --input " + imp("timm.images.npy") + " --json");
    ASSERT_EQ(r.code, 0) << r.err;
    auto p = nlohmann::json::parse(r.out)["predictions"];
    ASSERT_EQ(p.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      int best = 0;
      for (int c = 1; c < 7; ++c)
        if (want.f32()[i * 7 + c] > want.f32()[i * 7 + best]) best = c;
      EXPECT_EQ(p[i]["top"][0]["class"], best);
      EXPECT_NEAR(p[i]["top"][0]["logit"].get<float>(), want.f32()[i * 7 + best], 1e-4 * test::max_abs(want));
    }
  }
}

TEST(ImportCli, InfoOnPthWithFlags) {
  VITKIT_REQUIRE_FILE(imp("tv_sd.pth"));
  auto r = test::run_cli("info " + imp("tv_sd.pth") + " --arch torchvision --config heads=4 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["dim"], 64);
  EXPECT_EQ(j["config"]["depth"], 2);
  EXPECT_EQ(j["config"]["image_size"], 32);
  EXPECT_EQ(j["config"]["mlp_dim"], 128);
  r = test::run_cli("info " + imp("hf_bf16.bin") + " --arch hf --config " + test::source_dir() +
                    "/tests/data/heads4.toml --json");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["config"]["heads"], 4);
  EXPECT_NEAR(j["config"]["norm_eps"].get<double>(), 1e-12, 1e-15);
  // Without heads: exit 1 and a message saying which key to give.
  r = test::run_cli("import " + imp("tv_sd.pth") + " -o " + test::temp_dir() + "/x.safetensors");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("heads"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(test::temp_dir() + "/x.safetensors"));
  r = test::run_cli("info " + imp("tv_sd.pth") + " --arch keras");
  EXPECT_EQ(r.code, 2) << r.err;
}

TEST(ImportCli, KeyMapAndStrictFromTheCommandLine) {
  VITKIT_REQUIRE_FILE(imp("custom.pth"));
  const std::string dir = test::temp_dir(), map = test::source_dir() + "/tests/data/custom_vit.map";
  const std::string cfg = " --config heads=4,norm=pre,act=gelu,pool=cls,norm_eps=1e-5";
  auto r = test::run_cli("import " + imp("custom.pth") + " --map " + map + cfg + " --strict --json -o " + dir +
                         "/c.safetensors");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["state_dict_key"], "model_state_dict");
  EXPECT_EQ(j["dropped"].size(), 3u);  // steps, trunk.0.rel_scale, trunk.1.rel_scale
  write_text_atomic(dir + "/bad.map", "stem\\.(weight -> conv_proj.$1\n");
  r = test::run_cli("import " + imp("custom.pth") + " --map " + dir + "/bad.map" + cfg + " -o " + dir + "/d.st");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("bad.map:1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vitkit

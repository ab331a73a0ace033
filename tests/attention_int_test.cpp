// Attention with integer products (kernels/attention_int.h, quantize:
// attention=true): the kernel bit for bit against a scalar reference of the
// header's formula (odd shapes, 2..16 bits, q_rows), close to f32 attention at
// 8 bits; a model with quantized attention through the consumers: logits with
// and without the class-token shortcut, save/load, clone, costs, training
// refused, info, and the CLI on the real model.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/io/model_io.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/kernels/attention_int.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/train/step.h"

namespace vitkit {
namespace {

// The header's formula, one value at a time (int64 sums, std::nearbyint, std::exp).
std::vector<float> reference(const std::vector<float>& qkv, int64_t B, int64_t T, int64_t H, int64_t d,
                             const kernels::AttentionQuant& q, int64_t Tq) {
  const int64_t D = H * d, ld = 3 * D;
  const int qmax = (1 << (q.bits - 1)) - 1, pmax = (1 << q.pbits) - 1;
  std::vector<float> out(size_t(B * Tq * D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      auto at = [&](int part, int64_t t, int64_t k) { return qkv[size_t(b * T * ld + t * ld + part * D + h * d + k)]; };
      float s[3];
      std::vector<int64_t> c[3];
      for (int part = 0; part < 3; ++part) {
        float amax = 0.f;
        for (int64_t t = 0; t < T; ++t)
          for (int64_t k = 0; k < d; ++k) amax = std::max(amax, std::fabs(at(part, t, k)));
        s[part] = amax > 0.f ? amax / float(qmax) : 1.f;
        c[part].resize(size_t(T * d));
        for (int64_t t = 0; t < T; ++t)
          for (int64_t k = 0; k < d; ++k) {
            float v = std::nearbyint(at(part, t, k) / s[part]);
            v = v < float(-qmax) ? float(-qmax) : v > float(qmax) ? float(qmax) : v;
            c[part][size_t(t * d + k)] = int64_t(v);
          }
      }
      const float cs = (s[0] * s[1]) * (1.0f / std::sqrt(float(d)));
      for (int64_t i = 0; i < Tq; ++i) {
        std::vector<float> z(static_cast<size_t>(T));
        float mx = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          int64_t S = 0;
          for (int64_t k = 0; k < d; ++k) S += c[0][size_t(i * d + k)] * c[1][size_t(j * d + k)];
          z[size_t(j)] = float(S) * cs;
          mx = std::max(mx, z[size_t(j)]);
        }
        float sum = 0.f;
        for (int64_t j = 0; j < T; ++j) sum += (z[size_t(j)] = std::exp(z[size_t(j)] - mx));
        for (int64_t k = 0; k < d; ++k) {
          int64_t A = 0;
          for (int64_t j = 0; j < T; ++j) A += int64_t(std::nearbyint(z[size_t(j)] / sum * float(pmax))) * c[2][size_t(j * d + k)];
          out[size_t((b * Tq + i) * D + h * d + k)] = float(A) * (s[2] / float(pmax));
        }
      }
    }
  return out;
}

std::vector<float> random_qkv(std::mt19937& rng, int64_t n, float scale) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(AttentionInt, BitIdenticalToTheReference) {
  std::mt19937 rng(21);
  int64_t cases = 0;
  for (auto [B, T, H, d] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {2, 5, 3, 7}, {1, 50, 4, 32}, {2, 17, 2, 64}})
    for (auto [bits, pbits] : std::vector<std::pair<int, int>>{{8, 8}, {4, 8}, {2, 2}, {16, 16}, {12, 4}})
      for (int64_t Tq : {T, int64_t(1)}) {
        std::vector<float> qkv = random_qkv(rng, B * T * 3 * H * d, 2.f);
        if (T > 2)  // one head's values all zero in one image: scale 1, codes 0
          for (int64_t t = 0; t < T; ++t)
            for (int64_t k = 0; k < d; ++k) qkv[size_t(t * 3 * H * d + 2 * H * d + k)] = 0.f;
        kernels::AttentionQuant q{bits, pbits};
        std::vector<float> out(size_t(B * Tq * H * d), -1.f);
        kernels::attention_forward_int(qkv.data(), out.data(), B, T, H, d, q, Tq);
        const std::vector<float> ref = reference(qkv, B, T, H, d, q, Tq);
        int64_t bad = 0;
        for (size_t i = 0; i < out.size(); ++i) bad += std::memcmp(&out[i], &ref[i], 4) != 0;
        EXPECT_EQ(bad, 0) << "B " << B << " T " << T << " H " << H << " d " << d << " bits " << bits << " pbits "
                          << pbits << " q_rows " << Tq;
        ++cases;
      }
  EXPECT_EQ(cases, 40);
}

// The class token's row alone (q_rows = 1) is the full attention's first row.
TEST(AttentionInt, QueryRowsAgreeWithTheFullAttention) {
  std::mt19937 rng(22);
  const int64_t B = 3, T = 20, H = 2, d = 16, D = H * d;
  const std::vector<float> qkv = random_qkv(rng, B * T * 3 * D, 1.f);
  std::vector<float> full(size_t(B * T * D)), one(size_t(B * D));
  kernels::attention_forward_int(qkv.data(), full.data(), B, T, H, d, {8, 8});
  kernels::attention_forward_int(qkv.data(), one.data(), B, T, H, d, {8, 8}, 1);
  for (int64_t b = 0; b < B; ++b)
    EXPECT_EQ(std::memcmp(&full[size_t(b * T * D)], &one[size_t(b * D)], sizeof(float) * D), 0) << b;
}

// At 8 bits the result is close to f32 attention's: within a few percent of
// max |V| (the probabilities' step 1/255 over T keys, and V's step).
TEST(AttentionInt, CloseToFloatAttentionAt8Bits) {
  std::mt19937 rng(23);
  const int64_t B = 2, T = 50, H = 4, d = 32, D = H * d;
  const std::vector<float> qkv = random_qkv(rng, B * T * 3 * D, 1.f);
  std::vector<float> f(size_t(B * T * D)), i8(size_t(B * T * D)), i16(size_t(B * T * D));
  kernels::attention_forward(qkv.data(), f.data(), nullptr, B, T, H, d);
  kernels::attention_forward_int(qkv.data(), i8.data(), B, T, H, d, {8, 8});
  kernels::attention_forward_int(qkv.data(), i16.data(), B, T, H, d, {16, 16});
  float vmax = 0.f, e8 = 0.f, e16 = 0.f;
  for (float v : qkv) vmax = std::max(vmax, std::fabs(v));
  for (size_t k = 0; k < f.size(); ++k) {
    e8 = std::max(e8, std::fabs(f[k] - i8[k]));
    e16 = std::max(e16, std::fabs(f[k] - i16[k]));
  }
  std::printf("  max |int8 - f32| %.4f, |int16 - f32| %.6f, max |v| %.3f\n", e8, e16, vmax);
  EXPECT_LT(e8, 0.05f * vmax);
  EXPECT_LT(e16, 1e-3f * vmax);
  EXPECT_LT(e16, e8 / 20.f);
}

TEST(AttentionInt, ClearErrors) {
  std::vector<float> qkv(3 * 4), out(4);
  EXPECT_THROW(kernels::attention_forward_int(qkv.data(), out.data(), 1, 1, 1, 4, {1, 8}), Error);
  EXPECT_THROW(kernels::attention_forward_int(qkv.data(), out.data(), 1, 1, 1, 4, {8, 17}), Error);
  EXPECT_THROW(kernels::attention_forward_int(qkv.data(), out.data(), 1, 1, 1, 4, {8, 8}, 2), Error);
}

std::unique_ptr<ViT> quantized(const std::string& spec) {
  auto m = test::random_model(test::small_config(16, 4, 32, 2, 4, 64), 24);
  apply_pass(*m, spec);
  return m;
}

Tensor logits_of(const ViT& m, const Tensor& x, bool hooks) {
  Acts a;
  a.plan(m.cfg, x.dim(0), false);
  ForwardHooks h;
  h.on_linear = [](const Linear&, const float*, int64_t) {};  // disables the class-token shortcut
  vit_forward(m, x.f32(), x.dim(0), a, hooks ? &h : nullptr);
  Tensor t = Tensor::empty({x.dim(0), m.cfg.classes});
  std::memcpy(t.f32(), a.logits(), t.nbytes());
  return t;
}

// A model with quantized attention: every block set, the logits those of the
// int kernels (not f32 attention's), the same with and without the class-token
// shortcut, after save/load and clone; costs name it; training refuses.
TEST(AttentionInt, ModelThroughTheConsumers) {
  auto m = quantized("quantize:bits=8,attention=true");
  auto plain = quantized("quantize:bits=8");
  for (const Block& b : m->blocks) {
    ASSERT_TRUE(b.attn_quant.has_value());
    EXPECT_EQ(b.attn_quant->bits, 8);
    EXPECT_EQ(b.attn_quant->pbits, 8);
  }
  EXPECT_EQ(compression_log(*m)[0]["attention_blocks"].size(), 2u);
  const Tensor x = test::random_images(m->cfg, 5, 25);
  const Tensor y = logits_of(*m, x, false), yh = logits_of(*m, x, true), yp = logits_of(*plain, x, false);
  EXPECT_TRUE(test::bit_equal(y, yh));
  EXPECT_FALSE(test::bit_equal(y, yp));  // the attention products changed the logits
  EXPECT_LT(test::max_abs_diff(y, yp), 0.1f * test::max_abs(yp));
  const std::string path = test::temp_dir() + "/att.safetensors";
  save_model(*m, path);
  auto back = load_model(path);
  ASSERT_TRUE(back->blocks[1].attn_quant.has_value());
  EXPECT_TRUE(test::bit_equal(logits_of(*back, x, false), y));
  EXPECT_TRUE(test::bit_equal(logits_of(*m->clone(), x, false), y));
  int quantized_products = 0;
  for (const LayerCost& c : layer_costs(*back))
    if (c.kind == "attn_scores" || c.kind == "attn_values") quantized_products += c.repr == "int8";
  EXPECT_EQ(quantized_products, 4);
  try {
    begin_training(*back);
    ADD_FAILURE() << "training a model with integer attention did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block 0: attention with integer products"), std::string::npos) << e.what();
  }
  // Only the blocks whose qkv layer is quantized.
  auto one = quantized("quantize:bits=8,attention=true,layers=encoder_layer_1");
  EXPECT_FALSE(one->blocks[0].attn_quant.has_value());
  EXPECT_TRUE(one->blocks[1].attn_quant.has_value());
  EXPECT_THROW(quantized("quantize:bits=8,attention=true,layers=^heads"), UsageError);
  EXPECT_THROW(quantized("quantize:bits=8,abits=0,attention=true"), UsageError);
}

// A file whose vitkit.attention metadata is wrong: an error naming it.
TEST(AttentionInt, BadMetadataIsAClearError) {
  auto m = quantized("quantize:bits=8,attention=true");
  const std::string dir = test::temp_dir();
  for (auto [value, want] : std::vector<std::pair<std::string, std::string>>{
           {R"({"7": {"bits": 8, "pbits": 8}})", "names block '7'"},
           {R"({"0": {"bits": 1, "pbits": 8}})", "must be in 2..16"},
           {R"({"0": {"bits": 8}})", "needs integer bits and pbits"},
           {R"([1])", "is not a JSON object"}}) {
    FileContents fc = model_file_contents(*m, false);
    fc.metadata[kAttentionKey] = value;
    std::vector<StEntry> entries;
    for (auto& [name, t] : fc.tensors) entries.push_back({name, t.dtype(), t.shape(), t.raw()});
    const std::string path = dir + "/bad.safetensors";
    write_safetensors(path, entries, fc.metadata);
    try {
      load_model(path);
      ADD_FAILURE() << value << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("vitkit.attention"), std::string::npos) << e.what();
    }
  }
}

// The CLI on the shipped model and real data: compress with attention=true,
// eval and info of the file; the accuracy close to int8 linears alone.
TEST(AttentionInt, CliOnTheDefaultModelSlow) {
  const std::string data = test::fashion_mnist_dir();
  VITKIT_REQUIRE_FILE(data);
  const std::string dir = test::temp_dir(), model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  test::CliResult r = test::run_cli("compress " + model + " --pass quantize:bits=8,attention=true -o " + dir +
                                    "/a.safetensors --data fashion-mnist --compare-limit 1000 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  const double agree = j["compare"]["agreement"].get<double>();
  std::printf("  int8 linears + int8 attention: top-1 agreement with f32 %.4f on 1000 test images\n", agree);
  EXPECT_GT(agree, 0.97);
  r = test::run_cli("info " + dir + "/a.safetensors --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::parse_json(r)["macs_by_kind"]["attn_scores"]["repr"], "int8");
}

}  // namespace
}  // namespace vitkit

// quantize:format=fixed (MASE-style fixed point <bits, frac>): weights, inputs
// and biases against an independent reference of the format, frac found from
// the data when not given, files round trip and refuse tampering, and bad
// specs are clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/int.h"

namespace vitkit {
namespace {

// <bits, frac> of v: clamp(round(v 2^frac), -2^(bits-1), 2^(bits-1) - 1) 2^-frac, in double.
double fixed(double v, int bits, int frac) {
  const double q = std::nearbyint(std::ldexp(v, frac)), lo = -std::ldexp(1.0, bits - 1), hi = -lo - 1;
  return std::ldexp(std::clamp(q, lo, hi), -frac);
}

// The most fraction bits (0..bits) at which max |v| 2^frac < 2^(bits-1).
int frac_of(const float* v, int64_t n, int bits) {
  double amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, double(std::fabs(v[i])));
  for (int f = bits; f > 0; --f)
    if (std::ldexp(amax, f) < std::ldexp(1.0, bits - 1)) return f;
  return 0;
}

const IntLinear& int_of(const Linear& l) { return dynamic_cast<const IntLinear&>(*l.repr); }

// Every layer's forward: sum_k fixed(x_k, abits, afrac) fixed(w_k, bits, frac)
// + fixed(b, 32, frac + afrac), in double, against the layer's result.
void check_forward(const ViT& dense, const ViT& q, int bits, int abits, int frac_given, int afrac_given) {
  std::mt19937 rng(31);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> scratch;
  for (size_t li = 0; li < q.linears().size(); ++li) {
    const Linear& l = *q.linears()[li];
    const Linear& d = *dense.linears()[li];
    const IntFormat& f = int_of(l).format();
    const float* w = d.repr->plain_weight(scratch);
    const int64_t n = int64_t(l.in) * l.out;
    const int frac = frac_given >= 0 ? frac_given : frac_of(w, n, bits);
    EXPECT_EQ(f.frac, frac) << l.name;
    EXPECT_EQ(f.abits, abits) << l.name;
    if (afrac_given >= 0) {
      EXPECT_EQ(f.afrac, afrac_given) << l.name;
    }
    EXPECT_EQ(f.bias_frac, l.has_bias ? f.frac + f.afrac : -1) << l.name;
    // The weight is the reference's, exactly.
    std::vector<float> s2;
    const float* wq = l.repr->plain_weight(s2);
    int64_t off = 0;
    for (int64_t i = 0; i < n; ++i) off += double(wq[i]) != fixed(w[i], bits, frac);
    EXPECT_EQ(off, 0) << l.name;
    // The product.
    const int64_t M = 3;
    std::vector<float> X(size_t(M * l.in)), Y(size_t(M * l.out));
    for (auto& x : X) x = nd(rng);
    l.repr->forward(X.data(), Y.data(), M, Activation::None, false);
    const float* b = l.repr->bias();
    const float* b0 = d.repr->bias();
    for (int64_t m = 0; m < M; ++m)
      for (int j = 0; j < l.out; ++j) {
        double want = 0, mag = 0;
        if (b) {
          EXPECT_EQ(double(b[j]), std::ldexp(std::nearbyint(std::ldexp(double(b0[j]), f.bias_frac)), -f.bias_frac))
              << l.name << " bias " << j;
          want = b[j], mag = std::fabs(b[j]);
        }
        for (int k = 0; k < l.in; ++k) {
          const double t = fixed(X[size_t(m * l.in + k)], abits, f.afrac) * fixed(w[size_t(j) * l.in + k], bits, frac);
          want += t, mag += std::fabs(t);
        }
        EXPECT_NEAR(Y[size_t(m * l.out + j)], want, 1e-6 * mag + 1e-30) << l.name << " " << m << "," << j;
      }
  }
}

std::unique_ptr<ViT> model() { return test::random_model(test::small_config(16, 4, 32, 2, 4, 64), 32, 0.3f); }

TEST(FixedPoint, GivenFractions) {
  auto dense = model();
  auto q = dense->clone();
  apply_pass(*q, "quantize:format=fixed,bits=8,frac=6,abits=8,afrac=4");
  check_forward(*dense, *q, 8, 8, 6, 4);
  for (const Linear* l : q->linears()) {
    EXPECT_TRUE(int_of(*l).on_integer_kernels()) << l->name;
    EXPECT_EQ(int_of(*l).format().in_zero, 128) << l->name;
    EXPECT_EQ(l->repr->describe(), cat("fixed<8,6>, inputs fixed<8,4>", l->has_bias ? ", bias frac 10" : ""));
  }
}

// frac from each layer's weights; afrac from the calibration set's ranges
// (minmax: the largest input magnitude fits); 4 and 12 bits (the exact path).
TEST(FixedPoint, FractionsFromTheData) {
  for (auto [bits, abits] : std::vector<std::pair<int, int>>{{8, 8}, {4, 8}, {12, 10}}) {
    auto dense = model();
    auto q = dense->clone();
    const PassContext ctx = test::random_calibration(dense->cfg, 16, 33);
    apply_pass(*q, cat("quantize:format=fixed,bits=", bits, ",abits=", abits, ",calib=minmax"), ctx);
    check_forward(*dense, *q, bits, abits, -1, -1);
    const nlohmann::json rec = compression_log(*q)[0];
    ASSERT_TRUE(rec.contains("fixed_point")) << rec.dump();
    EXPECT_EQ(rec["calibrator"], "minmax");
    // minmax: afrac is the most at which every calibration input fits.
    std::map<std::string, float> amax;
    ForwardHooks h;
    h.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
      for (int64_t i = 0; i < rows * l.in; ++i) amax[l.name] = std::max(amax[l.name], std::fabs(X[i]));
    };
    vit_predict(*dense, ctx.calib, 0, &h);
    for (const Linear* l : q->linears()) {
      const float a = amax[l->name];
      EXPECT_EQ(int_of(*l).format().afrac, frac_of(&a, 1, abits)) << l->name << " bits " << bits;
    }
  }
}

TEST(FixedPoint, FilesRoundTripAndRefuseTampering) {
  auto q = model();
  apply_pass(*q, "quantize:format=fixed,bits=8,frac=5,afrac=3");
  const std::string dir = test::temp_dir();
  save_model(*q, dir + "/f.safetensors");
  auto back = load_model(dir + "/f.safetensors");
  const Tensor x = test::random_images(q->cfg, 4, 34);
  EXPECT_TRUE(test::bit_equal(vit_predict(*q, x), vit_predict(*back, x)));
  EXPECT_EQ(int_of(back->head).format().frac, 5);
  EXPECT_EQ(int_of(back->head).format().bias_frac, 8);
  // A bias off its grid, a scale that is not 2^-frac: errors naming the tensor.
  for (const std::string what : {"bias", "scale"}) {
    FileContents fc = model_file_contents(*q, false);
    for (auto& [name, t] : fc.tensors) {
      if (what == "bias" && name == "heads.head.bias") t = t.clone(), t.f32()[0] += 1.f / 1024;
      if (what == "scale" && name == "heads.head.weight_scale") t = t.clone(), t.f32()[0] *= 2;
    }
    std::vector<StEntry> entries;
    for (auto& [name, t] : fc.tensors) entries.push_back({name, t.dtype(), t.shape(), t.raw()});
    write_safetensors(dir + "/bad.safetensors", entries, fc.metadata);
    try {
      load_model(dir + "/bad.safetensors");
      ADD_FAILURE() << what << ": loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what == "bias" ? "grid" : "2^-5"), std::string::npos) << e.what();
    }
  }
}

// Codes of 4 bits and fewer are stored two per byte (U8 (out, ceil(in / 2))),
// signed ones as two's complement nibbles (-8 included, fixed point's most
// negative code), an odd row's last byte half used; they load back exactly.
TEST(FixedPoint, FourBitCodesTwoPerByte) {
  const ViTConfig c = test::small_config(9, 3, 32, 1, 4, 64, 10, 3);  // patch layer: 27 inputs
  for (const std::string spec : {"quantize:bits=4", "quantize:bits=3,sym=false", "quantize:bits=2,granularity=tensor",
                                 "quantize:format=fixed,bits=4,frac=2,afrac=4"}) {
    auto m = test::random_model(c, 35, 1.0f);
    apply_pass(*m, spec);
    const std::string path = test::temp_dir() + "/n.safetensors";
    save_model(*m, path);
    SafetensorsReader rd(path);
    const StTensor* w = rd.find("conv_proj.weight");
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->dtype, DType::U8) << spec;
    EXPECT_EQ(w->shape, (Shape{32, 14})) << spec;
    EXPECT_EQ(int64_t(w->end - w->begin), 32 * 14) << spec;
    EXPECT_EQ(m->patch.repr->file_bytes(), int64_t(w->end - w->begin) + 4 * int64_t(int_of(m->patch).scales().numel()) *
                                                (spec.find("sym=false") != std::string::npos ? 2 : 1) + 4 * 32)
        << spec;
    auto back = load_model(path);
    int64_t negative8 = 0;
    for (size_t i = 0; i < m->linears().size(); ++i) {
      const Tensor a = int_of(*m->linears()[i]).codes(), b = int_of(*back->linears()[i]).codes();
      EXPECT_TRUE(test::bit_equal(a, b)) << spec << " " << m->linears()[i]->name;
      if (a.dtype() == DType::I8)
        for (int64_t k = 0; k < a.numel(); ++k) negative8 += a.data<int8_t>()[k] == -8;
    }
    if (spec.find("fixed") != std::string::npos) {
      EXPECT_GT(negative8, 0) << "no code -8 to pack";
    }
    const Tensor x = test::random_images(c, 3, 36);
    EXPECT_TRUE(test::bit_equal(vit_predict(*m, x), vit_predict(*back, x))) << spec;
  }
}

TEST(FixedPoint, BadSpecsAreClearErrors) {
  auto msg = [](const std::string& spec, const PassContext& ctx = {}) {
    auto m = model();
    try {
      apply_pass(*m, spec, ctx);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("quantize:format=fixed,frac=9,afrac=4").find("frac=9 is more than bits=8"), std::string::npos);
  EXPECT_NE(msg("quantize:format=fixed,frac=4,afrac=9").find("afrac=9 is more than abits=8"), std::string::npos);
  EXPECT_NE(msg("quantize:format=fixed,granularity=channel,afrac=4").find("granularity=tensor"), std::string::npos);
  EXPECT_NE(msg("quantize:format=fixed,sym=false,afrac=4").find("no zero points"), std::string::npos);
  EXPECT_NE(msg("quantize:format=fixed,act=dynamic,afrac=4").find("not act=dynamic"), std::string::npos);
  EXPECT_NE(msg("quantize:frac=4").find("frac= is for format=fixed"), std::string::npos);
  EXPECT_NE(msg("quantize:format=float").find("format=float is not int or fixed"), std::string::npos);
  EXPECT_NE(msg("quantize:format=fixed").find("needs calibration images"), std::string::npos);
  EXPECT_NE(msg("quantize:format=fixed,frac=17").find("frac=17"), std::string::npos);
  // Without input bits, no calibration is needed (f32 inputs).
  EXPECT_EQ(msg("quantize:format=fixed,abits=0"), "no error");
}

}  // namespace
}  // namespace vitkit

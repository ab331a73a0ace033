// Decimal rounding semantics (halves away from zero on the float's exact value)
// and the round pass: which layers it touches, biases, activations, the MAC
// fraction of vit_b_16, and its error messages.
#include "vitkit/compress/round.h"

#include <cmath>
#include <cstring>

#include "test_util.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/rng.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/kernels/round.h"
#include "vitkit/repr/round.h"
#include "vitkit/model/init.h"

using namespace vitkit;
using namespace vitkit::kernels;

TEST(RoundSemantics, EdgeCases) {
  // 0.0049 -> 0.00; the float nearest 0.005 is 0.00499999988... -> 0.00; the
  // literal 0.0050000001f is that same float; the next float up, 0.00500000035...,
  // -> 0.01; -0.0 -> +0.0.
  EXPECT_EQ(round_decimal(0.0049f, 2), 0.f);
  EXPECT_EQ(round_decimal(0.005f, 2), 0.f);
  EXPECT_EQ(round_decimal(0.0050000001f, 2), 0.f);
  EXPECT_EQ(round_decimal(std::nextafter(0.005f, 1.f), 2), 0.01f);
  EXPECT_EQ(round_decimal(-std::nextafter(0.005f, 1.f), 2), -0.01f);
  EXPECT_FALSE(std::signbit(round_decimal(-0.0f, 2)));
  EXPECT_FALSE(std::signbit(round_decimal(-0.0049f, 2)));  // rounds to zero: +0, not -0
  EXPECT_EQ(decimal_units(-0.0f, 3), 0.0);
  // Exact halves round away from zero (numpy and torch give 0.12 and 2.0: half to even).
  EXPECT_EQ(round_decimal(0.125f, 2), 0.13f);
  EXPECT_EQ(round_decimal(-0.125f, 2), -0.13f);
  EXPECT_EQ(round_decimal(0.375f, 2), 0.38f);
  EXPECT_EQ(round_decimal(2.5f, 0), 3.f);
  EXPECT_EQ(round_decimal(-2.5f, 0), -3.f);
  EXPECT_EQ(round_decimal(0.5f, 0), 1.f);
  // Not halves in binary: 0.015f = 0.01499999966... -> 0.01 (numpy's float product
  // 0.015f * 100 rounds to 1.5 and gives 0.02); 0.045f = 0.04500000178... -> 0.05.
  EXPECT_EQ(round_decimal(0.015f, 2), 0.01f);
  EXPECT_EQ(round_decimal(0.045f, 2), 0.05f);
  // Non-finite values pass through; large values are already integers.
  EXPECT_TRUE(std::isnan(round_decimal(NAN, 3)));
  EXPECT_EQ(round_decimal(INFINITY, 3), INFINITY);
  EXPECT_EQ(round_decimal(1e10f, 3), 1e10f);
  EXPECT_EQ(round_decimal(123.456f, 0), 123.f);
  EXPECT_EQ(round_decimal(-123.456f, 1), -123.5f);
  EXPECT_THROW(round_decimal(1.f, 8), Error);
  EXPECT_THROW(round_decimal(1.f, -1), Error);
}

// Against an independent reference: the product x * 10^d is exact in double
// (checked with fma), k is found by comparing the exact product with k +- 1/2,
// and the result is the float nearest k / 10^d (computed in long double).
TEST(RoundSemantics, RandomFloatsAgainstReference) {
  Rng rng(1);
  for (int d = 0; d <= kMaxDecimals; ++d) {
    const double p = std::pow(10.0, d);
    for (int i = 0; i < 20000; ++i) {
      // Magnitudes from 1e-8 to 1e4, and exact halves now and then.
      float x = float(std::pow(10.0, -8 + 12 * rng.uniform_double())) * (rng.uniform() < 0.5f ? -1.f : 1.f);
      if (i % 7 == 0) x = float((std::floor(double(x) * p) + 0.5) / p);
      const double prod = double(x) * p;
      ASSERT_EQ(std::fma(double(x), p, -prod), 0.0) << "x*10^d not exact: x=" << x << " d=" << d;
      const double fl = std::floor(std::fabs(prod));
      const double k = (std::fabs(prod) - fl >= 0.5 ? fl + 1 : fl) * (x < 0 ? -1 : 1);
      const float want = float((long double)k / (long double)p);
      ASSERT_EQ(decimal_units(x, d), k + 0.0) << x << " d=" << d;
      ASSERT_EQ(round_decimal(x, d), want) << x << " d=" << d;
      // Idempotent while |k| < 2^23.
      if (std::fabs(k) < 8388608.0) {
        ASSERT_EQ(round_decimal(round_decimal(x, d), d), want) << x << " d=" << d;
      }
    }
  }
  // The array form equals the scalar form, in place too.
  std::vector<float> v(1000);
  for (auto& x : v) x = rng.normal();
  std::vector<float> r(v.size());
  round_decimal(v.data(), r.data(), int64_t(v.size()), 3);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(r[i], round_decimal(v[i], 3));
  round_decimal(v.data(), v.data(), int64_t(v.size()), 3);
  EXPECT_EQ(std::memcmp(v.data(), r.data(), sizeof(float) * v.size()), 0);
}

namespace {

ViTConfig tiny_config() {
  ViTConfig c = test::small_config(8, 4, 16, 2, 2, 32, 3);
  c.name = "tiny";
  return c;
}

std::unique_ptr<ViT> tiny_model(uint64_t seed = 1) {
  // A non-zero head (torchvision's init zeroes it) and larger biases than the
  // init's, so that rounding them is visible.
  auto m = test::init_model(tiny_config(), seed, 0.2f);
  Rng rng(seed + 100);
  for (Linear* l : m->linears())
    for (int i = 0; i < l->out; ++i) m->B(*l)[i] = 0.1f * rng.normal();
  return m;
}

// A layer's weight (out, in) whatever its representation (rounded layers hold f32 grid values).
const float* weight(const Linear& l) {
  thread_local std::vector<float> scratch;
  return plain_weight(l, scratch);
}

bool rounded(const float* v, int64_t n, int d) {
  for (int64_t i = 0; i < n; ++i)
    if (v[i] != round_decimal(v[i], d)) return false;
  return true;
}

bool same(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, sizeof(float) * n) == 0; }

}  // namespace

TEST(RoundPass, CoversExactlyTheBlockLayers) {
  auto orig = tiny_model();
  auto m = orig->clone();
  const nlohmann::json rec = apply_pass(*m, "round:decimals=2");
  std::vector<std::string> names;
  for (const Linear* l : m->linears()) {
    const int64_t n = int64_t(l->out) * l->in;
    const Linear* o = orig->find_linear(l->name);
    if (l->block >= 0) {
      names.push_back(l->name);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(weight(*l)[i], round_decimal(orig->W(*o)[i], 2)) << l->name;
      // The round representation, inputs not rounded.
      auto* r = dynamic_cast<const RoundLinear*>(l->repr.get());
      ASSERT_NE(r, nullptr) << l->name;
      EXPECT_FALSE(r->inputs()) << l->name;
    } else {
      EXPECT_TRUE(same(m->W(*l), orig->W(*o), n)) << l->name << " must not change";
      EXPECT_EQ(l->repr->kind(), "f32") << l->name;
    }
    EXPECT_TRUE(same(m->B(*l), orig->B(*o), l->out)) << l->name << ": biases are not rounded by default";
  }
  EXPECT_EQ(names.size(), 4u * 2);
  EXPECT_EQ(rec["layers"].get<std::vector<std::string>>(), names);
  EXPECT_EQ(rec["pass"], "round");
  EXPECT_EQ(rec["args"]["decimals"], 2);
  EXPECT_EQ(rec["args"]["activations"], false);
  EXPECT_EQ(rec["weights"], 2 * (3 * 16 * 16 + 16 * 16 + 2 * 16 * 32));
  EXPECT_GT(rec["weights_changed"].get<int64_t>(), 0);
  // Norms, embeddings and the class token are untouched.
  EXPECT_TRUE(same(m->params.ptr(m->pos), orig->params.ptr(orig->pos), m->params.info(m->pos).numel));
  EXPECT_EQ(compression_log(*m).size(), 1u);
}

TEST(RoundPass, LayersBiasesActivations) {
  auto orig = tiny_model();
  auto m = orig->clone();
  const nlohmann::json rec =
      apply_pass(*m, "round:decimals=1,layers=conv_proj|heads.head,biases=true,activations=true");
  EXPECT_EQ(rec["layers"].size(), 2u + 8u);
  for (const Linear* l : m->linears()) {
    EXPECT_TRUE(rounded(weight(*l), int64_t(l->out) * l->in, 1)) << l->name;
    EXPECT_TRUE(rounded(m->B(*l), l->out, 1)) << l->name;
    EXPECT_EQ(l->repr->kind(), "round");
    auto* r = dynamic_cast<const RoundLinear*>(l->repr.get());
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->decimals(), 1);
    EXPECT_TRUE(r->inputs());
    EXPECT_TRUE(same(r->weight(), weight(*l), int64_t(l->out) * l->in));
  }
  // A pattern naming only the head.
  auto h = orig->clone();
  const nlohmann::json rh = apply_pass(*h, "round:decimals=3,layers=^heads");
  EXPECT_EQ(rh["layers"].size(), 9u);
  EXPECT_EQ(rh["layers"].back(), "heads.head");
  EXPECT_FALSE(same(weight(h->head), orig->W(orig->head), 16 * 3));
  EXPECT_TRUE(same(h->W(h->patch), orig->W(orig->patch), 16 * 16));
}

TEST(RoundPass, ActivationReprRoundsInputs) {
  auto m = tiny_model();
  apply_pass(*m, "round:decimals=2,activations=true");
  const Linear& l = m->blocks[0].fc1;
  Rng rng(3);
  const int64_t M = 5;
  std::vector<float> X(size_t(M * l.in)), Xr(X.size()), Y(size_t(M * l.out)), want(Y.size());
  for (auto& x : X) x = rng.normal();
  round_decimal(X.data(), Xr.data(), int64_t(X.size()), 2);
  l.repr->forward(X.data(), Y.data(), M, Activation::None, false);
  kernels::gemm(false, true, M, l.out, l.in, 1.f, Xr.data(), l.in, weight(l), l.in, 0.f, want.data(), l.out, m->B(l));
  EXPECT_TRUE(same(Y.data(), want.data(), int64_t(Y.size())));
  // accumulate adds to Y's content.
  std::vector<float> acc(Y.size(), 1.f);
  l.repr->forward(X.data(), acc.data(), M, Activation::None, true);
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_FLOAT_EQ(acc[i], want[i] + 1.f);
}

// vit_b_16: T = 197, D = 768, M = 3072, 12 blocks. Rounded per block: qkv 3TD^2,
// out_proj TD^2, fc1 TDM, fc2 TMD = 12 T D^2; all MACs add q.k^T and attention.v
// (2 T^2 D per block), conv_proj (196 * 768 * 768) and the head (768 * 1000).
TEST(RoundPass, MacFractionVitB16) {
  ViTConfig c = *preset("vit_b_16");
  const int64_t T = 197, D = 768, M = 3072, L = 12;
  const int64_t covered = L * (3 * T * D * D + T * D * D + 2 * T * D * M);
  const int64_t total = covered + L * 2 * T * T * D + 196 * 768 * 768 + 768 * 1000;
  EXPECT_EQ(covered, 16732127232);
  EXPECT_EQ(total, 17563828224);
  ViT m(c);  // zero weights: rounding is fast and the fraction needs no values
  const nlohmann::json rec = round_model(m, {3, false, "", false});
  EXPECT_EQ(rec["macs_covered"].get<int64_t>(), covered);
  EXPECT_EQ(rec["macs_total"].get<int64_t>(), total);
  EXPECT_DOUBLE_EQ(rec["macs_fraction"].get<double>(), double(covered) / double(total));
  EXPECT_NEAR(rec["macs_fraction"].get<double>(), 0.952647, 1e-6);  // "about 24/25"
  // With the patch embedding and the head as well.
  const MacShare all = mac_share(m, [&] {
    std::vector<std::string> v;
    for (const Linear* l : m.linears()) v.push_back(l->name);
    return v;
  }());
  EXPECT_EQ(all.covered, total - L * 2 * T * T * D);
}

template <typename Fn>
static void expect_usage_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << parts[0];
  } catch (const UsageError& e) {
    std::string msg = e.what();
    for (auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "expected '" << p << "' in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a UsageError: " << e.what();
  }
}

TEST(PassSpec, ParsesAndRejects) {
  PassSpec s = parse_pass_spec("round:decimals=3,activations=true,layers=a|b");
  EXPECT_EQ(s.name, "round");
  ASSERT_EQ(s.args.size(), 3u);
  EXPECT_EQ(s.args[2], (std::pair<std::string, std::string>{"layers", "a|b"}));
  EXPECT_TRUE(parse_pass_spec("round").args.empty());
  auto m = tiny_model();
  expect_usage_error([&] { apply_pass(*m, "squash:decimals=3"); }, {"unknown pass", "squash", "round"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals=3,digits=2"); }, {"round", "unknown key", "digits"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals=x"); }, {"decimals=x", "integer"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals=9"); }, {"decimals=9", "0..7"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals=2,activations=maybe"); },
                     {"activations=maybe", "true or false"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals=2,layers=(x"); }, {"layers=(x", "regular expression"});
  expect_usage_error([&] { apply_pass(*m, "round:activations=true"); }, {"decimals", "required"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals"); }, {"decimals", "key=value"});
  expect_usage_error([&] { apply_pass(*m, "round:decimals=1,decimals=2"); }, {"decimals", "twice"});
  expect_usage_error([&] { apply_pass(*m, ":decimals=1"); }, {"no pass name"});
  EXPECT_TRUE(compression_log(*m).empty()) << "failed passes leave no record";
  // All specs are checked before any is applied.
  auto orig = tiny_model();
  expect_usage_error([&] { apply_passes(*m, {"round:decimals=2", "round:decimal=1"}); }, {"decimal"});
  EXPECT_EQ(test::param_values(*m), test::param_values(*orig));
  // --help text lists the pass and its keys.
  const std::string help = passes_help();
  for (const char* w : {"round", "decimals=int", "activations=bool", "layers=regex", "biases=bool"})
    EXPECT_NE(help.find(w), std::string::npos) << w;
}

TEST(PassSpec, PassesApplyInOrder) {
  auto orig = tiny_model();
  auto m = orig->clone();
  const auto recs = apply_passes(*m, {"round:decimals=3", "round:decimals=1"});
  ASSERT_EQ(recs.size(), 2u);
  const nlohmann::json log = compression_log(*m);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0]["spec"], "round:decimals=3");
  EXPECT_EQ(log[1]["spec"], "round:decimals=1");
  const Linear& l = m->blocks[1].fc2;
  const Linear& o = orig->blocks[1].fc2;
  for (int64_t i = 0; i < int64_t(l.out) * l.in; ++i)
    ASSERT_EQ(weight(l)[i], round_decimal(round_decimal(orig->W(o)[i], 3), 1));
  // A layer that already has a representation is refused.
  auto a = orig->clone();
  apply_pass(*a, "round:decimals=2,activations=true");
  EXPECT_THROW(apply_pass(*a, "round:decimals=1"), Error);
}

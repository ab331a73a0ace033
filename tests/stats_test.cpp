// analyze/stats.h and `vitkit analyze stats`: a layer's statistics against a
// direct recomputation here (its output from the captured inputs, in double;
// attention probabilities checked through P V against the attention
// reference), the mu -+ k sigma shares and the percentiles on known
// distributions (percentiles within the histogram's bin error of the exact
// order statistics), outlier channels of a model with one channel scaled x50,
// the CLI end to end on the shipped model (float and quantize:bits=8) and its
// errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"
#include "vitkit/analyze/stats.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/rng.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/report/table.h"

using namespace vitkit;

namespace {

#define EXPECT_HAS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (text)

// The exact statistics of values (rows, cols), channel = column, in double.
struct Ref {
  double min = 0, max = 0, mean = 0, sd = 0, outside[3] = {0, 0, 0};
  std::vector<double> sorted, chmax;
};

Ref ref_stats(const std::vector<double>& v, int64_t cols) {
  Ref r;
  r.sorted = v;
  std::sort(r.sorted.begin(), r.sorted.end());
  r.min = r.sorted.front();
  r.max = r.sorted.back();
  double s = 0;
  for (double x : v) s += x;
  r.mean = s / double(v.size());
  double q = 0;
  for (double x : v) q += (x - r.mean) * (x - r.mean);
  r.sd = std::sqrt(q / double(v.size()));
  for (int k = 0; k < 3; ++k) {
    int64_t out = 0;
    for (double x : v) out += std::fabs(x - r.mean) > (k + 1) * r.sd;
    r.outside[k] = double(out) / double(v.size());
  }
  r.chmax.assign(size_t(cols), 0.0);
  for (size_t i = 0; i < v.size(); ++i) r.chmax[i % size_t(cols)] = std::max(r.chmax[i % size_t(cols)], std::fabs(v[i]));
  return r;
}

// The histogram percentile at level p (%) lies within one bin width of the
// exact order statistics around rank p/100 (n - 1) (one rank either side: the
// histogram's rank is p/100 n).
void expect_percentile(double got, const std::vector<double>& sorted, double p, double bin, const std::string& what) {
  const double pos = p / 100 * double(sorted.size() - 1);
  const size_t lo = size_t(std::max(0.0, std::floor(pos) - 1)), hi = std::min(sorted.size() - 1, size_t(std::ceil(pos)) + 1);
  EXPECT_GE(got, sorted[lo] - bin * 1.0001) << what << " p" << p;
  EXPECT_LE(got, sorted[hi] + bin * 1.0001) << what << " p" << p;
}

// mean, sd, min, max, shares and percentiles of t against r; tol: relative
// error of values (the layer in float against double).
void expect_matches(const TensorStats& t, const Ref& r, const StatsOptions& o, double tol) {
  const double scale = std::max(std::fabs(r.min), std::fabs(r.max));
  EXPECT_EQ(t.count, int64_t(r.sorted.size())) << t.name;
  EXPECT_NEAR(t.min, r.min, tol * scale) << t.name;
  EXPECT_NEAR(t.max, r.max, tol * scale) << t.name;
  EXPECT_NEAR(t.mean, r.mean, tol * scale + 1e-12) << t.name;
  EXPECT_NEAR(t.stddev, r.sd, tol * scale + 1e-9 * r.sd) << t.name;
  // Values within float rounding of mu -+ k sigma may fall either side.
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(t.outside[k], r.outside[k], 3.0 / double(t.count) + tol) << t.name << " k " << k + 1;
  ASSERT_EQ(t.percentiles.size(), o.percentiles.size());
  EXPECT_NEAR(t.percentile_error, (t.max - t.min) / 2048, 1e-12);
  for (size_t i = 0; i < o.percentiles.size(); ++i)
    expect_percentile(t.percentiles[i], r.sorted, o.percentiles[i], t.percentile_error + tol * scale, t.name);
  ASSERT_EQ(t.channel_max.size(), r.chmax.size()) << t.name;
  for (size_t c = 0; c < r.chmax.size(); ++c) EXPECT_NEAR(t.channel_max[c], r.chmax[c], tol * scale) << t.name << " " << c;
  double hist = 0;
  for (double h : t.histogram) hist += h;
  EXPECT_EQ(hist, double(t.count)) << t.name;
}

double gelu(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

// Every layer's inputs over the images, captured by on_linear, in forward
// passes of `batch` images (as model_stats runs them: the same floats).
std::map<std::string, std::vector<float>> layer_inputs(const ViT& m, const Tensor& x, int64_t batch) {
  std::map<std::string, std::vector<float>> in;
  ForwardHooks h;
  h.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
    auto& v = in[l.name];
    v.insert(v.end(), X, X + rows * l.in);
  };
  for (int64_t i = 0; i < x.dim(0); i += batch) vit_predict(m, x.slice(i, std::min(i + batch, x.dim(0))), 0, &h);
  return in;
}

// Y = act(X W^T + b) in double from captured X (rows, in).
std::vector<double> ref_output(const ViT& m, const Linear& l, const std::vector<float>& X, bool gelu_act) {
  const int64_t rows = int64_t(X.size()) / l.in;
  const float* W = m.W(l);
  const float* b = m.B(l);
  std::vector<double> y(size_t(rows * l.out));
  for (int64_t r = 0; r < rows; ++r)
    for (int o = 0; o < l.out; ++o) {
      double s = b ? b[o] : 0;
      for (int k = 0; k < l.in; ++k) s += double(X[size_t(r * l.in + k)]) * double(W[size_t(o) * l.in + k]);
      y[size_t(r * l.out + o)] = gelu_act ? gelu(s) : s;
    }
  return y;
}

std::vector<double> to_double(const float* p, size_t n) { return std::vector<double>(p, p + n); }

const TensorStats& get(const StatsResult& r, const std::string& name) {
  const TensorStats* t = r.find(name);
  if (!t) throw Error("no tensor " + name);
  return *t;
}

}  // namespace

// ---------------------------------------------------------------- library

TEST(Stats, LayersMatchADirectRecomputation) {
  const ViTConfig c = test::small_config();  // 16x16, patch 8: T = 5, dim 32, depth 2, 4 heads, mlp 64, GELU
  const auto m = test::random_model(c, 1);
  const Tensor x = test::random_images(c, 12, 2);
  StatsOptions o;
  o.batch = 5;  // three batches
  const StatsResult r = model_stats(*m, x, o);
  EXPECT_EQ(r.images, 12);
  const auto in = layer_inputs(*m, x, o.batch);
  const Block& b1 = m->blocks[1];
  const Block& b0 = m->blocks[0];
  // Inputs: the same floats.
  for (const Linear* l : {&b1.fc1, &b0.proj, static_cast<const Linear*>(&m->head)})
    expect_matches(get(r, l->name + ".input"), ref_stats(to_double(in.at(l->name).data(), in.at(l->name).size()), l->in),
                   o, 1e-12);
  // Outputs recomputed in double: fc1 after GELU, out_proj without the residual.
  expect_matches(get(r, b1.fc1.name + ".output"), ref_stats(ref_output(*m, b1.fc1, in.at(b1.fc1.name), true), b1.fc1.out),
                 o, 1e-5);
  expect_matches(get(r, b0.proj.name + ".output"),
                 ref_stats(ref_output(*m, b0.proj, in.at(b0.proj.name), false), b0.proj.out), o, 1e-5);
  expect_matches(get(r, b1.fc2.name + ".output"), ref_stats(ref_output(*m, b1.fc2, in.at(b1.fc2.name), false), b1.fc2.out),
                 o, 1e-5);
  // Weights (out, in): channel = output row.
  {
    const Linear& l = b0.qkv;
    std::vector<double> wt;  // transposed, so that ref_stats' columns are the rows
    for (int k = 0; k < l.in; ++k)
      for (int j = 0; j < l.out; ++j) wt.push_back(m->W(l)[size_t(j) * l.in + k]);
    expect_matches(get(r, l.name + ".weight"), ref_stats(wt, l.out), o, 1e-12);
  }
  // Aliases: fc1's output (after GELU) is fc2's input; pre-norm ln_1 is qkv's input.
  for (auto [a, b] : {std::pair{b1.fc1.name + ".output", b1.fc2.name + ".input"},
                      std::pair{std::string("encoder.layers.encoder_layer_0.ln_1"), b0.qkv.name + ".input"},
                      std::pair{std::string("encoder.layers.encoder_layer_1.ln_2"), b1.fc1.name + ".input"}}) {
    EXPECT_EQ(get(r, a).min, get(r, b).min) << a;
    EXPECT_EQ(get(r, a).max, get(r, b).max) << a;
    EXPECT_NEAR(get(r, a).mean, get(r, b).mean, 1e-12) << a;
    EXPECT_EQ(get(r, a).percentiles, get(r, b).percentiles) << a;
  }
  // 2 blocks x (ln_1, ln_2, attention) + final norm + 10 linears x 3.
  EXPECT_EQ(r.tensors.size(), 2u * 3 + 1 + 10 * 3);
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["tensors"].size(), r.tensors.size());
  EXPECT_EQ(j["tensors"][0]["histogram"]["counts"].size(), 128u);
}

TEST(Stats, AttentionProbabilitiesAreTheKernelsSoftmax) {
  const ViTConfig c = test::small_config();
  const auto m = test::random_model(c, 3, 0.5f);
  const Tensor x = test::random_images(c, 6, 4);
  const int64_t B = 6, T = c.tokens(), H = m->blocks[0].shape.heads, d = m->blocks[0].shape.head_dim, A = H * d;
  std::vector<float> qkv;
  ForwardHooks h;
  h.on_attention = [&](int block, const float* p, int64_t n) {
    if (block == 1) qkv.assign(p, p + n * T * 3 * A);
  };
  vit_predict(*m, x, 0, &h);
  ASSERT_EQ(qkv.size(), size_t(B * T * 3 * A));
  std::vector<float> P(size_t(B * T * H * T)), out(size_t(B * T * A)), want(size_t(B * T * A));
  attention_probs(qkv.data(), B, T, H, d, P.data());
  // out (b, i, h*d + e) = sum_j P (b, i, h, j) v (b, j, h*d + e), against the kernels' plain reference.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t hh = 0; hh < H; ++hh)
        for (int64_t e = 0; e < d; ++e) {
          double s = 0;
          for (int64_t jj = 0; jj < T; ++jj)
            s += double(P[size_t(((b * T + i) * H + hh) * T + jj)]) * qkv[size_t((b * T + jj) * 3 * A + 2 * A + hh * d + e)];
          out[size_t((b * T + i) * A + hh * d + e)] = float(s);
        }
  kernels::attention_forward_reference(qkv.data(), want.data(), B, T, H, d);
  float worst = 0;
  for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - want[i]));
  EXPECT_LT(worst, 1e-5f);
  // The statistics: every row sums to 1, so the mean is 1/T; the values are P's.
  const StatsResult r = model_stats(*m, x);
  const TensorStats& t = get(r, "encoder.layers.encoder_layer_1.attn_probs");
  EXPECT_NEAR(t.mean, 1.0 / double(T), 1e-7);
  EXPECT_EQ(t.count, B * T * H * T);
  EXPECT_EQ(t.channels, H);
  EXPECT_EQ(t.min, double(*std::min_element(P.begin(), P.end())));
  EXPECT_EQ(t.max, double(*std::max_element(P.begin(), P.end())));
  EXPECT_LE(t.max, 1.0);
  EXPECT_GE(t.min, 0.0);
}

TEST(Stats, SigmaSharesAndPercentilesOnKnownDistributions) {
  // fc1 (1024, 64): 65,536 values evenly spread over [-1, 1]; fc2 (64, 1024): N(0, 1).
  const ViTConfig c = test::small_config(16, 8, 64, 1, 4, 1024);
  auto m = test::random_model(c, 5);
  const Linear& fc1 = m->blocks[0].fc1;
  const Linear& fc2 = m->blocks[0].fc2;
  const int64_t n = int64_t(fc1.in) * fc1.out;
  ASSERT_EQ(n, 65536);
  Rng rng(6);
  std::vector<double> uni, nrm;
  for (int64_t i = 0; i < n; ++i) {
    // a permutation of the evenly spaced values: i * 40503 mod n visits each once (40503 is odd)
    const int64_t k = (i * 40503) % n;
    m->W(fc1)[i] = float(-1 + 2 * (double(k) + 0.5) / double(n));
    m->W(fc2)[i] = rng.normal();
    uni.push_back(m->W(fc1)[i]);
    nrm.push_back(m->W(fc2)[i]);
  }
  StatsOptions o;
  const StatsResult r = model_stats(*m, test::random_images(c, 2, 7), o);
  const TensorStats& u = get(r, fc1.name + ".weight");
  // Uniform on [-1, 1]: sigma = 1/sqrt(3); |x| > sigma for a share 1 - 1/sqrt(3), nothing beyond 2 sigma.
  EXPECT_NEAR(u.mean, 0, 1e-6);
  EXPECT_NEAR(u.stddev, 1 / std::sqrt(3.0), 1e-5);
  EXPECT_NEAR(u.outside[0], 1 - 1 / std::sqrt(3.0), 2.0 / double(n));
  EXPECT_EQ(u.outside[1], 0);
  EXPECT_EQ(u.outside[2], 0);
  std::sort(uni.begin(), uni.end());
  for (size_t i = 0; i < o.percentiles.size(); ++i) {
    EXPECT_NEAR(u.percentiles[i], -1 + 2 * o.percentiles[i] / 100, u.percentile_error + 2.0 / double(n));
    expect_percentile(u.percentiles[i], uni, o.percentiles[i], u.percentile_error, "uniform");
  }
  // Normal: 31.73%, 4.55%, 0.27% outside 1, 2, 3 sigma, within 4 standard errors.
  const TensorStats& g = get(r, fc2.name + ".weight");
  const double want[3] = {0.317311, 0.0455003, 0.0026998};
  for (int k = 0; k < 3; ++k)
    EXPECT_NEAR(g.outside[k], want[k], 4 * std::sqrt(want[k] * (1 - want[k]) / double(n))) << "k " << k + 1;
  std::sort(nrm.begin(), nrm.end());
  // Against numpy's interpolated quantile, in bin widths: within one where the
  // values are dense (p1, p99); in the far tails the order statistics
  // themselves lie bins apart (checked above against the neighbouring ranks).
  std::string errors;
  for (size_t i = 0; i < o.percentiles.size(); ++i) {
    const double p = o.percentiles[i];
    expect_percentile(g.percentiles[i], nrm, p, g.percentile_error, "normal");
    const double pos = p / 100 * double(n - 1);
    const size_t lo = size_t(pos);
    const double exact = nrm[lo] + (pos - double(lo)) * (nrm[std::min(lo + 1, nrm.size() - 1)] - nrm[lo]);
    const double err = std::fabs(g.percentiles[i] - exact) / g.percentile_error;
    if (p >= 1 && p <= 99) {
      EXPECT_LE(err, 1.0) << "p" << p;
    }
    errors += cat(" p", p, " ", fmt_fixed(err, 2));
  }
  std::printf("N(0,1), %lld values: outside 1/2/3 sigma %.4f%% %.4f%% %.4f%%; percentile - numpy's in bin widths "
              "(%.3g):%s\n",
              (long long)n, 100 * g.outside[0], 100 * g.outside[1], 100 * g.outside[2], g.percentile_error,
              errors.c_str());
}

TEST(Stats, AChannelScaled50TimesIsTheOutlier) {
  const ViTConfig c = test::small_config();
  auto m = test::random_model(c, 8);
  const Tensor x = test::random_images(c, 8, 9);
  const Block& b0 = m->blocks[0];
  const Block& b1 = m->blocks[1];
  const std::string ln = "encoder.layers.encoder_layer_1.ln_1";
  const std::vector<std::string> watched = {b0.qkv.name + ".weight", b0.qkv.name + ".output", ln,
                                            b1.qkv.name + ".input"};
  {
    const StatsResult before = model_stats(*m, x);
    for (const std::string& n : watched) EXPECT_TRUE(get(before, n).outlier_channels.empty()) << n;
  }
  // Block 0's qkv output channel 5 (its weight row and bias) and block 1's ln_1 channel 7, x50.
  float* w = m->W(b0.qkv);
  for (int k = 0; k < b0.qkv.in; ++k) w[5 * b0.qkv.in + k] *= 50;
  m->B(b0.qkv)[5] *= 50;
  m->params.ptr(b1.ln1.w)[7] *= 50;
  m->params.ptr(b1.ln1.b)[7] *= 50;
  const StatsResult r = model_stats(*m, x);
  EXPECT_EQ(get(r, b0.qkv.name + ".weight").outlier_channels, std::vector<int>{5});
  EXPECT_EQ(get(r, b0.qkv.name + ".output").outlier_channels, std::vector<int>{5});
  EXPECT_EQ(get(r, ln).outlier_channels, std::vector<int>{7});
  EXPECT_EQ(get(r, b1.qkv.name + ".input").outlier_channels, std::vector<int>{7});
  const TensorStats& t = get(r, ln);
  EXPECT_GT(t.channel_max[7], 10 * t.median_channel_max);
  EXPECT_HAS(r.text(), "1: 7");
  EXPECT_EQ(r.to_json()["tensors"][0]["outlier_channels"].size(), 0u);
}

TEST(Stats, OptionsAreChecked) {
  const ViTConfig c = test::small_config();
  const auto m = test::random_model(c, 1);
  const Tensor x = test::random_images(c, 2, 2);
  StatsOptions o;
  o.bins = 100;
  EXPECT_THROW(model_stats(*m, x, o), Error);
  o = {};
  o.percentiles = {101};
  EXPECT_THROW(model_stats(*m, x, o), Error);
  EXPECT_THROW(model_stats(*m, Tensor::zeros({0, 1, 16, 16}), {}), Error);
}

// ---------------------------------------------------------------- CLI

TEST(StatsCli, ShippedModelOnFashionMnist) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  const std::string dir = test::temp_dir(), svg = dir + "/stats.svg", csv = dir + "/stats.csv";
  test::CliResult r = test::run_cli("analyze stats " + model + " --data fashion-mnist --images 20 --json -q --svg " +
                                    svg + " --csv " + csv);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = test::parse_json(r);
  EXPECT_EQ(j["images"], 20);
  EXPECT_EQ(j["precision"], "fp32");
  const nlohmann::json& ts = j["tensors"];
  // 26 linears x 3, 6 blocks x (ln_1, ln_2, attention), the final norm.
  ASSERT_EQ(ts.size(), 26u * 3 + 6 * 3 + 1);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& t : ts) by_name[t["name"].get<std::string>()] = t;
  const nlohmann::json& fc1 = by_name.at("encoder.layers.encoder_layer_2.mlp.0.output");
  EXPECT_EQ(fc1["kind"], "fc1");
  EXPECT_EQ(fc1["count"], 20 * 50 * 256);
  EXPECT_NEAR(fc1["min"].get<double>(), -0.17, 0.01);  // after GELU: its minimum is -0.17
  double hist = 0;
  for (double h : fc1["histogram"]["counts"]) hist += h;
  EXPECT_EQ(hist, fc1["count"].get<double>());
  for (const char* p : {"0.01", "0.1", "1", "99", "99.9", "99.99"}) EXPECT_TRUE(fc1["percentiles"].contains(p)) << p;
  EXPECT_EQ(fc1["sigma"].size(), 3u);
  EXPECT_GT(fc1["sigma"][0]["outside"].get<double>(), fc1["sigma"][2]["outside"].get<double>());
  const nlohmann::json& att = by_name.at("encoder.layers.encoder_layer_0.attn_probs");
  EXPECT_NEAR(att["mean"].get<double>(), 1.0 / 50, 1e-7);
  EXPECT_EQ(att["channels"], 4);
  EXPECT_TRUE(by_name.count("conv_proj.weight") && by_name.count("heads.head.output") && by_name.count("encoder.ln"));
  std::string s = read_text_file(svg);
  EXPECT_EQ(s.rfind("<?xml", 0), 0u);
  EXPECT_HAS(s, "attention probs");
  EXPECT_HAS(s, "block 5");
  const std::string c = read_text_file(csv);
  EXPECT_EQ(std::count(c.begin(), c.end(), '\n'), long(ts.size()) + 1);
  // A quantized model: its weights' statistics are the dequantized weights'.
  const std::string q = dir + "/q8.safetensors";
  r = test::run_cli("compress " + model + " --pass quantize:bits=8 -o " + q + " -q");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("analyze stats " + q + " --data fashion-mnist --images 20 --json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json jq = test::parse_json(r);
  EXPECT_NE(jq["precision"], "fp32");
  const nlohmann::json &wq = jq["tensors"][3 + 1], &wf = ts[3 + 1];  // block 0: ln_1, then qkv.weight
  ASSERT_EQ(wq["name"], "encoder.layers.encoder_layer_0.self_attention.in_proj.weight");
  EXPECT_NE(wq["stddev"], wf["stddev"]);
  EXPECT_NEAR(wq["stddev"].get<double>(), wf["stddev"].get<double>(), 1e-3 * wf["stddev"].get<double>());
  // Text: the table.
  r = test::run_cli("analyze stats " + model + " --data fashion-mnist --images 10 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* t : {"tensor", "sigma", "outlier channels", "b5.fc2.output", "b0.attn_probs", "2048-bin"})
    EXPECT_HAS(r.out, t);
}

TEST(StatsCli, ErrorsNameTheFlagOrFile) {
  const std::string dir = test::temp_dir(), bad = dir + "/not-a-model.safetensors";
  {
    std::ofstream f(bad);
    f << "this is not a safetensors file";
  }
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  struct Case {
    std::string args;
    int code;
    std::string says;
  };
  const Case cases[] = {
      {model + " --images 5", 2, "--data"},
      {model + " --data fashion-mnist --images 0", 2, "--images"},
      {model + " --data fashion-mnist --images x", 2, "--images"},
      {bad + " --data fashion-mnist --images 5", 1, "not-a-model.safetensors"},
      {model + " --data fashion-mnist --images 5 --bins 100", 2, "--bins"},
  };
  for (const Case& c : cases) {
    const test::CliResult r = test::run_cli("analyze stats " + c.args + " -q");
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.err;
    EXPECT_HAS(r.err, c.says);
  }
  const test::CliResult help = test::run_cli("analyze stats --help");
  EXPECT_EQ(help.code, 0);
  for (const char* s : {"--data", "--images", "--split", "--json", "--svg", "--csv", "histogram", "after GELU"})
    EXPECT_HAS(help.out, s);
}

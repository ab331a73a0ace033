// The quantize pass's pieces checked against definitions written here: each
// calibrator on known distributions (minmax the extremes, sigma:K the closed
// form, percentile:P the sorted samples' percentile, mse a brute-force search
// on the samples, entropy an independent implementation of TensorRT's
// algorithm as pytorch-quantization runs it, on the same histogram); the
// scale and zero point formula; the int representation's round trip within
// half a step at every format and width; bad specs as errors naming the key;
// and the CLI end to end on the shipped model and Fashion-MNIST.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include "test_util.h"
#include "vitkit/compress/calibrate.h"
#include "vitkit/compress/pass.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/model_io.h"
#include "vitkit/model/forward.h"
#include "vitkit/repr/int.h"

using namespace vitkit;

namespace {

// ---- samples and their statistics -----------------------------------------------

struct Samples {
  std::string name;
  std::vector<float> x;
  double lo_true = 0, hi_true = 0;  // the distribution's support where bounded (uniform)
};

std::vector<Samples> distributions(size_t n = 200000) {
  std::mt19937_64 rng(7);
  std::vector<Samples> v;
  {
    Samples s{"uniform[-1,2]", {}, -1, 2};
    std::uniform_real_distribution<float> u(-1.f, 2.f);
    for (size_t i = 0; i < n; ++i) s.x.push_back(u(rng));
    v.push_back(std::move(s));
  }
  {
    Samples s{"gaussian(0.3,1.5)", {}};
    std::normal_distribution<float> g(0.3f, 1.5f);
    for (size_t i = 0; i < n; ++i) s.x.push_back(g(rng));
    v.push_back(std::move(s));
  }
  {
    Samples s{"laplace(0,1)+outliers", {}};
    std::exponential_distribution<float> e(1.f);
    std::bernoulli_distribution sign(0.5);
    for (size_t i = 0; i < n; ++i) s.x.push_back(sign(rng) ? e(rng) : -e(rng));
    for (float o : {40.f, -35.f, 60.f, 55.f}) s.x.push_back(o);
    v.push_back(std::move(s));
  }
  {
    Samples s{"relu(gaussian)", {}};
    std::normal_distribution<float> g(0.f, 1.f);
    for (size_t i = 0; i < n; ++i) s.x.push_back(std::max(0.f, g(rng)));
    v.push_back(std::move(s));
  }
  {
    Samples s{"gelu(gaussian)", {}};  // one-signed but for a small negative lobe (>= -0.17)
    std::normal_distribution<float> g(0.f, 1.5f);
    for (size_t i = 0; i < n; ++i) {
      const double z = g(rng);
      s.x.push_back(float(0.5 * z * (1 + std::erf(z / std::sqrt(2.0)))));
    }
    v.push_back(std::move(s));
  }
  {
    Samples s{"symmetric gaussian", {}};  // x and -x: max |x| on both sides
    std::normal_distribution<float> g(0.f, 1.f);
    for (size_t i = 0; i < n / 2; ++i) {
      const float z = g(rng);
      s.x.push_back(z);
      s.x.push_back(-z);
    }
    v.push_back(std::move(s));
  }
  return v;
}

ActivationStats stats_of(const std::vector<float>& x) {
  ActivationStats s;
  // In two chunks, as calibration batches arrive.
  const int64_t half = int64_t(x.size() / 2);
  s.add_moments(x.data(), half);
  s.add_moments(x.data() + half, int64_t(x.size()) - half);
  s.add_histogram(x.data(), half);
  s.add_histogram(x.data() + half, int64_t(x.size()) - half);
  return s;
}

// The quantization MSE of the samples over [lo, hi] at b bits (range_params's codes), computed on the samples.
double sample_mse(const std::vector<float>& x, double lo, double hi, int bits) {
  const QuantRange r = range_params(lo, hi, bits);
  const double qmax = double((1 << bits) - 1);
  double e = 0;
  for (float v : x) {
    const double q = std::clamp(std::nearbyint(double(v) / r.scale) + r.zero, 0.0, qmax);
    const double d = double(v) - double(r.scale) * (q - r.zero);
    e += d * d;
  }
  return e / double(x.size());
}

// ---- TensorRT's entropy calibration, written from pytorch-quantization's
// _compute_amax_entropy (calib/histogram.py): numpy's linspace and digitize,
// a Counter of the bins per level, scipy's entropy (normalising, infinite
// where q is 0 and p is not), the last argmin. `levels(i)` is its nbins
// (1 << (num_bits - 1 + unsigned)); the candidates start at bin 128.
template <typename Levels>
int reference_entropy_bin(std::vector<double> bins, Levels levels) {
  const int stop = int(bins.size());
  bins[0] = bins[1];
  std::vector<double> divergences;
  for (int i = 128; i <= stop; ++i) {
    const int64_t nbins = levels(i);
    std::vector<double> space(size_t(nbins) + 1);  // np.linspace(0, i, nbins + 1)
    const double step = double(i) / double(nbins);
    for (int64_t j = 0; j <= nbins; ++j) space[size_t(j)] = double(j) * step;
    space.back() = i;
    std::vector<int64_t> digitized(static_cast<size_t>(i));  // np.digitize(range(i), space) - 1, -1 where the bin is empty
    for (int k = 0; k < i; ++k)
      digitized[size_t(k)] =
          bins[size_t(k)] == 0 ? -1 : int64_t(std::upper_bound(space.begin(), space.end(), double(k)) - space.begin()) - 1;
    std::map<int64_t, double> counts, members;
    for (int k = 0; k < i; ++k)
      if (digitized[size_t(k)] != -1) counts[digitized[size_t(k)]] += bins[size_t(k)], members[digitized[size_t(k)]] += 1;
    std::vector<double> q(size_t(i), 0.0), p(bins.begin(), bins.begin() + i);
    for (int k = 0; k < i; ++k)
      if (digitized[size_t(k)] != -1) q[size_t(k)] = counts[digitized[size_t(k)]] / members[digitized[size_t(k)]];
    for (int k = i; k < stop; ++k) p[size_t(i) - 1] += bins[size_t(k)];
    double ps = 0, qs = 0;
    for (int k = 0; k < i; ++k) ps += p[size_t(k)], qs += q[size_t(k)];
    double ent = 0;
    for (int k = 0; k < i; ++k) {
      if (p[size_t(k)] == 0) continue;
      if (q[size_t(k)] == 0) {
        ent = std::numeric_limits<double>::infinity();
        break;
      }
      ent += p[size_t(k)] / ps * std::log((p[size_t(k)] / ps) / (q[size_t(k)] / qs));
    }
    divergences.push_back(ent);
  }
  size_t last_argmin = 0;
  for (size_t j = 0; j < divergences.size(); ++j)
    if (divergences[j] <= divergences[last_argmin]) last_argmin = j;
  return int(last_argmin) + 128;
}

// The reference's level count for these statistics: its signed (2^(b-1)) and
// unsigned (2^b, min >= 0) cases, and for a range with a zero point between
// them the levels our codes spend on [0, t] (2^b t / (hi - lo)).
int reference_entropy_bin(const ActivationStats& s, int bits) {
  const double amax = s.abs_max();
  return reference_entropy_bin(s.abs_histogram(), [&](int i) -> int64_t {
    if (s.min() >= 0) return int64_t(1) << bits;
    const double t = amax * i / ActivationStats::kBins;
    if (-s.min() >= t && s.max() >= t) return int64_t(1) << (bits - 1);
    const double lo = std::max(s.min(), -t), hi = std::min(s.max(), t);
    return std::max<int64_t>(1, std::llround(double(int64_t(1) << bits) * t / (hi - lo)));
  });
}

double sorted_percentile(std::vector<float> x, double p) {  // linear interpolation, as numpy's default
  std::sort(x.begin(), x.end());
  const double pos = p / 100.0 * double(x.size() - 1);
  const size_t a = size_t(std::floor(pos));
  const size_t b = std::min(a + 1, x.size() - 1);
  return double(x[a]) + (pos - double(a)) * (double(x[b]) - double(x[a]));
}

}  // namespace

// ---- calibrators ------------------------------------------------------------------

TEST(Calibrate, MinMaxIsTheExtremes) {
  for (const Samples& d : distributions()) {
    const ActivationStats s = stats_of(d.x);
    const auto [mn, mx] = std::minmax_element(d.x.begin(), d.x.end());
    EXPECT_EQ(s.min(), double(*mn)) << d.name;
    EXPECT_EQ(s.max(), double(*mx)) << d.name;
    for (int bits : {2, 4, 8, 16}) {
      const QuantRange r = calibrate(s, Calibrator::parse("minmax"), bits);
      EXPECT_EQ(r.lo, std::min(0.0, double(*mn))) << d.name;
      EXPECT_EQ(r.hi, std::max(0.0, double(*mx))) << d.name;
    }
  }
}

TEST(Calibrate, SigmaIsMeanPlusMinusKStddevWithinTheExtremes) {
  for (const Samples& d : distributions()) {
    const ActivationStats s = stats_of(d.x);
    double sum = 0, sq = 0;
    for (float v : d.x) sum += v;
    const double mean = sum / double(d.x.size());
    for (float v : d.x) sq += (v - mean) * (v - mean);
    const double sd = std::sqrt(sq / double(d.x.size()));
    EXPECT_NEAR(s.mean(), mean, 1e-9 * (1 + std::fabs(mean))) << d.name;
    EXPECT_NEAR(s.stddev(), sd, 1e-6 * sd) << d.name;
    for (double K : {0.5, 1.0, 3.0, 6.0}) {
      const QuantRange r = calibrate(s, Calibrator::parse(cat("sigma:", K)), 8);
      const double lo = std::min(0.0, std::max(s.min(), mean - K * sd)),
                   hi = std::max(0.0, std::min(s.max(), mean + K * sd));
      EXPECT_NEAR(r.lo, lo, 1e-6 * (1 + std::fabs(lo))) << d.name << " K=" << K;
      EXPECT_NEAR(r.hi, hi, 1e-6 * (1 + std::fabs(hi))) << d.name << " K=" << K;
    }
  }
  // Closed forms of the distributions themselves (sampling error allowed):
  // uniform [-1, 2]: mean 0.5, sd 3 / sqrt(12); 1 sigma is inside, 3 sigma clamped to the support.
  const std::vector<Samples> all = distributions();
  const Samples& u = all[0];
  const ActivationStats s = stats_of(u.x);
  const double sd = 3.0 / std::sqrt(12.0);
  QuantRange r = calibrate(s, Calibrator::parse("sigma:1"), 8);
  EXPECT_NEAR(r.lo, 0.5 - sd, 0.01);
  EXPECT_NEAR(r.hi, 0.5 + sd, 0.01);
  r = calibrate(s, Calibrator::parse("sigma:3"), 8);
  EXPECT_NEAR(r.lo, -1.0, 1e-4);
  EXPECT_NEAR(r.hi, 2.0, 1e-4);
}

TEST(Calibrate, PercentileIsTheSortedSamplesWithinOneBin) {
  for (const Samples& d : distributions()) {
    const ActivationStats s = stats_of(d.x);
    const double w = (s.max() - s.min()) / ActivationStats::kBins;
    for (double P : {99.0, 99.9, 99.99, 100.0}) {
      const QuantRange r = calibrate(s, Calibrator::parse(cat("percentile:", P)), 8);
      EXPECT_NEAR(r.hi, std::max(0.0, sorted_percentile(d.x, P)), w) << d.name << " P=" << P;
      EXPECT_NEAR(r.lo, std::min(0.0, sorted_percentile(d.x, 100 - P)), w) << d.name << " P=" << P;
    }
  }
}

TEST(Calibrate, MseIsNearTheBruteForceMinimum) {
  for (const Samples& d : distributions()) {
    std::vector<float> sub;  // every 4th sample and the outliers: the brute force stays quick
    for (size_t i = 0; i < d.x.size(); ++i)
      if (i % 4 == 0 || std::fabs(d.x[i]) > 20) sub.push_back(d.x[i]);
    const ActivationStats s = stats_of(sub);
    for (int bits : {4, 8}) {
      const QuantRange r = calibrate(s, Calibrator::parse("mse"), bits);
      const double chosen = sample_mse(sub, r.lo, r.hi, bits);
      // Every clip [min f, max f] (f on a grid 4x finer than the calibrator's)
      // and, independently, every (lo, hi) pair on a 40 x 40 grid.
      double best = std::numeric_limits<double>::infinity();
      for (int k = 1; k <= 400; ++k) best = std::min(best, sample_mse(sub, s.min() * k / 400.0, s.max() * k / 400.0, bits));
      double best2 = best;
      for (int a = 1; a <= 40; ++a)
        for (int b = 1; b <= 40; ++b) best2 = std::min(best2, sample_mse(sub, s.min() * a / 40.0, s.max() * b / 40.0, bits));
      EXPECT_LE(chosen, 1.1 * best) << d.name << " bits " << bits << " [" << r.lo << ", " << r.hi << "]";
      EXPECT_LE(chosen, 1.5 * best2) << d.name << " bits " << bits;
      std::printf("mse %-22s bits %d: chosen %.3g, brute force (shrinks) %.3g, (lo, hi grid) %.3g\n", d.name.c_str(),
                  bits, chosen, best, best2);
    }
  }
}

TEST(Calibrate, AbsHistogramCountsEveryValue) {
  for (const Samples& d : distributions()) {
    const ActivationStats s = stats_of(d.x);
    const std::vector<double>& h = s.abs_histogram();
    ASSERT_EQ(int(h.size()), ActivationStats::kBins);
    std::vector<double> expect(h.size(), 0.0);
    const double w = s.abs_max() / ActivationStats::kBins;
    for (float v : d.x) expect[size_t(std::min(ActivationStats::kBins - 1, int(std::fabs(double(v)) / w)))] += 1;
    double total = 0, moved = 0;
    for (size_t i = 0; i < h.size(); ++i) total += h[i], moved += std::fabs(h[i] - expect[i]);
    EXPECT_EQ(total, double(d.x.size())) << d.name;
    EXPECT_EQ(moved, 0.0) << d.name;
  }
}

TEST(Calibrate, EntropyMatchesTheTensorRtAlgorithmOnTheSameHistogram) {
  for (const Samples& d : distributions()) {
    const ActivationStats s = stats_of(d.x);
    for (int bits : {4, 6, 8}) {
      const int ours = entropy_threshold_bin(s, bits), ref = reference_entropy_bin(s, bits);
      EXPECT_EQ(ours, ref) << d.name << " bits " << bits;
      const QuantRange r = calibrate(s, Calibrator::parse("entropy"), bits);
      const double t = s.abs_max() * ours / ActivationStats::kBins;
      EXPECT_NEAR(r.hi, std::max(0.0, std::min(s.max(), t)), 1e-12) << d.name;
      EXPECT_NEAR(r.lo, std::min(0.0, std::max(s.min(), -t)), 1e-12) << d.name;
      std::printf("entropy %-22s bits %d: bin %d (t = %.4g of max |x| %.4g)\n", d.name.c_str(), bits, ours, t,
                  s.abs_max());
    }
  }
  // Outliers far out: the threshold clips them (the bulk keeps its resolution).
  const ActivationStats lap = stats_of(distributions()[2].x);
  EXPECT_LT(lap.abs_max() * entropy_threshold_bin(lap, 8) / ActivationStats::kBins, 30.0);
  // At 16 bits there are more levels than bins: nothing is lost, the full range wins.
  for (const Samples& d : distributions()) EXPECT_EQ(entropy_threshold_bin(stats_of(d.x), 16), ActivationStats::kBins);
}

// Every input of the shipped model's linear layers on 32 training images:
// ours picks the reference's bin (conv_proj included, whose inputs the method
// clips at the background value's magnitude, as the reference does).
TEST(Calibrate, EntropyMatchesTheReferenceOnTheShippedModelSlow) {
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  auto m = load_model(model);
  PassContext ctx;
  load_calibration(ctx, *m, "fashion-mnist", "train", 32);
  std::map<std::string, ActivationStats> stats;
  for (int pass = 0; pass < 2; ++pass) {
    ForwardHooks hooks;
    hooks.on_linear = [&](const Linear& l, const float* X, int64_t rows) {
      if (pass == 0) stats[l.name].add_moments(X, rows * l.in);
      else stats[l.name].add_histogram(X, rows * l.in);
    };
    vit_predict(*m, ctx.calib, 0, &hooks);
  }
  ASSERT_EQ(stats.size(), m->linears().size());
  for (const auto& [name, s] : stats) EXPECT_EQ(entropy_threshold_bin(s, 8), reference_entropy_bin(s, 8)) << name;
}

TEST(Calibrate, RangeParams) {
  for (int bits : {2, 4, 8, 16}) {
    const double qmax = double((1 << bits) - 1);
    for (auto [lo, hi] : std::vector<std::pair<double, double>>{{-1.0, 3.0}, {-0.17, 6.2}, {0.0, 5.0}, {-4.0, 0.0}}) {
      const QuantRange r = range_params(lo, hi, bits);
      const float s = float(hi - lo) / float(qmax);
      EXPECT_EQ(r.scale, s) << lo << " " << hi << " bits " << bits;
      EXPECT_EQ(r.zero, int32_t(std::clamp(std::nearbyint(float(-lo) / s), 0.f, float(qmax))));
      // lo and hi are codes 0 and 2^b - 1 (within rounding of z).
      EXPECT_NEAR(r.scale * (0 - r.zero), lo, r.scale);
      EXPECT_NEAR(r.scale * (qmax - r.zero), hi, r.scale);
    }
    // A range not holding zero is widened to hold it.
    QuantRange r = range_params(1.0, 3.0, bits);
    EXPECT_EQ(r.lo, 0.0);
    EXPECT_EQ(r.zero, 0);
    EXPECT_EQ(r.scale, float(3.0) / float(qmax));
    // hi == lo (a constant zero input): scale 1, zero 0.
    r = range_params(0.0, 0.0, bits);
    EXPECT_EQ(r.scale, 1.f);
    EXPECT_EQ(r.zero, 0);
  }
  // Calibrating a constant input gives that too, whatever the calibrator.
  std::vector<float> zeros(1000, 0.f);
  const ActivationStats s = stats_of(zeros);
  for (const char* c : {"minmax", "sigma:3", "percentile:99", "mse", "entropy"}) {
    const QuantRange r = calibrate(s, Calibrator::parse(c), 8);
    EXPECT_EQ(r.scale, 1.f) << c;
    EXPECT_EQ(r.zero, 0) << c;
  }
}

// ---- the int representation's round trip -------------------------------------------

TEST(QuantRoundTrip, PlainWeightWithinHalfAStep) {
  using G = kernels::ScaleGranularity;
  const int out = 12, in = 48;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g(0.f, 0.3f);
  std::vector<float> W(size_t(out) * in);
  for (float& w : W) w = g(rng);
  for (int c = 0; c < in; ++c) W[size_t(5) * in + size_t(c)] = std::fabs(W[size_t(5) * in + size_t(c)]);  // a one-signed row
  for (int c = 0; c < in; ++c) W[size_t(7) * in + size_t(c)] = 0.f;                                     // an all-zero row
  W[3] = 2.5f;                                                                                          // an outlier
  struct Fmt {
    G g;
    int64_t group;
    bool sym;
    const char* name;
  };
  for (const Fmt& fm : {Fmt{G::Channel, 0, true, "symmetric per channel"}, Fmt{G::Tensor, 0, true, "per tensor"},
                        Fmt{G::Group, 16, true, "per group of 16"}, Fmt{G::Channel, 0, false, "zero points per channel"},
                        Fmt{G::Group, 8, false, "zero points per group of 8"}}) {
    for (int bits : {2, 3, 4, 8, 12, 16}) {
      IntFormat f;
      f.bits = bits;
      f.granularity = fm.g;
      f.group = fm.group;
      f.symmetric = fm.sym;
      f.abits = 0;
      const IntLinear layer(W.data(), in, out, Tensor(), f);
      std::vector<float> scratch;
      const float* P = layer.plain_weight(scratch);
      const Tensor codes = layer.codes();
      ASSERT_EQ(codes.numel(), int64_t(out) * in);
      const int64_t per = fm.g == G::Tensor ? int64_t(out) * in : fm.g == G::Channel ? in : fm.group;
      ASSERT_EQ(layer.scales().numel(), int64_t(out) * in / per) << fm.name;
      const int64_t lo_code = fm.sym ? -((int64_t(1) << (bits - 1)) - 1) : 0,
                    hi_code = fm.sym ? (int64_t(1) << (bits - 1)) - 1 : (int64_t(1) << bits) - 1;
      for (int64_t i = 0; i < int64_t(out) * in; ++i) {
        const float s = layer.scales().data<float>()[i / per];
        int64_t q = 0;
        switch (codes.dtype()) {
          case DType::I8: q = codes.data<int8_t>()[i]; break;
          case DType::U8: q = codes.data<uint8_t>()[i]; break;
          case DType::I16: q = codes.data<int16_t>()[i]; break;
          case DType::I32: q = codes.data<int32_t>()[i]; break;
          default: FAIL() << "codes of dtype " << dtype_name(codes.dtype());
        }
        ASSERT_GE(q, lo_code) << fm.name << " bits " << bits << " at " << i;
        ASSERT_LE(q, hi_code) << fm.name << " bits " << bits << " at " << i;
        // Half a step, plus f32 rounding of w / s and s (q - z).
        ASSERT_LE(std::fabs(P[i] - W[size_t(i)]), 0.5f * s * (1 + 1e-5f) + 1e-6f * std::fabs(W[size_t(i)]))
            << fm.name << " bits " << bits << " at " << i << ": " << W[size_t(i)] << " -> " << P[i] << " (s " << s
            << ")";
      }
      // The scale is the formula's: max |w| / (2^(b-1) - 1), or (max(0, hi) - min(0, lo)) / (2^b - 1).
      const float* s0 = layer.scales().data<float>();
      float mx = 0, mn = 0, amax = 0;
      for (int64_t i = 0; i < per; ++i) mx = std::max(mx, W[size_t(i)]), mn = std::min(mn, W[size_t(i)]),
                                        amax = std::max(amax, std::fabs(W[size_t(i)]));
      const float expect = fm.sym ? amax / float((1 << (bits - 1)) - 1) : (mx - mn) / float((1 << bits) - 1);
      EXPECT_FLOAT_EQ(s0[0], expect) << fm.name << " bits " << bits;
      // The all-zero row dequantizes to zeros exactly.
      for (int c = 0; c < in; ++c) EXPECT_EQ(P[size_t(7) * in + size_t(c)], 0.f) << fm.name << " bits " << bits;
    }
  }
}

// ---- bad specs ----------------------------------------------------------------------

namespace {

std::string error_of(const std::string& spec, const PassContext& ctx = {}) {
  // Patch 4 on a 16-pixel single-channel image: conv_proj has 16 inputs, the rest 32 or more.
  auto m = test::init_model(test::small_config(16, 4, 32, 1, 2, 64, 10, 1), 1);
  try {
    apply_passes(*m, {spec}, ctx);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(QuantSpecs, BadSpecsAreErrorsNamingTheKey) {
  const PassContext calib = test::random_calibration(test::small_config(16, 4, 32, 1, 2, 64, 10, 1), 4, 5);
  struct Case {
    std::string spec;
    std::vector<std::string> says;
    bool with_calibration = false;
  };
  for (const Case& c : std::vector<Case>{
           {"quantize:bits=0", {"bits=0", "2..16"}},
           {"quantize:bits=17", {"bits=17", "2..16"}},
           {"quantize:abits=1", {"abits=1", "2..16"}},
           {"quantize:act=static,calib=percentile:101", {"calib=percentile:101", "(50, 100]"}, true},
           {"quantize:act=static,calib=bogus", {"calib=bogus", "minmax", "entropy"}, true},
           {"quantize:act=dynamic,calib=mse", {"calib=", "act=static"}},
           {"quantize:act=sometimes", {"act=sometimes", "dynamic", "static"}},
           {"quantize:act=static,abits=0", {"act=static", "abits=0"}, true},
           {"quantize:granularity=row", {"granularity=row", "tensor, channel or group"}},
           {"quantize:granularity=group", {"granularity=group", "group=G"}},
           {"quantize:granularity=channel,group=16", {"group=G", "granularity=group"}},
           // qkv has 32 inputs (conv_proj's 16 are one group per row: per channel).
           {"quantize:group=24",
            {"encoder.layers.encoder_layer_0.self_attention.in_proj", "group 24 does not divide", "32 inputs",
             "layers="}},
           {"quantize:layers=nothing_is_called_this", {"layers=nothing_is_called_this", "matches no layer"}},
           {"quantize:act=static", {"quantize:act=static", "calibration images", "--data"}},
       }) {
    const std::string e = error_of(c.spec, c.with_calibration ? calib : PassContext{});
    for (const std::string& s : c.says) EXPECT_NE(e.find(s), std::string::npos) << c.spec << ": '" << e << "' lacks '" << s << "'";
  }
  // A valid spec on the same model passes (the checks above are not blanket failures).
  EXPECT_EQ(error_of("quantize:bits=4,granularity=group,group=16"), "(no error)");
  EXPECT_EQ(error_of("quantize:bits=4,group=32"), "(no error)");  // conv_proj (16 inputs) per channel
  EXPECT_EQ(error_of("quantize:act=static,calib=entropy", calib), "(no error)");
}

// group=G alone is granularity=group; a layer of fewer than G inputs (the patch
// layer's 16 under group=32) is one group per row: per channel, recorded.
TEST(QuantSpecs, GroupAsLargeAsALayerIsPerChannel) {
  auto m = test::random_model(test::small_config(16, 4, 32, 1, 2, 64, 10, 1), 7);
  apply_pass(*m, "quantize:bits=4,group=32");
  const nlohmann::json rec = compression_log(*m)[0];
  ASSERT_TRUE(rec.contains("group_as_channel")) << rec.dump();
  EXPECT_EQ(rec["group_as_channel"], nlohmann::json::array({"conv_proj"}));
  for (const Linear* l : m->linears()) {
    const IntFormat& f = dynamic_cast<const IntLinear&>(*l->repr).format();
    EXPECT_EQ(f.granularity, l->in < 32 ? kernels::ScaleGranularity::Channel
                                                                       : kernels::ScaleGranularity::Group)
        << l->name;
    EXPECT_EQ(f.group, f.granularity == kernels::ScaleGranularity::Group ? 32 : 0) << l->name;
  }
}

TEST(QuantSpecs, CliStaticWithoutDataIsAUsageError) {
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  const std::string out = test::temp_dir() + "/x.safetensors";
  const test::CliResult r = test::run_cli("compress '" + model + "' --pass quantize:bits=8,act=static -o '" + out + "'");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("calibration images"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--data"), std::string::npos) << r.err;
  EXPECT_FALSE(file_exists(out));
}

// ---- the CLI end to end ---------------------------------------------------------------

namespace {

// The safetensors header's JSON (8-byte little-endian length, then the JSON).
nlohmann::json safetensors_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string s(size_t(n), '\0');
  f.read(s.data(), std::streamsize(n));
  return nlohmann::json::parse(s);
}

}  // namespace

TEST(QuantCli, StaticPercentileOnTheShippedModelSlow) {
  const std::string model = test::source_dir() + "/models/vit-tiny-fmnist.safetensors";
  VITKIT_REQUIRE_FILE(model);
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir());
  const std::string out = test::temp_dir() + "/q.safetensors";
  test::CliResult r = test::run_cli("compress '" + model +
                                    "' --pass quantize:bits=8,act=static,calib=percentile:99.99 --data fashion-mnist "
                                    "--calib 64 --compare-limit 1 --threads 2 -q -o '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto top1 = [](const std::string& path) {
    const test::CliResult e =
        test::run_cli("eval '" + path + "' --data fashion-mnist --limit 500 --threads 2 --json -q");
    EXPECT_EQ(e.code, 0) << e.err;
    const nlohmann::json j = test::parse_json(e);
    EXPECT_EQ(j.value("images", 0), 500);
    return j.value("top1", 0.0);
  };
  const double base = top1(model), quant = top1(out);
  std::printf("fashion-mnist --limit 500: float top-1 %.2f%%, int8 static percentile:99.99 %.2f%%\n", 100 * base,
              100 * quant);
  EXPECT_GT(base, 0.85);
  EXPECT_LE(std::fabs(quant - base), 0.015);
  // Every linear layer's weight stored as I8 codes beside its F32 scales.
  const nlohmann::json h = safetensors_header(out);
  int linear = 0;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string name = it.key();
    const std::string suffix = ".weight_scale";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    // NAME.weight, or torchvision's packed attention input "...in_proj_weight".
    const std::string base = name.substr(0, name.size() - suffix.size());
    const std::string w = h.contains(base + ".weight") ? base + ".weight" : base + "_weight";
    ASSERT_TRUE(h.contains(w)) << w;
    EXPECT_EQ(h[w]["dtype"], "I8") << w;
    EXPECT_EQ(it.value()["dtype"], "F32") << name;
    ++linear;
  }
  EXPECT_EQ(linear, int(load_model(model)->linears().size()));
  const auto size = std::filesystem::file_size(out), before = std::filesystem::file_size(model);
  std::printf("file %ju bytes, float %ju (%.1f%%)\n", uintmax_t(size), uintmax_t(before), 100.0 * double(size) / double(before));
  EXPECT_LT(double(size), 0.3 * double(before));
}

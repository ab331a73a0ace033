#include "vitkit/compress/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "vitkit/core/error.h"

namespace vitkit {

Calibrator Calibrator::parse(const std::string& text) {
  Calibrator c;
  const size_t colon = text.find(':');
  const std::string name = text.substr(0, colon), arg = colon == std::string::npos ? "" : text.substr(colon + 1);
  auto number = [&](double lo, double hi, bool lo_open) {
    char* end = nullptr;
    const double v = std::strtod(arg.c_str(), &end);
    if (arg.empty() || *end || !std::isfinite(v) || v > hi || (lo_open ? v <= lo : v < lo))
      throw UsageError(cat("calib=", text, ": '", arg, "' is not a number in ", lo_open ? "(" : "[", lo, ", ", hi,
                           "]"));
    return v;
  };
  if (name == "minmax" && arg.empty()) c.kind = Kind::MinMax;
  else if (name == "mse" && arg.empty()) c.kind = Kind::Mse;
  else if (name == "entropy" && arg.empty()) c.kind = Kind::Entropy;
  else if (name == "sigma") c.kind = Kind::Sigma, c.param = number(0, 100, true);
  else if (name == "percentile") c.kind = Kind::Percentile, c.param = number(50, 100, true);
  else
    throw UsageError(cat("calib=", text, " is not minmax, sigma:K, percentile:P, mse or entropy"));
  return c;
}

std::string Calibrator::name() const {
  switch (kind) {
    case Kind::MinMax: return "minmax";
    case Kind::Sigma: return cat("sigma:", param);
    case Kind::Percentile: return cat("percentile:", param);
    case Kind::Mse: return "mse";
    case Kind::Entropy: return "entropy";
  }
  return "?";
}

void ActivationStats::add_moments(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    if (n_ == 0 && i == 0) min_ = max_ = v;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
    sum_ += v;
    sumsq_ += v * v;
  }
  n_ += n;
}

double ActivationStats::stddev() const {
  if (n_ < 2) return 0;
  const double m = mean();
  return std::sqrt(std::max(0.0, sumsq_ / double(n_) - m * m));
}

double ActivationStats::bin_value(int i) const {
  return min_ + (max_ - min_) * (double(i) + 0.5) / double(kBins);
}

void ActivationStats::add_histogram(const float* x, int64_t n) {
  if (hist_.empty()) hist_.assign(kBins, 0.0), abs_hist_.assign(kBins, 0.0);
  const double w = (max_ - min_) / double(kBins), aw = abs_max() / double(kBins);
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const int b = w > 0 ? int((v - min_) / w) : 0, ab = aw > 0 ? int(std::fabs(v) / aw) : 0;
    hist_[size_t(std::clamp(b, 0, kBins - 1))] += 1;
    abs_hist_[size_t(std::clamp(ab, 0, kBins - 1))] += 1;
  }
}

double ActivationStats::quantile(double q) const {
  const std::vector<double>& h = hist_;
  double total = 0;
  for (double c : h) total += c;
  const double target = q * total, w = bin_width();
  double acc = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    if (acc + h[i] >= target) {
      const double f = h[i] > 0 ? (target - acc) / h[i] : 0;
      return min_ + w * (double(i) + f);
    }
    acc += h[i];
  }
  return max_;
}

QuantRange range_params(double lo, double hi, int bits) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  QuantRange r;
  r.lo = lo;
  r.hi = hi;
  const float qmax = float((1 << bits) - 1);
  const float s = float(hi - lo) / qmax;
  if (!(s > 0) || !std::isfinite(s)) return r;  // scale 1, zero 0
  r.scale = s;
  r.zero = int32_t(std::clamp(std::nearbyint(float(-lo) / s), 0.f, qmax));
  return r;
}

namespace {

// Mean squared error of quantizing the histogram's values to b bits over [lo, hi].
double quant_mse(const ActivationStats& s, double lo, double hi, int bits) {
  const QuantRange r = range_params(lo, hi, bits);
  const double qmax = double((1 << bits) - 1);
  double err = 0, total = 0;
  const std::vector<double>& h = s.histogram();
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i] == 0) continue;
    const double x = s.bin_value(int(i));
    const double q = std::clamp(std::nearbyint(x / r.scale) + r.zero, 0.0, qmax);
    const double d = x - r.scale * (q - r.zero);
    err += h[i] * d * d;
    total += h[i];
  }
  return total > 0 ? err / total : 0;
}

// The clip minimising the MSE, among 100 shrinks of [min, max] toward zero.
QuantRange mse_range(const ActivationStats& s, int bits) {
  double best_lo = s.min(), best_hi = s.max(), best = quant_mse(s, s.min(), s.max(), bits);
  for (int i = 1; i < 100; ++i) {
    const double f = 1.0 - 0.01 * i;
    const double e = quant_mse(s, s.min() * f, s.max() * f, bits);
    if (e < best) best = e, best_lo = s.min() * f, best_hi = s.max() * f;
  }
  return range_params(best_lo, best_hi, bits);
}

// The levels b-bit codes spend on [0, t] when the range is [max(min, -t), min(max, t)]:
// 2^b t / (hi - lo), so 2^(b-1) for a range symmetric about zero and 2^b for a
// one-signed one (TensorRT's signed and unsigned cases), in between otherwise.
int64_t levels_below(const ActivationStats& s, double t, int bits) {
  const double lo = std::max(s.min(), -t), hi = std::min(s.max(), t);
  return std::max<int64_t>(1, std::llround(double(int64_t(1) << bits) * t / (hi - lo)));
}

}  // namespace

// TensorRT's entropy calibration, as pytorch-quantization's _compute_amax_entropy
// runs it on the histogram h of |x| (kBins bins over [0, max |x|]):
//  - h[0] is replaced by h[1] (the zero bin, a spike after ReLU, left out);
//  - for each candidate i = 128 .. kBins (threshold t = max |x| i / kBins):
//    P = h[0, i) with the mass of h[i, kBins) added to its last bin;
//    Q: the bins [0, i) grouped into L levels (bin k in group floor(k L / i)),
//    each group's mass spread evenly over its non-empty bins (empty bins get 0);
//    KL(P || Q) with P and Q normalised (infinite when Q is 0 where P is not);
//  - the last (largest) i of the smallest KL.
// L is levels_below (TensorRT's 2^(b-1) signed, 2^b unsigned, generalised to the
// range with a zero point this calibrator yields).
int entropy_threshold_bin(const ActivationStats& s, int bits) {
  const int B = ActivationStats::kBins;
  check(int(s.abs_histogram().size()) == B, "calibration: entropy needs the histogram pass");
  const double amax = s.abs_max();
  if (!(amax > 0)) return B;
  std::vector<double> h = s.abs_histogram();
  h[0] = h[1];
  std::vector<double> tail(size_t(B) + 1, 0.0);  // tail[i] = sum h[i, B)
  for (int k = B - 1; k >= 0; --k) tail[size_t(k)] = tail[size_t(k) + 1] + h[size_t(k)];
  const double total = tail[0];
  if (!(total > 0)) return B;
  std::vector<double> mass, q(static_cast<size_t>(B));
  std::vector<int64_t> nonzero;
  double best = std::numeric_limits<double>::infinity();
  int best_i = B;
  for (int i = std::min(128, B); i <= B; ++i) {
    const int64_t L = levels_below(s, amax * double(i) / B, bits);
    // With L >= i levels every bin is a group of its own.
    mass.assign(size_t(std::min<int64_t>(L, i)), 0.0);
    nonzero.assign(mass.size(), 0);
    auto group = [&](int k) { return L >= i ? size_t(k) : size_t(int64_t(k) * L / i); };
    for (int k = 0; k < i; ++k)
      if (h[size_t(k)] > 0) mass[group(k)] += h[size_t(k)], ++nonzero[group(k)];
    double qsum = 0;
    for (int k = 0; k < i; ++k) {
      q[size_t(k)] = h[size_t(k)] > 0 ? mass[group(k)] / double(nonzero[group(k)]) : 0.0;
      qsum += q[size_t(k)];
    }
    if (!(qsum > 0)) continue;
    double kl = 0;
    for (int k = 0; k < i; ++k) {
      const double p = (h[size_t(k)] + (k == i - 1 ? tail[size_t(i)] : 0.0)) / total;
      if (p <= 0) continue;
      if (q[size_t(k)] <= 0) {
        kl = std::numeric_limits<double>::infinity();
        break;
      }
      kl += p * std::log(p / (q[size_t(k)] / qsum));
    }
    if (kl <= best) best = kl, best_i = i;
  }
  return best_i;
}


QuantRange calibrate(const ActivationStats& s, const Calibrator& c, int bits) {
  check(s.count() > 0, "calibration: no values were seen");
  switch (c.kind) {
    case Calibrator::Kind::MinMax: return range_params(s.min(), s.max(), bits);
    case Calibrator::Kind::Sigma:
      return range_params(std::max(s.min(), s.mean() - c.param * s.stddev()),
                          std::min(s.max(), s.mean() + c.param * s.stddev()), bits);
    case Calibrator::Kind::Percentile: {
      check(!s.histogram().empty(), "calibration: percentile needs the histogram pass");
      const double q = c.param / 100.0;
      return range_params(s.quantile(1.0 - q), s.quantile(q), bits);
    }
    case Calibrator::Kind::Mse:
      check(!s.histogram().empty(), "calibration: mse needs the histogram pass");
      return mse_range(s, bits);
    case Calibrator::Kind::Entropy: {
      check(!s.histogram().empty(), "calibration: entropy needs the histogram pass");
      const int i = entropy_threshold_bin(s, bits);
      if (i == ActivationStats::kBins) return range_params(s.min(), s.max(), bits);
      const double t = s.abs_max() * double(i) / ActivationStats::kBins;
      return range_params(std::max(s.min(), -t), std::min(s.max(), t), bits);
    }
  }
  return {};
}

}  // namespace vitkit

#include "vitkit/compress/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

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
  if (hist_.empty()) hist_.assign(kBins, 0.0);
  const double w = (max_ - min_) / double(kBins);
  for (int64_t i = 0; i < n; ++i) {
    int b = w > 0 ? int((double(x[i]) - min_) / w) : 0;
    hist_[size_t(std::clamp(b, 0, kBins - 1))] += 1;
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

// KL(p || q) of two unnormalised distributions over the same bins (q smoothed where p has mass).
double kl_divergence(const std::vector<double>& p, const std::vector<double>& q) {
  double ps = 0, qs = 0;
  for (double v : p) ps += v;
  for (double v : q) qs += v;
  if (ps <= 0 || qs <= 0) return 0;
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    const double pi = p[i] / ps, qi = std::max(q[i] / qs, 1e-12);
    kl += pi * std::log(pi / qi);
  }
  return kl;
}

// TensorRT's entropy calibration on the histogram of |x| (2048 bins over
// [0, max |x|]): for each threshold bin i >= levels, P = the first i bins with
// the tail's mass added to the last, Q = P merged into `levels` bins and spread
// back over the non-empty bins; the threshold with the smallest KL(P || Q).
double entropy_threshold(const ActivationStats& s, int levels) {
  const double amax = std::max(std::fabs(s.min()), std::fabs(s.max()));
  const int B = ActivationStats::kBins;
  if (amax <= 0) return 0;
  std::vector<double> h(size_t(B), 0.0);
  for (int i = 0; i < B; ++i) {
    const double v = std::fabs(s.bin_value(i));
    h[size_t(std::clamp(int(v / amax * B), 0, B - 1))] += s.histogram()[size_t(i)];
  }
  double best = 1e300;
  int best_i = B;
  for (int i = levels; i <= B; ++i) {
    std::vector<double> p(h.begin(), h.begin() + i);
    for (int k = i; k < B; ++k) p[size_t(i - 1)] += h[size_t(k)];
    std::vector<double> q(size_t(i), 0.0);
    const double per = double(i) / levels;
    for (int j = 0; j < levels; ++j) {
      const int a = int(std::floor(j * per)), b = std::max(a + 1, int(std::floor((j + 1) * per)));
      double mass = 0;
      int nonzero = 0;
      for (int k = a; k < b && k < i; ++k) mass += h[size_t(k)], nonzero += h[size_t(k)] > 0;
      for (int k = a; k < b && k < i; ++k)
        if (h[size_t(k)] > 0) q[size_t(k)] = mass / nonzero;
    }
    const double kl = kl_divergence(p, q);
    if (kl < best) best = kl, best_i = i;
  }
  return amax * double(best_i) / B;
}

}  // namespace

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
      const double t = entropy_threshold(s, 1 << (bits - 1));
      return range_params(std::max(s.min(), -t), std::min(s.max(), t), bits);
    }
  }
  return {};
}

}  // namespace vitkit

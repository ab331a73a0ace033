// Calibrators: the range [lo, hi] (lo <= 0 <= hi) that an activation is
// quantized over, chosen from its values on a calibration set, and the scale
// and zero point of b-bit unsigned codes over it (as kernels::InputQuant's
// static mode takes them).
//   minmax        the values' min and max
//   sigma:K       mean -+ K standard deviations, within min and max
//   percentile:P  the (100 - P)th and Pth percentiles (P in (50, 100])
//   mse           the range, shrunk symmetrically around zero, that minimises
//                 the mean squared quantization error (clipping included)
//   entropy       TensorRT's (as pytorch-quantization's _compute_amax_entropy):
//                 the magnitude threshold t minimising KL(P || Q) over the
//                 histogram of |x|, P its first i bins with the tail's mass in
//                 the last, Q those bins merged into as many levels as the
//                 codes spend on [0, t] (2^(b-1) for a range symmetric about
//                 zero, 2^b for a one-signed one, 2^b t / (hi - lo) between).
//                 Like TensorRT's it can clip far too hard where the values are
//                 few and spiky: normalised pixels (a background spike at the
//                 minimum) get t = that spike's magnitude, clipping every
//                 brighter pixel; keep such layers on another calibrator (layers=)
// Statistics are gathered in two passes over the data: moments and extremes,
// then histograms of 2048 bins over [min, max] and over [0, max |x|].
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace vitkit {

struct Calibrator {
  enum class Kind { MinMax, Sigma, Percentile, Mse, Entropy } kind = Kind::MinMax;
  double param = 0;  // K for sigma, P for percentile
  // "minmax", "sigma:3", "percentile:99.99", "mse", "entropy"; UsageError naming the text otherwise.
  static Calibrator parse(const std::string& text);
  std::string name() const;
  bool needs_histogram() const { return kind != Kind::MinMax && kind != Kind::Sigma; }
};

class ActivationStats {
 public:
  static constexpr int kBins = 2048;
  // Pass 1: moments and extremes.
  void add_moments(const float* x, int64_t n);
  // Pass 2 (after pass 1): the histograms over [min, max] and over [0, max |x|].
  void add_histogram(const float* x, int64_t n);
  int64_t count() const { return n_; }
  double min() const { return min_; }
  double max() const { return max_; }
  double mean() const { return n_ ? sum_ / double(n_) : 0; }
  double stddev() const;
  double abs_max() const { return std::max(-min_, max_); }
  const std::vector<double>& histogram() const { return hist_; }
  // |x| in kBins bins of width abs_max() / kBins (bin i: [i w, (i + 1) w), the last closed).
  const std::vector<double>& abs_histogram() const { return abs_hist_; }
  // The bin's centre, and the bins' width ((max - min) / kBins).
  double bin_value(int i) const;
  double bin_width() const { return (max_ - min_) / double(kBins); }
  // After pass 2: the value below which a fraction q in [0, 1] of the
  // histogram's mass lies, interpolated linearly within its bin (so within
  // one bin width of the values around that rank).
  double quantile(double q) const;

 private:
  int64_t n_ = 0;
  double sum_ = 0, sumsq_ = 0, min_ = 0, max_ = 0;
  std::vector<double> hist_, abs_hist_;
};

struct QuantRange {
  double lo = 0, hi = 0;  // lo <= 0 <= hi
  float scale = 1.f;
  int32_t zero = 0;
};

// The range the calibrator chooses for these statistics, and its b-bit scale and zero point.
QuantRange calibrate(const ActivationStats& s, const Calibrator& c, int bits);
// The scale and zero point of b-bit unsigned codes over [lo, hi] (lo <= 0 <= hi):
// s = (hi - lo) / (2^b - 1) (1 when hi == lo), z = clamp(round(-lo / s), 0, 2^b - 1).
QuantRange range_params(double lo, double hi, int bits);
// The entropy calibrator's threshold bin i (t = abs_max() i / kBins) on these statistics' |x| histogram.
int entropy_threshold_bin(const ActivationStats& s, int bits);

}  // namespace vitkit

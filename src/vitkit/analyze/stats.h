// The distributions of a model's tensors, for choosing quantization formats:
// per linear layer its (plain, dequantized) weight, its input and its output
// activations, and per block its layer-norm outputs and attention
// probabilities, over a set of images. Per tensor: min, max, mean, sigma, the
// share of values outside mu -+ k sigma (k = 1, 2, 3), percentiles, a
// histogram, and the outlier channels (per-channel max |x| above a multiple of
// the median channel's, as LLM.int8()'s outlier features).
//
// Tensors and their channels:
//   weight      (out, in) from repr->plain_weight (any representation);
//               channel = output row
//   input       the linear's input X (rows, in); channel = input feature
//   output      its output act(X W^T + b) (rows, out) without the residual
//               (model/forward.h on_linear_output): fc1's is *after* GELU, the
//               same tensor as fc2's input; channel = output feature
//   ln_1, ln_2  a block's layer-norm outputs (rows, D); in pre-norm blocks the
//               same tensors as qkv's and fc1's inputs; "ln" the final norm
//   attn_probs  softmax(q k^T / sqrt(head_dim)) (B, heads, T, T) per head,
//               recomputed (double exponent sums) from the qkv the forward
//               makes; channel = head
// Rows are the tokens of all images (patch: the patches; head: the pooled rows).
//
// Two passes over the images: moments, extremes and per-channel max |x|, then
// a histogram of ActivationStats::kBins (2048) bins over [min, max] and the
// counts outside mu -+ k sigma (exact). Percentiles come from the histogram,
// interpolated within a bin: within one bin width ((max - min) / 2048,
// `percentile_error`) of the exact values around that rank.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/model/vit.h"

namespace vitkit {

struct TensorStats {
  std::string name;   // "LAYER.weight", "LAYER.input", "LAYER.output", "BLOCK.ln_1", "BLOCK.attn_probs", "encoder.ln"
  std::string layer;  // the linear's or block's module path ("encoder.layers.encoder_layer_0")
  std::string kind;   // linears: patch, qkv, out_proj, fc1, fc2, head; else ln_1, ln_2, ln, attention
  std::string role;   // weight, input, output, norm, probs
  int block = -1;     // encoder block, -1 outside the encoder
  int64_t count = 0;  // values seen
  double min = 0, max = 0, mean = 0, stddev = 0;
  double outside[3] = {0, 0, 0};  // share of values outside mean -+ k stddev, k = 1, 2, 3
  std::vector<double> percentiles;  // StatsOptions::percentiles entries, in the same order
  double percentile_error = 0;      // the histogram's bin width: the percentiles' error bound
  std::vector<double> histogram;    // StatsOptions::bins counts over [min, max]
  int channels = 0;
  std::vector<float> channel_max;     // per channel max |x| (channels entries)
  double median_channel_max = 0;      // the median of channel_max
  std::vector<int> outlier_channels;  // channel_max > outlier_ratio x median, ascending

  nlohmann::json to_json(const std::vector<double>& percentile_levels) const;
};

struct StatsOptions {
  // Percentile levels in percent, each in [0, 100].
  std::vector<double> percentiles{0.01, 0.1, 1, 99, 99.9, 99.99};
  int bins = 128;              // histogram bins in the result; must divide 2048
  double outlier_ratio = 10;   // outlier channel: max |x| > ratio x the median channel's
  int64_t batch = 64;          // images per forward pass
  bool progress = false;       // a bar on stderr (core/progress.h)
};

struct StatsResult {
  int64_t images = 0;
  std::string data;  // the images' source, described ("" when not given)
  StatsOptions options;
  std::vector<TensorStats> tensors;  // forward order: per layer weight, input, output; norms and attention where they run
  double seconds = 0;

  // The tensor of that name, or null.
  const TensorStats* find(const std::string& name) const;
  nlohmann::json to_json() const;
  // One row per tensor: min, max, mean, sigma, outside 3 sigma, p0.01/p99.99, outlier channels.
  std::string text() const;
  // One row per tensor, every scalar column.
  std::string csv() const;
  // Histograms (log density) per tensor kind: one panel per role and layer
  // kind, one line per block.
  std::string svg(const std::string& title) const;
};

// Statistics of m's tensors on images (N, C, S, S), preprocessed for m.
// Throws Error when the options are out of range or the images do not fit m.
StatsResult model_stats(const ViT& m, const Tensor& images, const StatsOptions& o = {});

// The attention probabilities (kernels/attention.h), for tests and model_stats.
using kernels::attention_probs;

}  // namespace vitkit

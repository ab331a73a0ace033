// A model B (usually a compressed copy) compared with its reference A on the
// same labelled images, as llama.cpp's `llama-perplexity --kl-divergence`
// compares a quantized LLM with its baseline: top-1 and top-5 of both and
// their difference, how often B's prediction agrees with A's, the KL
// divergence of B's softmax from A's per image, the largest logit difference,
// and top-1 per true class; and per linear layer the signal-to-quantization-
// noise ratio of its output (LayerSqnr).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/io/dataset.h"
#include "vitkit/model/vit.h"

namespace vitkit {

// KL(A || B) per image summarised. Quantiles interpolate linearly between order
// statistics (numpy's and torch.quantile's default).
struct KlStats {
  double mean = 0, median = 0, p99 = 0, max = 0;
};

// One true class.
struct ClassCompare {
  int64_t images = 0;
  double top1_a = 0, top1_b = 0;  // fractions
  double diff_points() const { return 100 * (top1_b - top1_a); }
};

// One linear layer (present in both models under the same name, with the same
// output width) compared on the same images. Each model runs on its own, so
// B's layer sees B's own inputs: the noise is the error accumulated up to and
// through that layer, not the layer's alone. The output is the layer's own,
// after its fused activation (fc1: after GELU), without the residual stream
// (model/forward.h on_linear_output).
//   signal = mean y_A^2, noise = mean (y_A - y_B)^2 over every output value,
//   SQNR = 10 log10(signal / noise) dB: +inf when the outputs are identical
//   (noise 0), NaN when a value is not finite. Text shows "inf"; JSON has
//   sqnr_db null then, with "identical": true for +inf.
struct LayerSqnr {
  std::string name, kind;  // Linear::name, to_string(LayerKind)
  int block = -1;
  int64_t values = 0;
  double signal = 0, noise = 0;
  double db() const;
};

struct CompareResult {
  int64_t images = 0;
  int classes = 0;
  std::vector<std::string> class_names;  // classes entries
  std::string data;                      // the dataset's description ("" from logits alone)
  double top1_a = 0, top5_a = 0, top1_b = 0, top5_b = 0;  // fractions
  double agreement = 0;                  // share of images where argmax A == argmax B
  // Images whose logits hold a NaN or an infinity, per model. Such an image
  // counts as a miss for that model and as a disagreement; KL and max|delta|
  // are over the `finite_images` where both rows are finite.
  int64_t nonfinite_a = 0, nonfinite_b = 0, finite_images = 0;
  KlStats kl;                  // meaningful when finite_images > 0
  double max_abs_diff = 0;     // max |logit_A - logit_B| over finite images and all classes
  std::vector<ClassCompare> per_class;  // classes entries
  double seconds = 0;          // compare_models: wall time
  std::vector<LayerSqnr> layers;  // compare_models with CompareOptions::layers: A's forward order

  double top1_diff_points() const { return 100 * (top1_b - top1_a); }
  double top5_diff_points() const { return 100 * (top5_b - top5_a); }
  // Fractions as fractions, KL statistics null when no image is finite in both;
  // never NaN.
  nlohmann::json to_json() const;
  // Tables: A / B / difference, agreement and KL, per class (classes with
  // images), and the layers' SQNR per layer kind (min, median, max).
  std::string text() const;
  // One row per layer: its SQNR.
  std::string layers_text() const;
};

// One paragraph on what B costs against A, for other commands to print (e.g.
// compress --data, after writing the compressed model).
std::string compare_summary(const CompareResult& r);

// Accumulates the comparison batch by batch; per image only its KL is kept.
class CompareAccumulator {
 public:
  explicit CompareAccumulator(int classes);
  // logits_a, logits_b (n, classes), labels (n) in [0, classes).
  void add(const float* logits_a, const float* logits_b, const int* labels, int64_t n);
  int64_t images() const { return n_; }
  double agreement() const { return n_ ? double(agree_) / double(n_) : 0; }
  CompareResult result() const;

 private:
  int classes_;
  int64_t n_ = 0, agree_ = 0, top5_a_ = 0, top5_b_ = 0, nonfinite_a_ = 0, nonfinite_b_ = 0;
  std::vector<int64_t> class_images_, class_top1_a_, class_top1_b_;
  std::vector<double> kl_;  // per image where both rows are finite
  double max_abs_diff_ = 0;
};

// The comparison of two sets of logits (N, classes) of the same images, with
// their labels (N). Throws Error on mismatched shapes or labels out of range.
CompareResult compare_logits(const Tensor& logits_a, const Tensor& logits_b, const std::vector<int>& labels);

struct CompareOptions {
  int64_t limit = 0;     // the first `limit` images of the dataset (0: all)
  int64_t batch = 256;   // images per forward pass
  bool progress = false; // a progress bar on stderr (core/progress.h)
  std::string name_a = "A", name_b = "B";  // in error messages
  // Per-layer SQNR, from the same forward passes as the logits (hooks:
  // model/forward.h), the images split between the threads. A's layer outputs
  // are held for a chunk of images at a time (at most kSqnrChunkBytes over all
  // threads, at least one image per thread), never for the whole set. Hooked
  // inference runs every row of the last block, so the logits can differ from
  // eval's in the last bits (measured on the default model: KL mean 1e-7
  // relative); false runs the models as eval does.
  bool layers = true;
};
inline constexpr int64_t kSqnrChunkBytes = int64_t(64) << 20;

// Runs both models over the dataset in batches, each preprocessing the images
// with its own config (once for both when their inputs are the same). Throws
// Error when the class counts differ or the dataset has more classes than the
// models.
CompareResult compare_models(const ViT& a, const ViT& b, const Dataset& ds, const CompareOptions& o = {});

}  // namespace vitkit

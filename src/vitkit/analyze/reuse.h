// The reuse study (docs/reuse.md): a model rounded to d decimals by the round
// pass, the percentage hits of its multiplications counted exactly on real
// images (per layer kind, per block, overall; mean, min and max over images),
// the multiplications a reuse-aware engine executes, the sampling estimate and
// its error, and the accuracy lost.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/io/dataset.h"
#include "vitkit/kernels/reuse.h"
#include "vitkit/model/vit.h"

namespace vitkit {

// Counts of one analysed matmul on one image (attention products: summed over heads).
struct LayerReuse {
  std::string name;  // Linear::name, or "<block>.self_attention.scores" / ".values"
  std::string kind;  // qkv, out_proj, fc1, fc2, attn_scores, attn_values (patch, head with layers=)
  int block = -1;
  int64_t mults = 0, distinct = 0;
  int64_t per_output = -1;  // engine (a); -1: not counted
  int64_t samples = 0;
  double sample_hits = 0, sample_freq_hits = 0;
  double hits() const { return mults ? 100.0 * double(mults - distinct) / double(mults) : 0; }
};

struct ReuseCountSettings {
  bool attention = false;  // also q.k^T and attention.v (not rounded by the pass; rounded here for counting)
  bool per_output = true;  // engine (a)
  int64_t sample = 0;      // sampling estimate: multiplications drawn per matmul (0: none)
  int zone_rows = 4, zone_cols = 4;
  uint64_t seed = 0;
};

// Counts the multiplications of a model's rounded layers during forward passes.
// The weights are indexed once (kernels::ReuseWeights); each image's layer
// inputs are seen through ForwardHooks and rounded to `decimals` for counting.
class ReuseCounter {
 public:
  // layers: Linear names to analyse (those the round pass rounded).
  ReuseCounter(const ViT& m, const std::vector<std::string>& layers, int decimals, const ReuseCountSettings& s);
  ~ReuseCounter();
  // One image (C, S, S), preprocessed: its layers in forward order. `image_index`
  // varies the sampling seed.
  std::vector<LayerReuse> count(const float* image, int64_t image_index = 0);

 private:
  const ViT& m_;
  int decimals_;
  ReuseCountSettings s_;
  std::map<std::string, std::unique_ptr<kernels::ReuseWeights>> weights_;
};

// Mean, min and max over images.
struct Stat {
  double mean = 0, min = 0, max = 0;
  nlohmann::json to_json() const { return {{"mean", mean}, {"min", min}, {"max", max}}; }
};
Stat stat_of(const std::vector<double>& v);

// The counts of N images summarised. Hits of a group of layers on one image are
// multiplication-weighted: 100 * sum(mults - distinct) / sum(mults).
struct ReuseSummary {
  int64_t images = 0;
  std::vector<std::string> kinds;         // in first-seen order
  std::map<std::string, Stat> kind_hits;  // per layer kind
  std::vector<Stat> block_hits;           // per block: its rounded linears
  Stat overall;                           // every rounded linear (attention products excluded)
  Stat overall_attention;                 // with the attention products (when counted)
  bool attention = false;
  // Per image, means over images, rounded linears only:
  double mults = 0;        // multiplications
  double table = 0;        // engine (b): distinct pairs per matmul (shared product table)
  double per_output = -1;  // engine (a): distinct pairs per output element
  // Sampling (when drawn): estimates of `overall` and their errors.
  int64_t samples = 0;                                     // per matmul
  double sample_hits = 0, sample_freq_hits = 0;            // means over images, multiplication-weighted over layers
  double sample_error = 0, sample_freq_error = 0;          // estimate - exact, of those means
  double sample_abs_error = 0, sample_freq_abs_error = 0;  // mean |estimate - exact| over matmuls and images
  double sample_max_abs_error = 0, sample_freq_max_abs_error = 0;
  std::vector<LayerReuse> layers;  // per matmul, averaged over images (counts rounded to integers)
  std::vector<Stat> layer_hits;    // per matmul, over images
  nlohmann::json to_json() const;
};
ReuseSummary summarize_reuse(const std::vector<std::vector<LayerReuse>>& per_image);

// The whole study.
struct ReuseStudyOptions {
  std::vector<int> decimals{1, 2, 3, 4};
  std::string layers;          // round pass layers= (more layers than the blocks')
  int64_t eval_limit = 10000;  // accuracy on the first N images of the dataset (0: all)
  bool eval = true;
  int64_t batch = 256;
  ReuseCountSettings count;
  bool progress = true;
};

struct ReuseDecimals {
  int decimals = 0;
  nlohmann::json round_record;  // the round pass's record (weights rounded and activations)
  double macs_fraction = 0;
  // Top-1 (fractions) of the model with rounded weights, and with rounded
  // weights and input activations; accuracy loss in points against the baseline.
  double top1_weights = 0, top1_all = 0;
  double loss_weights = 0, loss_all = 0;
  ReuseSummary reuse;
  double count_seconds = 0;  // counting time (forward passes included)
};

struct ReuseStudy {
  bool evaluated = false;
  int64_t eval_images = 0;
  double top1_baseline = 0;
  int64_t images = 0;  // images counted
  std::vector<ReuseDecimals> rows;
  nlohmann::json to_json() const;
};

// images (N, C, S, S): the images whose multiplications are counted; ds: the
// dataset for accuracy (may be null when opt.eval is false).
ReuseStudy run_reuse_study(const ViT& model, const Dataset* ds, const Tensor& images, const ReuseStudyOptions& opt);

}  // namespace vitkit

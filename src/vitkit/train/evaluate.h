// Accuracy of a model on labelled images: top-1, top-5, per class, confusion
// matrix, loss and throughput.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/io/dataset.h"
#include "vitkit/model/vit.h"

namespace vitkit {

struct EvalResult {
  int64_t images = 0;
  int classes = 0;
  std::vector<std::string> class_names;
  double top1 = 0, top3 = 0, top5 = 0;  // fractions
  double loss = 0;            // mean cross-entropy (no smoothing)
  std::vector<int64_t> confusion;  // classes x classes: [true * classes + predicted]
  std::vector<double> per_class;   // top-1 per true class
  std::vector<int> predictions;    // each image's top-1 class, in order (not in to_json)
  double seconds = 0;              // model time (forward passes)
  double total_seconds = 0;        // with data loading and preprocessing
  double images_per_s() const { return seconds > 0 ? images / seconds : 0; }
  nlohmann::json to_json() const;
};

// Accumulates results batch by batch.
class EvalAccumulator {
 public:
  explicit EvalAccumulator(int classes);
  // logits (B, classes), labels (B).
  void add(const float* logits, const int* labels, int64_t B);
  EvalResult result() const;

 private:
  int classes_;
  int64_t n_ = 0, top1_ = 0, top3_ = 0, top5_ = 0;
  double loss_ = 0;
  std::vector<int64_t> confusion_;
  std::vector<int> predictions_;
};

// Preprocessed images (N, C, S, S) with labels (N).
EvalResult evaluate_tensor(const ViT& m, const Tensor& images, const std::vector<int>& labels, int64_t batch = 256,
                           bool progress = false);

// The first `limit` images of ds (0: all), preprocessed with the model's config,
// in batches; a progress bar when progress is set.
EvalResult evaluate_dataset(const ViT& m, const Dataset& ds, int64_t limit = 0, int64_t batch = 256,
                            bool progress = true);

}  // namespace vitkit

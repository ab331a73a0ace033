#include "vitkit/train/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "vitkit/core/error.h"
#include "vitkit/core/progress.h"
#include "vitkit/io/preprocess.h"
#include "vitkit/model/forward.h"
#include "vitkit/report/table.h"

namespace vitkit {

using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

EvalAccumulator::EvalAccumulator(int classes)
    : classes_(classes), confusion_(static_cast<size_t>(classes) * classes, 0) {}

void EvalAccumulator::add(const float* logits, const int* labels, int64_t B) {
  const int C = classes_;
  std::vector<int> order(C);
  for (int64_t b = 0; b < B; ++b) {
    const float* x = logits + b * C;
    const int y = labels[b];
    check(y >= 0 && y < C, "label ", y, " is outside the model's ", C, " classes");
    std::iota(order.begin(), order.end(), 0);
    const int k = std::min(5, C);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int a, int c) { return x[a] > x[c] || (x[a] == x[c] && a < c); });
    top1_ += order[0] == y;
    top3_ += std::find(order.begin(), order.begin() + std::min(3, k), y) != order.begin() + std::min(3, k);
    top5_ += std::find(order.begin(), order.begin() + k, y) != order.begin() + k;
    confusion_[static_cast<size_t>(y) * C + order[0]]++;
    predictions_.push_back(order[0]);
    double mx = x[order[0]], s = 0;
    for (int c = 0; c < C; ++c) s += std::exp(double(x[c]) - mx);
    loss_ += mx + std::log(s) - double(x[y]);
  }
  n_ += B;
}

EvalResult EvalAccumulator::result() const {
  EvalResult r;
  r.images = n_;
  r.classes = classes_;
  r.top1 = n_ ? double(top1_) / n_ : 0;
  r.top3 = n_ ? double(top3_) / n_ : 0;
  r.top5 = n_ ? double(top5_) / n_ : 0;
  r.loss = n_ ? loss_ / n_ : 0;
  r.confusion = confusion_;
  r.predictions = predictions_;
  r.per_class.resize(classes_);
  for (int c = 0; c < classes_; ++c) {
    int64_t row = 0;
    for (int p = 0; p < classes_; ++p) row += confusion_[size_t(c) * classes_ + p];
    r.per_class[c] = row ? double(confusion_[size_t(c) * classes_ + c]) / row : 0;
  }
  return r;
}

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j;
  j["images"] = images;
  j["top1"] = top1;
  j["top3"] = top3;
  j["top5"] = top5;
  j["loss"] = loss;
  j["seconds"] = seconds;
  j["total_seconds"] = total_seconds;
  j["images_per_s"] = images_per_s();
  nlohmann::json pc = nlohmann::json::array();
  for (int c = 0; c < classes; ++c)
    pc.push_back({{"class", c}, {"name", c < int(class_names.size()) ? class_names[c] : std::to_string(c)},
                  {"top1", per_class[c]}});
  j["per_class"] = pc;
  nlohmann::json cm = nlohmann::json::array();
  for (int c = 0; c < classes; ++c)
    cm.push_back(std::vector<int64_t>(confusion.begin() + c * classes, confusion.begin() + (c + 1) * classes));
  j["confusion"] = cm;
  return j;
}

EvalResult evaluate_tensor(const ViT& m, const Tensor& images, const std::vector<int>& labels, int64_t batch,
                           bool progress) {
  const int64_t N = images.dim(0);
  check(int64_t(labels.size()) == N, "evaluate: ", N, " images but ", labels.size(), " labels");
  auto t0 = Clock::now();
  EvalAccumulator acc(m.cfg.classes);
  Progress bar("eval", N);
  Acts acts;  // one set for all batches
  for (int64_t i = 0; i < N; i += batch) {
    const int64_t b = std::min(batch, N - i);
    Tensor logits = vit_predict(m, images.slice(i, i + b), acts);
    acc.add(logits.f32(), labels.data() + i, b);
    if (progress) bar.update(i + b);
  }
  if (progress) bar.finish();
  EvalResult r = acc.result();
  r.seconds = r.total_seconds = since(t0);
  return r;
}

EvalResult evaluate_dataset(const ViT& m, const Dataset& ds, int64_t limit, int64_t batch, bool progress) {
  const int64_t N = limit > 0 ? std::min(limit, ds.size()) : ds.size();
  check(ds.classes() <= m.cfg.classes, ds.describe(), " has ", ds.classes(), " classes but the model only ",
        m.cfg.classes);
  auto t0 = Clock::now();
  EvalAccumulator acc(m.cfg.classes);
  Progress bar("eval", N);
  double model_s = 0;
  std::vector<int> labels;
  Acts acts;  // one set for all batches
  for (int64_t i = 0; i < N; i += batch) {
    const int64_t b = std::min(batch, N - i);
    std::vector<int64_t> idx(b);
    std::iota(idx.begin(), idx.end(), i);
    Tensor x = preprocess_batch(ds, idx, m.cfg);
    labels.resize(b);
    for (int64_t k = 0; k < b; ++k) labels[k] = ds.label(i + k);
    auto t1 = Clock::now();
    Tensor logits = vit_predict(m, x, acts);
    model_s += since(t1);
    acc.add(logits.f32(), labels.data(), b);
    if (progress) {
      EvalResult partial = acc.result();
      bar.update(i + b, cat("top1 ", fmt_fixed(100 * partial.top1, 2), "% ",
                            fmt_fixed(double(i + b) / since(t0), 0), " img/s"));
    }
  }
  EvalResult r = acc.result();
  if (progress) bar.finish(cat("top1 ", fmt_fixed(100 * r.top1, 2), "%"));
  r.seconds = model_s;
  r.total_seconds = since(t0);
  r.class_names = ds.class_names();
  r.class_names.resize(m.cfg.classes);
  for (int c = ds.classes(); c < m.cfg.classes; ++c) r.class_names[c] = std::to_string(c);
  return r;
}

}  // namespace vitkit

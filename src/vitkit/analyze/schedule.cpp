#include "vitkit/analyze/schedule.h"

#include <algorithm>
#include <chrono>

#include "vitkit/core/error.h"
#include "vitkit/model/cost.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/linear_apply.h"
#include "vitkit/report/table.h"
#include "vitkit/train/evaluate.h"

namespace vitkit {

nlohmann::json ScheduleRow::to_json() const {
  return {{"step", step},     {"what", what}, {"params", params}, {"bytes", bytes},
          {"macs", macs},     {"images", images}, {"top1", top1}, {"top3", top3},
          {"agreement", agreement}, {"latency_ms", latency_ms}};
}

ScheduleRow measure_step(const ViT& m, const Dataset& test, int64_t limit, int reps, const ScheduleRow* reference) {
  ScheduleRow r;
  const ModelCost c = model_cost(m);
  r.params = c.params;
  r.bytes = c.bytes;
  r.macs = c.macs;
  auto run = m.clone();
  pack_linears_for_inference(*run);
  const EvalResult e = evaluate_dataset(*run, test, limit, 256, false);
  r.images = e.images;
  r.top1 = e.top1;
  r.top3 = e.top3;
  r.predictions = e.predictions;
  if (reference) {
    check(reference->predictions.size() == r.predictions.size(), "measure_step: the reference row has ",
          reference->predictions.size(), " predictions, this one ", r.predictions.size());
    int64_t same = 0;
    for (size_t i = 0; i < r.predictions.size(); ++i) same += r.predictions[i] == reference->predictions[i];
    r.agreement = r.predictions.empty() ? 1.0 : double(same) / double(r.predictions.size());
  }
  // One image of zeros: the time does not depend on the values.
  const Tensor x = Tensor::zeros({1, m.cfg.channels, m.cfg.image_size, m.cfg.image_size});
  Acts acts;
  std::vector<double> ms;
  for (int i = 0; i <= reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    vit_predict(*run, x, acts);
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) ms.push_back(t);  // the first pass creates the kernels' primitives
  }
  std::sort(ms.begin(), ms.end());
  r.latency_ms = ms.empty() ? 0 : ms[ms.size() / 2];
  return r;
}

std::string schedule_csv(const std::vector<ScheduleRow>& rows) {
  std::string s = "step,what,params,bytes,macs,images,top1,top3,agreement,latency_ms\n";
  for (const ScheduleRow& r : rows) {
    std::string what = r.what;
    for (char& ch : what)
      if (ch == '"') ch = '\'';
    s += cat(r.step, ",\"", what, "\",", r.params, ",", r.bytes, ",", r.macs, ",", r.images, ",", r.top1, ",", r.top3,
             ",", r.agreement, ",", r.latency_ms, "\n");
  }
  return s;
}

std::string schedule_table(const std::vector<ScheduleRow>& rows) {
  Table t({"step", "what", "params", "bytes", "MACs", "top-1", "top-3", "agree", "ms (batch 1)"});
  t.right_align({0, 2, 3, 4, 5, 6, 7, 8});
  for (const ScheduleRow& r : rows)
    t.add({std::to_string(r.step), r.what, fmt_int(r.params), fmt_int(r.bytes), fmt_int(r.macs),
           fmt_fixed(100 * r.top1, 2) + "%", fmt_fixed(100 * r.top3, 2) + "%",
           fmt_fixed(100 * r.agreement, 2) + "%", fmt_fixed(r.latency_ms, 3)});
  return t.text();
}

}  // namespace vitkit

// One row per step of a compression schedule (vitkit compress with --data):
// what the model is after the step — parameters, bytes, MACs, test top-1 and
// top-3 on the first N test images, top-1 agreement with the input model, and the latency of one image (median of
// timed forward passes, inference layout) — as a table, JSON and CSV.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/io/dataset.h"
#include "vitkit/model/vit.h"

namespace vitkit {

struct ScheduleRow {
  int step = 0;        // 0: the input model
  std::string what;    // "input", the pass spec, "finetune (1 epoch)"
  int64_t params = 0, bytes = 0, macs = 0;
  int64_t images = 0;
  double top1 = 0, top3 = 0;
  double agreement = 1;   // share of the images where its top-1 is the input model's (step 0: 1)
  std::vector<int> predictions;  // its top-1 per image (not in JSON or CSV)
  double latency_ms = 0;  // batch 1, median
  nlohmann::json to_json() const;
};

// Measures m (not changed: a packed copy runs) on the first `limit` images
// of `test` (0: all); latency from `reps` timed passes after one warm-up.
// reference: the input model's row (its predictions give the agreement), or null.
ScheduleRow measure_step(const ViT& m, const Dataset& test, int64_t limit, int reps = 15,
                         const ScheduleRow* reference = nullptr);

std::string schedule_csv(const std::vector<ScheduleRow>& rows);
std::string schedule_table(const std::vector<ScheduleRow>& rows);

}  // namespace vitkit

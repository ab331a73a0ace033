// Learning-rate schedules, evaluated per optimizer step.
#pragma once
#include <cstdint>
#include <string>

namespace vitkit {

struct Schedule {
  std::string kind = "cosine";  // cosine | constant | linear
  float lr = 1e-3f;             // peak
  float min_lr = 1e-5f;         // end of cosine/linear decay
  float warmup_lr = 1e-6f;      // start of the linear warmup
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  // Learning rate at step (0-based).
  float at(int64_t step) const;
};

}  // namespace vitkit

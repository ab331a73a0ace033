#include "vitkit/train/schedule.h"

#include <cmath>

namespace vitkit {

float Schedule::at(int64_t step) const {
  if (step < warmup_steps)
    return warmup_lr + (lr - warmup_lr) * float(step) / float(warmup_steps);
  if (kind == "constant") return lr;
  const int64_t span = total_steps - warmup_steps;
  double f = span > 0 ? double(step - warmup_steps) / double(span) : 1.0;
  if (f > 1) f = 1;
  if (kind == "linear") return static_cast<float>(lr + (min_lr - lr) * f);
  return static_cast<float>(min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * f)));
}

}  // namespace vitkit

// Dropout as a forward/backward pair. The mask of element i comes from a hash
// of (seed, site, i), so it does not depend on the thread count.
#pragma once
#include <cstdint>

namespace vitkit::kernels {

// x (n) in place: x[i] = keep ? x[i] / (1 - p) : 0; mask (n) records keep (1) / drop (0).
void dropout_forward(float* x, uint8_t* mask, int64_t n, float p, uint64_t seed, uint64_t site);
// dx (n) in place: dx[i] = mask[i] ? dx[i] / (1 - p) : 0.
void dropout_backward(float* dx, const uint8_t* mask, int64_t n, float p);

}  // namespace vitkit::kernels

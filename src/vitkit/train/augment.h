// Training augmentation on preprocessed (normalised) images: random crop of the
// zero-padded image (the padding is 0 in pixel space, as torchvision's
// RandomCrop(padding=p) before Normalize) and horizontal flips.
#pragma once
#include <cstdint>
#include <vector>

namespace vitkit {

struct AugmentParams {
  int pad = 0;          // crop offsets in [0, 2*pad]
  float hflip = 0.f;    // flip probability
  std::vector<float> fill;  // per channel: the normalised value of a zero pixel, (0 - mean) / std
};

// src (B, C, S, S) -> dst (B, C, S, S). Image b's crop offsets and flip come
// from an Rng seeded with (seed, sample_ids[b]), so results do not depend on
// the thread count or on the batch an image lands in.
void augment_batch(const float* src, float* dst, int64_t B, int64_t C, int64_t S, const AugmentParams& p,
                   uint64_t seed, const int64_t* sample_ids);

}  // namespace vitkit

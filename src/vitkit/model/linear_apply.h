// Running a Linear whatever its representation (repr/linear_repr.h), profiled
// per layer kind, and packing dense weights for inference.
#pragma once
#include <cstdint>

#include "vitkit/model/vit.h"

namespace vitkit {

// Y (M, l.out) = act(X (M, l.in) W^T + b + Y) with accumulate (Y added before the activation), else act(X W^T + b).
void linear_apply(const Linear& l, const float* X, float* Y, int64_t M, Activation act = Activation::None,
                  bool accumulate = false);

// Gives every dense f32 layer the packed representation (repr/f32_packed.h:
// oneDNN's blocked layout, on AVX-512 CPUs only; elsewhere nothing changes).
// The packed copy replaces the plain weight, one layer at a time, so memory
// does not grow. The model then runs inference and saves as before, but
// cannot be trained. Returns how many layers were packed.
int pack_linears_for_inference(ViT& m);

}  // namespace vitkit

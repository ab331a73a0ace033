// Weight initialisation as torchvision's VisionTransformer does it.
#pragma once
#include "vitkit/core/rng.h"
#include "vitkit/model/vit.h"

namespace vitkit {

// conv_proj: truncated normal, std sqrt(1/fan_in), bias 0; class token 0;
// position embedding N(0, 0.02); in_proj: Xavier uniform, bias 0; out_proj:
// uniform(+-1/sqrt(fan_in)), bias 0; MLP: Xavier uniform, bias N(0, 1e-6);
// norms 1 and 0; head 0.
void init_weights(ViT& m, Rng& rng);

}  // namespace vitkit

// Half-precision passes: every linear layer (or those a regex names) to
//   bf16  bf16 weights and bf16 inputs, f32 accumulation (repr/bf16.h): half
//         the weight bytes, and faster on CPUs with bf16 dot products
//   f16   IEEE half weights, f32 inputs and products (repr/f16.h): half the
//         weight bytes, only the weight rounded
// The f32 weight is dropped layer by layer, so memory falls as it goes.
#pragma once
#include <memory>

#include "vitkit/compress/pass.h"

namespace vitkit {

std::unique_ptr<Pass> make_bf16_pass();
std::unique_ptr<Pass> make_f16_pass();

// `--precision bf16`: the bf16 pass on every linear layer (logged as such).
void convert_linears_to_bf16(ViT& m);

}  // namespace vitkit

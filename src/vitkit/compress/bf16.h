// bf16 inference: every linear layer's weight stored as bfloat16 and its input
// converted to bfloat16 before the product (fp32 accumulation and output, fp32
// norms, softmax and activations), through oneDNN's bf16 matmul.
#pragma once
#include "vitkit/model/vit.h"

namespace vitkit {

// Gives every linear layer (patch embedding, encoder, head) a bf16 representation.
void convert_linears_to_bf16(ViT& m);

// True when the CPU has native bf16 dot products (AVX512_BF16 or AMX); without
// them oneDNN emulates bf16 and it is slower than fp32.
bool cpu_has_native_bf16();

}  // namespace vitkit

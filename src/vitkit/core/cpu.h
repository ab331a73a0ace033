// What this CPU can do, for choosing kernels and explaining benchmarks.
#pragma once

namespace vitkit {

// Native bf16 dot products (AVX512_BF16 or AMX-BF16); without them oneDNN
// emulates bf16 (AVX-512) or has no bf16 matmul at all (AVX2).
bool cpu_has_native_bf16();

}  // namespace vitkit

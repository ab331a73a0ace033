// The machine's practical fp32 peak: a micro-benchmark of independent FMA
// chains held in registers (no memory traffic), with the widest vector unit the
// CPU has (AVX-512, else AVX2+FMA, else plain loops), whatever the build flags.
// Achieved GFLOP/s of a model are reported as a fraction of it.
#pragma once

namespace vitkit {

// Instruction set the micro-benchmark uses here: "avx512f", "avx2+fma" or "scalar".
const char* ceiling_isa();

// fp32 GFLOP/s (an FMA counts 2) of `threads` threads each running FMA chains:
// the best of `trials` runs of about `seconds` each (the best, because other
// processes only ever make a run slower).
double measure_fp32_ceiling(int threads, double seconds = 0.1, int trials = 5);

}  // namespace vitkit

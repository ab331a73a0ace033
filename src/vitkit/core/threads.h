// Thread count for every kernel. OpenMP (shared with oneDNN) runs the work;
// callers set the count once from --threads.
#pragma once
#include <cstdint>

namespace vitkit {

// Number of threads kernels use; defaults to all cores.
int num_threads();
// Sets the thread count (n <= 0: all cores). Also applies to oneDNN.
void set_num_threads(int n);
// Cores the machine reports.
int hardware_threads();

}  // namespace vitkit

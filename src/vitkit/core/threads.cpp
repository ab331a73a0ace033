#include "vitkit/core/threads.h"

#include <omp.h>

#include <thread>

namespace vitkit {

static int g_threads = 0;

// Read once: std::thread::hardware_concurrency() asks the OS each call
// (several microseconds), and kernels ask for the thread count per call.
int hardware_threads() {
  static const int n = [] {
    const unsigned c = std::thread::hardware_concurrency();
    return c ? static_cast<int>(c) : 1;
  }();
  return n;
}

int num_threads() { return g_threads > 0 ? g_threads : hardware_threads(); }

void set_num_threads(int n) {
  g_threads = n > 0 ? n : hardware_threads();
  omp_set_num_threads(g_threads);
}

}  // namespace vitkit

#include "vitkit/core/threads.h"

#include <omp.h>

#include <thread>

namespace vitkit {

static int g_threads = 0;

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

int num_threads() { return g_threads > 0 ? g_threads : hardware_threads(); }

void set_num_threads(int n) {
  g_threads = n > 0 ? n : hardware_threads();
  omp_set_num_threads(g_threads);
}

}  // namespace vitkit

#include "vitkit/analyze/ceiling.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "vitkit/core/error.h"

namespace vitkit {

namespace {

// Each kernel runs `iters` rounds of kChains independent multiply-adds
// acc = acc * a + b (enough chains to cover the FMA latency on both ports) and
// returns a value that depends on all of them, so none is optimised away.
// acc converges to b / (1 - a) = 1: no overflow, no denormals.
constexpr float kA = 0.9999f, kB = 0.0001f;

constexpr int kChains512 = 16;  // of 32 zmm registers
__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
  __m512 acc[kChains512];
  for (int c = 0; c < kChains512; ++c) acc[c] = _mm512_set1_ps(0.001f * float(c));
  const __m512 a = _mm512_set1_ps(kA), b = _mm512_set1_ps(kB);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains512; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 s = acc[0];
  for (int c = 1; c < kChains512; ++c) s = _mm512_add_ps(s, acc[c]);
  alignas(64) float v[16];  // (_mm512_reduce_add_ps trips -Wuninitialized in GCC 12's header)
  _mm512_store_ps(v, s);
  float t = 0;
  for (float x : v) t += x;
  return t;
}

constexpr int kChains256 = 12;  // of 16 ymm registers (two hold a and b)
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
  __m256 acc[kChains256];
  for (int c = 0; c < kChains256; ++c) acc[c] = _mm256_set1_ps(0.001f * float(c));
  const __m256 a = _mm256_set1_ps(kA), b = _mm256_set1_ps(kB);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains256; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 s = acc[0];
  for (int c = 1; c < kChains256; ++c) s = _mm256_add_ps(s, acc[c]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  float t = 0;
  for (float x : v) t += x;
  return t;
}

constexpr int kChainsScalar = 32;
float fma_scalar(int64_t iters) {
  float acc[kChainsScalar];
  for (int c = 0; c < kChainsScalar; ++c) acc[c] = 0.001f * float(c);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChainsScalar; ++c) acc[c] = acc[c] * kA + kB;
  float t = 0;
  for (float x : acc) t += x;
  return t;
}

struct Kernel {
  const char* isa;
  float (*run)(int64_t);
  double flops_per_iter;  // 2 per lane per chain
};

Kernel pick_kernel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {"avx512f", fma_avx512, 2.0 * 16 * kChains512};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {"avx2+fma", fma_avx2, 2.0 * 8 * kChains256};
  return {"scalar", fma_scalar, 2.0 * kChainsScalar};
}

const Kernel& kernel() {
  static const Kernel k = pick_kernel();
  return k;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

volatile float g_sink;

// Iterations that take about `seconds` on one thread.
int64_t calibrate(const Kernel& k, double seconds) {
  int64_t iters = 1 << 12;
  for (;;) {
    const double t0 = now_s();
    g_sink = k.run(iters);
    const double dt = now_s() - t0;
    if (dt > 0.01 || iters > (int64_t(1) << 40)) return std::max<int64_t>(1, int64_t(double(iters) * seconds / dt));
    iters *= 4;
  }
}

// GFLOP/s of one run of `threads` threads, each doing `iters` iterations.
double run_once(const Kernel& k, int threads, int64_t iters) {
  std::vector<float> sink(size_t(threads), 0.f);
  const double t0 = now_s();
#pragma omp parallel num_threads(threads)
  sink[size_t(omp_get_thread_num())] = k.run(iters);
  const double dt = now_s() - t0;
  float s = 0;
  for (float x : sink) s += x;
  g_sink = s;
  return double(threads) * double(iters) * k.flops_per_iter / dt * 1e-9;
}

}  // namespace

const char* ceiling_isa() { return kernel().isa; }

double measure_fp32_ceiling(int threads, double seconds, int trials) {
  check(threads >= 1, "measure_fp32_ceiling: threads must be >= 1, got ", threads);
  check(seconds > 0 && trials >= 1, "measure_fp32_ceiling: needs seconds > 0 and trials >= 1");
  const Kernel& k = kernel();
  const int64_t iters = calibrate(k, seconds);
  double best = 0;
  for (int t = 0; t < trials; ++t) best = std::max(best, run_once(k, threads, iters));
  return best;
}

}  // namespace vitkit

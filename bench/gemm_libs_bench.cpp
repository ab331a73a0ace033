// Which library should do vitkit's fp32 GEMMs on this CPU? oneDNN (what
// kernels::linear uses) against the cblas_sgemm of OpenBLAS and BLIS (OpenMP
// builds, Debian's libopenblas0-openmp / libblis4-openmp, loaded with dlopen
// when installed: neither is a build dependency), on the default model's and
// ViT-B/16's linear shapes. Interleaved (A B C, A B C, ...), median GFLOP/s.
//
//   build/bench/vitkit_gemm_libs_bench [--threads N] [--rounds R]
//
// 2026-11-30, AMD EPYC Zen 3 (AVX2), 2 threads: oneDNN 116-140 GFLOP/s,
// OpenBLAS 0.3.21 71-121, BLIS 0.9.0 77-110; oneDNN faster on every shape.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"

namespace {

// cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct Lib {
  std::string name;
  Sgemm sgemm = nullptr;  // null: oneDNN
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--rounds R]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1 || rounds < 1) {
    std::fprintf(stderr, "--threads and --rounds must be >= 1\n");
    return 2;
  }
  // Both libraries read OMP_NUM_THREADS when loaded (their OpenMP builds).
  setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  vitkit::set_num_threads(threads);
  std::vector<Lib> libs{{"oneDNN", nullptr}};
  const char* paths[][2] = {{"OpenBLAS", "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0"},
                            {"BLIS", "/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4"}};
  for (auto& [name, path] : paths) {
    void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    void* f = h ? dlsym(h, "cblas_sgemm") : nullptr;
    if (f) libs.push_back({name, reinterpret_cast<Sgemm>(f)});
    else std::printf("(%s not installed: %s)\n", name, path);
  }
  // Y (M, N) = X (M, K) W^T: the default model's training batch (128 x 50
  // tokens) and inference batch (256 x 50), and ViT-B/16 at batch 1.
  const int shapes[][3] = {{6400, 128, 384},  {6400, 128, 128}, {6400, 128, 256}, {6400, 256, 128},
                           {12800, 128, 384}, {197, 768, 2304}, {197, 768, 3072}, {197, 3072, 768},
                           {197, 768, 768}};
  std::printf("| M | K | N |");
  for (auto& l : libs) std::printf(" %s GFLOP/s |", l.name.c_str());
  std::printf("\n|---:|---:|---:|");
  for (size_t i = 0; i < libs.size(); ++i) std::printf("---:|");
  std::printf("\n");
  for (auto& s : shapes) {
    const int M = s[0], K = s[1], N = s[2];
    std::vector<float> x(size_t(M) * K), w(size_t(N) * K), y(size_t(M) * N);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) * 0.1f;
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(i % 5) * 0.1f;
    const double flop = 2.0 * M * N * K;
    const int reps = std::max(1, int(2e9 / flop));  // about 2 GFLOP per burst
    auto burst = [&](const Lib& l) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) {
        if (!l.sgemm) vitkit::kernels::linear(x.data(), w.data(), nullptr, y.data(), M, K, N);
        else l.sgemm(kRowMajor, kNoTrans, kTrans, M, N, K, 1.f, x.data(), K, w.data(), K, 0.f, y.data(), N);
      }
      return flop * reps * 1e-9 / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<std::vector<double>> g(libs.size());
    for (auto& l : libs) burst(l);  // warm-up
    for (int r = 0; r < rounds; ++r)
      for (size_t i = 0; i < libs.size(); ++i) g[i].push_back(burst(libs[i]));
    std::printf("| %d | %d | %d |", M, K, N);
    for (auto& v : g) {
      std::sort(v.begin(), v.end());
      std::printf(" %.1f |", v[v.size() / 2]);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}

// Does the layout of a Linear's weight matter to oneDNN's matmul? Y (M, N) =
// X (M, K) W^T + b three ways, interleaved (A B C, A B C, ...), median ms:
//   nk     W as PyTorch stores it, (N, K) row-major: B = W^T is "ba" (what
//          kernels::linear passes for a weight as loaded)
//   kn     W^T stored (K, N) row-major: B is "ab"
//   packed W reordered once into the blocked layout the primitive picks
//          (weights memory desc format_tag::any; kernels::pack_weight)
//
//   build/bench/vitkit_gemm_layouts_bench [--threads N] [--rounds R] [--type f32|bf16] [--shapes M,K,N;...]
//   --type bf16: X and W in bf16 (f32 accumulation and output), where oneDNN has bf16 matmuls.
//
// 2026-12-01, AMD EPYC Zen 3 (AVX2), oneDNN 2.6.3, 2 threads, 7 rounds, f32: nk
// 155-171 GFLOP/s on ViT-B/16's four shapes at batch 1 and the default model's
// per-thread sub-batch shapes; kn and packed within 2% of nk everywhere except
// packed 197x768x3072 (1.74x slower: the layout picked for it is worse).
// 2026-12-01, AMD EPYC Zen 4 (AVX-512, AVX512-BF16), same oneDNN, 5-7 rounds:
// f32 packed 0.94-0.97x nk's time (218-230 against 207-225 GFLOP/s; 0.86-0.90x
// on the default model's shapes in a first run), bf16 packed 0.94-0.97x (443-460
// against 418-440 GFLOP/s). Hence pack_linears_for_inference (f32, in place)
// and compress/bf16's packed weights, where oneDNN's kernel is brgemm (AVX-512).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <string>
#include <vector>

#include "vitkit/core/threads.h"

namespace {

using dt = dnnl::memory::data_type;
using md = dnnl::memory::desc;

struct Variant {
  const char* name;
  dnnl::matmul prim;
  dnnl::memory a, b, bias, c;
};

// x, w, wt hold values of type t (f32, or bf16 in their first half).
Variant make(const char* name, dt t, dnnl::engine& eng, dnnl::stream& s, int M, int K, int N, std::vector<float>& x,
             std::vector<float>& w, std::vector<float>& wt, std::vector<float>& bias, std::vector<float>& y) {
  md a({M, K}, t, dnnl::memory::dims{K, 1});
  md c({M, N}, dt::f32, dnnl::memory::dims{N, 1});
  md bd({1, N}, dt::f32, dnnl::memory::dims{N, 1});
  md b_nk({K, N}, t, dnnl::memory::dims{1, K});  // W (N, K) read as W^T
  md b_kn({K, N}, t, dnnl::memory::dims{N, 1});
  md b_any({K, N}, t, dnnl::memory::format_tag::any);
  const std::string n = name;
  const md& b = n == "nk" ? b_nk : n == "kn" ? b_kn : b_any;
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, bd, c), eng);
  Variant v{name, dnnl::matmul(pd), dnnl::memory(a, eng, x.data()), {}, dnnl::memory(bd, eng, bias.data()),
            dnnl::memory(c, eng, y.data())};
  if (n == "nk") v.b = dnnl::memory(b_nk, eng, w.data());
  else if (n == "kn") v.b = dnnl::memory(b_kn, eng, wt.data());
  else {
    v.b = dnnl::memory(pd.weights_desc(), eng);  // oneDNN owns the packed copy
    dnnl::memory src(b_nk, eng, w.data());
    dnnl::reorder(src, v.b).execute(s, src, v.b);
    s.wait();
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, rounds = 7;
  std::string type_arg = "f32";
  std::string shapes_arg = "197,768,2304;197,768,768;197,768,3072;197,3072,768;1000,128,384;1000,256,128";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--shapes")) shapes_arg = argv[i + 1];
    else if (!std::strcmp(argv[i], "--type")) type_arg = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--rounds R] [--type f32|bf16] [--shapes M,K,N;...]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1 || rounds < 1) {
    std::fprintf(stderr, "--threads and --rounds must be >= 1\n");
    return 2;
  }
  if (type_arg != "f32" && type_arg != "bf16") {
    std::fprintf(stderr, "--type: '%s' is not f32 or bf16\n", type_arg.c_str());
    return 2;
  }
  const dt type = type_arg == "bf16" ? dt::bf16 : dt::f32;
  vitkit::set_num_threads(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  std::printf("%s, threads %d, %d rounds, median ms per call (GFLOP/s)\n\n| M | K | N | nk | kn | packed | packed/nk |\n"
              "|---:|---:|---:|---:|---:|---:|---:|\n", type_arg.c_str(), threads, rounds);
  size_t pos = 0;
  while (pos < shapes_arg.size()) {
    size_t end = shapes_arg.find(';', pos);
    if (end == std::string::npos) end = shapes_arg.size();
    int M = 0, K = 0, N = 0;
    if (std::sscanf(shapes_arg.substr(pos, end - pos).c_str(), "%d,%d,%d", &M, &K, &N) != 3 || M < 1 || K < 1 ||
        N < 1) {
      std::fprintf(stderr, "--shapes: '%s' is not M,K,N\n", shapes_arg.substr(pos, end - pos).c_str());
      return 2;
    }
    pos = end + 1;
    std::vector<float> x(size_t(M) * K), w(size_t(N) * K), wt(size_t(N) * K), bias(N), y(size_t(M) * N);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) * 0.1f;
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(i % 5) * 0.1f;
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) wt[size_t(k) * N + n] = w[size_t(n) * K + k];
    for (int n = 0; n < N; ++n) bias[n] = 0.01f * n;
    if (type == dt::bf16)  // the same values as bf16 (the top half of each f32), packed into the first half
      for (auto* v : {&x, &w, &wt}) {
        auto* h = reinterpret_cast<uint16_t*>(v->data());
        for (size_t i = 0; i < v->size(); ++i) {
          uint32_t bits;
          std::memcpy(&bits, &(*v)[i], 4);
          h[i] = uint16_t(bits >> 16);
        }
      }
    std::vector<Variant> vs;
    try {
      for (const char* name : {"nk", "kn", "packed"}) vs.push_back(make(name, type, eng, s, M, K, N, x, w, wt, bias, y));
    } catch (const dnnl::error& e) {
      std::fprintf(stderr, "oneDNN has no %s matmul here: %s\n", type_arg.c_str(), e.what());
      return 1;
    }
    const double flop = 2.0 * M * N * K;
    const int reps = std::max(1, int(5e8 / flop));  // about 0.5 GFLOP per burst
    auto burst = [&](Variant& v) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) {
        v.prim.execute(s, {{DNNL_ARG_SRC, v.a}, {DNNL_ARG_WEIGHTS, v.b}, {DNNL_ARG_BIAS, v.bias}, {DNNL_ARG_DST, v.c}});
        s.wait();
      }
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    };
    std::vector<std::vector<double>> t(vs.size());
    for (auto& v : vs) burst(v);  // warm-up
    for (int r = 0; r < rounds; ++r)
      for (size_t i = 0; i < vs.size(); ++i) t[i].push_back(burst(vs[i]));
    std::printf("| %d | %d | %d |", M, K, N);
    std::vector<double> med;
    for (auto& v : t) {
      std::sort(v.begin(), v.end());
      med.push_back(v[v.size() / 2]);
      std::printf(" %.3f (%.0f) |", med.back(), flop / med.back() * 1e-6);
    }
    std::printf(" %.3f |\n", med[2] / med[0]);
    std::fflush(stdout);
  }
  return 0;
}

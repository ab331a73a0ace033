// f32 against integer weights through kernels::linear: Y (M, N) = X (M, K) W^T + b,
// interleaved rounds (A B C ..., A B C ...), median ms per call and GOP/s (2 M N K).
//   f32      WeightType::F32, W as stored (the oneDNN f32 matmul)
//   ch       S8, Channel scales, dynamic 8-bit inputs, pack_weight_int8 (kernel "s16")
//   ch/plain the same with the plain operand (panels packed during each call)
//   g32, g64 S8 with Group scales (group 32, 64), packed (kernel "s16")
//   ch7      S8 Channel, dynamic 7-bit inputs, packed for 7 bits (kernel "onednn" where exact)
//   dnnl     oneDNN's u8 x s8 -> s32 matmul alone, 8-bit operands: NOT exact without
//            VNNI (saturates); for what the exact kernels cost against it
// Each integer variant includes quantizing X, dequantization and bias.
//
//   build/bench/vitkit_gemm_int8_bench [--threads 1,2] [--rounds R] [--stat median|min] [--shapes M,K,N;...]
//   --stat min: the fastest round instead of the median (on a machine shared with
//   other work, where a descheduled thread stalls a whole round).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dnnl.hpp>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"

namespace {

using namespace vitkit;
using kernels::InputQuant;
using kernels::ScaleGranularity;
using kernels::WeightOperand;
using kernels::WeightType;

struct Variant {
  std::string name;
  std::function<void()> run;
};

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> v;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    v.push_back(std::atoi(s.substr(pos, end - pos).c_str()));
    pos = end + 1;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string threads_arg = "1,2";
  int rounds = 7;
  std::string stat = "median";
  std::string shapes_arg =
      "197,768,2304;197,768,768;197,768,3072;197,3072,768;1000,128,384;1000,128,128;1000,128,256;1000,256,128";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads_arg = argv[i + 1];
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--shapes"))
      shapes_arg = argv[i + 1];
    else if (!std::strcmp(argv[i], "--stat"))
      stat = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--threads 1,2] [--rounds R] [--stat median|min] [--shapes M,K,N;...]\n",
                   argv[0]);
      return 2;
    }
  }
  if (stat != "median" && stat != "min") {
    std::fprintf(stderr, "--stat: '%s' is not median or min\n", stat.c_str());
    return 2;
  }
  const std::vector<int> thread_counts = parse_ints(threads_arg);
  if (rounds < 1 || thread_counts.empty() ||
      std::any_of(thread_counts.begin(), thread_counts.end(), [](int t) { return t < 1; })) {
    std::fprintf(stderr, "--threads and --rounds must be >= 1\n");
    return 2;
  }
  std::vector<std::array<int, 3>> shapes;
  size_t pos = 0;
  while (pos < shapes_arg.size()) {
    size_t end = shapes_arg.find(';', pos);
    if (end == std::string::npos) end = shapes_arg.size();
    int M = 0, K = 0, N = 0;
    if (std::sscanf(shapes_arg.substr(pos, end - pos).c_str(), "%d,%d,%d", &M, &K, &N) != 3 || M < 1 || K < 64 ||
        K % 64 || N < 1) {
      std::fprintf(stderr, "--shapes: '%s' is not M,K,N (K a multiple of 64)\n",
                   shapes_arg.substr(pos, end - pos).c_str());
      return 2;
    }
    shapes.push_back({M, K, N});
    pos = end + 1;
  }

  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  for (int threads : thread_counts) {
    set_num_threads(threads);
    std::printf("\nthreads %d, %d rounds, %s ms per call (GOP/s), ratio = time / f32's time\n\n", threads, rounds,
                stat.c_str());
    std::printf(
        "| M | K | N | f32 | ch | ch/plain | g32 | g64 | ch7 | dnnl (inexact) | ch/f32 | g32/f32 | g64/f32 |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (auto [M, K, N] : shapes) {
      std::mt19937 rng(1);
      std::normal_distribution<float> nd(0.f, 1.f);
      std::uniform_int_distribution<int> wd(-127, 127);
      std::vector<float> x(size_t(M) * K), wf(size_t(N) * K), bias(N), y(size_t(M) * N);
      std::vector<int8_t> w8(size_t(N) * K);
      for (auto& v : x) v = nd(rng);
      for (auto& v : wf) v = 0.05f * nd(rng);
      for (auto& v : w8) v = int8_t(wd(rng));
      for (auto& v : bias) v = 0.01f * nd(rng);
      std::vector<float> sch(N, 0.01f), sg32(size_t(N) * (K / 32), 0.01f), sg64(size_t(N) * (K / 64), 0.01f);

      WeightOperand F;
      F.N = N;
      F.K = K;
      F.data = wf.data();
      WeightOperand ch;
      ch.type = WeightType::S8;
      ch.N = N;
      ch.K = K;
      ch.data = w8.data();
      ch.granularity = ScaleGranularity::Channel;
      ch.scales = sch.data();
      WeightOperand g32 = ch, g64 = ch;
      g32.granularity = g64.granularity = ScaleGranularity::Group;
      g32.group = 32;
      g32.scales = sg32.data();
      g64.group = 64;
      g64.scales = sg64.data();
      const auto pch = kernels::pack_weight_int8(ch), pg32 = kernels::pack_weight_int8(g32),
                 pg64 = kernels::pack_weight_int8(g64), pch7 = kernels::pack_weight_int8(ch, 7);
      WeightOperand chp = ch, g32p = g32, g64p = g64, ch7p = ch;
      chp.packed = pch.get();
      g32p.packed = pg32.get();
      g64p.packed = pg64.get();
      ch7p.packed = pch7.get();
      InputQuant q7;
      q7.bits = 7;

      // oneDNN's u8 x s8 -> s32 alone (8-bit operands; saturating without VNNI)
      using dt = dnnl::memory::data_type;
      using md = dnnl::memory::desc;
      std::vector<uint8_t> xu(size_t(M) * K);
      for (auto& v : xu) v = uint8_t(rng());
      std::vector<int32_t> yi(size_t(M) * N);
      md a({M, K}, dt::u8, dnnl::memory::dims{K, 1}), b({K, N}, dt::s8, dnnl::memory::dims{1, K}),
          c({M, N}, dt::s32, dnnl::memory::dims{N, 1});
      dnnl::matmul raw(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), eng));
      dnnl::memory ma(a, eng, xu.data()), mb(b, eng, w8.data()), mc(c, eng, yi.data());

      std::vector<Variant> vs = {
          {"f32", [&] { kernels::linear(x.data(), F, bias.data(), y.data(), M); }},
          {"ch", [&] { kernels::linear(x.data(), chp, bias.data(), y.data(), M); }},
          {"ch/plain", [&] { kernels::linear(x.data(), ch, bias.data(), y.data(), M); }},
          {"g32", [&] { kernels::linear(x.data(), g32p, bias.data(), y.data(), M); }},
          {"g64", [&] { kernels::linear(x.data(), g64p, bias.data(), y.data(), M); }},
          {"ch7", [&] { kernels::linear(x.data(), ch7p, bias.data(), y.data(), M, Activation::None, false, q7); }},
          {"dnnl", [&] {
             raw.execute(strm, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
             strm.wait();
           }}};
      const double ops = 2.0 * M * N * K;
      const int reps = std::max(1, int(3e8 / ops));  // about 0.3 GOP per burst
      auto burst = [&](Variant& v) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < reps; ++i) v.run();
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
      };
      std::vector<std::vector<double>> t(vs.size());
      for (auto& v : vs) burst(v);  // warm-up: primitives, scratch
      for (int r = 0; r < rounds; ++r)
        for (size_t i = 0; i < vs.size(); ++i) t[i].push_back(burst(vs[i]));
      std::vector<double> med;
      std::printf("| %d | %d | %d |", M, K, N);
      for (auto& v : t) {
        std::sort(v.begin(), v.end());
        med.push_back(stat == "min" ? v.front() : v[v.size() / 2]);
        std::printf(" %.3f (%.0f) |", med.back(), ops / med.back() * 1e-6);
      }
      std::printf(" %.2f | %.2f | %.2f |\n", med[1] / med[0], med[3] / med[0], med[4] / med[0]);
      std::fflush(stdout);
      if (std::string(kernels::int8_kernel(ch7p, q7)) != "onednn" && threads == thread_counts.front() &&
          M == shapes.front()[0] && K == shapes.front()[1] && N == shapes.front()[2])
        std::printf("(ch7 runs the s16 kernel here: oneDNN's is not exact for it on this CPU)\n");
    }
  }
  return 0;
}

// Micro-benchmarks of vitkit's own kernels at the shapes of the default model
// (batch 128 x 50 tokens, dim 128, 4 heads, mlp 256) and of ViT-B/16 (197
// tokens, dim 768, 12 heads). Run: build/bench/vitkit_kernels_bench
#include <benchmark/benchmark.h>

#include <vector>

#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/activations.h"
#include "vitkit/kernels/attention.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/kernels/layernorm.h"

using namespace vitkit;

static std::vector<float> randv(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal();
  return v;
}

static void BM_GeluForward(benchmark::State& st) {
  set_num_threads(int(st.range(1)));
  const int64_t n = st.range(0);
  auto x = randv(n, 1);
  std::vector<float> y(n);
  for (auto _ : st) kernels::act_forward(Activation::Gelu, x.data(), y.data(), n);
  st.SetItemsProcessed(st.iterations() * n);
}
BENCHMARK(BM_GeluForward)->Args({128 * 50 * 256, 1})->Args({128 * 50 * 256, 2});

static void BM_GeluBackward(benchmark::State& st) {
  set_num_threads(int(st.range(1)));
  const int64_t n = st.range(0);
  auto x = randv(n, 1), g = randv(n, 2);
  std::vector<float> dx(n);
  for (auto _ : st) kernels::act_backward(Activation::Gelu, x.data(), g.data(), dx.data(), n);
  st.SetItemsProcessed(st.iterations() * n);
}
BENCHMARK(BM_GeluBackward)->Args({128 * 50 * 256, 1})->Args({128 * 50 * 256, 2});

static void BM_LayerNormForward(benchmark::State& st) {
  set_num_threads(int(st.range(2)));
  const int64_t N = st.range(0), D = st.range(1);
  auto x = randv(N * D, 1), w = randv(D, 2), b = randv(D, 3);
  std::vector<float> y(N * D), m(N), r(N);
  for (auto _ : st) kernels::layernorm_forward(x.data(), w.data(), b.data(), y.data(), m.data(), r.data(), N, D, 1e-6f);
  st.SetBytesProcessed(st.iterations() * N * D * 8);
}
BENCHMARK(BM_LayerNormForward)->Args({6400, 128, 1})->Args({6400, 128, 2})->Args({197, 768, 2});

static void BM_AttentionForward(benchmark::State& st) {
  set_num_threads(int(st.range(4)));
  const int64_t B = st.range(0), T = st.range(1), D = st.range(2), H = st.range(3);
  auto qkv = randv(B * T * 3 * D, 1);
  std::vector<float> out(B * T * D), lse(B * H * T);
  for (auto _ : st) kernels::attention_forward(qkv.data(), out.data(), lse.data(), B, T, H, D / H);
  st.counters["GFLOP/s"] = benchmark::Counter(double(4 * B * T * T * D) * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttentionForward)->Args({128, 50, 128, 4, 1})->Args({128, 50, 128, 4, 2})->Args({1, 197, 768, 12, 2})
    ->Args({1, 577, 1024, 16, 2});

static void BM_AttentionBackward(benchmark::State& st) {
  set_num_threads(int(st.range(4)));
  const int64_t B = st.range(0), T = st.range(1), D = st.range(2), H = st.range(3);
  auto qkv = randv(B * T * 3 * D, 1), dout = randv(B * T * D, 2);
  std::vector<float> out(B * T * D), lse(B * H * T), dqkv(B * T * 3 * D);
  kernels::attention_forward(qkv.data(), out.data(), lse.data(), B, T, H, D / H);
  for (auto _ : st)
    kernels::attention_backward(dout.data(), qkv.data(), out.data(), lse.data(), dqkv.data(), B, T, H, D / H);
  st.counters["GFLOP/s"] = benchmark::Counter(double(8 * B * T * T * D) * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AttentionBackward)->Args({128, 50, 128, 4, 1})->Args({128, 50, 128, 4, 2});

static void BM_Gemm(benchmark::State& st) {
  set_num_threads(int(st.range(3)));
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto a = randv(M * K, 1), w = randv(N * K, 2);
  std::vector<float> c(M * N);
  for (auto _ : st) kernels::linear(a.data(), w.data(), nullptr, c.data(), M, K, N);
  st.counters["GFLOP/s"] = benchmark::Counter(double(2 * M * N * K) * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Gemm)->Args({6400, 384, 128, 1})->Args({6400, 384, 128, 2})->Args({197, 2304, 768, 2})
    ->Args({197, 3072, 768, 2});

// fc1 with its GELU (the default model: 128 -> 256), three ways: mode 0 no
// activation (the bare GEMM), 1 oneDNN's gelu_erf post-op (what inference
// runs), 2 the bare GEMM then vitkit's act_forward over the output.
static void BM_LinearGelu(benchmark::State& st) {
  set_num_threads(int(st.range(3)));
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2), mode = st.range(4);
  auto a = randv(M * K, 1), w = randv(N * K, 2), b = randv(N, 3);
  std::vector<float> c(M * N);
  for (auto _ : st) {
    kernels::linear(a.data(), w.data(), b.data(), c.data(), M, K, N,
                    mode == 1 ? Activation::Gelu : Activation::None);
    if (mode == 2) kernels::act_forward(Activation::Gelu, c.data(), c.data(), M * N);
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(2 * M * N * K) * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LinearGelu)->ArgNames({"M", "N", "K", "threads", "mode"})
    ->Args({1000, 256, 128, 2, 0})->Args({1000, 256, 128, 2, 1})->Args({1000, 256, 128, 2, 2})
    ->Args({12800, 256, 128, 2, 0})->Args({12800, 256, 128, 2, 1})->Args({12800, 256, 128, 2, 2});

// The two products of a linear layer's backward pass (training shapes of the
// default model: 6400 token rows, 128 -> 384): dX = dY W and dW += dY^T X.
static void BM_GemmBackward(benchmark::State& st) {
  set_num_threads(int(st.range(3)));
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);  // Y (M, N) = X (M, K) W^T
  auto dy = randv(M * N, 1), w = randv(N * K, 2), x = randv(M * K, 3);
  std::vector<float> dx(M * K), dw(N * K);
  for (auto _ : st) {
    if (st.range(4) == 0) kernels::gemm(false, false, M, K, N, 1.f, dy.data(), N, w.data(), K, 0.f, dx.data(), K);
    else kernels::gemm(true, false, N, K, M, 1.f, dy.data(), N, x.data(), K, 1.f, dw.data(), K);
  }
  st.counters["GFLOP/s"] = benchmark::Counter(double(2 * M * N * K) * st.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmBackward)->ArgNames({"M", "N", "K", "threads", "dW"})
    ->Args({6400, 384, 128, 2, 0})->Args({6400, 384, 128, 2, 1})->Args({6400, 128, 256, 2, 0})
    ->Args({6400, 128, 256, 2, 1});

BENCHMARK_MAIN();

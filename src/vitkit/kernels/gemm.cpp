#include "vitkit/kernels/gemm.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "vitkit/core/error.h"

namespace vitkit::kernels {

namespace {

using dt = dnnl::memory::data_type;

// threads: OpenMP's thread count when the primitive is created. oneDNN fixes a
// primitive's parallelisation then (measured: one created under 1 thread stays
// on 1 after set_num_threads(2)), so each count gets its own primitive.
struct Key {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  float alpha, beta;
  bool bias;
  Epilogue act;
  dt type;
  int threads;
  auto tie() const { return std::tie(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, bias, act, type, threads); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

struct Entry {
  dnnl::matmul prim;
  dnnl::memory::desc a, b, c, bias, scratch;
};

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::map<Key, Entry> cache;
  std::mutex mu;
};

Context& ctx() {
  static Context c;
  return c;
}

dnnl::algorithm eltwise_alg(Epilogue a) {
  switch (a) {
    case Epilogue::Gelu: return dnnl::algorithm::eltwise_gelu_erf;
    case Epilogue::GeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    default: return dnnl::algorithm::eltwise_relu;
  }
}

Entry& lookup(const Key& k) {
  Context& c = ctx();
  auto it = c.cache.find(k);
  if (it != c.cache.end()) return it->second;
  using md = dnnl::memory::desc;
  Entry e;
  e.a = md({k.M, k.K}, k.type, k.ta ? dnnl::memory::dims{1, k.lda} : dnnl::memory::dims{k.lda, 1});
  e.b = md({k.K, k.N}, k.type, k.tb ? dnnl::memory::dims{1, k.ldb} : dnnl::memory::dims{k.ldb, 1});
  e.c = md({k.M, k.N}, dt::f32, dnnl::memory::dims{k.ldc, 1});
  e.bias = k.bias ? md({1, k.N}, dt::f32, dnnl::memory::dims{k.N, 1}) : md();
  dnnl::primitive_attr attr;
  if (k.alpha != 1.f) attr.set_output_scales(0, {k.alpha});
  dnnl::post_ops po;
  if (k.beta != 0.f) po.append_sum(k.beta);
  if (k.act != Epilogue::None) po.append_eltwise(1.f, eltwise_alg(k.act), 0.f, 0.f);
  attr.set_post_ops(po);
  // Each calling thread brings its own scratchpad (thread_scratch): oneDNN's
  // library-managed one belongs to the creating thread, and two threads running
  // one primitive at once (vit_infer per image) would share it.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  try {
    dnnl::matmul::desc d = k.bias ? dnnl::matmul::desc(e.a, e.b, e.bias, e.c) : dnnl::matmul::desc(e.a, e.b, e.c);
    dnnl::matmul::primitive_desc pd(d, attr, c.engine);
    e.scratch = pd.scratchpad_desc();
    e.prim = dnnl::matmul(pd);
  } catch (const dnnl::error& err) {
    fail("oneDNN matmul (", k.M, "x", k.N, "x", k.K, ") could not be created: ", err.what());
  }
  return c.cache.emplace(k, std::move(e)).first->second;
}

// oneDNN runs a primitive on the calling thread alone inside a parallel region
// (vit_infer's per-image mode), so such calls get primitives made for 1 thread.
int gemm_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

// A stream per thread: threads of a parallel region may execute primitives at once.
dnnl::stream& thread_stream() {
  thread_local dnnl::stream s{ctx().engine};
  return s;
}

// This thread's scratchpad for oneDNN: grows to the largest size asked for.
void* thread_scratch(size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t size = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf b;
  if (bytes > b.size) {
    std::free(b.p);
    b.size = (bytes + 4095) / 4096 * 4096;
    b.p = std::aligned_alloc(4096, b.size);
    if (!b.p) {
      b.size = 0;
      throw std::bad_alloc();
    }
  }
  return b.p;
}

void run(const Key& k, const void* A, const void* B, float* C, const float* bias) {
  if (k.M == 0 || k.N == 0) return;
  Context& c = ctx();
  std::unique_lock<std::mutex> lock(c.mu);
  Entry& e = lookup(k);
  dnnl::memory ma(e.a, c.engine, const_cast<void*>(A));
  dnnl::memory mb(e.b, c.engine, const_cast<void*>(B));
  dnnl::memory mc(e.c, c.engine, C);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(e.bias, c.engine, const_cast<float*>(bias)));
  if (const size_t n = e.scratch.get_size())
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(e.scratch, c.engine, thread_scratch(n)));
  dnnl::matmul prim = e.prim;
  lock.unlock();
  dnnl::stream& s = thread_stream();
  prim.execute(s, args);
  s.wait();
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias, Epilogue act) {
  Key k{ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, bias != nullptr, act, dt::f32, gemm_threads()};
  run(k, A, B, C, bias);
}

namespace {

// Whether this oneDNN can create bf16 matmuls on this CPU (it needs at least
// AVX-512 for them: on an AVX2-only CPU every bf16 primitive is refused).
bool onednn_has_bf16() {
  static const bool ok = [] {
    try {
      Context& c = ctx();
      using md = dnnl::memory::desc;
      md a({8, 16}, dt::bf16, dnnl::memory::dims{16, 1}), b({16, 8}, dt::bf16, dnnl::memory::dims{8, 1}),
          d({8, 8}, dt::f32, dnnl::memory::dims{8, 1});
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, d), c.engine);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

// The bf16 values of a (rows, cols) matrix with leading dimension ld, widened
// to f32 (exact: a bf16 is the top half of an f32) into out.
void widen_bf16(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld, std::vector<float>& out) {
  const int64_t n = rows > 0 ? (rows - 1) * ld + cols : 0;
  out.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(src[i]) << 16;
    std::memcpy(&out[i], &bits, 4);
  }
}

}  // namespace

bool gemm_bf16_native() { return onednn_has_bf16(); }

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias,
               Epilogue act) {
  if (!onednn_has_bf16()) {
    // The same products of bf16 values with f32 accumulation, through the f32
    // GEMM: bf16's numerics without its speed.
    thread_local std::vector<float> a, b;
    widen_bf16(A, ta ? K : M, ta ? M : K, lda, a);
    widen_bf16(B, tb ? N : K, tb ? K : N, ldb, b);
    gemm(ta, tb, M, N, K, alpha, a.data(), lda, b.data(), ldb, beta, C, ldc, bias, act);
    return;
  }
  Key k{ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, bias != nullptr, act, dt::bf16, gemm_threads()};
  run(k, A, B, C, bias);
}

int gemm_cache_size() {
  std::lock_guard<std::mutex> lock(ctx().mu);
  return static_cast<int>(ctx().cache.size());
}

}  // namespace vitkit::kernels

#include "vitkit/kernels/gemm.h"

#include <omp.h>

#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <tuple>

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
  dnnl::memory::desc a, b, c, bias;
};

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
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
  try {
    dnnl::matmul::desc d = k.bias ? dnnl::matmul::desc(e.a, e.b, e.bias, e.c) : dnnl::matmul::desc(e.a, e.b, e.c);
    dnnl::matmul::primitive_desc pd(d, attr, c.engine);
    e.prim = dnnl::matmul(pd);
  } catch (const dnnl::error& err) {
    fail("oneDNN matmul (", k.M, "x", k.N, "x", k.K, ") could not be created: ", err.what());
  }
  return c.cache.emplace(k, std::move(e)).first->second;
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
  dnnl::matmul prim = e.prim;
  lock.unlock();
  prim.execute(c.stream, args);
  c.stream.wait();
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias, Epilogue act) {
  Key k{ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, bias != nullptr, act, dt::f32, omp_get_max_threads()};
  run(k, A, B, C, bias);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias,
               Epilogue act) {
  Key k{ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, bias != nullptr, act, dt::bf16, omp_get_max_threads()};
  run(k, A, B, C, bias);
}

int gemm_cache_size() {
  std::lock_guard<std::mutex> lock(ctx().mu);
  return static_cast<int>(ctx().cache.size());
}

}  // namespace vitkit::kernels

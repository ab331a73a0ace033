#include "vitkit/kernels/gemm.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <dnnl.hpp>
#include <map>
#include <optional>
#include <string>
#include <mutex>
#include <tuple>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/kernels/gemm_detail.h"

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
  Activation act;
  dt type;
  int threads;
  bool packed = false;  // B is a PackedWeight (its layout is fixed by K, N and the CPU)
  bool int8 = false;    // A u8, B s8, C s32 (type is then ignored)
  auto tie() const {
    return std::tie(ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, bias, act, type, threads, packed, int8);
  }
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

dnnl::algorithm eltwise_alg(Activation a) {
  switch (a) {
    case Activation::Gelu: return dnnl::algorithm::eltwise_gelu_erf;
    case Activation::GeluTanh: return dnnl::algorithm::eltwise_gelu_tanh;
    default: return dnnl::algorithm::eltwise_relu;
  }
}

// packed_b: B's layout when k.packed.
Entry& lookup(const Key& k, const dnnl::memory::desc* packed_b) {
  Context& c = ctx();
  auto it = c.cache.find(k);
  if (it != c.cache.end()) {
    check(!k.packed || it->second.b == *packed_b, "gemm: packed weights (", k.N, "x", k.K,
          ") in two different layouts");
    return it->second;
  }
  using md = dnnl::memory::desc;
  Entry e;
  const dt ta = k.int8 ? dt::u8 : k.type, tb = k.int8 ? dt::s8 : k.type, tc = k.int8 ? dt::s32 : dt::f32;
  e.a = md({k.M, k.K}, ta, k.ta ? dnnl::memory::dims{1, k.lda} : dnnl::memory::dims{k.lda, 1});
  e.b = k.packed ? *packed_b
                 : md({k.K, k.N}, tb, k.tb ? dnnl::memory::dims{1, k.ldb} : dnnl::memory::dims{k.ldb, 1});
  e.c = md({k.M, k.N}, tc, dnnl::memory::dims{k.ldc, 1});
  e.bias = k.bias ? md({1, k.N}, dt::f32, dnnl::memory::dims{k.N, 1}) : md();
  dnnl::primitive_attr attr;
  if (k.alpha != 1.f) attr.set_output_scales(0, {k.alpha});
  dnnl::post_ops po;
  if (k.beta != 0.f) po.append_sum(k.beta);
  if (k.act != Activation::None) po.append_eltwise(1.f, eltwise_alg(k.act), 0.f, 0.f);
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

void run(const Key& k, const void* A, const void* B, void* C, const float* bias,
         const dnnl::memory::desc* packed_b = nullptr) {
  if (k.M == 0 || k.N == 0) return;
  Context& c = ctx();
  std::unique_lock<std::mutex> lock(c.mu);
  Entry& e = lookup(k, packed_b);
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

// oneDNN runs a primitive on the calling thread alone inside a parallel region
// (vit_infer's per-image mode), so such calls get primitives made for 1 thread.
int gemm_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

AlignedBytes aligned_bytes(size_t bytes) {
  AlignedBytes p(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + (bytes == 0 ? 64 : 0)));
  if (!p) throw std::bad_alloc();
  return p;
}

void matmul_u8s8s32(const uint8_t* A, const int8_t* W, int32_t* C, int64_t M, int64_t N, int64_t K) {
  Key k{false, true, M, N, K, K, K, N, 1.f, 0.f, false, Activation::None, dt::s8, gemm_threads()};
  k.int8 = true;
  run(k, A, W, C, nullptr);
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const float* bias, Activation act) {
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
               Activation act) {
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

// ---- packed weights ----------------------------------------------------------

namespace {

// The weights layout oneDNN's matmul picks for (K, N) of this type ("any"),
// when it is a brgemm kernel's blocked layout (AVX-512). The choice does not
// depend on M or the thread count (checked on AVX-512 for ViT shapes, M
// 1..1576, 1 and 2 threads); M = 256 stands for all. nullopt: keep W as stored.
std::optional<dnnl::memory::desc> packed_layout(int64_t N, int64_t K, dt type) {
  // Measured on AVX2 (Zen 3): oneDNN's blocked choice gained nothing there and
  // was 1.74x slower on one ViT shape, so only AVX-512 CPUs pack.
  if (!__builtin_cpu_supports("avx512f")) return std::nullopt;
  using md = dnnl::memory::desc;
  Context& c = ctx();
  const int64_t M = 256;
  md a({M, K}, type, dnnl::memory::dims{K, 1}), d({M, N}, dt::f32, dnnl::memory::dims{N, 1});
  md plain({K, N}, type, dnnl::memory::dims{1, K});
  md any({K, N}, type, dnnl::memory::format_tag::any);
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, any, d), c.engine);
    const std::string impl = pd.impl_info_str();
    if (impl.rfind("brg", 0) != 0 || pd.weights_desc() == plain) return std::nullopt;
    return pd.weights_desc();
  } catch (const dnnl::error&) {
    return std::nullopt;
  }
}

// W (N, K) of this type packed into a new buffer, or null (see packed_layout).
std::shared_ptr<PackedWeight> pack(const void* W, int64_t N, int64_t K, dt type) {
  check(N > 0 && K > 0, "pack_weight: empty weight (", N, "x", K, ")");
  Context& c = ctx();
  std::lock_guard<std::mutex> lock(c.mu);
  const std::optional<dnnl::memory::desc> layout = packed_layout(N, K, type);
  if (!layout) return nullptr;
  auto p = std::make_shared<PackedWeight>();
  p->N = N;
  p->K = K;
  p->type = type;
  p->desc = *layout;
  const size_t bytes = layout->get_size();
  p->own = aligned_bytes(bytes);
  dnnl::memory src({{K, N}, type, dnnl::memory::dims{1, K}}, c.engine, const_cast<void*>(W)),
      dst(*layout, c.engine, p->own.get());
  dnnl::stream s(c.engine);
  dnnl::reorder(src, dst).execute(s, src, dst);
  s.wait();
  return p;
}

void run_packed(const void* X, const PackedWeight& W, const void* data, const float* bias, float* Y, int64_t M,
                Activation act, bool accumulate) {
  Key k{false, true, M, W.N, W.K, W.K, W.K, W.N, 1.f, accumulate ? 1.f : 0.f, bias != nullptr, act, W.type,
        gemm_threads(), true};
  run(k, X, data, Y, bias, &W.desc);
}

}  // namespace

std::shared_ptr<const PackedWeight> pack_weight(float* W, int64_t N, int64_t K, bool in_place) {
  auto p = pack(W, N, K, dt::f32);
  if (p && in_place && p->desc.get_size() == size_t(N) * size_t(K) * sizeof(float)) {
    std::memcpy(W, p->own.get(), p->desc.get_size());
    p->own.reset();
  }
  return p;
}

std::shared_ptr<const PackedWeight> pack_weight_bf16(const uint16_t* W, int64_t N, int64_t K) {
  return onednn_has_bf16() ? pack(W, N, K, dt::bf16) : nullptr;
}

bool packed_in_place(const PackedWeight& w) { return !w.own && !w.int8; }

void unpack_weight(const PackedWeight& W, const float* in_place_data, float* out) {
  check(W.type == dt::f32 && !W.int8, "unpack_weight: the weight is not packed f32");
  Context& c = ctx();
  std::lock_guard<std::mutex> lock(c.mu);
  const void* data = W.own ? W.own.get() : in_place_data;
  dnnl::memory src(W.desc, c.engine, const_cast<void*>(data)),
      dst({{W.K, W.N}, dt::f32, dnnl::memory::dims{1, W.K}}, c.engine, out);
  dnnl::stream s(c.engine);
  dnnl::reorder(src, dst).execute(s, src, dst);
  s.wait();
}

void unpack_weight_bf16(const PackedWeight& W, uint16_t* out) {
  check(W.type == dt::bf16 && W.own, "unpack_weight_bf16: the weight is not packed bf16");
  Context& c = ctx();
  std::lock_guard<std::mutex> lock(c.mu);
  dnnl::memory src(W.desc, c.engine, W.own.get()),
      dst({{W.K, W.N}, dt::bf16, dnnl::memory::dims{1, W.K}}, c.engine, out);
  dnnl::stream s(c.engine);
  dnnl::reorder(src, dst).execute(s, src, dst);
  s.wait();
}

size_t packed_bytes(const PackedWeight& W) {
  if (W.int8) return W.int8->size + sizeof(int32_t) * W.int8->rowsum.size();
  return W.desc.get_size();
}

void linear_packed(const float* X, const PackedWeight& W, const float* in_place_data, const float* bias, float* Y,
                   int64_t M, Activation act, bool accumulate) {
  check(W.type == dt::f32 && !W.int8, "linear_packed: the weight is not packed f32");
  run_packed(X, W, W.own ? W.own.get() : in_place_data, bias, Y, M, act, accumulate);
}

void linear_packed_bf16(const uint16_t* X, const PackedWeight& W, const float* bias, float* Y, int64_t M,
                        Activation act, bool accumulate) {
  check(W.type == dt::bf16 && W.own && !W.int8, "linear_packed_bf16: the weight is not packed bf16");
  run_packed(X, W, W.own.get(), bias, Y, M, act, accumulate);
}

// ---- linear over a WeightOperand ----------------------------------------------

namespace {

const char* type_name(WeightType t) {
  switch (t) {
    case WeightType::F32: return "F32";
    case WeightType::BF16: return "BF16";
    case WeightType::S8: return "S8";
    case WeightType::U8: return "U8";
  }
  return "?";
}

// f32 -> bf16 bits, round to nearest even, NaN kept quiet: core/tensor's
// float_to_bf16, inline so that the conversion loop vectorises.
inline uint16_t to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace

void linear(const float* X, const WeightOperand& W, const float* bias, float* Y, int64_t M, Activation act,
            bool accumulate, const InputQuant& xq) {
  check(W.N > 0 && W.K > 0, "linear: empty ", type_name(W.type), " weight (", W.N, "x", W.K, ")");
  check(M >= 0, "linear: negative row count M = ", M);
  if (W.type == WeightType::S8 || W.type == WeightType::U8) {
    linear_int8(X, W, bias, Y, M, act, accumulate, xq);
    return;
  }
  check(!W.scales && !W.zeros, "linear: a ", type_name(W.type), " weight (", W.N, "x", W.K,
        ") has scales or zero points; they are for S8/U8 weights only");
  const int64_t N = W.N, K = W.K;
  if (W.packed) {
    const PackedWeight& P = *W.packed;
    const dt want = W.type == WeightType::F32 ? dt::f32 : dt::bf16;
    check(P.type == want && !P.int8 && P.N == N && P.K == K, "linear: the packed weight (", P.N, "x", P.K,
          ") is not a packed ", type_name(W.type), " ", N, "x", K, " weight (pack_weight for F32, ",
          "pack_weight_bf16 for BF16)");
    check(P.own || W.data, "linear: the packed F32 weight (", N, "x", K, ") lives in place, but WeightOperand::data ",
          "(where pack_weight wrote it) is null");
  } else {
    check(W.data != nullptr, "linear: ", type_name(W.type), " weight (", N, "x", K, ") has no data");
  }
  if (M == 0) return;
  if (W.type == WeightType::F32) {
    if (W.packed)
      linear_packed(X, *W.packed, static_cast<const float*>(W.data), bias, Y, M, act, accumulate);
    else
      gemm(false, true, M, N, K, 1.f, X, K, static_cast<const float*>(W.data), K, accumulate ? 1.f : 0.f, Y, N,
           bias, act);
    return;
  }
  // BF16: X rounded to bf16 into this thread's buffer (grows to the largest
  // input; calls on one thread do not nest).
  thread_local std::vector<uint16_t> xb;
  const int64_t n = M * K;
  if (xb.size() < static_cast<size_t>(n)) xb.resize(static_cast<size_t>(n));
  uint16_t* xp = xb.data();
  const int nt = gemm_threads();
#pragma omp parallel for simd num_threads(nt) if (n > 65536 && nt > 1)
  for (int64_t i = 0; i < n; ++i) xp[i] = to_bf16(X[i]);
  if (W.packed)
    linear_packed_bf16(xp, *W.packed, bias, Y, M, act, accumulate);
  else
    gemm_bf16(false, true, M, N, K, 1.f, xp, K, static_cast<const uint16_t*>(W.data), K, accumulate ? 1.f : 0.f,
              Y, N, bias, act);
}

int gemm_cache_size() {
  std::lock_guard<std::mutex> lock(ctx().mu);
  return static_cast<int>(ctx().cache.size());
}

}  // namespace vitkit::kernels

#include "vitkit/compress/bf16.h"

#include <cpuid.h>

#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/model/linear_apply.h"

namespace vitkit {

namespace {

// W (out, in) as bf16, packed once into oneDNN's bf16 layout where it has one
// (native bf16: 0.94-0.96x the time of the plain bf16 matrix on ViT shapes,
// bench/gemm_layouts_bench.cpp --type bf16); X converted per call into this
// thread's buffer.
class Bf16Linear : public LinearRepr {
 public:
  Bf16Linear(const float* w, int in, int out) : in_(in), out_(out), w_(size_t(in) * out) {
    convert_from_f32(DType::BF16, w, w_.data(), w_.size());
    packed_ = kernels::pack_weight_bf16(w_.data(), out_, in_);
    if (packed_) std::vector<uint16_t>().swap(w_);  // the packed copy replaces it
  }
  std::string kind() const override { return "bf16"; }
  void forward(const float* X, float* Y, int64_t M, const float* bias, Activation act,
               bool accumulate) const override {
    thread_local std::vector<uint16_t> xb;  // grows to the largest input; calls on one thread do not nest
    const int64_t n = M * in_;
    if (xb.size() < static_cast<size_t>(n)) xb.resize(static_cast<size_t>(n));
    uint16_t* xp = xb.data();
    int nt = num_threads();
#pragma omp parallel for simd num_threads(nt) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) xp[i] = float_to_bf16(X[i]);
    if (packed_)
      kernels::linear_packed_bf16(xp, *packed_, bias, Y, M, act, accumulate);
    else
      kernels::gemm_bf16(false, true, M, out_, in_, 1.f, xp, in_, w_.data(), in_, accumulate ? 1.f : 0.f, Y, out_,
                         bias, act);
  }

 private:
  int in_, out_;
  std::vector<uint16_t> w_;  // plain, when not packed
  std::shared_ptr<const kernels::PackedWeight> packed_;
};

}  // namespace

void convert_linears_to_bf16(ViT& m) {
  std::vector<float> buf;  // a packed weight's plain copy
  for (Linear* l : m.linears()) l->repr = std::make_shared<Bf16Linear>(plain_weight(m, *l, buf), l->in, l->out);
}

bool cpu_has_native_bf16() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  const bool avx512_bf16 = a & (1u << 5);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return avx512_bf16;
  const bool amx_bf16 = d & (1u << 22);
  return avx512_bf16 || amx_bf16;
}

}  // namespace vitkit

#include "vitkit/repr/f16.h"

#include <immintrin.h>

#include <cmath>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"
#include "vitkit/kernels/gemm.h"

namespace vitkit {

F16Linear::F16Linear(const float* W, int in, int out, Tensor bias) : SteRepr(in, out, std::move(bias)) {
  set_weight(W);
}

F16Linear::F16Linear(Tensor W, Tensor bias)
    : SteRepr(int(W.ndim() == 2 ? W.dim(1) : 0), int(W.ndim() == 2 ? W.dim(0) : 0), std::move(bias)),
      w_(std::move(W)) {
  check(w_.dtype() == DType::F16, "F16Linear: the weight is ", dtype_name(w_.dtype()), ", not F16");
}

void F16Linear::set_weight(const float* W) {
  const size_t n = size_t(in_) * size_t(out_);
  for (size_t i = 0; i < n; ++i)
    check(std::fabs(W[i]) <= 65504.f, "f16: weight value ", W[i], " is outside the half range (+-65504)");
  Tensor w = Tensor::empty({out_, in_}, DType::F16);
  convert_from_f32(DType::F16, W, w.raw(), n);
  w_ = w;
}

void F16Linear::widen(float* out) const {
  const uint16_t* h = w_.data<uint16_t>();
  const int64_t n = int64_t(in_) * out_;
  const int nt = num_threads();
#if defined(__F16C__)
  const int64_t n8 = n / 8 * 8;
#pragma omp parallel for num_threads(nt) if (n > 65536)
  for (int64_t i = 0; i < n8; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  for (int64_t i = n8; i < n; ++i) out[i] = half_to_float(h[i]);
#else
#pragma omp parallel for num_threads(nt) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(h[i]);
#endif
}

// W widened (out, in) in this thread's scratch; Y = act(X W^T + b (+ Y))
void F16Linear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  float* w = thread_scratch_f32(int64_t(in_) * out_, 1);
  widen(w);
  kernels::linear(X, f32_operand(w, in_, out_), bias(), Y, M, act, accumulate);
}

const float* F16Linear::plain_weight(std::vector<float>& scratch) const {
  scratch.resize(size_t(in_) * size_t(out_));
  widen(scratch.data());
  return scratch.data();
}

std::unique_ptr<LinearRepr> F16Linear::clone() const {
  auto c = std::make_unique<F16Linear>(w_.clone(), bias_.defined() ? bias_.clone() : Tensor());
  copy_training_state(*c);
  return c;
}

std::unique_ptr<LinearRepr> load_f16_linear(const ReprFile& f) {
  Tensor w = read_checked(f, "weight", {DType::F16}, weight_shapes(f));
  return std::make_unique<F16Linear>(w.reshape({f.out, f.in}), read_bias(f));
}

}  // namespace vitkit

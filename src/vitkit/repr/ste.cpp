#include "vitkit/repr/ste.h"

#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/kernels/gemm.h"

namespace vitkit {

void SteRepr::begin_training() {
  if (latent_.defined()) return;
  std::vector<float> scratch;
  const float* w = plain_weight(scratch);
  latent_ = Tensor::empty({out_, in_});
  std::memcpy(latent_.f32(), w, sizeof(float) * size_t(in_) * size_t(out_));
}

void SteRepr::after_step() {
  if (latent_.defined()) set_weight(latent_.f32());
}

std::vector<ReprTensor> SteRepr::tensors() const {
  std::vector<ReprTensor> v = own_tensors();
  if (latent_.defined()) {
    v.push_back({"weight_latent", latent_, true, true, true, false});
    for (ReprTensor& t : training_tensors()) v.push_back(std::move(t));
  }
  add_bias(v);
  return v;
}

void SteRepr::backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                       float* const* grads) const {
  check(latent_.defined(), "a '", kind(), "' layer's backward needs begin_training() first");
  std::vector<float> scratch;
  const float* W = plain_weight(scratch);  // Wr (out, in)
  // dX (M, in) = dY (M, out) Wr
  if (dX) kernels::gemm(false, false, M, in_, out_, 1.f, dY, out_, W, in_, accumulate ? 1.f : 0.f, dX, in_);
  // dlatent (out, in) += dY^T T(X)
  if (grads[0]) kernels::gemm(true, false, out_, in_, M, 1.f, dY, out_, product_input(X, M), in_, 1.f, grads[0], in_);
  if (bias_.defined()) bias_backward(dY, M, grads[1 + training_tensors().size()]);
}

void SteRepr::copy_training_state(SteRepr& to) const {
  if (latent_.defined()) to.latent_ = latent_.clone();
}

}  // namespace vitkit

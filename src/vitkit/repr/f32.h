// The dense f32 representation: the weight as a plain f32 matrix, trained
// directly. Every layer starts in it.
#pragma once
#include "vitkit/repr/linear_repr.h"
#include "vitkit/repr/registry.h"

namespace vitkit {

class F32Linear : public LinearRepr {
 public:
  // W: f32 with in*out values, kept in its shape ((out, in), or conv_proj's
  // (D, C, p, p)) and shared, not copied; bias (out) or undefined.
  F32Linear(Tensor W, Tensor bias);
  // A zero weight of that shape.
  F32Linear(int in, int out, const Shape& weight_shape, bool bias);
  std::string kind() const override { return "f32"; }
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  TrainMode train_mode() const override { return TrainMode::Direct; }
  // grads: {dW, db} (db only with a bias).
  void backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                float* const* grads) const override;
  std::vector<ReprTensor> tensors() const override;
  std::unique_ptr<LinearRepr> clone() const override;
  float* dense_weight() override { return w_.f32(); }
  const float* plain_weight(std::vector<float>&) const override { return w_.f32(); }
  const Tensor& weight() const { return w_; }

 private:
  Tensor w_;
};

std::unique_ptr<LinearRepr> load_f32_linear(const ReprFile& f);

}  // namespace vitkit

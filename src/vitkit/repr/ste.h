// SteRepr: the base of representations trained through an f32 latent weight
// with straight-through gradients (TrainMode::Ste): rounded, bf16, f16 and
// later quantized weights. While training, the latent weight is the
// parameter the optimizer updates; the forward pass and the input gradient use
// the representation's own weight, derived from the latent one after every
// optimizer step, so training trains exactly what the model computes:
//   forward   Y  = act(T(X) Wr^T + b)        Wr = R(latent), T the input transform
//   backward  dX = dY Wr                      (straight through T)
//             dlatent += dY^T T(X)            (straight through R)
#pragma once
#include "vitkit/repr/linear_repr.h"

namespace vitkit {

class SteRepr : public LinearRepr {
 public:
  using LinearRepr::LinearRepr;
  TrainMode train_mode() const override { return TrainMode::Ste; }
  void begin_training() override;
  void after_step() override;
  void end_training() override { latent_ = Tensor(); }
  bool training() const { return latent_.defined(); }
  // The own tensors, then while training the latent weight and training_tensors(),
  // then the bias.
  std::vector<ReprTensor> tensors() const final;
  void backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                float* const* grads) const override;

 protected:
  // The representation's own tensors (the bias not included).
  virtual std::vector<ReprTensor> own_tensors() const = 0;
  // Further trainable tensors of a training run (learned quantization scales),
  // listed after the latent weight while training; their gradients follow the
  // latent weight's in backward()'s grads, the bias's last.
  virtual std::vector<ReprTensor> training_tensors() const { return {}; }
  // Sets the weight from f32 values W (out, in): R above.
  virtual void set_weight(const float* W) = 0;
  // T(X) for X (M, in): X itself by default, or a transformed copy in scratch.
  virtual const float* product_input(const float* X, int64_t M) const {
    (void)M;
    return X;
  }
  // For clone(): the latent weight goes with the copy.
  void copy_training_state(SteRepr& to) const;

  Tensor latent_;
};

}  // namespace vitkit

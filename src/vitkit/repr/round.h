// round: the weight rounded to d decimals (kernels/round.h: halves away from
// zero, on the float's exact value), optionally the layer's input too at run
// time, so that many multiplications repeat (docs/reuse.md). In memory the
// weight is the f32 grid values the products use; files store it as the
// integer codes k = w * 10^d in the smallest of I8, I16, I32 that holds them
// (F32 only beyond that), so a 2-decimal model's weights take a byte each.
// Trains through an f32 latent weight, rounded again after every step.
#pragma once
#include "vitkit/repr/registry.h"
#include "vitkit/repr/ste.h"

namespace vitkit {

class RoundLinear : public SteRepr {
 public:
  // W (out, in) f32, rounded here; bias shared.
  RoundLinear(const float* W, int in, int out, Tensor bias, int decimals, bool inputs);
  std::string kind() const override { return "round"; }
  std::string describe() const override;
  // Y = act(R(X) W^T + b (+ Y)), R rounding X when inputs() is set.
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  std::unique_ptr<LinearRepr> clone() const override;
  const float* plain_weight(std::vector<float>&) const override { return w_.f32(); }
  std::vector<ReprTensor> stored() const override;
  nlohmann::json meta() const override { return {{"decimals", decimals_}, {"inputs", inputs_}}; }
  int decimals() const { return decimals_; }
  bool inputs() const { return inputs_; }
  const float* weight() const { return w_.f32(); }

 protected:
  std::vector<ReprTensor> own_tensors() const override { return {{"weight", w_, true, false, false, true}}; }
  void set_weight(const float* W) override;
  const float* product_input(const float* X, int64_t M) const override;

 private:
  Tensor w_;  // F32 (out, in), every value on the 10^-d grid
  int decimals_;
  bool inputs_;
};

std::unique_ptr<LinearRepr> load_round_linear(const ReprFile& f);

}  // namespace vitkit

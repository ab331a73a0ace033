// lowrank: a linear layer factored through a rank-r bottleneck (compress/lowrank.h),
//   W (out, in) ~ U (out, r) V (r, in),   Y = act((X V^T) U^T + b),
// held as two linear layers of their own representations: `down` (V, r
// outputs, no bias) and `up` (U, the layer's bias). Both start as dense f32;
// quantize afterwards gives each factor its integer form (the factors
// quantized, not their product), so the layer is whatever its two halves are.
//
// Forward: two GEMMs, Z (M, r) = X V^T in per-thread scratch, then Z U^T + b
// with the layer's activation and accumulation. Backward (factors trained
// directly, or through their own latent weights when quantized):
//   Z = X V^T (recomputed)
//   dZ (M, r) = dY U;  dU += dY^T Z;  db += column sums of dY      (up's backward)
//   dX = dZ V;         dV += dZ^T X                                 (down's backward)
// Parameters r (in + out) (+ out biases) instead of in x out; MACs M r (in + out).
//
// Files: each factor's tensors under NAME.down.ROLE and NAME.up.ROLE (f32:
// NAME.down.weight (r, in), NAME.up.weight (out, r)), the bias under the
// layer's own bias name; the metadata {"repr": "lowrank", "rank": r,
// "down": {"repr": ..., factor metadata}, "up": {...}} (a factor is never
// itself low-rank).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/repr/registry.h"

namespace vitkit {

class LowRankLinear : public LinearRepr {
 public:
  // down: (r outputs, in) without a bias; up: (out, r) with the layer's bias (or none).
  LowRankLinear(std::unique_ptr<LinearRepr> down, std::unique_ptr<LinearRepr> up);
  // From f32 factors U (out, r) and V (r, in); bias (out) or undefined.
  static std::unique_ptr<LowRankLinear> from_factors(Tensor U, Tensor V, Tensor bias);

  std::string kind() const override { return "lowrank"; }
  std::string describe() const override;
  int rank() const { return down_->out(); }
  const LinearRepr& down() const { return *down_; }
  const LinearRepr& up() const { return *up_; }
  LinearRepr& down() { return *down_; }
  LinearRepr& up() { return *up_; }
  // Replaces a factor (same sizes; up keeps the layer's bias): quantize's way in.
  void set_down(std::unique_ptr<LinearRepr> r);
  void set_up(std::unique_ptr<LinearRepr> r);
  // Gives dense f32 factors oneDNN's packed layout (model/linear_apply.h); how many were packed.
  int pack_for_inference();

  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  // The factors' own modes: none if either cannot train, ste if either trains
  // through a latent weight, else direct.
  TrainMode train_mode() const override;
  std::string why_not_trainable() const override;
  // grads: down's trainable tensors, up's (its bias, the layer's, last).
  void backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                float* const* grads) const override;
  void begin_training() override;
  void after_step() override;
  void end_training() override;

  std::vector<ReprTensor> tensors() const override;
  std::vector<ReprTensor> stored() const override;
  nlohmann::json meta() const override;
  std::unique_ptr<LinearRepr> clone() const override;
  // U V (out, in) from the factors' plain weights.
  const float* plain_weight(std::vector<float>& scratch) const override;
  int64_t weight_params() const override { return down_->weight_params() + up_->weight_params(); }
  int64_t macs(int64_t M) const override { return down_->macs(M) + up_->macs(M); }
  int64_t resident_bytes() const override { return down_->resident_bytes() + up_->resident_bytes(); }

 private:
  // The factors' tensors with their roles prefixed ("down.weight", "up.weight"), the bias last.
  std::vector<ReprTensor> merged(const std::vector<ReprTensor>& d, const std::vector<ReprTensor>& u) const;
  int trainable_count(const LinearRepr& r) const;
  void check_factors() const;

  std::unique_ptr<LinearRepr> down_, up_;
};

std::unique_ptr<LinearRepr> load_lowrank_linear(const ReprFile& f);

// The largest rank that still saves weights: r (in + out) < in x out.
int lowrank_break_even(int in, int out);

}  // namespace vitkit

// f16: the weight stored as IEEE half precision (half the bytes of f32, in
// files and in memory), widened to f32 per product into the calling thread's
// scratch (F16C conversions: a few milliseconds for ViT-B/16's 86 M weights,
// against 150+ ms of products at batch 1), products and inputs in f32. Only
// the weight is rounded. Trains through an f32 latent weight.
#pragma once
#include "vitkit/repr/registry.h"
#include "vitkit/repr/ste.h"

namespace vitkit {

class F16Linear : public SteRepr {
 public:
  // W (out, in) f32, converted (round to nearest even; beyond +-65504: inf, refused).
  F16Linear(const float* W, int in, int out, Tensor bias);
  // W: F16 (out, in) as stored in a file.
  F16Linear(Tensor W, Tensor bias);
  std::string kind() const override { return "f16"; }
  std::string describe() const override { return "f16 weight, f32 products"; }
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  std::unique_ptr<LinearRepr> clone() const override;
  const float* plain_weight(std::vector<float>& scratch) const override;

 protected:
  std::vector<ReprTensor> own_tensors() const override { return {{"weight", w_, false, false, false, true}}; }
  void set_weight(const float* W) override;

 private:
  // w_ widened into out (out * in floats).
  void widen(float* out) const;
  Tensor w_;  // F16 (out, in)
};

std::unique_ptr<LinearRepr> load_f16_linear(const ReprFile& f);

}  // namespace vitkit

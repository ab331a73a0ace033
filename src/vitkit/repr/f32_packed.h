// Dense f32 weights reordered once into the blocked layout oneDNN's f32
// matmul reads fastest, for inference (kernels::pack_weight: AVX-512 CPUs;
// measured 0.94-0.98x the time of the plain matrix on ViT shapes there, no
// gain on AVX2, so nothing is packed on AVX2 CPUs). The packed copy replaces
// the plain matrix. Files store the plain weight: a packed layer saves and
// loads as "f32". Not trainable.
#pragma once
#include <memory>

#include "vitkit/kernels/gemm.h"
#include "vitkit/repr/f32.h"

namespace vitkit {

class PackedF32Linear : public LinearRepr {
 public:
  // null when this CPU gains nothing from packing (then keep the f32 layer).
  static std::unique_ptr<PackedF32Linear> pack(const F32Linear& plain);
  std::string kind() const override { return "f32_packed"; }
  std::string describe() const override { return "f32, packed for oneDNN (inference only)"; }
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  TrainMode train_mode() const override { return TrainMode::None; }
  std::string why_not_trainable() const override {
    return "its weight is packed for inference (oneDNN's blocked layout); train the model as loaded";
  }
  std::vector<ReprTensor> tensors() const override;
  // The plain weight (unpacked: exact), saved as an "f32" layer.
  std::vector<ReprTensor> stored() const override;
  std::unique_ptr<LinearRepr> clone() const override;
  const float* plain_weight(std::vector<float>& scratch) const override;
  int64_t resident_bytes() const override;
  // The plain f32 layer back (exact).
  std::unique_ptr<F32Linear> unpack() const;

 private:
  PackedF32Linear(int in, int out, Tensor bias, Shape wshape, std::shared_ptr<const kernels::PackedWeight> w);
  Shape wshape_;  // the plain weight's shape
  std::shared_ptr<const kernels::PackedWeight> w_;
};

// "f32" unless packed: files store packed layers as plain f32.
inline std::string stored_kind(const LinearRepr& r) { return r.kind() == "f32_packed" ? "f32" : r.kind(); }

}  // namespace vitkit

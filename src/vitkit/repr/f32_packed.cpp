#include "vitkit/repr/f32_packed.h"

#include "vitkit/core/error.h"

namespace vitkit {

PackedF32Linear::PackedF32Linear(int in, int out, Tensor bias, Shape wshape,
                                 std::shared_ptr<const kernels::PackedWeight> w)
    : LinearRepr(in, out, std::move(bias)), wshape_(std::move(wshape)), w_(std::move(w)) {}

std::unique_ptr<PackedF32Linear> PackedF32Linear::pack(const F32Linear& plain) {
  // pack_weight reads W (in_place = false: its own packed copy).
  auto w = kernels::pack_weight(const_cast<float*>(plain.weight().f32()), plain.out(), plain.in(), false);
  if (!w) return nullptr;
  return std::unique_ptr<PackedF32Linear>(
      new PackedF32Linear(plain.in(), plain.out(), plain.bias_tensor(), plain.weight().shape(), std::move(w)));
}

void PackedF32Linear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  kernels::WeightOperand op = f32_operand(nullptr, in_, out_);
  op.packed = w_.get();  // its own packed copy
  kernels::linear(X, op, bias(), Y, M, act, accumulate);
}

std::vector<ReprTensor> PackedF32Linear::tensors() const {
  std::vector<ReprTensor> v;  // the packed bytes are not a Tensor: see resident_bytes
  add_bias(v);
  return v;
}

std::vector<ReprTensor> PackedF32Linear::stored() const {
  Tensor w = Tensor::empty(wshape_);
  kernels::unpack_weight(*w_, nullptr, w.f32());
  std::vector<ReprTensor> v{{"weight", w, true, true, true, true}};
  add_bias(v);
  return v;
}

std::unique_ptr<LinearRepr> PackedF32Linear::clone() const {
  // The packed bytes are never written after packing: the copy may share them.
  return std::unique_ptr<LinearRepr>(
      new PackedF32Linear(in_, out_, bias_.defined() ? bias_.clone() : Tensor(), wshape_, w_));
}

const float* PackedF32Linear::plain_weight(std::vector<float>& scratch) const {
  scratch.resize(size_t(in_) * size_t(out_));
  kernels::unpack_weight(*w_, nullptr, scratch.data());
  return scratch.data();
}

int64_t PackedF32Linear::resident_bytes() const {
  return int64_t(kernels::packed_bytes(*w_)) + (bias_.defined() ? int64_t(bias_.nbytes()) : 0);
}

std::unique_ptr<F32Linear> PackedF32Linear::unpack() const {
  Tensor w = Tensor::empty(wshape_);
  kernels::unpack_weight(*w_, nullptr, w.f32());
  return std::make_unique<F32Linear>(w, bias_.defined() ? bias_.clone() : Tensor());
}

}  // namespace vitkit

#include "vitkit/repr/bf16.h"

#include <cstring>

#include "vitkit/core/error.h"

namespace vitkit {

Bf16Linear::Bf16Linear(const float* W, int in, int out, Tensor bias) : SteRepr(in, out, std::move(bias)) {
  set_weight(W);
}

Bf16Linear::Bf16Linear(Tensor W, Tensor bias)
    : SteRepr(int(W.ndim() == 2 ? W.dim(1) : 0), int(W.ndim() == 2 ? W.dim(0) : 0), std::move(bias)),
      w_(std::move(W)) {
  check(w_.dtype() == DType::BF16, "Bf16Linear: the weight is ", dtype_name(w_.dtype()), ", not BF16");
  pack();
}

void Bf16Linear::set_weight(const float* W) {
  Tensor w = Tensor::empty({out_, in_}, DType::BF16);
  convert_from_f32(DType::BF16, W, w.raw(), size_t(in_) * size_t(out_));
  w_ = w;
  packed_.reset();
  pack();
}

void Bf16Linear::pack() {
  // Packed only for inference: while training, the plain matrix serves the backward pass too.
  if (training()) return;
  packed_ = kernels::pack_weight_bf16(w_.data<uint16_t>(), out_, in_);
  if (packed_) w_ = Tensor();  // the packed copy replaces it
}

void Bf16Linear::end_training() {
  SteRepr::end_training();
  pack();
}

// Y = act(bf16(X) W^T + b (+ Y)): the GEMM converts X (kernels/gemm.h).
void Bf16Linear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  kernels::WeightOperand op;
  op.type = kernels::WeightType::BF16;
  op.N = out_;
  op.K = in_;
  op.data = packed_ ? nullptr : w_.raw();
  op.packed = packed_.get();
  kernels::linear(X, op, bias(), Y, M, act, accumulate);
}

const float* Bf16Linear::product_input(const float* X, int64_t M) const {
  const int64_t n = M * in_;
  float* x = thread_scratch_f32(n, 0);
  for (int64_t i = 0; i < n; ++i) x[i] = bf16_to_float(float_to_bf16(X[i]));
  return x;
}

const float* Bf16Linear::plain_weight(std::vector<float>& scratch) const {
  scratch.resize(size_t(in_) * size_t(out_));
  if (packed_) {
    Tensor w = Tensor::empty({out_, in_}, DType::BF16);
    kernels::unpack_weight_bf16(*packed_, w.data<uint16_t>());
    convert_to_f32(DType::BF16, w.raw(), scratch.data(), scratch.size());
  } else {
    convert_to_f32(DType::BF16, w_.raw(), scratch.data(), scratch.size());
  }
  return scratch.data();
}

std::vector<ReprTensor> Bf16Linear::own_tensors() const {
  if (!w_.defined()) return {};  // packed: see stored() and resident_bytes()
  return {{"weight", w_, false, false, false, true}};
}

std::vector<ReprTensor> Bf16Linear::stored() const {
  std::vector<ReprTensor> v;
  if (packed_) {
    Tensor w = Tensor::empty({out_, in_}, DType::BF16);
    kernels::unpack_weight_bf16(*packed_, w.data<uint16_t>());
    v.push_back({"weight", w, false, false, false, true});
  } else {
    v.push_back({"weight", w_, false, false, false, true});
  }
  add_bias(v);
  return v;
}

int64_t Bf16Linear::resident_bytes() const {
  return LinearRepr::resident_bytes() + (packed_ ? int64_t(kernels::packed_bytes(*packed_)) : 0);
}

std::unique_ptr<LinearRepr> Bf16Linear::clone() const {
  Tensor w;
  if (packed_) {
    w = Tensor::empty({out_, in_}, DType::BF16);
    kernels::unpack_weight_bf16(*packed_, w.data<uint16_t>());
  } else {
    w = w_.clone();
  }
  auto c = std::make_unique<Bf16Linear>(w, bias_.defined() ? bias_.clone() : Tensor());
  copy_training_state(*c);
  return c;
}

std::unique_ptr<LinearRepr> load_bf16_linear(const ReprFile& f) {
  Tensor w = read_checked(f, "weight", {DType::BF16}, weight_shapes(f));
  return std::make_unique<Bf16Linear>(w.reshape({f.out, f.in}), read_bias(f));
}

}  // namespace vitkit

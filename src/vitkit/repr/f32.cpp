#include "vitkit/repr/f32.h"

#include "vitkit/core/error.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/kernels/linear.h"

namespace vitkit {

static int64_t rows_of(const Tensor& W) { return W.ndim() > 0 ? W.dim(0) : 0; }

F32Linear::F32Linear(Tensor W, Tensor bias)
    : LinearRepr(int(rows_of(W) ? W.numel() / rows_of(W) : 0), int(rows_of(W)), std::move(bias)), w_(std::move(W)) {
  check(w_.dtype() == DType::F32, "F32Linear: the weight is ", dtype_name(w_.dtype()), ", not F32");
}

F32Linear::F32Linear(int in, int out, const Shape& weight_shape, bool bias)
    : LinearRepr(in, out, bias ? Tensor::zeros({out}) : Tensor()),
      w_(Tensor::zeros(weight_shape.empty() ? Shape{out, in} : weight_shape)) {
  check(w_.numel() == int64_t(in) * out, "F32Linear: weight shape ", shape_str(weight_shape), " does not hold ", out,
        "x", in, " values");
}

// Y (M, out) = act(X (M, in) W^T + b (+ Y))
void F32Linear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  kernels::linear(X, f32_operand(w_.f32(), in_, out_), bias(), Y, M, act, accumulate);
}

// dX (M, in) = dY W; dW (out, in) += dY^T X; db += column sums of dY
void F32Linear::backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                         float* const* grads) const {
  linear_backward(dY, X, w_.f32(), dX, grads[0], bias_.defined() ? grads[1] : nullptr, M, in_, out_, accumulate);
}

std::vector<ReprTensor> F32Linear::tensors() const {
  std::vector<ReprTensor> v{{"weight", w_, true, true, true, true}};
  add_bias(v);
  return v;
}

std::unique_ptr<LinearRepr> F32Linear::clone() const {
  return std::make_unique<F32Linear>(w_.clone(), bias_.defined() ? bias_.clone() : Tensor());
}

std::unique_ptr<LinearRepr> load_f32_linear(const ReprFile& f) {
  // Any float dtype converts (a file written with --dtype f16 loads as f32).
  Tensor w = read_checked(f, "weight", float_dtypes(), weight_shapes(f));
  if (w.dtype() != DType::F32) w = w.to(DType::F32);
  return std::make_unique<F32Linear>(w.reshape(f.weight_shape), read_bias(f));
}

}  // namespace vitkit

#include "vitkit/repr/sparse.h"

#include <algorithm>
#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/kernels/linear.h"
#include "vitkit/kernels/sparse.h"
#include "vitkit/report/table.h"

namespace vitkit {

SparseLinear::SparseLinear(const float* W, const uint8_t* keep, int in, int out, Tensor bias)
    : LinearRepr(in, out, std::move(bias)) {
  row_ptr_.assign(size_t(out) + 1, 0);
  std::vector<float> v;
  for (int o = 0; o < out; ++o) {
    for (int j = 0; j < in; ++j) {
      const int64_t i = int64_t(o) * in + j;
      if (W[i] != 0.f || (keep && keep[i])) {
        col_.push_back(j);
        v.push_back(W[i]);
      }
    }
    row_ptr_[size_t(o) + 1] = int32_t(col_.size());
  }
  values_ = Tensor::zeros({int64_t(v.size())});
  if (!v.empty()) std::memcpy(values_.f32(), v.data(), sizeof(float) * v.size());
}

SparseLinear::SparseLinear(int in, int out, Tensor bias, std::vector<int32_t> row_ptr, std::vector<int32_t> col,
                           Tensor values)
    : LinearRepr(in, out, std::move(bias)), row_ptr_(std::move(row_ptr)), col_(std::move(col)),
      values_(std::move(values)) {}

std::string SparseLinear::describe() const {
  return cat("sparse: ", fmt_fixed(100.0 * (1.0 - density()), 1), "% of the weights pruned (", nnz(), " of ", int64_t(in_) * out_,
             " kept)");
}

static kernels::CsrRef csr_ref(int out, int in, const std::vector<int32_t>& rp, const std::vector<int32_t>& col,
                               const Tensor& values) {
  return {out, in, rp.data(), col.data(), values.numel() ? values.f32() : nullptr, values.numel()};
}

void SparseLinear::expand(float* W) const {
  std::memset(W, 0, sizeof(float) * size_t(in_) * size_t(out_));
  const float* v = values_.f32();
  for (int o = 0; o < out_; ++o)
    for (int32_t k = row_ptr_[size_t(o)]; k < row_ptr_[size_t(o) + 1]; ++k) W[int64_t(o) * in_ + col_[size_t(k)]] = v[k];
}

// Y (M, out) = act(X (M, in) W^T + b (+ Y)): sparse where it is faster, dense otherwise.
void SparseLinear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  if (kernels::sparse_is_faster(density(), M, in_, out_)) {
    kernels::sparse_linear(X, csr_ref(out_, in_, row_ptr_, col_, values_), bias(), Y, M, act, accumulate);
    return;
  }
  float* W = thread_scratch_f32(int64_t(in_) * out_, 1);
  expand(W);
  kernels::linear(X, f32_operand(W, in_, out_), bias(), Y, M, act, accumulate);
}

// dX (M, in) = dY W;  d values += (dY^T X) at the kept positions;  db += column sums of dY
void SparseLinear::backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                            float* const* grads) const {
  const int64_t n = int64_t(in_) * out_;
  float* W = thread_scratch_f32(n, 1);
  expand(W);
  float* dW = nullptr;
  if (grads[0]) {
    dW = thread_scratch_f32(n, 2);
    std::memset(dW, 0, sizeof(float) * size_t(n));
  }
  linear_backward(dY, X, W, dX, dW, bias_.defined() ? grads[1] : nullptr, M, in_, out_, accumulate);
  if (!dW) return;
  float* dv = grads[0];
  for (int o = 0; o < out_; ++o)
    for (int32_t k = row_ptr_[size_t(o)]; k < row_ptr_[size_t(o) + 1]; ++k) dv[k] += dW[int64_t(o) * in_ + col_[size_t(k)]];
}

bool SparseLinear::kept(int o, int j) const {
  const auto b = col_.begin() + row_ptr_[size_t(o)], e = col_.begin() + row_ptr_[size_t(o) + 1];
  return std::binary_search(b, e, j);
}

Tensor SparseLinear::bitmap() const {
  const int64_t bytes = (in_ + 7) / 8;
  Tensor t = Tensor::zeros({out_, bytes}, DType::U8);
  uint8_t* p = t.data<uint8_t>();
  for (int o = 0; o < out_; ++o)
    for (int32_t k = row_ptr_[size_t(o)]; k < row_ptr_[size_t(o) + 1]; ++k) {
      const int j = col_[size_t(k)];
      p[o * bytes + j / 8] |= uint8_t(1u << (j % 8));
    }
  return t;
}

// Every tensor held: the values (the parameter), the positions, the bias.
std::vector<ReprTensor> SparseLinear::tensors() const {
  Tensor rp = Tensor::empty({int64_t(row_ptr_.size())}, DType::I32), cl = Tensor::empty({int64_t(col_.size())}, DType::I32);
  std::memcpy(rp.raw(), row_ptr_.data(), 4 * row_ptr_.size());
  if (!col_.empty()) std::memcpy(cl.raw(), col_.data(), 4 * col_.size());
  std::vector<ReprTensor> v{{"values", values_, true, true, true, true},
                            {"row_ptr", rp, false, false, false, false},
                            {"col", cl, false, false, false, false}};
  add_bias(v);
  return v;
}

std::vector<ReprTensor> SparseLinear::stored() const {
  std::vector<ReprTensor> v{{"mask", bitmap(), false, false, false, true}, {"values", values_, true, true, true, true}};
  add_bias(v);
  return v;
}

nlohmann::json SparseLinear::meta() const { return {{"nnz", nnz()}, {"layout", "bitmap"}}; }

std::unique_ptr<LinearRepr> SparseLinear::clone() const {
  return std::unique_ptr<LinearRepr>(
      new SparseLinear(in_, out_, bias_.defined() ? bias_.clone() : Tensor(), row_ptr_, col_, values_.clone()));
}

const float* SparseLinear::plain_weight(std::vector<float>& scratch) const {
  scratch.resize(size_t(in_) * size_t(out_));
  expand(scratch.data());
  return scratch.data();
}

std::unique_ptr<LinearRepr> load_sparse_linear(const ReprFile& f) {
  const int64_t bytes = (f.in + 7) / 8;
  Tensor mask = read_checked(f, "mask", {DType::U8}, {Shape{f.out, bytes}});
  const uint8_t* p = mask.data<uint8_t>();
  std::vector<int32_t> row_ptr(size_t(f.out) + 1, 0), col;
  for (int o = 0; o < f.out; ++o) {
    for (int j = 0; j < f.in; ++j)
      if (p[o * bytes + j / 8] >> (j % 8) & 1) col.push_back(j);
    // Bits past the last column must be clear: a bitmap of another width is not this layer's.
    for (int j = f.in; j < bytes * 8; ++j)
      check(!(p[o * bytes + j / 8] >> (j % 8) & 1), f.path, ": tensor '", f.name("mask"), "' sets bit ", j, " of row ",
            o, ", past the layer's ", f.in, " inputs");
    row_ptr[size_t(o) + 1] = int32_t(col.size());
  }
  const int64_t nnz = int64_t(col.size());
  auto it = f.meta.find("nnz");
  check(it != f.meta.end() && it->is_number_integer() && it->get<int64_t>() == nnz, f.where,
        ": the metadata's nnz is ", it != f.meta.end() ? it->dump() : std::string("missing"), " but the mask keeps ",
        nnz, " weights");
  Tensor values = read_checked(f, "values", float_dtypes(), {Shape{nnz}});
  if (values.dtype() != DType::F32) values = values.to(DType::F32);
  values = values.reshape({nnz});
  return std::unique_ptr<LinearRepr>(new SparseLinear(f.in, f.out, read_bias(f), std::move(row_ptr), std::move(col),
                                                      std::move(values)));
}

}  // namespace vitkit

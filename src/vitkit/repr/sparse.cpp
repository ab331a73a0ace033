#include "vitkit/repr/sparse.h"

#include <algorithm>
#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/kernels/linear.h"
#include "vitkit/kernels/sparse.h"
#include "vitkit/report/table.h"

namespace vitkit {

// An I32 tensor of v's values.
static Tensor i32_tensor(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())}, DType::I32);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), sizeof(int32_t) * v.size());
  return t;
}

SparseLinear::SparseLinear(const float* W, const uint8_t* keep, int in, int out, Tensor bias)
    : LinearRepr(in, out, std::move(bias)) {
  std::vector<int32_t> rp(size_t(out) + 1, 0), col;
  std::vector<float> v;
  for (int o = 0; o < out; ++o) {
    for (int j = 0; j < in; ++j) {
      const int64_t i = int64_t(o) * in + j;
      if (W[i] != 0.f || (keep && keep[i])) {
        col.push_back(j);
        v.push_back(W[i]);
      }
    }
    rp[size_t(o) + 1] = int32_t(col.size());
  }
  row_ptr_ = i32_tensor(rp);
  col_ = i32_tensor(col);
  values_ = Tensor::zeros({int64_t(v.size())});
  if (!v.empty()) std::memcpy(values_.f32(), v.data(), sizeof(float) * v.size());
}

SparseLinear::SparseLinear(int in, int out, Tensor bias, Tensor row_ptr, Tensor col, Tensor values)
    : LinearRepr(in, out, std::move(bias)), row_ptr_(std::move(row_ptr)), col_(std::move(col)),
      values_(std::move(values)) {
  check(row_ptr_.dtype() == DType::I32 && row_ptr_.numel() == int64_t(out) + 1 && col_.dtype() == DType::I32 &&
            col_.numel() == values_.numel() && rp()[0] == 0 && rp()[out] == values_.numel(),
        "SparseLinear: inconsistent CSR arrays");
}

std::string SparseLinear::describe() const {
  return cat("sparse: ", fmt_fixed(100.0 * (1.0 - density()), 1), "% of the weights pruned (", nnz(), " of ", int64_t(in_) * out_,
             " kept)");
}

static kernels::CsrRef csr_view(int out, int in, const int32_t* rp, const int32_t* col, const Tensor& values) {
  return {out, in, rp, col, values.numel() ? values.f32() : nullptr, values.numel()};
}

void SparseLinear::expand(float* W) const {
  std::memset(W, 0, sizeof(float) * size_t(in_) * size_t(out_));
  const float* v = values_.f32();
  for (int o = 0; o < out_; ++o)
    for (int32_t k = rp()[o]; k < rp()[o + 1]; ++k) W[int64_t(o) * in_ + cols()[k]] = v[k];
}

// Y (M, out) = act(X (M, in) W^T + b (+ Y)): sparse where it is faster, dense otherwise.
void SparseLinear::forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const {
  if (kernels::sparse_is_faster(density(), M, in_, out_)) {
    kernels::sparse_linear(X, csr_view(out_, in_, rp(), cols(), values_), bias(), Y, M, act, accumulate);
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
    for (int32_t k = rp()[o]; k < rp()[o + 1]; ++k) dv[k] += dW[int64_t(o) * in_ + cols()[k]];
}

bool SparseLinear::kept(int o, int j) const { return std::binary_search(cols() + rp()[o], cols() + rp()[o + 1], j); }

Tensor SparseLinear::bitmap() const {
  const int64_t bytes = (in_ + 7) / 8;
  Tensor t = Tensor::zeros({out_, bytes}, DType::U8);
  uint8_t* p = t.data<uint8_t>();
  for (int o = 0; o < out_; ++o)
    for (int32_t k = rp()[o]; k < rp()[o + 1]; ++k) {
      const int j = cols()[k];
      p[o * bytes + j / 8] |= uint8_t(1u << (j % 8));
    }
  return t;
}

// Every tensor held: the values (the parameter), the positions, the bias.
// Every tensor held: the values (the parameter), the positions, the bias.
std::vector<ReprTensor> SparseLinear::tensors() const {
  std::vector<ReprTensor> v{{"values", values_, true, true, true, true},
                            {"row_ptr", row_ptr_, false, false, false, false},
                            {"col", col_, false, false, false, false}};
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
      new SparseLinear(in_, out_, bias_.defined() ? bias_.clone() : Tensor(), row_ptr_.clone(), col_.clone(),
                       values_.clone()));
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
  return std::unique_ptr<LinearRepr>(
      new SparseLinear(f.in, f.out, read_bias(f), i32_tensor(row_ptr), i32_tensor(col), std::move(values)));
}

}  // namespace vitkit

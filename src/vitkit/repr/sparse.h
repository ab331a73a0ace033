// sparse: an unstructured-pruned weight (compress/prune.h) held as its
// nonzeros only, in compressed sparse rows: the values (nnz, f32: the trainable
// parameter) and their positions (row starts and column indices). The pruned
// weights are not stored anywhere, so they stay exactly zero through
// fine-tuning (the optimizer only ever sees the values) and after save/load.
//
// Files store a bitmap of the kept positions, (out, ceil(in/8)) U8, bit j%8 of
// byte j/8 of a row for column j, and the values in row-major order: at 90%
// sparsity 0.525 bytes a weight instead of 4.
//
// Forward: the sparse kernel (kernels/sparse.h) where its measured crossover
// says it beats the dense GEMM for this density and shape, else the weight
// expanded into per-thread scratch and the dense GEMM. Backward: through the
// dense weight in scratch, the weight gradient gathered at the kept positions.
// Parameters and MACs count the nonzeros only.
#pragma once
#include <cstdint>
#include <vector>

#include "vitkit/core/tensor.h"

#include "vitkit/repr/registry.h"

namespace vitkit {

class SparseLinear : public LinearRepr {
 public:
  // W (out, in): the exact zeros are the pruned weights (kept: W != 0 or keep[i]).
  // keep: null, or a mask of out*in flags (1: kept even when the value is zero).
  SparseLinear(const float* W, const uint8_t* keep, int in, int out, Tensor bias);
  std::string kind() const override { return "sparse"; }
  std::string describe() const override;
  void forward(const float* X, float* Y, int64_t M, Activation act, bool accumulate) const override;
  TrainMode train_mode() const override { return TrainMode::Direct; }
  // grads: {d values (nnz), db}.
  void backward(const float* dY, const float* X, float* dX, int64_t M, bool accumulate,
                float* const* grads) const override;
  std::vector<ReprTensor> tensors() const override;
  std::vector<ReprTensor> stored() const override;
  nlohmann::json meta() const override;
  std::unique_ptr<LinearRepr> clone() const override;
  const float* plain_weight(std::vector<float>& scratch) const override;
  int64_t weight_params() const override { return nnz(); }
  int64_t macs(int64_t M) const override { return M * nnz(); }

  int64_t nnz() const { return values_.numel(); }
  double density() const { return double(nnz()) / (double(in_) * out_); }
  // Whether position (o, j) is kept.
  bool kept(int o, int j) const;
  // The (out, ceil(in/8)) bitmap a file stores.
  Tensor bitmap() const;

 private:
  // row_ptr (out + 1) and col (nnz) I32, values (nnz) F32.
  SparseLinear(int in, int out, Tensor bias, Tensor row_ptr, Tensor col, Tensor values);
  const int32_t* rp() const { return row_ptr_.data<int32_t>(); }
  const int32_t* cols() const { return col_.data<int32_t>(); }
  friend std::unique_ptr<LinearRepr> load_sparse_linear(const ReprFile& f);
  // W (out, in) dense into out.
  void expand(float* out) const;

  Tensor row_ptr_;  // I32 (out + 1)
  Tensor col_;      // I32 (nnz), ascending within a row
  Tensor values_;   // F32 (nnz)
};

std::unique_ptr<LinearRepr> load_sparse_linear(const ReprFile& f);

}  // namespace vitkit

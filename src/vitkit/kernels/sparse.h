// An unstructured-sparse linear layer for pruned weights: W in compressed
// sparse rows (CSR), Y = act(X W^T + b) by a kernel that reads only W's
// nonzeros, and where that beats the dense f32 GEMM (kernels::linear) on this
// CPU (measured by bench/sparse_bench.cpp, docs/pruning-sparse-kernel.md).
#pragma once
#include <cstdint>
#include <vector>

#include "vitkit/kernels/activations.h"

namespace vitkit::kernels {

// W (rows=out, cols=in) in compressed sparse rows; exact zeros are not stored.
struct Csr {
  int rows = 0, cols = 0;
  std::vector<int32_t> row_ptr;  // rows + 1
  std::vector<int32_t> col;      // nnz column indices, ascending within a row
  std::vector<float> val;        // nnz values
  int64_t nnz() const { return int64_t(val.size()); }
};

// A view of CSR arrays owned elsewhere (a sparse layer's own storage,
// repr/sparse.h): what the kernel reads.
struct CsrRef {
  int rows = 0, cols = 0;
  const int32_t* row_ptr = nullptr;  // rows + 1
  const int32_t* col = nullptr;      // nnz
  const float* val = nullptr;        // nnz
  int64_t nnz = 0;
};
inline CsrRef csr_ref(const Csr& W) {
  return {W.rows, W.cols, W.row_ptr.data(), W.col.data(), W.val.data(), W.nnz()};
}

// The CSR form of a row-major W (rows, cols): every element that is not == 0
// (so neither +0 nor -0) is stored, NaN included.
Csr csr_from_dense(const float* W, int rows, int cols);

// out (rows, cols) = the dense W back from its CSR form (zeros where nothing is stored).
void csr_to_dense(const Csr& W, float* out);

// Y (M, out) = act(X (M, in) W^T + b (+ Y's previous content when accumulate)),
// the same contract as kernels::linear in gemm.h (the previous content added
// before the activation). b (out) may be null. Any M >= 0 and sizes; X is not
// read when in == 0 or M == 0. Throws vitkit::Error for an inconsistent Csr
// (row_ptr not rows + 1 long, not from 0, or decreasing; col and val not
// row_ptr[rows] long); column indices are trusted to lie in [0, cols).
// Thread-safe: inside an OpenMP parallel region (or for little work) it runs on
// the calling thread alone; otherwise over num_threads() threads.
void sparse_linear(const float* X, const Csr& W, const float* bias, float* Y, int64_t M, Activation act,
                   bool accumulate);
// The same on a view (row_ptr checked: from 0, not decreasing, ending at nnz).
void sparse_linear(const float* X, const CsrRef& W, const float* bias, float* Y, int64_t M, Activation act,
                   bool accumulate);

// Whether sparse_linear is expected to be faster than the dense f32 GEMM
// (kernels::linear) for this density (nnz / (out * in)) and shape on this CPU:
// the crossover measured by bench/sparse_bench.cpp (docs/pruning-sparse-kernel.md).
bool sparse_is_faster(double density, int64_t M, int in, int out);

}  // namespace vitkit::kernels

#include "vitkit/model/linear_apply.h"

namespace vitkit {

void linear_apply(const ViT& m, const Linear& l, const float* X, float* Y, int64_t M, kernels::Epilogue act,
                  bool accumulate) {
  if (l.repr) {
    l.repr->forward(X, Y, M, m.B(l), act, accumulate);
    return;
  }
  kernels::gemm(false, true, M, l.out, l.in, 1.f, X, l.in, m.W(l), l.in, accumulate ? 1.f : 0.f, Y, l.out, m.B(l),
                act);
}

}  // namespace vitkit

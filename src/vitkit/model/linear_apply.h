// Applying a Linear whatever its representation: dense f32 (the ParamTable
// weight) or a compressed LinearRepr set by a compression pass.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitkit/kernels/gemm.h"
#include "vitkit/model/vit.h"

namespace vitkit {

// A compressed representation of one linear layer (int8, low-rank, ...).
struct LinearRepr {
  virtual ~LinearRepr() = default;
  virtual std::string kind() const = 0;
  // Y (M, out) = act(X (M, in) W^T + bias) (+ Y before when accumulate).
  // Called by several threads at once (vit_infer per image): no shared scratch.
  virtual void forward(const float* X, float* Y, int64_t M, const float* bias, Activation act,
                       bool accumulate) const = 0;
};

// Packs every dense f32 linear layer's weight for inference: reordered once into
// the blocked layout oneDNN's matmul reads fastest (kernels::pack_weight; on
// AVX-512 CPUs only, elsewhere nothing changes), in place in the ParamTable
// where the layout has the weight's size, so memory does not grow. Afterwards
// W() of such a layer throws and the model can only run inference (vit_infer,
// evaluate_*, bench) or be converted by a pass that reads plain_weight() (bf16):
// never save, train or analyse it. Layers with a compressed representation are
// left as they are. Returns how many were packed.
int pack_linears_for_inference(ViT& m);

// The plain weight (l.out, l.in) of l for reading: W(l), or, when it is packed
// in place, a copy unpacked into buf (exact).
const float* plain_weight(const ViT& m, const Linear& l, std::vector<float>& buf);

// Y (M, l.out) = act(X (M, l.in) W^T + b), plus Y's previous content when accumulate.
void linear_apply(const ViT& m, const Linear& l, const float* X, float* Y, int64_t M,
                  Activation act = Activation::None, bool accumulate = false);

}  // namespace vitkit

// The ViT backward pass: gradients of every parameter from the gradient of the
// logits, using the activations a training-mode forward pass kept.
#pragma once
#include <cstdint>

#include "vitkit/core/tensor.h"
#include "vitkit/model/forward.h"

namespace vitkit {

// Scratch buffers for the backward pass, sized once per batch size.
class BackWork {
 public:
  void plan(const ViTConfig& cfg, int64_t B);
  float* dres() { return p(0); }   // (B, T, D) gradient of the residual stream
  float* dtmp() { return p(1); }   // (B, T, D) second residual buffer (post-norm)
  float* dln() { return p(2); }    // (B, T, D) gradient of a norm's output
  float* datt() { return p(3); }   // (B, T, D)
  float* dqkv() { return p(4); }   // (B, T, 3D)
  float* dfc() { return p(5); }    // (B, T, M)
  float* demb() { return p(6); }   // (B, P, D)
  float* dpooled() { return p(7); }  // (B, D)
  float* ddrop() { return p(8); }    // (B, T, D) a gradient through a dropout mask

 private:
  float* p(int i) { return mem_.f32() + off_[i]; }
  Tensor mem_;
  int64_t off_[9] = {};
};

// grads (ParamTable layout, params.total() floats) += d loss / d params, given
// dlogits (B, classes) = d loss / d logits. acts must hold a training-mode
// forward pass of the same batch.
void vit_backward(const ViT& m, Acts& acts, const float* dlogits, float* grads, BackWork& work);

}  // namespace vitkit

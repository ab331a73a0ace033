// AdamW as torch.optim.AdamW computes it (decoupled weight decay applied
// before the Adam step; bias corrections as PyTorch 1.13), over a ParamTable's
// flat buffer. Parameters whose ParamInfo.decay is false get no weight decay.
#pragma once
#include <cstdint>

#include "vitkit/core/tensor.h"
#include "vitkit/model/params.h"

namespace vitkit {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.05f;
};

class AdamW {
 public:
  AdamW(const ParamTable& params, AdamWConfig cfg);
  // One step with learning rate lr: params -= ..., given grads (same layout).
  void step(ParamTable& params, const float* grads, float lr);
  int64_t steps() const { return t_; }
  // State for checkpoints.
  Tensor& m() { return m_; }
  Tensor& v() { return v_; }
  void set_steps(int64_t t) { t_ = t; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  AdamWConfig cfg_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

// Global L2 norm of grads over the parameters; scales them to max_norm when it
// is larger (max_norm <= 0: no clipping). Returns the norm before clipping.
float clip_grad_norm(const ParamTable& params, float* grads, float max_norm);

}  // namespace vitkit

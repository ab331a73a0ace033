#include "vitkit/train/step.h"

#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/core/profile.h"
#include "vitkit/train/losses.h"

namespace vitkit {

void begin_training(ViT& m) {
  for (Linear* l : m.linears())
    if (l->repr->train_mode() == TrainMode::None)
      fail(l->describe(), ": a '", l->repr->kind(), "' layer (", l->repr->describe(), ") cannot be trained: ",
           l->repr->why_not_trainable());
  for (size_t b = 0; b < m.blocks.size(); ++b)
    if (m.blocks[b].attn_quant)
      fail("block ", b, ": attention with integer products (quantize:attention=true) cannot be trained: it has no "
           "backward pass; fine-tune before quantizing attention, or quantize the linear layers only");
  for (Linear* l : m.linears()) l->repr->begin_training();
  m.layout();
}

void end_training(ViT& m) {
  for (Linear* l : m.linears()) l->repr->end_training();
  m.layout();
}

void after_optimizer_step(ViT& m) {
  for (Linear* l : m.linears()) l->repr->after_step();
}

static ViT& begun(ViT& m) {
  begin_training(m);
  return m;
}

TrainStep::TrainStep(ViT& m, AdamWConfig opt) : m_(begun(m)), adamw_(m.params, opt) {}

StepResult TrainStep::run(const float* images, const int* labels, int64_t B, const StepOptions& o,
                          const float* teacher) {
  const int64_t K = m_.cfg.classes;
  if (!grads_.defined() || grads_.numel() != m_.params.total()) grads_ = m_.params.zeros_like();
  dlogits_.resize(size_t(B * K));
  acts_.plan(m_.cfg, B, true);
  acts_.dropout_seed = o.dropout_seed;
  vit_forward(m_, images, B, acts_);
  StepResult r;
  {
    VK_PROF("train.loss");
    r.loss = cross_entropy_forward_backward(acts_.logits(), labels, B, K, o.label_smoothing, dlogits_.data(),
                                            &r.correct);
    if (teacher) {
      const float a = o.distill_alpha;
      for (float& d : dlogits_) d *= 1.f - a;
      const float kd =
          distill_kl_forward_backward(acts_.logits(), teacher, B, K, o.distill_temperature, a, dlogits_.data());
      r.loss = (1.f - a) * r.loss + a * kd;
    }
  }
  {
    VK_PROF("train.zero_grad");
    std::memset(grads_.f32(), 0, sizeof(float) * size_t(grads_.numel()));
  }
  vit_backward(m_, acts_, dlogits_.data(), grads_.f32(), work_);
  {
    VK_PROF("train.optimizer");
    if (o.clip_grad > 0) clip_grad_norm(m_.params, grads_.f32(), o.clip_grad);
    adamw_.step(m_.params, grads_.f32(), o.lr);
    after_optimizer_step(m_);
  }
  return r;
}

}  // namespace vitkit

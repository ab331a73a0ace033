// One training step — forward, loss, backward, gradient clipping, AdamW and the
// layers' after-step hook — used by the trainer, by `bench --train` and by
// distillation: the one place where quantization-aware training, pruning
// masks and a teacher's logits attach.
//
// Training a model whose layers have representations trains what the model
// computes: dense layers directly, rounded / bf16 / f16 (and later quantized)
// layers through an f32 latent weight with straight-through gradients, from
// which their weight is derived again after every optimizer step; a layer that
// cannot be trained (packed for inference) is refused, naming it.
#pragma once
#include <cstdint>
#include <memory>

#include "vitkit/model/backward.h"
#include "vitkit/model/forward.h"
#include "vitkit/model/vit.h"
#include "vitkit/train/adamw.h"

namespace vitkit {

// Readies m for training: every layer's representation checked (an Error
// naming the layer and its representation when one cannot train), latent
// weights made, the parameter table rebuilt. Idempotent.
void begin_training(ViT& m);
// The end of training: latent weights dropped (each representation keeps the
// weight derived from its latent one), the parameter table rebuilt.
void end_training(ViT& m);
// After an optimizer step: each layer derives its weight from its latent one.
void after_optimizer_step(ViT& m);

struct StepOptions {
  float lr = 1e-4f;
  float label_smoothing = 0.f;
  float clip_grad = 0.f;  // > 0: global gradient norm clipped to this
  // Distillation: with teacher logits (B, classes), the loss is
  // (1 - alpha) CE + alpha T^2 KL(softmax(t/T) || softmax(s/T)).
  float distill_alpha = 0.f, distill_temperature = 1.f;
  uint64_t dropout_seed = 0;
};

struct StepResult {
  float loss = 0;
  int64_t correct = 0;  // top-1 hits of the batch
};

class TrainStep {
 public:
  // begin_training(m) and AdamW state for its trainable parameters.
  TrainStep(ViT& m, AdamWConfig opt);
  // images (B, C, S, S) preprocessed, labels (B); teacher_logits (B, classes) or null.
  StepResult run(const float* images, const int* labels, int64_t B, const StepOptions& o,
                 const float* teacher_logits = nullptr);
  AdamW& optimizer() { return adamw_; }
  ViT& model() { return m_; }

 private:
  ViT& m_;
  AdamW adamw_;
  Acts acts_;
  BackWork work_;
  Tensor grads_;
  std::vector<float> dlogits_;
};

}  // namespace vitkit

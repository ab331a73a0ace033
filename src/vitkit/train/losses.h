// Losses as forward/backward pairs.
#pragma once
#include <cstdint>

namespace vitkit {

// Cross-entropy with label smoothing eps (PyTorch's definition: the target is
// (1 - eps) * onehot + eps / C), averaged over the batch.
//   logits (B, C), labels (B) -> returns the mean loss;
//   dlogits (B, C) = d loss / d logits (may be null); correct: top-1 hits (may be null).
float cross_entropy_forward_backward(const float* logits, const int* labels, int64_t B, int64_t C, float eps,
                                     float* dlogits, int64_t* correct = nullptr);

// Knowledge distillation (Hinton): KL(softmax(teacher/T) || softmax(student/T)) * T^2,
// averaged over the batch. dlogits (B, C) += alpha * d/d student (may be null).
float distill_kl_forward_backward(const float* student, const float* teacher, int64_t B, int64_t C, float T,
                                  float alpha, float* dlogits);

}  // namespace vitkit

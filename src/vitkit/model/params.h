// ParamTable: the model's f32 parameters by name — its norms, embeddings and
// the f32 tensors of its layers' representations (a dense weight, a bias, a
// latent weight while training) — each a Tensor it shares with its owner.
// The trainable ones also have an offset into one flat layout that gradients
// and optimizer state use, so one index addresses a parameter in all of them.
// Typed tensors of compressed representations (bf16, int8, ...) are not
// parameters and are not listed here.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "vitkit/core/tensor.h"

namespace vitkit {

struct ParamInfo {
  std::string name;  // torchvision name, e.g. "encoder.layers.encoder_layer_0.ln_1.weight"
  Shape shape;
  int64_t numel = 0;
  bool decay = true;      // AdamW weight decay applies (false: norms, biases, embeddings, class token)
  bool trainable = true;  // updated by training (false: frozen, e.g. a rounded weight beside its latent one)
  int64_t offset = -1;    // in the gradient layout (floats, 16-aligned); -1 when not trainable
};

class ParamTable {
 public:
  // A new zero-filled parameter; returns its index.
  int add(const std::string& name, const Shape& shape, bool decay, bool trainable = true);
  // A parameter whose storage is t (f32, shared, not copied).
  int add_shared(const std::string& name, const Tensor& t, bool decay, bool trainable = true);

  int size() const { return static_cast<int>(entries_.size()); }
  int64_t total() const { return total_; }  // floats of the gradient layout (trainable, with padding)
  int64_t count() const;                    // values of all parameters
  const ParamInfo& info(int i) const { return entries_.at(i); }
  const std::vector<ParamInfo>& entries() const { return entries_; }
  int find(const std::string& name) const;  // -1 when absent

  float* ptr(int i) { return tensors_[size_t(i)].f32(); }
  const float* ptr(int i) const { return tensors_[size_t(i)].f32(); }
  // The parameter's tensor (shares its storage).
  const Tensor& tensor(int i) const { return tensors_.at(size_t(i)); }
  // A new zero buffer in the gradient layout (gradients, optimizer moments).
  Tensor zeros_like() const { return Tensor::zeros({total_}); }

 private:
  int push(ParamInfo p, Tensor t);
  std::vector<ParamInfo> entries_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, int> index_;
  int64_t total_ = 0;
};

}  // namespace vitkit

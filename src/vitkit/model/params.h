// ParamTable: every float parameter of a model in one aligned buffer, each a
// named view (offset, shape) into it. Gradients and optimizer state use the
// same layout, so one index addresses a parameter in all of them.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "vitkit/core/tensor.h"

namespace vitkit {

struct ParamInfo {
  std::string name;  // torchvision name, e.g. "encoder.layers.encoder_layer_0.ln_1.weight"
  Shape shape;
  int64_t offset = 0;  // in floats
  int64_t numel = 0;
  bool decay = true;  // AdamW weight decay applies (false: norms, biases, embeddings, class token)
};

class ParamTable {
 public:
  // Adds a parameter during layout; returns its index. Offsets are 16-float aligned.
  int add(const std::string& name, const Shape& shape, bool decay);
  // Allocates the buffer (zero-filled) once the layout is complete.
  void allocate();

  int size() const { return static_cast<int>(entries_.size()); }
  int64_t total() const { return total_; }  // floats in the buffer (with alignment padding)
  int64_t count() const;                    // parameters (without padding)
  const ParamInfo& info(int i) const { return entries_.at(i); }
  const std::vector<ParamInfo>& entries() const { return entries_; }
  int find(const std::string& name) const;  // -1 when absent

  float* data() { return buf_.f32(); }
  const float* data() const { return buf_.f32(); }
  float* ptr(int i) { return data() + entries_[i].offset; }
  const float* ptr(int i) const { return data() + entries_[i].offset; }
  // The parameter as a tensor sharing the buffer.
  Tensor tensor(int i) const;
  // A new zero buffer with this layout (gradients, optimizer moments).
  Tensor zeros_like() const { return Tensor::zeros({total_}); }

 private:
  std::vector<ParamInfo> entries_;
  std::unordered_map<std::string, int> index_;
  int64_t total_ = 0;
  Tensor buf_;
};

}  // namespace vitkit

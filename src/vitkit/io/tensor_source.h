// TensorSource: named tensors from a checkpoint (safetensors, .pth, a renamed or
// repacked view of another source), read as float32 on demand.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "vitkit/core/tensor.h"

namespace vitkit {

struct SourceTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // The file (for messages).
  virtual std::string path() const = 0;
  // Every tensor, in file order.
  virtual std::vector<SourceTensor> list() const = 0;
  // Reads the named tensor converted to float32 into dst (numel floats).
  // Throws Error naming the file and tensor if absent or unreadable.
  virtual void read_f32(const std::string& name, float* dst) const = 0;
  // The tensor in its stored dtype (default: via read_f32 for float types).
  virtual Tensor read(const std::string& name) const;
  // String metadata (safetensors __metadata__); empty for other formats.
  virtual std::map<std::string, std::string> metadata() const { return {}; }
  // Convenience: the entry named name, or null.
  const SourceTensor* find_in(const std::vector<SourceTensor>& all, const std::string& name) const;
};

}  // namespace vitkit

#include "vitkit/io/tensor_source.h"

#include "vitkit/core/error.h"

namespace vitkit {

Tensor TensorSource::read(const std::string& name) const {
  for (auto& t : list())
    if (t.name == name) {
      Tensor f = Tensor::empty(t.shape, DType::F32);
      read_f32(name, f.f32());
      return t.dtype == DType::F32 ? f : f.to(t.dtype);
    }
  fail(path(), ": no tensor named '", name, "'");
}

const SourceTensor* TensorSource::find_in(const std::vector<SourceTensor>& all, const std::string& name) const {
  for (auto& t : all)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace vitkit

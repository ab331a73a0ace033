#include "vitkit/model/params.h"

#include "vitkit/core/error.h"

namespace vitkit {

int ParamTable::push(ParamInfo p, Tensor t) {
  check(!index_.count(p.name), "duplicate parameter name ", p.name);
  p.numel = shape_numel(p.shape);
  p.offset = -1;
  if (p.trainable) {
    p.offset = total_;
    total_ += (p.numel + 15) / 16 * 16;
  }
  index_[p.name] = size();
  entries_.push_back(std::move(p));
  tensors_.push_back(std::move(t));
  return size() - 1;
}

int ParamTable::add(const std::string& name, const Shape& shape, bool decay, bool trainable) {
  return push({name, shape, 0, decay, trainable}, Tensor::zeros(shape));
}

int ParamTable::add_shared(const std::string& name, const Tensor& t, bool decay, bool trainable) {
  check(t.defined() && t.dtype() == DType::F32, "parameter ", name, " must be an f32 tensor");
  return push({name, t.shape(), 0, decay, trainable}, t);
}

int64_t ParamTable::count() const {
  int64_t n = 0;
  for (auto& e : entries_) n += e.numel;
  return n;
}

int ParamTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

}  // namespace vitkit

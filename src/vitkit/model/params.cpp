#include "vitkit/model/params.h"

#include "vitkit/core/error.h"

namespace vitkit {

int ParamTable::add(const std::string& name, const Shape& shape, bool decay) {
  check(!buf_.defined(), "ParamTable::add after allocate (", name, ")");
  check(!index_.count(name), "duplicate parameter name ", name);
  ParamInfo p;
  p.name = name;
  p.shape = shape;
  p.numel = shape_numel(shape);
  p.offset = total_;
  p.decay = decay;
  total_ += (p.numel + 15) / 16 * 16;
  index_[name] = static_cast<int>(entries_.size());
  entries_.push_back(std::move(p));
  return index_[name];
}

void ParamTable::allocate() { buf_ = Tensor::zeros({total_}); }

int64_t ParamTable::count() const {
  int64_t n = 0;
  for (auto& e : entries_) n += e.numel;
  return n;
}

int ParamTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

Tensor ParamTable::tensor(int i) const {
  const ParamInfo& p = entries_.at(i);
  return buf_.slice(p.offset, p.offset + p.numel).reshape(p.shape);
}

}  // namespace vitkit

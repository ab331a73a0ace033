#include "vitkit/io/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "vitkit/core/error.h"

namespace vitkit {

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // as the reference implementation

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
  if (a != 0 && b > UINT64_MAX / a) fail(what, ": size overflows");
  return a * b;
}
}  // namespace

SafetensorsReader::SafetensorsReader(const std::string& path) : file_(path) {
  const uint64_t size = file_.size();
  if (size < 8) fail(path, ": not a safetensors file: ", size, " bytes, shorter than the 8-byte header length");
  uint8_t lenb[8];
  file_.read_at(0, lenb, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | lenb[i];
  if (n > kMaxHeader) fail(path, ": header length ", n, " exceeds the 100 MB limit (corrupted or not safetensors)");
  if (n > size - 8) fail(path, ": header length ", n, " is longer than the file (", size, " bytes): truncated?");
  if (n < 2) fail(path, ": header length ", n, " is too small for a JSON object");
  std::string hdr(n, '\0');
  file_.read_at(8, hdr.data(), n);
  data_start_ = 8 + n;
  const uint64_t data_size = size - data_start_;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(hdr);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": header is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(path, ": header is not a JSON object");
  for (auto& [key, v] : j.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) fail(path, ": __metadata__ is not an object");
      for (auto& [mk, mv] : v.items()) {
        if (!mv.is_string()) fail(path, ": __metadata__ value for '", mk, "' is not a string");
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = cat(path, ": tensor '", key, "'");
    if (!v.is_object()) fail(where, ": entry is not an object");
    StTensor t;
    t.name = key;
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where, ": missing or non-string dtype");
    if (!dtype_from_name(v["dtype"].get<std::string>(), &t.dtype))
      fail(where, ": unsupported dtype '", v["dtype"].get<std::string>(), "'");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(where, ": missing shape");
    uint64_t numel = 1;
    for (auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(where, ": shape has a non-integer or negative dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40)) fail(where, ": dimension ", dim, " is implausibly large");
      numel = checked_mul(numel, dim, where);
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned())
      fail(where, ": data_offsets must be two non-negative integers");
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    if (t.begin > t.end) fail(where, ": data_offsets [", t.begin, ", ", t.end, "] are reversed");
    if (t.end > data_size)
      fail(where, ": data_offsets end ", t.end, " is past the data section (", data_size,
           " bytes): file truncated or offsets corrupted");
    uint64_t bytes = checked_mul(numel, dtype_size(t.dtype), where);
    if (t.end - t.begin != bytes)
      fail(where, ": data_offsets span ", t.end - t.begin, " bytes but shape ", shape_str(t.shape), " of ",
           dtype_name(t.dtype), " needs ", bytes);
    tensors_.push_back(std::move(t));
  }
  // No two tensors may share bytes.
  std::vector<const StTensor*> order;
  for (auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end && order[i]->begin != order[i]->end &&
        order[i - 1]->begin != order[i - 1]->end)
      fail(path, ": tensors '", order[i - 1]->name, "' and '", order[i]->name, "' overlap (bytes ",
           order[i]->begin, "..", order[i - 1]->end, ")");
  // Keep the file order (by offset) for listing.
  std::sort(tensors_.begin(), tensors_.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const StTensor* SafetensorsReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor SafetensorsReader::read(const StTensor& t) const {
  Tensor out = Tensor::empty(t.shape, t.dtype);
  if (out.nbytes()) file_.read_at(data_start_ + t.begin, out.raw(), out.nbytes());
  return out;
}

Tensor SafetensorsReader::read(const std::string& name) const {
  const StTensor* t = find(name);
  if (!t) fail(path(), ": no tensor named '", name, "'");
  return read(*t);
}

std::vector<SourceTensor> SafetensorsReader::list() const {
  std::vector<SourceTensor> v;
  for (auto& t : tensors_) v.push_back({t.name, t.dtype, t.shape});
  return v;
}

void SafetensorsReader::read_f32(const std::string& name, float* dst) const {
  const StTensor* t = find(name);
  if (!t) fail(path(), ": no tensor named '", name, "'");
  read_f32(*t, dst);
}

void SafetensorsReader::read_f32(const StTensor& t, float* dst) const {
  const size_t n = static_cast<size_t>(t.numel());
  if (t.dtype == DType::F32) {
    if (n) file_.read_at(data_start_ + t.begin, dst, n * 4);
    return;
  }
  // Convert in chunks so that no second full-size copy is held.
  const size_t es = dtype_size(t.dtype), chunk = 1 << 20;
  std::vector<uint8_t> tmp(std::min(n, chunk) * es);
  for (size_t i = 0; i < n; i += chunk) {
    size_t m = std::min(chunk, n - i);
    file_.read_at(data_start_ + t.begin + i * es, tmp.data(), m * es);
    convert_to_f32(t.dtype, tmp.data(), dst + i, m);
  }
}

void write_safetensors(const std::string& path, const std::vector<StEntry>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h;
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (auto& [k, v] : metadata) md[k] = v;
    h["__metadata__"] = md;
  }
  uint64_t off = 0;
  for (auto& t : tensors) {
    check(t.name != "__metadata__", "tensor name __metadata__ is reserved");
    check(!h.contains(t.name), "duplicate tensor name ", t.name);
    uint64_t bytes = static_cast<uint64_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
  }
  std::string hdr = h.dump();
  while (hdr.size() % 8) hdr.push_back(' ');
  write_file_atomic(path, [&](std::FILE* f) {
    uint8_t lenb[8];
    uint64_t n = hdr.size();
    for (int i = 0; i < 8; ++i) lenb[i] = static_cast<uint8_t>(n >> (8 * i));
    write_all(f, lenb, 8, path);
    write_all(f, hdr.data(), hdr.size(), path);
    for (auto& t : tensors)
      write_all(f, t.data, static_cast<size_t>(shape_numel(t.shape)) * dtype_size(t.dtype), path);
  });
}

}  // namespace vitkit

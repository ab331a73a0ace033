// safetensors (huggingface/safetensors): an 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the tensor bytes. Every size and offset is checked before it is used.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vitkit/core/file.h"
#include "vitkit/core/tensor.h"
#include "vitkit/io/tensor_source.h"

namespace vitkit {

struct StTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const { return shape_numel(shape); }
};

class SafetensorsReader : public TensorSource {
 public:
  // Opens and validates the file: header length, JSON, dtypes, shapes, offsets
  // (inside the data section, matching the shape, not overlapping).
  explicit SafetensorsReader(const std::string& path);
  std::string path() const override { return file_.path(); }
  std::vector<SourceTensor> list() const override;
  void read_f32(const std::string& name, float* dst) const override;
  Tensor read(const std::string& name) const override;
  std::map<std::string, std::string> metadata() const override { return metadata_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }
  const StTensor* find(const std::string& name) const;
  // The tensor in its stored dtype.
  Tensor read(const StTensor& t) const;
  // Reads and converts to float32 into dst (t.numel() floats).
  void read_f32(const StTensor& t, float* dst) const;

 private:
  InputFile file_;
  uint64_t data_start_ = 0;
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

struct StEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;  // numel * dtype_size bytes
};

// Writes atomically, tensors in the given order; the header is padded with
// spaces to a multiple of 8 bytes so that the data section starts aligned.
void write_safetensors(const std::string& path, const std::vector<StEntry>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace vitkit

// Tensor: a shape, a dtype and a 64-byte aligned, shared, owning buffer.
// Views share the buffer (a byte offset into it). Row-major, contiguous.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vitkit {

enum class DType { F32, F64, F16, BF16, I8, U8, I16, I32, I64, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);         // safetensors spelling: "F32", "I8", ...
bool dtype_from_name(const std::string& s, DType* out);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);   // "[2, 3, 4]"

// 64-byte aligned heap buffer.
struct AlignedBuffer {
  explicit AlignedBuffer(size_t bytes);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data = nullptr;
  size_t bytes = 0;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  static Tensor from(const Shape& shape, const std::vector<float>& values);

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return buf_ != nullptr; }

  uint8_t* raw() { return buf_->data + offset_; }
  const uint8_t* raw() const { return buf_->data + offset_; }
  template <typename T> T* data() { return reinterpret_cast<T*>(raw()); }
  template <typename T> const T* data() const { return reinterpret_cast<const T*>(raw()); }
  float* f32() { return data<float>(); }
  const float* f32() const { return data<float>(); }

  // Same buffer, new shape with the same number of elements.
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of the first dimension, sharing the buffer.
  Tensor slice(int64_t begin, int64_t end) const;
  // Deep copy.
  Tensor clone() const;
  // Copy converted to another dtype (float types and integers; ints convert by value).
  Tensor to(DType dtype) const;

 private:
  std::shared_ptr<AlignedBuffer> buf_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

// IEEE half and bfloat16 conversions (round to nearest even).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

// Converts n elements of src (of dtype t) to float.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);
// Converts n floats to dtype t (integers: rounded to nearest and saturated).
void convert_from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace vitkit

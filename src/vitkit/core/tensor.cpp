#include "vitkit/core/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>

#include "vitkit/core/error.h"

namespace vitkit {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

bool dtype_from_name(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> names[] = {
      {"F32", DType::F32}, {"F64", DType::F64}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I8", DType::I8},   {"U8", DType::U8},   {"I16", DType::I16}, {"I32", DType::I32},
      {"I64", DType::I64}, {"BOOL", DType::BOOL}};
  for (auto& [n, t] : names)
    if (s == n) { *out = t; return true; }
  return false;
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

AlignedBuffer::AlignedBuffer(size_t n) : bytes(n) {
  size_t rounded = (n + 63) / 64 * 64;
  data = static_cast<uint8_t*>(std::aligned_alloc(64, rounded ? rounded : 64));
  if (!data) fail("out of memory allocating ", n, " bytes");
}
AlignedBuffer::~AlignedBuffer() { std::free(data); }

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) check(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.buf_ = std::make_shared<AlignedBuffer>(t.nbytes());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::from(const Shape& shape, const std::vector<float>& values) {
  check(static_cast<int64_t>(values.size()) == shape_numel(shape), "Tensor::from: ", values.size(),
        " values for shape ", shape_str(shape));
  Tensor t = empty(shape);
  std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  check(shape_numel(shape) == numel(), "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  check(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
        ") out of range for shape ", shape_str(shape_));
  Tensor t = *this;
  int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  t.offset_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return clone();
  Tensor f = empty(shape_, DType::F32);
  if (dtype_ == DType::F32) std::memcpy(f.raw(), raw(), nbytes());
  else convert_to_f32(dtype_, raw(), f.f32(), numel());
  if (dtype == DType::F32) return f;
  Tensor t = empty(shape_, dtype);
  convert_from_f32(dtype, f.f32(), t.raw(), numel());
  return t;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) bits = sign;
    else {  // subnormal: normalise
      int e = -1;
      do { ++e; mant <<= 1; } while (!(mant & 0x400));
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
  else bits = sign | ((exp + 112) << 23) | (mant << 13);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0);  // inf/nan
  if (absx >= 0x477ff000u) return sign | 0x7c00u;  // overflow to inf (>= 65520)
  if (absx < 0x38800000u) {  // below 2^-14: a half subnormal, value m * 2^-24
    float a;
    std::memcpy(&a, &absx, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t r = absx + 0xc8000fffu + ((absx >> 13) & 1);  // rebias exponent, round to nearest even
  return static_cast<uint16_t>(sign | (r >> 13));
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

template <typename T>
static void to_f32(const void* src, float* dst, size_t n) {
  const T* s = static_cast<const T*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
}

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F64: to_f32<double>(src, dst, n); return;
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = half_to_float(s[i]);
      return;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
    case DType::I8: to_f32<int8_t>(src, dst, n); return;
    case DType::U8: to_f32<uint8_t>(src, dst, n); return;
    case DType::BOOL: to_f32<uint8_t>(src, dst, n); return;
    case DType::I16: to_f32<int16_t>(src, dst, n); return;
    case DType::I32: to_f32<int32_t>(src, dst, n); return;
    case DType::I64: to_f32<int64_t>(src, dst, n); return;
  }
}

template <typename T>
static void from_f32_int(const float* s, void* dst, size_t n) {
  T* d = static_cast<T*>(dst);
  const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
  const double hi = static_cast<double>(std::numeric_limits<T>::max());
  for (size_t i = 0; i < n; ++i) {
    double v = std::nearbyint(static_cast<double>(s[i]));
    if (std::isnan(v)) v = 0;
    d[i] = static_cast<T>(v < lo ? lo : (v > hi ? hi : v));
  }
}

void convert_from_f32(DType t, const float* src, void* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F64: {
      double* d = static_cast<double*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = src[i];
      return;
    }
    case DType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_half(src[i]);
      return;
    }
    case DType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
    case DType::I8: from_f32_int<int8_t>(src, dst, n); return;
    case DType::U8: from_f32_int<uint8_t>(src, dst, n); return;
    case DType::BOOL: {
      uint8_t* d = static_cast<uint8_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = src[i] != 0.f;
      return;
    }
    case DType::I16: from_f32_int<int16_t>(src, dst, n); return;
    case DType::I32: from_f32_int<int32_t>(src, dst, n); return;
    case DType::I64: from_f32_int<int64_t>(src, dst, n); return;
  }
}

}  // namespace vitkit

#include "vitkit/core/npy.h"

#include <cctype>
#include <cstring>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"

namespace vitkit {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr uint64_t kMaxHeader = 1u << 20;    // numpy itself refuses headers over 10,000 bytes
constexpr int64_t kMaxDim = int64_t(1) << 40;
const char* const kSupported = "'<f4', '<f8', '<f2', '|u1', '|i1', '<i2', '<i4', '<i8', '|b1'";

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// Parses the header dict literal: {'descr': STR, 'fortran_order': BOOL, 'shape': TUPLE, }
// followed only by spaces and a newline. Each key exactly once, no others.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    expect('{', "the header to start with '{'");
    while (!eat('}')) {
      std::string key = parse_string();
      expect(':', cat("':' after key '", key, "'"));
      if (key == "descr") {
        check(!seen_descr, path_, ": .npy header has 'descr' twice");
        h.descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order") {
        check(!seen_fortran, path_, ": .npy header has 'fortran_order' twice");
        h.fortran_order = parse_bool();
        seen_fortran = true;
      } else if (key == "shape") {
        check(!seen_shape, path_, ": .npy header has 'shape' twice");
        h.shape = parse_tuple();
        seen_shape = true;
      } else {
        fail(path_, ": .npy header has an unexpected key '", key, "'");
      }
      if (!eat(',')) {
        expect('}', "',' or '}' after a header value");
        break;
      }
    }
    skip_ws();
    check(pos_ == s_.size(), path_, ": .npy header has trailing characters after the dict");
    check(seen_descr && seen_fortran && seen_shape, path_,
          ": .npy header lacks one of 'descr', 'fortran_order', 'shape'");
    return h;
  }

 private:
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const std::string& what) {
    if (!eat(c)) fail(path_, ": malformed .npy header: expected ", what, " at offset ", pos_, " in \"", s_, "\"");
  }
  std::string parse_string() {
    skip_ws();
    check(pos_ < s_.size() && (s_[pos_] == '\'' || s_[pos_] == '"'), path_,
          ": malformed .npy header: expected a quoted string at offset ", pos_);
    char q = s_[pos_++];
    size_t end = s_.find(q, pos_);
    check(end != std::string::npos, path_, ": malformed .npy header: unterminated string");
    std::string out = s_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return out;
  }
  bool parse_bool() {
    skip_ws();
    if (s_.compare(pos_, 4, "True") == 0) { pos_ += 4; return true; }
    if (s_.compare(pos_, 5, "False") == 0) { pos_ += 5; return false; }
    fail(path_, ": malformed .npy header: fortran_order is not True or False");
  }
  int64_t parse_int() {
    skip_ws();
    size_t start = pos_;
    int64_t v = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      v = v * 10 + (s_[pos_++] - '0');
      check(v <= kMaxDim, path_, ": .npy shape has an implausibly large dimension");
    }
    check(pos_ > start, path_, ": malformed .npy header: shape holds a non-integer at offset ", start);
    if (pos_ < s_.size() && s_[pos_] == 'L') ++pos_;  // Python 2 long literal
    return v;
  }
  Shape parse_tuple() {
    Shape shape;
    expect('(', "'(' to start the shape");
    while (!eat(')')) {
      shape.push_back(parse_int());
      if (!eat(',')) {
        expect(')', "',' or ')' in the shape");
        break;
      }
    }
    return shape;
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
};

// descr -> DType: '<' (or '=') little-endian multi-byte types, '|' (or '<', '=') bytes.
DType dtype_from_descr(const std::string& d, const std::string& path) {
  static const std::pair<const char*, DType> types[] = {
      {"f4", DType::F32}, {"f8", DType::F64}, {"f2", DType::F16}, {"u1", DType::U8}, {"i1", DType::I8},
      {"i2", DType::I16}, {"i4", DType::I32}, {"i8", DType::I64}, {"b1", DType::BOOL}};
  if (d.size() == 3) {
    for (auto& [name, t] : types) {
      if (d.compare(1, 2, name) != 0) continue;
      char order = d[0];
      bool single = dtype_size(t) == 1;
      if (order == '<' || order == '=' || (single && order == '|')) return t;
      if (order == '>') fail(path, ": .npy dtype '", d, "' is big-endian; only little-endian is supported");
    }
  }
  fail(path, ": unsupported .npy dtype '", d, "' (supported: ", kSupported, ")");
}

// Preamble: magic (6) + version (2) + header length (2 or 4, little-endian).
// Returns the header text; *data_start is the offset of the array bytes.
std::string read_header_text(const InputFile& f, uint64_t* data_start) {
  const std::string& path = f.path();
  check(f.size() >= 10, path, ": not a .npy file: only ", f.size(), " bytes");
  uint8_t pre[12] = {};
  f.read_at(0, pre, 10);
  check(std::memcmp(pre, kMagic, kMagicLen) == 0, path, ": not a .npy file: bad magic (expected \\x93NUMPY)");
  int major = pre[6], minor = pre[7];
  check((major == 1 || major == 2 || major == 3) && minor == 0, path, ": unsupported .npy version ", major, ".",
        minor, " (supported: 1.0, 2.0, 3.0)");
  uint64_t len = 0, pre_len = 10;
  if (major == 1) {
    len = pre[8] | (uint64_t(pre[9]) << 8);
  } else {
    check(f.size() >= 12, path, ": truncated .npy preamble");
    f.read_at(10, pre + 10, 2);
    len = pre[8] | (uint64_t(pre[9]) << 8) | (uint64_t(pre[10]) << 16) | (uint64_t(pre[11]) << 24);
    pre_len = 12;
  }
  check(len <= kMaxHeader, path, ": .npy header length ", len, " exceeds the 1 MiB limit (corrupted?)");
  check(len <= f.size() - pre_len, path, ": truncated .npy file: header length ", len, " but only ",
        f.size() - pre_len, " bytes follow the preamble");
  std::string text(len, '\0');
  if (len) f.read_at(pre_len, text.data(), len);
  *data_start = pre_len + len;
  return text;
}

}  // namespace

std::string npy_descr(DType t) {
  switch (t) {
    case DType::F32: return "<f4";
    case DType::F64: return "<f8";
    case DType::F16: return "<f2";
    case DType::U8: return "|u1";
    case DType::I8: return "|i1";
    case DType::I16: return "<i2";
    case DType::I32: return "<i4";
    case DType::I64: return "<i8";
    case DType::BOOL: return "|b1";
    case DType::BF16: break;
  }
  fail("bfloat16 has no NumPy dtype: convert the tensor to F32 before writing .npy");
}

// File -> Tensor of the header's shape and dtype. The array bytes must fill the
// rest of the file exactly.
Tensor read_npy(const std::string& path) {
  InputFile f(path);
  uint64_t data_start = 0;
  std::string text = read_header_text(f, &data_start);
  NpyHeader h = HeaderParser(text, path).parse();
  DType dtype = dtype_from_descr(h.descr, path);
  check(!h.fortran_order, path, ": .npy array is in Fortran order; only C order is supported ",
        "(save it with np.ascontiguousarray)");
  uint64_t numel = 1;
  for (int64_t d : h.shape) {
    check(d == 0 || numel <= (uint64_t(1) << 62) / uint64_t(d), path, ": .npy shape ", shape_str(h.shape),
          " overflows");
    numel *= uint64_t(d);
  }
  check(numel <= (uint64_t(1) << 59), path, ": .npy shape ", shape_str(h.shape), " is implausibly large");
  uint64_t bytes = numel * dtype_size(dtype), have = f.size() - data_start;
  check(bytes <= have, path, ": truncated .npy file: shape ", shape_str(h.shape), " of ", h.descr, " needs ",
        bytes, " bytes but ", have, " follow the header");
  check(bytes == have, path, ": .npy file has ", have - bytes, " trailing bytes after the ", shape_str(h.shape),
        " ", h.descr, " array");
  Tensor t = Tensor::empty(h.shape, dtype);
  if (bytes) f.read_at(data_start, t.raw(), bytes);
  return t;
}

// Tensor -> "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded
// with spaces and '\n' so the data starts at a multiple of 64 bytes.
void write_npy(const std::string& path, const Tensor& t) {
  check(t.defined(), path, ": cannot write an undefined tensor as .npy");
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += cat(i ? ", " : "", t.shape()[i]);
  if (t.shape().size() == 1) shape += ",";
  shape += ")";
  std::string dict = cat("{'descr': '", npy_descr(t.dtype()), "', 'fortran_order': False, 'shape': ", shape, ", }");
  size_t total = kMagicLen + 4 + dict.size() + 1;
  dict += std::string((64 - total % 64) % 64, ' ') + "\n";
  check(dict.size() <= 65535, path, ": .npy header too long for version 1.0 (", dict.size(), " bytes)");
  uint8_t pre[10];
  std::memcpy(pre, kMagic, kMagicLen);
  pre[6] = 1;
  pre[7] = 0;
  pre[8] = uint8_t(dict.size() & 0xff);
  pre[9] = uint8_t(dict.size() >> 8);
  write_file_atomic(path, [&](std::FILE* fp) {
    write_all(fp, pre, sizeof pre, path);
    write_all(fp, dict.data(), dict.size(), path);
    if (t.nbytes()) write_all(fp, t.raw(), t.nbytes(), path);
  });
}

}  // namespace vitkit

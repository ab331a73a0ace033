// .npy reader and writer: round trips for every dtype, files written by numpy
// (tests/ref/preprocess_ref.py), and malformed files rejected with clear errors.
#include <cstring>
#include <fstream>
#include <string>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"

using namespace vitkit;

namespace {

const DType kAll[] = {DType::F32, DType::F64, DType::F16, DType::U8, DType::I8,
                      DType::I16, DType::I32, DType::I64, DType::BOOL};

// Element i of the arrays preprocess_ref.py writes (shape (2, 3, 4), i = 0..23).
double expected_value(DType t, int i) {
  switch (t) {
    case DType::F32: case DType::F64: case DType::F16: return (i - 8) / 4.0;
    case DType::U8: return i * 10 % 256;
    case DType::I8: return i * 5 - 60;
    case DType::I16: return i * 1000 - 12000;
    case DType::I32: return i * 100000 - 1200000;
    case DType::I64: return double(int64_t(i) * 1000000000000 - 5000000000000);
    case DType::BOOL: return i % 3 == 0;
    case DType::BF16: break;
  }
  return 0;
}

// Element i of t as double (exact for every value used here).
double element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::F64: return t.data<double>()[i];
    case DType::F16: return half_to_float(t.data<uint16_t>()[i]);
    case DType::U8: return t.data<uint8_t>()[i];
    case DType::I8: return t.data<int8_t>()[i];
    case DType::I16: return t.data<int16_t>()[i];
    case DType::I32: return t.data<int32_t>()[i];
    case DType::I64: return double(t.data<int64_t>()[i]);
    case DType::BOOL: return t.data<uint8_t>()[i];
    case DType::BF16: break;
  }
  return 0;
}

// A (2, 3, 4) tensor of dtype t holding expected_value(t, i).
Tensor make_tensor(DType t) {
  Tensor x = Tensor::empty({2, 3, 4}, t);
  for (int i = 0; i < 24; ++i) {
    double v = expected_value(t, i);
    switch (t) {
      case DType::F32: x.data<float>()[i] = float(v); break;
      case DType::F64: x.data<double>()[i] = v; break;
      case DType::F16: x.data<uint16_t>()[i] = float_to_half(float(v)); break;
      case DType::U8: case DType::BOOL: x.data<uint8_t>()[i] = uint8_t(v); break;
      case DType::I8: x.data<int8_t>()[i] = int8_t(v); break;
      case DType::I16: x.data<int16_t>()[i] = int16_t(v); break;
      case DType::I32: x.data<int32_t>()[i] = int32_t(v); break;
      case DType::I64: x.data<int64_t>()[i] = int64_t(i) * 1000000000000 - 5000000000000; break;
      case DType::BF16: break;
    }
  }
  return x;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// A version 1.0 file with the given header dict (padded to 64) and data bytes.
std::string npy_bytes(const std::string& dict, size_t data_bytes, const char* magic = "\x93NUMPY") {
  std::string h = dict;
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out(magic, 6);
  out += '\x01';
  out += '\x00';
  out += char(h.size() & 0xff);
  out += char(h.size() >> 8);
  return out + h + std::string(data_bytes, '\x01');
}

// read_npy(path) must throw an Error naming the file and containing `what`.
void expect_npy_error(const std::string& path, const std::string& what) {
  try {
    read_npy(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
  }
}

const char* kDict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

}  // namespace

TEST(Npy, RoundTripEveryDtype) {
  std::string dir = test::temp_dir();
  for (DType t : kAll) {
    Tensor x = make_tensor(t);
    std::string path = dir + "/" + dtype_name(t) + ".npy";
    write_npy(path, x);
    EXPECT_EQ(file_size(path) % 64, x.nbytes() % 64) << "data not 64-byte aligned";
    Tensor y = read_npy(path);
    ASSERT_EQ(y.dtype(), t);
    ASSERT_EQ(y.shape(), x.shape());
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << dtype_name(t);
  }
}

TEST(Npy, RoundTripScalarEmptyAndVector) {
  std::string dir = test::temp_dir();
  for (const Shape& s : {Shape{}, Shape{0, 3}, Shape{5}, Shape{1, 1, 1, 7}}) {
    Tensor x = Tensor::zeros(s, DType::I32);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<int32_t>()[i] = int32_t(i * 7 - 3);
    write_npy(dir + "/a.npy", x);
    Tensor y = read_npy(dir + "/a.npy");
    EXPECT_EQ(y.shape(), s);
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
  }
}

TEST(Npy, Bf16IsRejectedOnWrite) {
  std::string path = test::temp_dir() + "/bf16.npy";
  EXPECT_THROW(write_npy(path, Tensor::zeros({2}, DType::BF16)), Error);
  EXPECT_FALSE(file_exists(path));
}

TEST(Npy, NumpyWrittenFilesReadBackEqual) {
  const std::string dir = test::ref_path("preprocess/npy");
  VITKIT_REQUIRE_FILE(dir + "/f4.npy");
  const char* names[] = {"f4", "f8", "f2", "u1", "i1", "i2", "i4", "i8", "b1"};
  for (int k = 0; k < 9; ++k) {
    Tensor t = read_npy(dir + "/" + names[k] + ".npy");
    ASSERT_EQ(t.dtype(), kAll[k]) << names[k];
    ASSERT_EQ(t.shape(), (Shape{2, 3, 4})) << names[k];
    for (int i = 0; i < 24; ++i) EXPECT_EQ(element(t, i), expected_value(kAll[k], i)) << names[k] << "[" << i << "]";
  }
  Tensor scalar = read_npy(dir + "/scalar.npy");
  EXPECT_EQ(scalar.shape(), Shape{});
  EXPECT_EQ(scalar.f32()[0], 3.5f);
  EXPECT_EQ(read_npy(dir + "/empty.npy").shape(), (Shape{0, 3}));
  Tensor v = read_npy(dir + "/vector.npy");
  ASSERT_EQ(v.shape(), Shape{5});
  EXPECT_EQ(v.data<int32_t>()[4], 4);
}

TEST(Npy, NumpyVersions2And3) {
  const std::string dir = test::ref_path("preprocess/npy");
  VITKIT_REQUIRE_FILE(dir + "/v2.npy");
  for (const char* f : {"v2.npy", "v3.npy"}) {
    Tensor t = read_npy(dir + "/" + f);
    ASSERT_EQ(t.shape(), (Shape{2, 3, 4}));
    for (int i = 0; i < 24; ++i) EXPECT_EQ(t.f32()[i], float((i - 8) / 4.0)) << f;
  }
}

TEST(Npy, NumpyFortranBigEndianAndComplexAreRejected) {
  const std::string dir = test::ref_path("preprocess/npy");
  VITKIT_REQUIRE_FILE(dir + "/fortran.npy");
  expect_npy_error(dir + "/fortran.npy", "Fortran order");
  expect_npy_error(dir + "/bigendian.npy", "big-endian");
  expect_npy_error(dir + "/complex.npy", "unsupported .npy dtype '<c8'");
}

TEST(Npy, TruncatedFiles) {
  const std::string dir = test::temp_dir();
  std::string good = npy_bytes(kDict, 24);
  for (size_t n : {size_t(0), size_t(5), size_t(9), size_t(40), good.size() - 1}) {
    std::string path = cat(dir, "/trunc", n, ".npy");
    write_bytes(path, good.substr(0, n));
    expect_npy_error(path, n < 10 ? "not a .npy file" : "truncated");
  }
}

TEST(Npy, BadMagicAndVersion) {
  const std::string dir = test::temp_dir();
  write_bytes(dir + "/magic.npy", npy_bytes(kDict, 24, "\x93NUMPX"));
  expect_npy_error(dir + "/magic.npy", "bad magic");
  std::string v = npy_bytes(kDict, 24);
  v[6] = 4;
  write_bytes(dir + "/version.npy", v);
  expect_npy_error(dir + "/version.npy", "unsupported .npy version 4.0");
}

TEST(Npy, BadHeaders) {
  const std::string dir = test::temp_dir();
  const std::pair<const char*, const char*> cases[] = {
      {"['descr', '<f4']", "expected the header to start with '{'"},
      {"{'descr': '<f4', 'fortran_order': False}", "lacks one of"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", "unexpected key 'extra'"},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", "not True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", "non-integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", "trailing characters"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3), }", "malformed"},
      {"{'descr': '<u8', 'fortran_order': False, 'shape': (2, 3), }", "unsupported .npy dtype '<u8'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", "'descr' twice"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 3), }", "implausibly large"},
  };
  int k = 0;
  for (auto& [dict, what] : cases) {
    std::string path = cat(dir, "/bad", k++, ".npy");
    write_bytes(path, npy_bytes(dict, 24));
    expect_npy_error(path, what);
  }
}

TEST(Npy, ShapeSizeMismatch) {
  const std::string dir = test::temp_dir();
  write_bytes(dir + "/short.npy", npy_bytes(kDict, 23));
  expect_npy_error(dir + "/short.npy", "needs 24 bytes but 23");
  write_bytes(dir + "/long.npy", npy_bytes(kDict, 25));
  expect_npy_error(dir + "/long.npy", "1 trailing bytes");
  std::string huge = npy_bytes(kDict, 24);
  huge[8] = '\xff';
  huge[9] = '\xff';
  write_bytes(dir + "/hlen.npy", huge);
  expect_npy_error(dir + "/hlen.npy", "header length 65535");
}

TEST(Npy, MissingFile) { expect_npy_error(test::temp_dir() + "/nope.npy", "cannot open"); }

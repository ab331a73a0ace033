// Bad input: every malformed file, dataset and command line gives a vitkit::Error
// (library) or "vitkit: error: ..." with exit code 1 (2 for usage errors) from
// the CLI, naming the file, tensor or flag and the problem, and never crashes.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/core/rng.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/image.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"

#include <stb/stb_image_write.h>

using namespace vitkit;
namespace fs = std::filesystem;

namespace {

// A tiny model: 16x16x3 images, patch 8, dim 16, one block, 3 classes.
ViTConfig tiny_config() {
  ViTConfig c;
  c.name = "tiny";
  c.image_size = 16;
  c.patch = 8;
  c.dim = 16;
  c.depth = 1;
  c.heads = 2;
  c.mlp_dim = 32;
  c.classes = 3;
  return c;
}

std::string write_tiny_model(const std::string& dir) {
  auto m = test::random_model(tiny_config(), 1, 0.1f);
  const std::string path = dir + "/tiny.safetensors";
  save_model(*m, path);
  return path;
}

// A valid input for the tiny model: (2, 3, 16, 16).
std::string write_tiny_input(const std::string& dir) {
  Tensor x = Tensor::zeros({2, 3, 16, 16});
  const std::string path = dir + "/x.npy";
  write_npy(path, x);
  return path;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A safetensors file from a raw header text and data bytes.
std::vector<uint8_t> raw_safetensors(const std::string& header, const std::vector<uint8_t>& data,
                                     uint64_t declared = UINT64_MAX) {
  const uint64_t n = declared == UINT64_MAX ? header.size() : declared;
  std::vector<uint8_t> out(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}

uint64_t header_length(const std::vector<uint8_t>& file) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[size_t(i)];
  return n;
}

// A model file's tensors, editable, and written back with the same metadata.
struct Item {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<uint8_t> bytes;
};

void rewrite(const std::string& src, const std::string& dst, const std::function<void(std::vector<Item>&)>& edit) {
  SafetensorsReader r(src);
  std::vector<Item> items;
  for (auto& t : r.tensors()) {
    Tensor v = r.read(t);
    items.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(v.raw(), v.raw() + v.nbytes())});
  }
  edit(items);
  std::vector<StEntry> entries;
  for (auto& it : items) entries.push_back({it.name, it.dtype, it.shape, it.bytes.data()});
  write_safetensors(dst, entries, r.metadata());
}

Item& item(std::vector<Item>& items, const std::string& name) {
  for (auto& it : items)
    if (it.name == name) return it;
  ADD_FAILURE() << "no tensor " << name;
  return items.front();
}

// The message of the vitkit::Error f throws ("" and a failure when it does not).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a vitkit::Error: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << "missing '" << (part) << "' in: " << (text)

// Runs the CLI; expects exit code `code`, "vitkit: error:" on stderr and each part.
test::CliResult expect_cli_error(const std::string& args, int code, const std::vector<std::string>& parts) {
  test::CliResult r = test::run_cli(args);
  EXPECT_EQ(r.code, code) << "vitkit " << args << "\nstderr: " << r.err;
  EXPECT_HAS(r.err, "vitkit: error:");
  for (auto& p : parts) EXPECT_HAS(r.err, p);
  return r;
}

// A JPEG of w x h pixels (comp channels), encoded by stb_image_write.
std::vector<uint8_t> encode_jpeg(int w, int h, int comp, const std::vector<uint8_t>& px) {
  std::vector<uint8_t> out;
  stbi_write_jpg_to_func(
      [](void* ctx, void* data, int n) {
        auto* v = static_cast<std::vector<uint8_t>*>(ctx);
        v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + n);
      },
      &out, w, h, comp, px.data(), 90);
  return out;
}

}  // namespace

// ---------------------------------------------------------------- safetensors

TEST(BadSafetensors, TruncatedAtEveryHeaderByteAndInTheData) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir);
  const std::vector<uint8_t> full = read_file(model);
  const uint64_t n = header_length(full), size = full.size();
  std::vector<uint64_t> cuts;
  for (uint64_t c = 0; c < 8 + n + 8; ++c) cuts.push_back(c);  // every byte of the length and header
  for (uint64_t c : {size / 2, size - 4, size - 1}) cuts.push_back(c);
  const std::string cut_path = dir + "/cut.safetensors";
  for (uint64_t c : cuts) {
    write_bytes(cut_path, std::vector<uint8_t>(full.begin(), full.begin() + long(c)));
    std::string msg = error_of([&] { SafetensorsReader r(cut_path); });
    EXPECT_HAS(msg, cut_path);
    if (c < 8) {
      EXPECT_HAS(msg, "shorter than the 8-byte header length");
    } else {
      EXPECT_HAS(msg, "truncated");
    }
    if (HasFailure()) {
      ADD_FAILURE() << "at cut " << c << " of " << size;
      break;
    }
  }
  // The CLI at a few cut points: info reads the header, predict the weights.
  const std::string x = write_tiny_input(dir);
  for (uint64_t c : {uint64_t(0), uint64_t(5), 8 + n / 2, 8 + n + 3, size - 1}) {
    const std::string p = dir + "/cut_" + std::to_string(c) + ".safetensors";
    write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + long(c)));
    expect_cli_error("info " + p, 1, {p});
    auto r = expect_cli_error("predict " + p + " --input " + x, 1, {p});
    EXPECT_TRUE(c < 8 || r.err.find("truncated") != std::string::npos) << r.err;
  }
}

TEST(BadSafetensors, CorruptedHeaderJson) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir);
  std::vector<uint8_t> b = read_file(model);
  b[8] = 'x';  // the opening brace
  const std::string p = dir + "/badjson.safetensors";
  write_bytes(p, b);
  std::string msg = error_of([&] { SafetensorsReader r(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "header is not valid JSON");
  expect_cli_error("info " + p, 1, {p, "not valid JSON"});

  // Valid JSON of the wrong kinds.
  struct Bad {
    std::string header, expect;
  };
  const std::vector<Bad> cases = {
      {"[1, 2, 3]", "not a JSON object"},
      {R"({"__metadata__": [1]})", "__metadata__ is not an object"},
      {R"({"__metadata__": {"a": 1}})", "__metadata__ value for 'a' is not a string"},
      {R"({"w": 5})", "tensor 'w': entry is not an object"},
      {R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "tensor 'w': missing or non-string dtype"},
      {R"({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", "unsupported dtype 'F8_E4M3'"},
      {R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", "tensor 'w': missing shape"},
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "negative dimension"},
      {R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", "non-integer"},
      {R"({"w": {"dtype": "F32", "shape": [1]}})", "data_offsets must be two non-negative integers"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "data_offsets must be two"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", "reversed"},
  };
  for (auto& c : cases) {
    const std::string path = dir + "/kind.safetensors";
    write_bytes(path, raw_safetensors(c.header, std::vector<uint8_t>(8)));
    std::string m = error_of([&] { SafetensorsReader r(path); });
    EXPECT_HAS(m, path);
    EXPECT_HAS(m, c.expect);
  }
}

TEST(BadSafetensors, HeaderLengthLongerThanTheFile) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir);
  std::vector<uint8_t> b = read_file(model);
  const uint64_t len = b.size();  // 8 more than what follows the length field
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(len >> (8 * i));
  const std::string p = dir + "/long.safetensors";
  write_bytes(p, b);
  std::string msg = error_of([&] { SafetensorsReader r(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "is longer than the file");
  expect_cli_error("info " + p, 1, {p, "longer than the file"});
}

TEST(BadSafetensors, HeaderLengthTwoToThe63) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir);
  for (uint64_t len : {uint64_t(1) << 63, UINT64_MAX, uint64_t(200) << 20}) {
    std::vector<uint8_t> b = read_file(model);
    for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(len >> (8 * i));
    const std::string p = dir + "/huge.safetensors";
    write_bytes(p, b);
    std::string msg = error_of([&] { SafetensorsReader r(p); });
    EXPECT_HAS(msg, p);
    EXPECT_HAS(msg, "exceeds the 100 MB limit");
    EXPECT_HAS(msg, std::to_string(len));
    expect_cli_error("info " + p, 1, {p, "header length"});
  }
}

TEST(BadSafetensors, OverlappingOffsets) {
  const std::string dir = test::temp_dir(), p = dir + "/overlap.safetensors";
  write_bytes(p, raw_safetensors(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                                 R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
                                 std::vector<uint8_t>(24)));
  std::string msg = error_of([&] { SafetensorsReader r(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "'a' and 'b' overlap");
  // The same bytes twice (aliasing) is overlap too.
  write_bytes(p, raw_safetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                 R"( "b": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})",
                                 std::vector<uint8_t>(8)));
  EXPECT_HAS(error_of([&] { SafetensorsReader r(p); }), "overlap");
  expect_cli_error("info " + p, 1, {p, "overlap"});
}

TEST(BadSafetensors, OutOfRangeOffsets) {
  const std::string dir = test::temp_dir(), p = dir + "/range.safetensors";
  struct Bad {
    std::string header;
    std::string expect;
  };
  const std::vector<Bad> cases = {
      {R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})", "past the data section (16 bytes)"},
      {R"({"a": {"dtype": "U8", "shape": [16], "data_offsets": [18446744073709551600, 18446744073709551615]}})",
       "past the data section"},
      {R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551615]}})",
       "past the data section"},
  };
  for (auto& c : cases) {
    write_bytes(p, raw_safetensors(c.header, std::vector<uint8_t>(16)));
    std::string msg = error_of([&] { SafetensorsReader r(p); });
    EXPECT_HAS(msg, p);
    EXPECT_HAS(msg, "tensor 'a'");
    EXPECT_HAS(msg, c.expect);
  }
  expect_cli_error("info " + p, 1, {p, "tensor 'a'", "past the data section"});
}

TEST(BadSafetensors, OffsetSpanDoesNotMatchShapeAndDtype) {
  const std::string dir = test::temp_dir(), p = dir + "/span.safetensors";
  write_bytes(p, raw_safetensors(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})",
                                 std::vector<uint8_t>(16)));
  std::string msg = error_of([&] { SafetensorsReader r(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "tensor 'w': data_offsets span 12 bytes but shape [2, 2] of F32 needs 16");
  // Sizes whose product overflows 64 bits.
  write_bytes(p, raw_safetensors(R"({"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776], )"
                                 R"("data_offsets": [0, 16]}})",
                                 std::vector<uint8_t>(16)));
  msg = error_of([&] { SafetensorsReader r(p); });
  EXPECT_HAS(msg, "tensor 'w'");
  EXPECT_HAS(msg, "overflows");
  write_bytes(p, raw_safetensors(R"({"w": {"dtype": "F32", "shape": [1099511627777], "data_offsets": [0, 16]}})",
                                 std::vector<uint8_t>(16)));
  EXPECT_HAS(error_of([&] { SafetensorsReader r(p); }), "implausibly large");
  expect_cli_error("info " + p, 1, {p, "tensor 'w'"});
}

// ---------------------------------------------------------------- model files

TEST(BadModelFile, WrongDtypeForANamedTensor) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/i32.safetensors";
  rewrite(model, p, [](std::vector<Item>& v) { item(v, "conv_proj.weight").dtype = DType::I32; });
  std::string msg = error_of([&] { load_model(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "tensor 'conv_proj.weight' has dtype I32, expected a float type");
  expect_cli_error("predict " + p + " --input " + write_tiny_input(dir), 1, {p, "conv_proj.weight", "I32"});
}

TEST(BadModelFile, WrongShapeForANamedTensor) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/shape.safetensors";
  rewrite(model, p, [](std::vector<Item>& v) { item(v, "heads.head.weight").shape = {4, 12}; });  // [3, 16]
  std::string msg = error_of([&] { load_model(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "tensor 'heads.head.weight' has shape [4, 12] but the model config needs [3, 16]");
  expect_cli_error("predict " + p + " --input " + write_tiny_input(dir), 1, {p, "heads.head.weight", "[4, 12]"});
}

TEST(BadModelFile, MissingTensors) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/missing.safetensors";
  rewrite(model, p, [](std::vector<Item>& v) {
    std::erase_if(v, [](const Item& i) { return i.name == "encoder.ln.weight" || i.name == "heads.head.bias"; });
  });
  std::string msg = error_of([&] { load_model(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "missing tensors");
  EXPECT_HAS(msg, "encoder.ln.weight");
  EXPECT_HAS(msg, "heads.head.bias");
  expect_cli_error("predict " + p + " --input " + write_tiny_input(dir), 1, {p, "missing tensors"});
}

TEST(BadModelFile, UnusedTensorsWarnOrFailWithStrict) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/extra.safetensors";
  rewrite(model, p, [](std::vector<Item>& v) { v.push_back({"extra.weight", DType::F32, {2}, std::vector<uint8_t>(8)}); });
  testing::internal::CaptureStderr();
  load_model(p);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_HAS(err, "vitkit: warning:");
  EXPECT_HAS(err, "extra.weight");
  LoadOptions strict;
  strict.strict = true;
  EXPECT_HAS(error_of([&] { load_model(p, strict); }), "unused tensors (--strict): extra.weight");
}

TEST(BadModelFile, NanAndInfWeightsWarnNamingTheTensorThenRun) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/nan.safetensors";
  rewrite(model, p, [](std::vector<Item>& v) {
    float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    std::memcpy(item(v, "encoder.ln.weight").bytes.data(), &nan, 4);
    std::memcpy(item(v, "heads.head.bias").bytes.data() + 4, &inf, 4);
    std::memcpy(item(v, "heads.head.bias").bytes.data() + 8, &nan, 4);
  });
  testing::internal::CaptureStderr();
  auto m = load_model(p);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(m, nullptr);
  EXPECT_HAS(err, "vitkit: warning: " + p + ": tensor 'encoder.ln.weight' has 1 NaN or Inf values");
  EXPECT_HAS(err, "tensor 'heads.head.bias' has 2 NaN or Inf values");
  const std::string x = write_tiny_input(dir), out = dir + "/out.npy";
  test::CliResult r = test::run_cli("predict " + p + " --input " + x + " -o " + out);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.err, "vitkit: warning:");
  EXPECT_HAS(r.err, "encoder.ln.weight");
  EXPECT_HAS(r.err, "heads.head.bias");
  EXPECT_TRUE(file_exists(out));
}

TEST(BadModelFile, CorruptedConfigMetadata) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/md.safetensors";
  SafetensorsReader r(model);
  auto md = r.metadata();
  std::vector<Tensor> keep;
  std::vector<StEntry> entries;
  for (auto& t : r.tensors()) {
    keep.push_back(r.read(t));
    entries.push_back({t.name, t.dtype, t.shape, keep.back().raw()});
  }
  md["vitkit.config"] = "{\"dim\": 16,";
  write_safetensors(p, entries, md);
  std::string msg = error_of([&] { load_model(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "metadata vitkit.config is not valid JSON");
  expect_cli_error("info " + p, 1, {p, "vitkit.config"});
  nlohmann::json c = nlohmann::json::parse(r.metadata().at("vitkit.config"));
  c["heads"] = 3;  // 16 is not divisible by 3
  md["vitkit.config"] = c.dump();
  write_safetensors(p, entries, md);
  msg = error_of([&] { load_model(p); });
  EXPECT_HAS(msg, p);
  EXPECT_HAS(msg, "heads must divide dim");
}

TEST(BadModelFile, NoMetadataAndUnknownPreset) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), p = dir + "/bare.safetensors";
  SafetensorsReader r(model);
  std::vector<Tensor> keep;
  std::vector<StEntry> entries;
  for (auto& t : r.tensors()) {
    keep.push_back(r.read(t));
    entries.push_back({t.name, t.dtype, t.shape, keep.back().raw()});
  }
  write_safetensors(p, entries, {});
  expect_cli_error("info " + p, 1, {p, "--preset"});
  expect_cli_error("info " + p + " --preset vit_b_99", 2, {"--preset", "unknown preset 'vit_b_99'"});
  // A model spec that is neither a file nor a preset.
  expect_cli_error("info vit_b_99", 1, {"vit_b_99", "no such file, and not a preset", "vit_b_16"});
  expect_cli_error("predict vit_b_99 --input " + write_tiny_input(dir), 1, {"vit_b_99", "not a preset"});
  EXPECT_HAS(error_of([&] { load_config("vit_b_99"); }), "not a preset");
}

// ---------------------------------------------------------------- datasets

namespace {

std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, size_t data_bytes) {
  std::vector<uint8_t> b = {0, 0, 8, uint8_t(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(d >> s));
  for (size_t i = 0; i < data_bytes; ++i) b.push_back(uint8_t(i % 10));
  return b;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, b.data(), unsigned(b.size()));
  gzclose(f);
}

}  // namespace

TEST(BadDataset, MissingFolder) {
  const std::string dir = test::temp_dir(), missing = dir + "/no_such_dataset";
  std::string msg = error_of([&] { open_dataset(missing, "test"); });
  EXPECT_HAS(msg, missing);
  EXPECT_HAS(msg, "no such file or folder");
  const std::string model = write_tiny_model(dir);
  expect_cli_error("eval " + model + " --data " + missing, 1, {missing, "no such file or folder"});
  // A file instead of a folder.
  EXPECT_HAS(error_of([&] { open_dataset(model, "test"); }), "a dataset is a folder");
}

TEST(BadDataset, TruncatedIdx) {
  const std::string dir = test::temp_dir() + "/idx";
  fs::create_directories(dir);
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_bytes({10}, 10));
  // Plain: 10 images of 4x4 need 160 bytes; 100 are there.
  write_bytes(dir + "/t10k-images-idx3-ubyte", idx_bytes({10, 4, 4}, 100));
  std::string msg = error_of([&] { open_dataset(dir, "test"); });
  EXPECT_HAS(msg, dir + "/t10k-images-idx3-ubyte");
  EXPECT_HAS(msg, "truncated");
  const std::string model = write_tiny_model(test::temp_dir());
  expect_cli_error("eval " + model + " --data " + dir, 1, {"t10k-images-idx3-ubyte", "truncated"});
  // Gzipped, cut in the middle of the stream.
  fs::remove(dir + "/t10k-images-idx3-ubyte");
  const std::string gz = dir + "/t10k-images-idx3-ubyte.gz";
  std::vector<uint8_t> full = idx_bytes({10, 4, 4}, 160);
  write_gz(gz, full);
  std::vector<uint8_t> packed = read_file(gz);
  packed.resize(packed.size() / 2);
  write_bytes(gz, packed);
  msg = error_of([&] { open_dataset(dir, "test"); });
  EXPECT_HAS(msg, gz);
  EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("corrupt") != std::string::npos) << msg;
  // A header cut short, and a bad magic.
  write_bytes(gz, {0, 0, 8});
  EXPECT_HAS(error_of([&] { open_dataset(dir, "test"); }), "shorter than the 4-byte magic");
  fs::remove(gz);
  write_bytes(dir + "/t10k-images-idx3-ubyte", {'P', 'K', 3, 4, 0, 0, 0, 0});
  EXPECT_HAS(error_of([&] { open_dataset(dir, "test"); }), "not an IDX file: bad magic");
}

TEST(BadDataset, IdxCountMismatch) {
  const std::string dir = test::temp_dir() + "/idx";
  fs::create_directories(dir);
  write_bytes(dir + "/t10k-images-idx3-ubyte", idx_bytes({10, 4, 4}, 160));
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_bytes({9}, 9));
  std::string msg = error_of([&] { open_dataset(dir, "test"); });
  EXPECT_HAS(msg, "holds 10 images but");
  EXPECT_HAS(msg, "holds 9 labels: the counts must agree");
  const std::string model = write_tiny_model(test::temp_dir());
  expect_cli_error("eval " + model + " --data " + dir, 1, {"t10k-labels-idx1-ubyte", "counts must agree"});
  // Labels beyond the classes (a "fashion" folder has Fashion-MNIST's ten).
  const std::string fashion = test::temp_dir() + "/my-fashion";
  fs::create_directories(fashion);
  write_bytes(fashion + "/t10k-images-idx3-ubyte", idx_bytes({10, 4, 4}, 160));
  std::vector<uint8_t> labels = idx_bytes({10}, 10);
  labels.back() = 200;
  write_bytes(fashion + "/t10k-labels-idx1-ubyte", labels);
  std::string bad = error_of([&] { open_dataset(fashion, "test"); });
  EXPECT_HAS(bad, fashion + "/t10k-labels-idx1-ubyte");
  EXPECT_HAS(bad, "label 200 of item 9 is out of range for 10 classes");
  // No train split in the folder.
  EXPECT_HAS(error_of([&] { open_dataset(dir, "train"); }), "no IDX train images");
}

TEST(BadDataset, EmptyImageFolder) {
  const std::string root = test::temp_dir() + "/images";
  fs::create_directories(root);
  std::string msg = error_of([&] { open_dataset(root, "test"); });
  EXPECT_HAS(msg, root);
  EXPECT_HAS(msg, "no class subfolders");
  const std::string model = write_tiny_model(test::temp_dir());
  expect_cli_error("eval " + model + " --data " + root, 1, {root, "no class subfolders"});
  fs::create_directories(root + "/cat");
  std::ofstream(root + "/cat/readme.txt") << "not an image";
  msg = error_of([&] { open_dataset(root, "test"); });
  EXPECT_HAS(msg, root + "/cat");
  EXPECT_HAS(msg, "holds no image files");
}

TEST(BadDataset, CorruptImagesInAFolderNameTheFile) {
  const std::string root = test::temp_dir() + "/images";
  fs::create_directories(root + "/a");
  const std::string model = write_tiny_model(test::temp_dir());
  // Not an image at all, an empty file, a JPEG cut after its header.
  std::ofstream(root + "/a/0.png") << "this is text";
  auto r = expect_cli_error("eval " + model + " --data " + root, 1, {root + "/a/0.png", "cannot decode image"});
  fs::remove(root + "/a/0.png");
  std::ofstream(root + "/a/1.jpg").close();
  expect_cli_error("eval " + model + " --data " + root, 1, {root + "/a/1.jpg", "empty"});
}

TEST(BadImage, TruncatedAndCorruptJpegs) {
  const std::string dir = test::temp_dir();
  std::vector<uint8_t> rgb(16 * 12 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 7);
  const std::vector<uint8_t> jpg = encode_jpeg(16, 12, 3, rgb);
  ASSERT_GT(jpg.size(), 100u);
  const std::string ok = dir + "/ok.jpg";
  write_bytes(ok, jpg);
  Image im = decode_image(ok);
  EXPECT_EQ(im.width, 16);
  EXPECT_EQ(im.height, 12);
  EXPECT_EQ(im.channels, 3);
  // Every cut point: an error naming the file, never a crash or exit().
  for (size_t cut = 1; cut < jpg.size(); ++cut) {
    const std::string p = dir + "/cut.jpg";
    write_bytes(p, std::vector<uint8_t>(jpg.begin(), jpg.begin() + long(cut)));
    std::string msg = error_of([&] { decode_image(p); });
    EXPECT_HAS(msg, p);
    if (HasFailure()) {
      ADD_FAILURE() << "cut " << cut;
      break;
    }
  }
  // Garbage after the SOI marker.
  std::vector<uint8_t> junk = {0xFF, 0xD8, 0xFF, 0x00, 0x12, 0x34, 0x56};
  write_bytes(dir + "/junk.jpg", junk);
  std::string msg = error_of([&] { decode_image(dir + "/junk.jpg"); });
  EXPECT_HAS(msg, dir + "/junk.jpg");
  EXPECT_HAS(msg, "JPEG");
  // Frame headers claiming 20000 x 20000 pixels (beyond vitkit's cap) and 65535 x
  // 65535 (beyond libjpeg's): refused before any pixel memory is allocated.
  for (int side : {20000, 65535}) {
    std::vector<uint8_t> huge = jpg;
    for (size_t i = 0; i + 8 < huge.size(); ++i)
      if (huge[i] == 0xFF && huge[i + 1] == 0xC0) {
        huge[i + 5] = huge[i + 7] = uint8_t(side >> 8);
        huge[i + 6] = huge[i + 8] = uint8_t(side);
        break;
      }
    write_bytes(dir + "/huge.jpg", huge);
    msg = error_of([&] { decode_image(dir + "/huge.jpg"); });
    EXPECT_HAS(msg, dir + "/huge.jpg");
    EXPECT_HAS(msg, side == 20000 ? "JPEG size 20000x20000 is not plausible" : "Maximum supported image dimension");
  }
  // Through the CLI: predict on a truncated JPEG.
  const std::string model = write_tiny_model(dir), cut = dir + "/cut.jpg";
  write_bytes(cut, std::vector<uint8_t>(jpg.begin(), jpg.begin() + long(jpg.size() - 4)));
  expect_cli_error("predict " + model + " " + cut, 1, {cut, "truncated JPEG"});
}

// ---------------------------------------------------------------- command line

TEST(BadCli, UnknownFlagsAndCommands) {
  expect_cli_error("info vit_b_16 --bogus", 2, {"--bogus"});
  expect_cli_error("eval vit_b_16 --data fashion-mnist --limt 5", 2, {"--limt"});
  expect_cli_error("frobnicate", 2, {"unknown command 'frobnicate'", "info, eval, predict"});
  expect_cli_error("--bogus", 2, {"unknown option '--bogus'", "vitkit help"});
  expect_cli_error("help frobnicate", 2, {"'help frobnicate': no such command"});
  // `vitkit` alone and `vitkit help [COMMAND]` print the help and exit 0.
  for (const std::string args : {"", "help"}) {
    const test::CliResult r = test::run_cli(args);
    EXPECT_EQ(r.code, 0) << args << ": " << r.err;
    EXPECT_NE(r.out.find("compress"), std::string::npos) << args << ": " << r.out;
  }
  const test::CliResult r = test::run_cli("help compress");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("--recipe"), std::string::npos) << r.out;
  expect_cli_error("info vit_b_16 --threads -1", 2, {"--threads"});
  expect_cli_error("eval vit_b_16 --data fashion-mnist --split val", 2, {"--split", "val"});
}

TEST(BadCli, MissingRequiredArguments) {
  expect_cli_error("info", 2, {"model is required"});
  expect_cli_error("eval vit_b_16", 2, {"--data is required"});
  expect_cli_error("predict", 2, {"model is required"});
  expect_cli_error("predict vit_b_16", 2, {"--input"});
  expect_cli_error("import", 2, {"required"});
  expect_cli_error("predict vit_b_16 --input", 2, {"--input"});
}

TEST(BadCli, BadConfigKeyOrValue) {
  expect_cli_error("info vit_b_16 --config foo=1", 2, {"--config", "unknown config key 'foo'"});
  expect_cli_error("info vit_b_16 --config dim=abc", 2, {"--config", "config key 'dim'", "'abc'"});
  expect_cli_error("info vit_b_16 --config norm=middle", 2, {"--config", "'norm'", "middle"});
  expect_cli_error("info vit_b_16 --config heads=7", 2, {"--config heads=7", "heads must divide dim"});
  expect_cli_error("info vit_b_16 --config missing.toml", 2, {"--config", "missing.toml", "does not exist"});
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/bad.toml") << "[model]\ndim = \n";
  expect_cli_error("info vit_b_16 --config " + dir + "/bad.toml", 2, {dir + "/bad.toml", "TOML"});
  // On a file: the flag and the file are named.
  const std::string model = write_tiny_model(dir);
  expect_cli_error("info " + model + " --config heads=5", 1, {model, "--config heads=5", "heads must divide dim"});
  expect_cli_error("info " + model + " --config patch=x", 2, {"--config", "'patch'"});
}

TEST(BadCli, UnknownPreset) {
  expect_cli_error("info vit_z_99", 1, {"vit_z_99", "not a preset", "vit_b_16"});
  expect_cli_error("info vit_b_16 --config preset=vit_z_99", 2, {"--config", "unknown preset 'vit_z_99'"});
}

TEST(BadCli, PredictNpyWithTheWrongShape) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), x = dir + "/wrong.npy";
  write_npy(x, Tensor::zeros({2, 1, 16, 16}));
  expect_cli_error("predict " + model + " --input " + x, 1, {x, "[2, 1, 16, 16]", "(N, 3, 16, 16)"});
  write_npy(x, Tensor::zeros({16, 16}));
  expect_cli_error("predict " + model + " --input " + x, 1, {x, "[16, 16]"});
  std::ofstream(dir + "/text.npy") << "not numpy";
  expect_cli_error("predict " + model + " --input " + dir + "/text.npy", 1, {dir + "/text.npy"});
  expect_cli_error("predict " + model + " --input " + dir + "/absent.npy", 1, {dir + "/absent.npy"});
  // Both an input file and images.
  expect_cli_error("predict " + model + " --input " + x + " " + dir + "/a.png", 2, {"--input"});
}

TEST(BadCli, FailedPredictLeavesNoOutput) {
  const std::string dir = test::temp_dir(), model = write_tiny_model(dir), x = dir + "/wrong.npy";
  write_npy(x, Tensor::zeros({2, 1, 16, 16}));
  const std::string out = dir + "/out.npy";
  expect_cli_error("predict " + model + " --input " + x + " -o " + out, 1, {x});
  EXPECT_FALSE(file_exists(out));
  // An existing output is left as it was, and no temporary file remains.
  std::ofstream(out) << "previous";
  expect_cli_error("predict " + model + " --input " + x + " -o " + out, 1, {x});
  EXPECT_EQ(read_text_file(out), "previous");
  // A directory that does not exist: a usage error when the command line is parsed, before any work.
  expect_cli_error("predict " + model + " --input " + write_tiny_input(dir) + " -o " + dir + "/nodir/out.npy", 2,
                   {"--output", dir + "/nodir/out.npy", "does not exist"});
  for (auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  // A run that succeeds replaces it.
  test::CliResult r = test::run_cli("predict " + model + " --input " + write_tiny_input(dir) + " -o " + out);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_npy(out).shape(), (Shape{2, 3}));
}

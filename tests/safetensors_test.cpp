// safetensors: every dtype and __metadata__ round trip through vitkit's writer
// and reader, and through a minimal pure-Python reader; vitkit-written models
// (F32, F16, BF16; RGB and one-channel conv_proj) load into torchvision's
// VisionTransformer with load_state_dict(strict=True) and give vitkit's logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/core/rng.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/safetensors.h"
#include "vitkit/model/forward.h"

using namespace vitkit;

namespace {

const char* kPython = "/usr/bin/python3";

// Every parameter random: norm weights 1 + N(0, 0.1), embeddings N(0, 0.5),
// the rest N(0, 0.1) (so that the head is not zero, as torchvision's init leaves it).
std::unique_ptr<ViT> random_model(const ViTConfig& c, uint64_t seed) { return test::random_model(c, seed, 0.1f, 0.5f); }

ViTConfig small_rgb() {
  ViTConfig c;
  c.name = "st_rgb";
  c.image_size = 32;
  c.patch = 8;
  c.dim = 48;
  c.depth = 2;
  c.heads = 4;
  c.mlp_dim = 96;
  c.classes = 10;
  return c;
}

ViTConfig small_gray() {
  ViTConfig c;
  c.name = "st_gray";
  c.image_size = 28;
  c.channels = 1;
  c.patch = 7;
  c.dim = 32;
  c.depth = 2;
  c.heads = 2;
  c.mlp_dim = 64;
  c.classes = 5;
  c.pre.mean = {0.286f};
  c.pre.std = {0.353f};
  return c;
}


bool python_has_torchvision() {
  static int ok = -1;
  if (ok < 0) ok = std::system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") == 0;
  return ok == 1;
}

// One value of each dtype's interesting kinds, as float64 (ints are exact up to 2^53;
// the I64 extremes are checked as bytes, not through this list).
struct DtypeCase {
  DType dtype;
  Tensor t;
};

Tensor filled(DType dt, const Shape& s, const std::vector<double>& v) {
  Tensor t = Tensor::empty(s, dt);
  EXPECT_EQ(int64_t(v.size()), t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = v[size_t(i)];
    switch (dt) {
      case DType::F32: t.data<float>()[i] = float(x); break;
      case DType::F64: t.data<double>()[i] = x; break;
      case DType::F16: t.data<uint16_t>()[i] = float_to_half(float(x)); break;
      case DType::BF16: t.data<uint16_t>()[i] = float_to_bf16(float(x)); break;
      case DType::I8: t.data<int8_t>()[i] = int8_t(x); break;
      case DType::U8: t.data<uint8_t>()[i] = uint8_t(x); break;
      case DType::I16: t.data<int16_t>()[i] = int16_t(x); break;
      case DType::I32: t.data<int32_t>()[i] = int32_t(x); break;
      case DType::I64: t.data<int64_t>()[i] = int64_t(x); break;
      case DType::BOOL: t.data<uint8_t>()[i] = x != 0; break;
    }
  }
  return t;
}

std::vector<DtypeCase> every_dtype() {
  std::vector<DtypeCase> v;
  v.push_back({DType::F32, filled(DType::F32, {2, 3}, {0.0, -0.0, 1.5, -3.25e-30, 3.4e38, 1e-45})});
  v.push_back({DType::F64, filled(DType::F64, {3, 2}, {0.1, -1e300, 5e-324, 2.0 / 3.0, -0.0, 1e15 + 0.5})});
  v.push_back({DType::F16, filled(DType::F16, {6}, {0.0, -2.0, 65504.0, 6.1035156e-05, 5.9604645e-08, 0.333251953125})});
  v.push_back({DType::BF16, filled(DType::BF16, {2, 1, 3}, {1.0, -0.0078125, 3.3895314e38, 1.0e-38, 256.0, -1.5})});
  v.push_back({DType::I8, filled(DType::I8, {2, 3}, {-128, 127, 0, -1, 1, 42})});
  v.push_back({DType::U8, filled(DType::U8, {2, 3}, {0, 255, 128, 1, 254, 7})});
  v.push_back({DType::I16, filled(DType::I16, {3, 2}, {-32768, 32767, 0, -1, 300, -300})});
  v.push_back({DType::I32, filled(DType::I32, {6}, {-2147483648.0, 2147483647.0, 0, -1, 65536, -65537})});
  Tensor i64 = filled(DType::I64, {2, 3}, {0, -1, 1, 4503599627370496.0, -4503599627370497.0, 77});
  v.push_back({DType::I64, i64});
  v.push_back({DType::BOOL, filled(DType::BOOL, {2, 3}, {1, 0, 0, 1, 1, 0})});
  return v;
}

// Element i of an integer tensor, exactly.
int64_t int_value(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::I8: return t.data<int8_t>()[i];
    case DType::U8: return t.data<uint8_t>()[i];
    case DType::I16: return t.data<int16_t>()[i];
    case DType::I32: return t.data<int32_t>()[i];
    case DType::I64: return t.data<int64_t>()[i];
    default: ADD_FAILURE() << "not an integer dtype"; return 0;
  }
}

std::string tensor_name(DType dt) { return std::string("t_") + dtype_name(dt); }

// Writes a Python script into dir and returns its path.
std::string write_script(const std::string& dir, const std::string& name, const std::string& text) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// A minimal safetensors reader in plain Python (json + struct + torch.frombuffer),
// as any user without the safetensors package would write it.
const char* kPyReader = R"PY(
import json, struct, sys
import numpy as np
import torch

DT = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
      "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
      "BOOL": torch.bool}

def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        dt = DT[e["dtype"]]
        if not buf:
            t = torch.zeros(e["shape"], dtype=dt)
        elif dt == torch.bfloat16:
            t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(buf, dtype=dt)
        out[name] = t.reshape(e["shape"])
    return out, meta
)PY";

const char* kPyDtypes = R"PY(
# argv: FILE.safetensors OUT.json -> every tensor's dtype, shape and values (floats
# as float64 repr strings, ints and bools exact) and the metadata, as JSON.
tensors, meta = read_safetensors(sys.argv[1])
out = {"__metadata__": meta}
for name, t in tensors.items():
    if t.dtype.is_floating_point:
        values = [repr(float(v)) for v in t.to(torch.float64).flatten().tolist()]
    else:
        values = t.flatten().tolist()
    out[name] = {"dtype": str(t.dtype), "shape": list(t.shape), "values": values}
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
)PY";

const char* kPyTorchvision = R"PY(
# argv: (MODEL.safetensors INPUT.npy OUTPUT.npy)...: builds torchvision's
# VisionTransformer from the file's vitkit.config, loads the weights with
# strict=True and writes its logits for the input.
from functools import partial
import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer

torch.set_num_threads(1)
args = sys.argv[1:]
for i in range(0, len(args), 3):
    path, inp, outp = args[i:i + 3]
    sd, meta = read_safetensors(path)
    c = json.loads(meta["vitkit.config"])
    assert c["norm"] == "pre" and c["act"] == "gelu" and c["pool"] == "cls", c
    m = VisionTransformer(image_size=c["image_size"], patch_size=c["patch"], num_layers=c["depth"],
                          num_heads=c["heads"], hidden_dim=c["dim"], mlp_dim=c["mlp_dim"],
                          num_classes=c["classes"], norm_layer=partial(nn.LayerNorm, eps=c["norm_eps"]))
    if c["channels"] != 3:
        m.conv_proj = nn.Conv2d(c["channels"], c["dim"], kernel_size=c["patch"], stride=c["patch"])
    m.load_state_dict(sd, strict=True)
    m.eval()
    with torch.no_grad():
        y = m(torch.from_numpy(np.load(inp)))
    np.save(outp, y.numpy().astype(np.float32))
    print(f"{path}: {len(sd)} tensors loaded strictly, logits {tuple(y.shape)}")
)PY";

// Runs a Python script; returns its exit code, the output in *log.
int run_python(const std::string& script, const std::string& args, const std::string& dir, std::string* log) {
  const std::string log_path = dir + "/python.log";
  const std::string cmd = std::string("OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1 ") + kPython + " " + script +
                          " " + args + " >" + log_path + " 2>&1";
  int st = std::system(cmd.c_str());
  *log = file_exists(log_path) ? read_text_file(log_path) : "";
  return st;
}

}  // namespace

TEST(Safetensors, EveryDtypeAndMetadataRoundTrip) {
  const std::string dir = test::temp_dir(), path = dir + "/dtypes.safetensors";
  auto cases = every_dtype();
  // I64 extremes (not representable as double) are written directly.
  cases[8].t.data<int64_t>()[0] = std::numeric_limits<int64_t>::min();
  cases[8].t.data<int64_t>()[5] = std::numeric_limits<int64_t>::max();
  std::vector<StEntry> entries;
  for (auto& c : cases) entries.push_back({tensor_name(c.dtype), c.dtype, c.t.shape(), c.t.raw()});
  Tensor scalar = filled(DType::F32, {}, {2.5});
  Tensor empty = Tensor::empty({0, 4}, DType::I32);
  entries.push_back({"scalar", DType::F32, {}, scalar.raw()});
  entries.push_back({"empty", DType::I32, {0, 4}, empty.defined() ? empty.raw() : nullptr});
  const std::map<std::string, std::string> md = {
      {"vitkit.version", "0.1.0"}, {"note", "quotes \" and \\ backslash, newline\n, tab\t"},
      {"unicode", "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93"}, {"empty", ""}, {"json", "{\"a\": [1, 2]}"}};
  write_safetensors(path, entries, md);

  // Layout: 8-byte length, header padded to a multiple of 8, then the data.
  auto bytes = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[size_t(i)];
  EXPECT_EQ(n % 8, 0u);
  uint64_t data = 0;
  for (auto& c : cases) data += c.t.nbytes();
  EXPECT_EQ(bytes.size(), 8 + n + data + 4);  // + the scalar

  SafetensorsReader r(path);
  EXPECT_EQ(r.metadata(), md);
  ASSERT_EQ(r.tensors().size(), cases.size() + 2);
  for (auto& c : cases) {
    const StTensor* t = r.find(tensor_name(c.dtype));
    ASSERT_NE(t, nullptr) << tensor_name(c.dtype);
    EXPECT_EQ(t->dtype, c.dtype);
    EXPECT_EQ(t->shape, c.t.shape());
    Tensor back = r.read(*t);
    ASSERT_EQ(back.nbytes(), c.t.nbytes());
    EXPECT_EQ(std::memcmp(back.raw(), c.t.raw(), c.t.nbytes()), 0) << dtype_name(c.dtype);
    std::vector<float> f(size_t(c.t.numel())), want(size_t(c.t.numel()));
    r.read_f32(*t, f.data());
    convert_to_f32(c.dtype, c.t.raw(), want.data(), want.size());
    EXPECT_EQ(std::memcmp(f.data(), want.data(), f.size() * 4), 0) << dtype_name(c.dtype);
  }
  Tensor s = r.read("scalar");
  EXPECT_EQ(s.ndim(), 0);
  EXPECT_EQ(s.f32()[0], 2.5f);
  EXPECT_EQ(r.find("empty")->shape, (Shape{0, 4}));
  EXPECT_EQ(r.read("empty").numel(), 0);
  // Spot values after conversion.
  std::vector<float> f(6);
  r.read_f32("t_F16", f.data());
  EXPECT_EQ(f[2], 65504.f);
  EXPECT_EQ(f[4], 5.9604645e-08f);  // smallest subnormal half
  r.read_f32("t_BF16", f.data());
  EXPECT_EQ(f[1], -0.0078125f);
  r.read_f32("t_I8", f.data());
  EXPECT_EQ(f[0], -128.f);
  r.read_f32("t_BOOL", f.data());
  EXPECT_EQ(f[0], 1.f);
  EXPECT_EQ(f[1], 0.f);
}

TEST(Safetensors, EveryDtypeReadsInPlainPython) {
  if (!python_has_torchvision()) GTEST_SKIP() << "no torch for /usr/bin/python3";
  const std::string dir = test::temp_dir(), path = dir + "/dtypes.safetensors";
  auto cases = every_dtype();
  std::vector<StEntry> entries;
  for (auto& c : cases) entries.push_back({tensor_name(c.dtype), c.dtype, c.t.shape(), c.t.raw()});
  write_safetensors(path, entries, {{"vitkit.version", "0.1.0"}, {"k", "v \"q\""}});
  const std::string script =
      write_script(dir, "dtypes.py", std::string(kPyReader) + kPyDtypes);
  std::string log;
  ASSERT_EQ(run_python(script, path + " " + dir + "/out.json", dir, &log), 0) << log;
  nlohmann::json j = nlohmann::json::parse(read_text_file(dir + "/out.json"));
  EXPECT_EQ(j["__metadata__"]["k"], "v \"q\"");
  const std::map<DType, std::string> torch_names = {
      {DType::F32, "torch.float32"}, {DType::F64, "torch.float64"}, {DType::F16, "torch.float16"},
      {DType::BF16, "torch.bfloat16"}, {DType::I8, "torch.int8"}, {DType::U8, "torch.uint8"},
      {DType::I16, "torch.int16"}, {DType::I32, "torch.int32"}, {DType::I64, "torch.int64"},
      {DType::BOOL, "torch.bool"}};
  for (auto& c : cases) {
    const auto& e = j[tensor_name(c.dtype)];
    EXPECT_EQ(e["dtype"], torch_names.at(c.dtype));
    EXPECT_EQ(e["shape"].get<Shape>(), c.t.shape());
    ASSERT_EQ(int64_t(e["values"].size()), c.t.numel());
    for (int64_t i = 0; i < c.t.numel(); ++i) {
      const auto& v = e["values"][size_t(i)];
      switch (c.dtype) {
        case DType::F64: EXPECT_EQ(std::strtod(v.get<std::string>().c_str(), nullptr), c.t.data<double>()[i]) << i; break;
        case DType::F32: case DType::F16: case DType::BF16: {
          float want;
          convert_to_f32(c.dtype, c.t.raw() + i * dtype_size(c.dtype), &want, 1);
          EXPECT_EQ(std::strtod(v.get<std::string>().c_str(), nullptr), double(want)) << dtype_name(c.dtype) << " " << i;
          break;
        }
        case DType::BOOL: EXPECT_EQ(v.get<bool>(), c.t.data<uint8_t>()[i] != 0) << i; break;
        case DType::I64: EXPECT_EQ(v.get<int64_t>(), c.t.data<int64_t>()[i]) << i; break;
        default: EXPECT_EQ(v.get<int64_t>(), int_value(c.t, i)) << dtype_name(c.dtype) << " " << i;
      }
    }
  }
}

// vitkit writes F32 (RGB and one-channel conv_proj), BF16 and F16 models; torchvision
// loads each with strict=True and its logits match vitkit's for the same file.
TEST(SafetensorsTorchvision, VitkitFilesLoadStrictAndMatchLogits) {
  if (!python_has_torchvision()) GTEST_SKIP() << "no torch/torchvision for /usr/bin/python3";
  const std::string dir = test::temp_dir();
  struct M {
    std::string name;
    ViTConfig cfg;
    DType dtype;
  };
  const std::vector<M> models = {{"rgb_f32", small_rgb(), DType::F32},
                                 {"gray_f32", small_gray(), DType::F32},
                                 {"rgb_bf16", small_rgb(), DType::BF16},
                                 {"gray_f16", small_gray(), DType::F16}};
  std::string args;
  for (size_t i = 0; i < models.size(); ++i) {
    const M& m = models[i];
    auto model = random_model(m.cfg, 100 + i);
    save_model(*model, dir + "/" + m.name + ".safetensors", m.dtype);
    write_npy(dir + "/" + m.name + ".in.npy", test::random_images(m.cfg, 3, 200 + i));
    args += " " + dir + "/" + m.name + ".safetensors " + dir + "/" + m.name + ".in.npy " + dir + "/" + m.name +
            ".torch.npy";
  }
  const std::string script = write_script(dir, "tv.py", std::string(kPyReader) + kPyTorchvision);
  std::string log;
  ASSERT_EQ(run_python(script, args, dir, &log), 0) << log;
  std::printf("%s", log.c_str());
  set_num_threads(1);
  for (const M& m : models) {
    auto model = load_model(dir + "/" + m.name + ".safetensors", {});
    Tensor got = vit_predict(*model, read_npy(dir + "/" + m.name + ".in.npy"));
    Tensor want = read_npy(dir + "/" + m.name + ".torch.npy");
    const float scale = test::max_abs(want), diff = test::max_abs_diff(got, want);
    std::printf("%-9s vitkit vs torchvision: max|diff| %.3g, max|logit| %.3g, ratio %.2e\n", m.name.c_str(), diff,
                scale, diff / scale);
    EXPECT_GT(scale, 0.1f) << m.name << ": logits too small to compare";
    EXPECT_LE(diff, 1e-4f * scale) << m.name;
  }
  set_num_threads(0);
}

// F16 and BF16 files hold the parameters rounded to nearest: every value comes
// back within half an ulp of the dtype (relative 2^-11 and 2^-8; F16 subnormals
// within 2^-25), the file is about half the F32 size, and the config survives.
TEST(Safetensors, HalfAndBf16FilesLoadWithinPrecision) {
  const std::string dir = test::temp_dir();
  auto model = random_model(small_rgb(), 7);
  model->params.ptr(0)[0] = 1e-6f;  // an F16 subnormal
  save_model(*model, dir + "/f32.safetensors", DType::F32);
  const uint64_t f32_bytes = file_size(dir + "/f32.safetensors");
  for (DType dt : {DType::F16, DType::BF16}) {
    const std::string path = dir + "/" + dtype_name(dt) + ".safetensors";
    save_model(*model, path, dt);
    SafetensorsReader r(path);
    for (auto& t : r.tensors()) EXPECT_EQ(t.dtype, dt) << t.name;
    const uint64_t bytes = file_size(path);
    EXPECT_LT(bytes, f32_bytes * 0.55) << dtype_name(dt);
    auto back = load_model(path, {});
    EXPECT_EQ(config_to_json(back->cfg), config_to_json(model->cfg));
    const double rel = dt == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    double worst = 0;
    for (int i = 0; i < model->params.size(); ++i) {
      const ParamInfo& p = model->params.info(i);
      const float* a = model->params.ptr(i);
      const float* b = back->params.ptr(i);
      for (int64_t k = 0; k < p.numel; ++k) {
        const double tol = std::max(rel * std::fabs(a[k]), dt == DType::F16 ? std::ldexp(1.0, -25) : 0.0);
        const double err = std::fabs(double(a[k]) - b[k]);
        if (std::fabs(a[k]) >= 6.2e-5) worst = std::max(worst, err / std::fabs(double(a[k])));  // normal range
        ASSERT_LE(err, tol) << dtype_name(dt) << " " << p.name << "[" << k << "]: " << a[k] << " -> " << b[k];
      }
    }
    // Rewriting in the same dtype is lossless.
    save_model(*back, dir + "/again.safetensors", dt);
    auto again = load_model(dir + "/again.safetensors", {});
    EXPECT_EQ(test::param_values(*again), test::param_values(*back));
    std::printf("%s file: %llu bytes (f32 %llu), worst relative error %.3g (normal range)\n", dtype_name(dt),
                (unsigned long long)bytes, (unsigned long long)f32_bytes, worst);
  }
}

TEST(Safetensors, UnknownMetadataIsKeptOnRewrite) {
  const std::string dir = test::temp_dir();
  auto model = random_model(small_gray(), 3);
  model->extra_metadata["user.note"] = "trained by hand";
  model->extra_metadata["format"] = "pt";
  save_model(*model, dir + "/a.safetensors");
  auto back = load_model(dir + "/a.safetensors", {});
  save_model(*back, dir + "/b.safetensors");
  SafetensorsReader r(dir + "/b.safetensors");
  EXPECT_EQ(r.metadata().at("user.note"), "trained by hand");
  EXPECT_EQ(r.metadata().at("format"), "pt");
  EXPECT_TRUE(r.metadata().count("vitkit.config"));
  EXPECT_TRUE(r.metadata().count("vitkit.preprocess"));
  EXPECT_EQ(r.metadata().at("vitkit.version"), VITKIT_VERSION);
  EXPECT_EQ(nlohmann::json::parse(r.metadata().at("vitkit.preprocess"))["mean"].get<std::vector<float>>(),
            std::vector<float>{0.286f});
}

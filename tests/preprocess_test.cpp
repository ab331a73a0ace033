// Preprocessing parity with torchvision (Resize, CenterCrop, ToTensor, Normalize
// on PIL images): cases written by tests/ref/preprocess_ref.py. The resampling
// is checked bit for bit on the pixels PIL decoded; end to end from the files,
// PNG (stb_image) and JPEG (libjpeg-turbo with PIL's settings, io/jpeg.h) must
// both give exactly torchvision's tensor.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/npy.h"
#include "vitkit/core/threads.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/image.h"
#include "vitkit/io/preprocess.h"

using namespace vitkit;

namespace {

// Tolerance in pixel levels (1/255) after normalisation is undone. JPEGs are
// decoded by the same libjpeg-turbo as PIL with the same settings (JDCT_ISLOW,
// fancy upsampling), so JPEG is held to PNG's standard: measured 0 levels for
// every case (the stb_image decoder used before was up to 4 levels off).
constexpr double kTolLevels = 1e-6 * 255;  // "within 1e-6" of the unnormalised value

struct Case {
  std::string name, image, format, decoded, output, interp;
  ViTConfig cfg;
};

Interpolation parse_interp(const std::string& s) {
  if (s == "nearest") return Interpolation::Nearest;
  if (s == "bicubic") return Interpolation::Bicubic;
  return Interpolation::Bilinear;
}

std::vector<Case> load_cases() {
  nlohmann::json j = nlohmann::json::parse(read_text_file(test::ref_path("preprocess/manifest.json")));
  std::vector<Case> cases;
  for (auto& e : j) {
    Case c;
    c.name = e["case"];
    c.image = e["image"];
    c.format = e["format"];
    c.decoded = e["decoded"];
    c.output = e["output"];
    c.interp = e["interpolation"];
    c.cfg.channels = e["channels"];
    c.cfg.image_size = e["crop"];
    c.cfg.pre.resize = e["resize"];
    c.cfg.pre.crop = e["crop"];
    c.cfg.pre.interpolation = parse_interp(c.interp);
    c.cfg.pre.mean = e["mean"].get<std::vector<float>>();
    c.cfg.pre.std = e["std"].get<std::vector<float>>();
    cases.push_back(std::move(c));
  }
  return cases;
}

// (H, W) or (H, W, C) uint8 .npy -> Image.
Image image_from_npy(const std::string& path) {
  Tensor t = read_npy(path);
  EXPECT_EQ(t.dtype(), DType::U8) << path;
  Image im;
  im.height = int(t.dim(0));
  im.width = int(t.dim(1));
  im.channels = t.ndim() == 3 ? int(t.dim(2)) : 1;
  im.pixels.assign(t.data<uint8_t>(), t.data<uint8_t>() + t.numel());
  return im;
}

struct LevelDiff {
  double max = 0, mean = 0;
};

// |ours - theirs| in pixel levels (normalised differences times std * 255): max and mean.
LevelDiff level_diff(const Tensor& ours, const Tensor& theirs, const ViTConfig& cfg) {
  EXPECT_EQ(ours.shape(), theirs.shape());
  if (ours.shape() != theirs.shape()) return {INFINITY, INFINITY};
  const int64_t plane = ours.numel() / cfg.channels;
  LevelDiff d;
  for (int64_t i = 0; i < ours.numel(); ++i) {
    double sd = cfg.pre.std.size() == 1 ? cfg.pre.std[0] : cfg.pre.std[size_t(i / plane)];
    double e = std::fabs(double(ours.f32()[i]) - theirs.f32()[i]) * sd * 255.0;
    d.max = std::max(d.max, e);
    d.mean += e / double(ours.numel());
  }
  return d;
}

Tensor run(const Image& im, const ViTConfig& cfg) {
  Tensor t = Tensor::empty({cfg.channels, cfg.image_size, cfg.image_size});
  preprocess_image(im, cfg, t.f32());
  return t;
}

class PreprocessParity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!file_exists(test::ref_path("preprocess/manifest.json")))
      GTEST_SKIP() << "run tests/ref/preprocess_ref.py first (missing manifest.json)";
    cases_ = load_cases();
    ASSERT_GT(cases_.size(), 100u);
  }
  std::vector<Case> cases_;
};

}  // namespace

TEST_F(PreprocessParity, ResamplingIsBitExactOnPilPixels) {
  int n = 0;
  for (const Case& c : cases_) {
    Tensor ours = run(image_from_npy(c.decoded), c.cfg), theirs = read_npy(c.output);
    EXPECT_EQ(test::max_abs_diff(ours, theirs), 0.f) << c.name;
    ++n;
  }
  std::printf("resampling on PIL-decoded pixels: %d cases, all bit-exact\n", n);
}

TEST_F(PreprocessParity, DecodersAgreeExactlyOnPngAndJpeg) {
  std::map<std::string, int> max_jpeg;
  for (const Case& c : cases_) {
    if (c.interp != "bilinear" || c.cfg.image_size != 224) continue;  // once per image file
    Image ours = decode_image(c.image), pil = image_from_npy(c.decoded);
    ASSERT_EQ(ours.width, pil.width) << c.image;
    ASSERT_EQ(ours.height, pil.height) << c.image;
    ASSERT_EQ(ours.channels, pil.channels) << c.image;
    int m = 0;
    for (size_t i = 0; i < ours.pixels.size(); ++i) m = std::max(m, std::abs(ours.pixels[i] - pil.pixels[i]));
    EXPECT_EQ(m, 0) << c.image;
    if (c.format != "png") max_jpeg[c.name.substr(0, c.name.find("_jpg"))] = m;
  }
  for (auto& [name, m] : max_jpeg)
    std::printf("jpeg decode libjpeg vs PIL: %-28s max |diff| %d levels\n", name.c_str(), m);
}

TEST_F(PreprocessParity, EndToEndMatchesTorchvision) {
  std::map<std::string, LevelDiff> worst;  // "format interpolation" -> max and worst mean level diff
  for (const Case& c : cases_) {
    LevelDiff d = level_diff(run(decode_image(c.image), c.cfg), read_npy(c.output), c.cfg);
    const bool real = c.name.rfind("cifar_", 0) == 0;
    std::string key = (real ? "cifar10-jpg" : c.format) + " " + c.interp;
    worst[key].max = std::max(worst[key].max, d.max);
    worst[key].mean = std::max(worst[key].mean, d.mean);
    EXPECT_LE(d.max, kTolLevels) << c.name;
  }
  for (auto& [k, d] : worst)
    std::printf("end to end vs torchvision: %-22s max |diff| %.4g / 255, mean |diff| <= %.3g / 255\n", k.c_str(),
                d.max, d.mean);
}

// JPEG variants PIL writes (chroma subsampling 4:2:0 / 4:2:2 / 4:4:4, progressive,
// optimised Huffman tables, qualities 5..100, odd and tiny sizes, grayscale,
// Adobe CMYK) decode to exactly the pixels PIL's Image.open(f).convert() gives.
TEST(Preprocess, JpegVariantsDecodeExactlyAsPil) {
  if (std::system("/usr/bin/python3 -c 'import PIL, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no PIL/numpy for /usr/bin/python3";
  const std::string dir = test::temp_dir();
  const std::string script = dir + "/jpegs.py";
  std::FILE* f = std::fopen(script.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs(R"PY(
import json, os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.RandomState(0)

def picture(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x * 255.0 / max(w - 1, 1), 128 + 120 * np.sin(x / 2.0 + y / 3.0), 255 - y * 255.0 / max(h - 1, 1)], -1)
    img += rng.randint(-60, 61, size=img.shape)
    img[(x // 4 + y // 3) % 5 == 0] = [255, 0, 40]
    return np.clip(img, 0, 255).astype(np.uint8)

cases = []
def save(name, im, **kw):
    path = os.path.join(out, name + ".jpg")
    im.save(path, "JPEG", **kw)
    with Image.open(path) as j:
        mode = j.mode
        dec = j.convert("L" if j.mode == "L" else "RGB")
    np.save(os.path.join(out, name + ".npy"), np.asarray(dec, dtype=np.uint8))
    cases.append({"name": name, "jpg": path, "npy": os.path.join(out, name + ".npy"), "mode": mode})

rgb = Image.fromarray(picture(101, 67), "RGB")
save("q90_420", rgb, quality=90)
save("q90_422", rgb, quality=90, subsampling=1)
save("q90_444", rgb, quality=90, subsampling=0)
save("q100_444", rgb, quality=100, subsampling=0)
save("q5_420", rgb, quality=5)
save("q75_progressive", rgb, quality=75, progressive=True)
save("q85_optimize", rgb, quality=85, optimize=True)
save("q95_progressive_444", rgb, quality=95, progressive=True, subsampling=0)
save("odd_333x97", Image.fromarray(picture(333, 97), "RGB"), quality=80)
save("odd_17x9_422", Image.fromarray(picture(17, 9), "RGB"), quality=70, subsampling=1)
save("tiny_1x1", Image.fromarray(picture(1, 1), "RGB"), quality=90)
save("tiny_2x3", Image.fromarray(picture(2, 3), "RGB"), quality=90)
save("gray_77x55", rgb.convert("L").resize((77, 55)), quality=88)
save("gray_progressive", rgb.convert("L"), quality=60, progressive=True)
save("cmyk_64x40", Image.fromarray(picture(64, 40), "RGB").convert("CMYK"), quality=90)
cmyk = np.concatenate([picture(48, 30), rng.randint(0, 256, size=(30, 48, 1)).astype(np.uint8)], -1)
save("cmyk_random_k", Image.fromarray(cmyk, "CMYK"), quality=92)
with open(os.path.join(out, "jpegs.json"), "w") as f:
    json.dump(cases, f)
)PY", f);
  std::fclose(f);
  const std::string cmd = "/usr/bin/python3 " + script + " " + dir + " >" + dir + "/py.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text_file(dir + "/py.log");
  nlohmann::json cases = nlohmann::json::parse(read_text_file(dir + "/jpegs.json"));
  ASSERT_EQ(cases.size(), 16u);
  for (auto& c : cases) {
    const std::string name = c["name"];
    Image ours = decode_image(c["jpg"].get<std::string>()), pil = image_from_npy(c["npy"].get<std::string>());
    ASSERT_EQ(ours.width, pil.width) << name;
    ASSERT_EQ(ours.height, pil.height) << name;
    ASSERT_EQ(ours.channels, pil.channels) << name;
    int m = 0;
    int64_t differ = 0;
    for (size_t i = 0; i < ours.pixels.size(); ++i) {
      const int d = std::abs(ours.pixels[i] - pil.pixels[i]);
      m = std::max(m, d);
      differ += d != 0;
    }
    std::printf("jpeg %-20s (PIL mode %-4s %4dx%-4d): max |diff| %d levels, %lld values differ\n", name.c_str(),
                c["mode"].get<std::string>().c_str(), ours.width, ours.height, m, (long long)differ);
    EXPECT_EQ(m, 0) << name;
  }
}

TEST(Preprocess, ResizedSizeAsTorchvision) {
  EXPECT_EQ(resized_size(500, 333, 256), (std::pair{384, 256}));  // int(256 * 500 / 333) = 384
  EXPECT_EQ(resized_size(333, 500, 256), (std::pair{256, 384}));
  EXPECT_EQ(resized_size(20, 300, 24), (std::pair{24, 360}));
  EXPECT_EQ(resized_size(32, 32, 224), (std::pair{224, 224}));
  EXPECT_EQ(resized_size(37, 53, 96), (std::pair{96, 137}));  // 137.51 truncates
  EXPECT_THROW(resized_size(0, 5, 3), Error);
}

TEST(Preprocess, CenterCropRoundsHalfToEvenAndPads) {
  Image im{7, 1, 1, {0, 1, 2, 3, 4, 5, 6}};
  EXPECT_EQ(center_crop(im, 4, 1).pixels, (std::vector<uint8_t>{2, 3, 4, 5}));  // round(1.5) = 2
  Image im9{9, 1, 1, {0, 1, 2, 3, 4, 5, 6, 7, 8}};
  EXPECT_EQ(center_crop(im9, 4, 1).pixels, (std::vector<uint8_t>{2, 3, 4, 5}));  // round(2.5) = 2
  Image small{2, 1, 1, {7, 8}};
  EXPECT_EQ(center_crop(small, 5, 1).pixels, (std::vector<uint8_t>{0, 7, 8, 0, 0}));  // pad left 1, right 2
  Image tall = center_crop(small, 2, 4);
  EXPECT_EQ(tall.pixels, (std::vector<uint8_t>{0, 0, 7, 8, 0, 0, 0, 0}));
}

TEST(Preprocess, ChannelConversionAsPil) {
  Image rgb{2, 1, 3, {255, 0, 0, 10, 200, 30}};
  Image l = convert_channels(rgb, 1);
  EXPECT_EQ(int(l.pixels[0]), (255 * 19595 + 0x8000) >> 16);
  EXPECT_EQ(int(l.pixels[1]), (10 * 19595 + 200 * 38470 + 30 * 7471 + 0x8000) >> 16);
  Image back = convert_channels(l, 3);
  EXPECT_EQ(back.pixels, (std::vector<uint8_t>{l.pixels[0], l.pixels[0], l.pixels[0], l.pixels[1], l.pixels[1],
                                               l.pixels[1]}));
}

TEST(Preprocess, ResizeIdentityAndConstantImages) {
  Image im{5, 3, 3, std::vector<uint8_t>(45)};
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = uint8_t(i * 37);
  for (auto interp : {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic}) {
    EXPECT_EQ(resize_pil(im, 5, 3, interp).pixels, im.pixels);
    Image flat{9, 4, 1, std::vector<uint8_t>(36, 77)};
    for (auto [w, h] : {std::pair{3, 2}, std::pair{20, 11}, std::pair{9, 1}}) {
      Image r = resize_pil(flat, w, h, interp);
      EXPECT_EQ(r.pixels, std::vector<uint8_t>(size_t(w) * h, 77)) << w << "x" << h;
    }
  }
}

TEST(Preprocess, ConfigErrors) {
  Image im{4, 4, 3, std::vector<uint8_t>(48)};
  std::vector<float> out(3 * 4 * 4);
  ViTConfig cfg;
  cfg.image_size = 4;
  cfg.pre.crop = 3;
  EXPECT_THROW(preprocess_image(im, cfg, out.data()), Error);
  cfg.pre.crop = 0;
  cfg.pre.mean = {0.5f, 0.5f};
  EXPECT_THROW(preprocess_image(im, cfg, out.data()), Error);
  cfg.pre.mean = {0.5f};
  cfg.pre.std = {0.f};
  EXPECT_THROW(preprocess_image(im, cfg, out.data()), Error);
  cfg.pre.std = {0.5f};
  preprocess_image(im, cfg, out.data());
  EXPECT_EQ(out[0], -1.f);
  Image bad{4, 4, 3, std::vector<uint8_t>(47)};
  EXPECT_THROW(preprocess_image(bad, cfg, out.data()), Error);
}

// Fashion-MNIST config: 28x28x1, no resize; the batch equals image by image.
static ViTConfig fashion_config() {
  ViTConfig cfg;
  cfg.image_size = 28;
  cfg.channels = 1;
  cfg.pre.mean = {0.2860f};
  cfg.pre.std = {0.3530f};
  return cfg;
}

TEST(Preprocess, BatchMatchesSingleImagesAndPropagatesErrors) {
  VITKIT_REQUIRE_FILE(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz");
  auto ds = open_dataset("fashion-mnist", "test");
  ViTConfig cfg = fashion_config();
  std::vector<int64_t> idx = {5, 0, 9999, 42, 42};
  Tensor batch = preprocess_batch(*ds, idx, cfg);
  ASSERT_EQ(batch.shape(), (Shape{5, 1, 28, 28}));
  for (size_t i = 0; i < idx.size(); ++i) {
    Tensor one = run(ds->image(idx[i]), cfg);
    EXPECT_EQ(std::memcmp(one.raw(), batch.f32() + i * 784, 784 * sizeof(float)), 0) << i;
  }
  std::vector<int64_t> bad = {1, 2, 10000};
  EXPECT_THROW(preprocess_batch(*ds, bad, cfg), Error);
}

// Loads and preprocesses a whole dataset in batches of 500 on 2 threads; returns seconds.
static double time_dataset(const Dataset& ds, const ViTConfig& cfg, int64_t limit) {
  auto t0 = std::chrono::steady_clock::now();
  double checksum = 0;
  for (int64_t b = 0; b < limit; b += 500) {
    std::vector<int64_t> idx;
    for (int64_t i = b; i < std::min(limit, b + 500); ++i) idx.push_back(i);
    Tensor t = preprocess_batch(ds, idx, cfg);
    checksum += t.f32()[0];
  }
  EXPECT_TRUE(std::isfinite(checksum));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(Preprocess, TimingFashionMnistAndCifarFolder) {
  const int saved = num_threads();
  set_num_threads(2);
  if (file_exists(test::fashion_mnist_dir() + "/t10k-images-idx3-ubyte.gz")) {
    auto t0 = std::chrono::steady_clock::now();
    auto ds = open_dataset("fashion-mnist", "test");
    double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double s = time_dataset(*ds, fashion_config(), ds->size());
    std::printf("fashion-mnist test: open %.3f s, preprocess 10000 (28x28x1) %.3f s on 2 threads\n", open_s, s);
  }
  const std::string cifar = test::data_dir() + "/cifar10-test";
  if (is_directory(cifar)) {
    auto ds = open_dataset(cifar, "test");
    ViTConfig small;
    small.image_size = 32;
    small.pre.mean = {0.4914f, 0.4822f, 0.4465f};
    small.pre.std = {0.2470f, 0.2435f, 0.2616f};
    double s32 = time_dataset(*ds, small, ds->size());
    ViTConfig vit = *preset("vit_b_16");
    double s224 = time_dataset(*ds, vit, 2000);
    std::printf("cifar10-test folder: decode+preprocess 10000 JPEGs at 32x32 %.3f s; vit_b_16 recipe (resize %d, "
                "crop 224, %s) 2000 images %.3f s (%.0f images/s)\n",
                s32, vit.pre.resize, to_string(vit.pre.interpolation), s224, 2000 / s224);
  }
  set_num_threads(saved);
}

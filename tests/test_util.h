// Helpers shared by the tests: where reference outputs and data live, running
// the CLI, and the fixtures most tests build on (small configs, random models
// and images).
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <memory>
#include <nlohmann/json.hpp>

#include "vitkit/compress/pass.h"
#include "vitkit/core/tensor.h"
#include "vitkit/kernels/gemm.h"
#include "vitkit/model/vit.h"

namespace vitkit::test {

std::string source_dir();
std::string ref_dir();   // build/ref, written by tests/ref/*.py
std::string ref_path(const std::string& name);  // ref_dir()/name
std::string data_dir();  // ../shared/data (may be absent)
std::string fashion_mnist_dir();  // /usr/share/datasets/fashion-mnist (may be absent)
std::string temp_dir();  // a fresh directory under the build tree for this test

struct CliResult {
  int code = 0;
  std::string out, err;
};
// Runs build/vitkit with args (a shell-quoted string), capturing stdout/stderr.
CliResult run_cli(const std::string& args);

// stdout of a CLI run parsed as one JSON document (a failure recorded, null, when it is not).
nlohmann::json parse_json(const CliResult& r);

// max |a - b| and max |b|.
float max_abs_diff(const Tensor& a, const Tensor& b);
float max_abs(const Tensor& a);
// Same shape, dtype and bytes.
bool bit_equal(const Tensor& a, const Tensor& b);

// A small config: 1 channel unless given, mean and std 0.5 per channel.
ViTConfig small_config(int image = 16, int patch = 8, int dim = 32, int depth = 2, int heads = 4, int mlp = 64,
                       int classes = 10, int channels = 1);

// Every f32 parameter random, in table order: norm weights 1 + N(0, 0.1), the
// embeddings (position, class token) N(0, embed), the rest N(0, scale)
// (embed < 0: scale too).
void randomize(ViT& m, uint64_t seed, float scale = 0.2f, float embed = -1.f);
std::unique_ptr<ViT> random_model(const ViTConfig& c, uint64_t seed, float scale = 0.2f, float embed = -1.f);
// torchvision's initialisation, then a head of N(0, head) weights (torchvision's
// is zero, which would make every logit equal).
std::unique_ptr<ViT> init_model(const ViTConfig& c, uint64_t seed, float head = 0.2f);
// Every f32 parameter's values, concatenated in table order.
std::vector<float> param_values(const ViT& m);
// Images (B, C, S, S) of N(0, 1) values.
Tensor random_images(const ViTConfig& c, int64_t B, uint64_t seed);

// Cross-entropy (label smoothing `smoothing`, mean over the batch) of m on
// images x (B, C, S, S) with labels (B): the loss, and grads (a new buffer in
// m's gradient layout) = d loss / d params, by vit_forward (training mode) and
// vit_backward.
float loss_and_grads(const ViT& m, const Tensor& x, const int* labels, float smoothing, Tensor& grads);

// A pass context whose calibration set is n random images (random_images) for
// config c, for passes that calibrate (quantize:act=static) without a dataset.
PassContext random_calibration(const ViTConfig& c, int64_t n, uint64_t seed);

// ---- repr/int.h's quantization formulas, written here from its header (not
// through repr/int.cpp or the kernels), for the tests to compare with.

// A weight (out, in) quantized per scale group: codes (out, in), one scale
// (and zero point: 0 when symmetric) per group of `per_scale` consecutive values.
struct RefIntWeight {
  std::vector<int32_t> codes;
  std::vector<float> scales;
  std::vector<int32_t> zeros;
  int64_t per_scale = 0;
  // s (q - z) of value i, in f32 (what the layer multiplies).
  float value(int64_t i) const {
    const int64_t c = i / per_scale;
    return scales[size_t(c)] * float(codes[size_t(i)] - zeros[size_t(c)]);
  }
};
// symmetric: s = max|w| / (2^(b-1) - 1), q = clamp(round(w / s), -qmax, qmax);
// zero point: lo = min(0, min w), hi = max(0, max w), s = (hi - lo) / (2^b - 1),
// z = clamp(round(-lo / s), 0, 2^b - 1), q = clamp(round(w / s) + z, 0, 2^b - 1);
// an all-zero group: s = 1, z = 0. Every operation in f32, round to nearest even.
RefIntWeight ref_int_weight(const float* W, int out, int in, int bits, kernels::ScaleGranularity g, int64_t group,
                            bool symmetric);

// One input row of K values quantized to `bits` unsigned codes (gemm.h's
// formula): static (scale, zero given) or dynamic (lo = min(0, min x), hi =
// max(0, max x), s = (hi - lo) / (2^b - 1), z = clamp(round(-lo / s)); s = 1, z = 0
// when hi == lo); q = clamp(round(x / s) + z, 0, 2^b - 1).
struct RefRowQuant {
  float s = 1.f;
  int32_t z = 0;
  std::vector<int32_t> q;
  float value(int64_t k) const { return s * float(q[size_t(k)] - z); }  // what the product sees
};
RefRowQuant ref_input_row(const float* x, int64_t K, int bits, bool is_static = false, float scale = 0.f,
                          int32_t zero = 0);

}  // namespace vitkit::test

// Skips the test when a file does not exist.
#define VITKIT_REQUIRE_FILE(path)                                          \
  do {                                                                     \
    if (!::vitkit::file_exists(path)) GTEST_SKIP() << "missing " << (path); \
  } while (0)

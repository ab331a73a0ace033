#include "vitkit/io/preprocess.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>

#include "vitkit/core/error.h"
#include "vitkit/core/threads.h"

namespace vitkit {

namespace {

// PIL's fixed point: 8 bits of result, 2 bits of headroom for negative lobes.
constexpr int kPrecisionBits = 32 - 8 - 2;

// PIL's filters (src/libImaging/Resample.c), evaluated in double exactly as
// there: contraction into FMA would change the last bit of a weight, so it is off.
__attribute__((optimize("fp-contract=off"))) double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

__attribute__((optimize("fp-contract=off"))) double bicubic_filter(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point weights of one resampling pass. For output index i the inputs
// bounds[2i] .. bounds[2i] + bounds[2i+1] - 1 are weighted by k[i*ksize + j].
struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;
  std::vector<int32_t> k;
};

// in_size -> out_size weights as PIL's precompute_coeffs + normalize_coeffs_8bpc:
// support scaled by the downscale factor (antialias), weights normalised to sum
// 1 in double, then rounded half away from zero to PRECISION_BITS.
__attribute__((optimize("fp-contract=off"))) Coeffs precompute_coeffs(int in_size, int out_size,
                                                                       Interpolation interp) {
  double (*filter)(double) = interp == Interpolation::Bicubic ? bicubic_filter : bilinear_filter;
  const double base_support = interp == Interpolation::Bicubic ? 2.0 : 1.0;
  const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = base_support * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.k.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      c.k[size_t(xx) * c.ksize + x] = static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits)
                                                                   : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[2 * size_t(xx)] = xmin;
    c.bounds[2 * size_t(xx) + 1] = xmax;
  }
  return c;
}

// Fixed-point sum -> uint8, as PIL's clip8 (the sum starts at 1 << (PRECISION_BITS - 1)).
inline uint8_t clip8(int32_t ss) {
  int32_t v = ss >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass: rows [y0, y0 + rows) of in (H, W, C) -> (rows, out_w, C).
Image resample_horizontal(const Image& in, int y0, int rows, int out_w, const Coeffs& c) {
  const int C = in.channels;
  Image out{out_w, rows, C, std::vector<uint8_t>(size_t(out_w) * rows * C)};
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* src = &in.pixels[size_t(y0 + yy) * in.width * C];
    uint8_t* dst = &out.pixels[size_t(yy) * out_w * C];
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[2 * size_t(xx)], xmax = c.bounds[2 * size_t(xx) + 1];
      const int32_t* k = &c.k[size_t(xx) * c.ksize];
      for (int ch = 0; ch < C; ++ch) {
        int32_t ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < xmax; ++x) ss += src[size_t(x + xmin) * C + ch] * k[x];
        dst[size_t(xx) * C + ch] = clip8(ss);
      }
    }
  }
  return out;
}

// Vertical pass: in (rows, W, C) -> (out_h, W, C); bounds are relative to in's
// first row after subtracting y_shift.
Image resample_vertical(const Image& in, int out_h, const Coeffs& c, int y_shift) {
  const int C = in.channels;
  const size_t row = size_t(in.width) * C;
  Image out{in.width, out_h, C, std::vector<uint8_t>(row * out_h)};
  std::vector<int32_t> acc(row);  // one output row of sums; rows accumulate in order (vectorises)
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = c.bounds[2 * size_t(yy)] - y_shift, ymax = c.bounds[2 * size_t(yy) + 1];
    const int32_t* k = &c.k[size_t(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* src = &in.pixels[row * (ymin + y)];
      const int32_t ky = k[y];
      for (size_t i = 0; i < row; ++i) acc[i] += src[i] * ky;
    }
    uint8_t* dst = &out.pixels[row * yy];
    for (size_t i = 0; i < row; ++i) dst[i] = clip8(acc[i]);
  }
  return out;
}

// Nearest as PIL's ImagingScaleAffine: source x = int(x0 + (x + 0.5) * in/out),
// the position accumulated in double as there.
Image resize_nearest(const Image& in, int out_w, int out_h) {
  const int C = in.channels;
  Image out{out_w, out_h, C, std::vector<uint8_t>(size_t(out_w) * out_h * C, 0)};
  const double ax = static_cast<double>(in.width) / out_w, ay = static_cast<double>(in.height) / out_h;
  std::vector<int> xin(out_w);
  double xo = ax * 0.5;
  for (int x = 0; x < out_w; ++x, xo += ax) xin[x] = xo < 0.0 ? -1 : static_cast<int>(xo);
  double yo = ay * 0.5;
  for (int y = 0; y < out_h; ++y, yo += ay) {
    const int yi = yo < 0.0 ? -1 : static_cast<int>(yo);
    if (yi < 0 || yi >= in.height) continue;
    for (int x = 0; x < out_w; ++x) {
      if (xin[x] < 0 || xin[x] >= in.width) continue;
      std::memcpy(&out.pixels[(size_t(y) * out_w + x) * C], &in.pixels[(size_t(yi) * in.width + xin[x]) * C], C);
    }
  }
  return out;
}

void check_image(const Image& img, const char* where) {
  check(img.width > 0 && img.height > 0 && (img.channels == 1 || img.channels == 3), where, ": bad image ",
        img.width, "x", img.height, "x", img.channels, " (expected 1 or 3 channels)");
  check(img.pixels.size() == size_t(img.width) * img.height * img.channels, where, ": image buffer holds ",
        img.pixels.size(), " bytes, expected ", size_t(img.width) * img.height * img.channels);
}

// Python's int(round(k / 2.0)) for an integer k >= 0: halves round to even.
int half_round_even(int k) {
  int q = k / 2;
  return (k % 2 == 0 || q % 2 == 0) ? q : q + 1;
}

// Offset of a crop of size c in a side of size s: negative when padding.
int crop_offset(int s, int c) { return c > s ? -((c - s) / 2) : half_round_even(s - c); }

// mean/std value for channel ch (1 value broadcasts).
float per_channel(const std::vector<float>& v, int ch) { return v.size() == 1 ? v[0] : v[size_t(ch)]; }

void check_preprocess_config(const ViTConfig& cfg) {
  const int C = cfg.channels, crop = cfg.pre.crop ? cfg.pre.crop : cfg.image_size;
  check(C == 1 || C == 3, "preprocess: model has ", C, " channels (expected 1 or 3)");
  check(cfg.image_size > 0 && crop == cfg.image_size, "preprocess: crop ", crop, " differs from image_size ",
        cfg.image_size, " (the crop is the model's input)");
  check(cfg.pre.resize >= 0, "preprocess: negative resize ", cfg.pre.resize);
  for (const auto* v : {&cfg.pre.mean, &cfg.pre.std})
    check(v->size() == 1 || v->size() == size_t(C), "preprocess: mean and std need 1 or ", C, " values, got ",
          v->size());
  for (int ch = 0; ch < C; ++ch)
    check(per_channel(cfg.pre.std, ch) != 0.f, "preprocess: std of channel ", ch, " is zero");
}

}  // namespace

// (H, W, Cin) -> (H, W, channels).
Image convert_channels(const Image& img, int channels) {
  check_image(img, "convert_channels");
  check(channels == 1 || channels == 3, "convert_channels: ", channels, " channels (expected 1 or 3)");
  if (img.channels == channels) return img;
  const size_t n = size_t(img.width) * img.height;
  Image out{img.width, img.height, channels, std::vector<uint8_t>(n * channels)};
  const uint8_t* p = img.pixels.data();
  for (size_t i = 0; i < n; ++i) {
    if (channels == 1) {
      out.pixels[i] = static_cast<uint8_t>((p[3 * i] * 19595 + p[3 * i + 1] * 38470 + p[3 * i + 2] * 7471 + 0x8000) >> 16);
    } else {
      out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = p[i];
    }
  }
  return out;
}

// (H, W, C) -> (out_h, W', C) via ImagingResampleInner: the vertical weights fix
// the rows needed, the horizontal pass runs on those rows only, then the vertical.
Image resize_pil(const Image& img, int out_w, int out_h, Interpolation interp) {
  check_image(img, "resize");
  check(out_w > 0 && out_h > 0 && out_w <= (1 << 16) && out_h <= (1 << 16), "resize: bad output size ", out_w, "x",
        out_h);
  if (out_w == img.width && out_h == img.height) return img;
  if (interp == Interpolation::Nearest) return resize_nearest(img, out_w, out_h);
  const Coeffs vert = precompute_coeffs(img.height, out_h, interp);
  const int y_first = vert.bounds[0];
  const int y_last = vert.bounds[2 * size_t(out_h) - 2] + vert.bounds[2 * size_t(out_h) - 1];
  Image cur = img;
  int shift = 0;
  if (out_w != img.width) {
    cur = resample_horizontal(img, y_first, y_last - y_first, out_w, precompute_coeffs(img.width, out_w, interp));
    shift = y_first;
  }
  if (out_h != img.height) cur = resample_vertical(cur, out_h, vert, shift);
  return cur;
}

std::pair<int, int> resized_size(int width, int height, int size) {
  check(width > 0 && height > 0 && size > 0, "resize: bad sizes ", width, "x", height, " -> ", size);
  const int shorter = std::min(width, height), longer = std::max(width, height);
  const int new_long = static_cast<int>(static_cast<double>(int64_t(size) * longer) / shorter);
  return width <= height ? std::pair{size, new_long} : std::pair{new_long, size};
}

// (H, W, C) -> (crop_h, crop_w, C).
Image center_crop(const Image& img, int crop_w, int crop_h) {
  check_image(img, "center_crop");
  check(crop_w > 0 && crop_h > 0, "center_crop: bad crop ", crop_w, "x", crop_h);
  const int C = img.channels, top = crop_offset(img.height, crop_h), left = crop_offset(img.width, crop_w);
  Image out{crop_w, crop_h, C, std::vector<uint8_t>(size_t(crop_w) * crop_h * C, 0)};
  for (int y = 0; y < crop_h; ++y) {
    const int sy = y + top;
    if (sy < 0 || sy >= img.height) continue;
    const int x0 = std::max(0, -left), x1 = std::min(crop_w, img.width - left);
    if (x1 > x0)
      std::memcpy(&out.pixels[(size_t(y) * crop_w + x0) * C], &img.pixels[(size_t(sy) * img.width + x0 + left) * C],
                  size_t(x1 - x0) * C);
  }
  return out;
}

// img (H, W, Cin) uint8 -> out (C, S, S) float: (p / 255 - mean[c]) / std[c].
void preprocess_image(const Image& img, const ViTConfig& cfg, float* out) {
  check_preprocess_config(cfg);
  const int C = cfg.channels, S = cfg.image_size;
  const int size = cfg.pre.resize ? cfg.pre.resize : S;
  Image x = convert_channels(img, C);
  auto [w, h] = resized_size(x.width, x.height, size);
  x = center_crop(resize_pil(x, w, h, cfg.pre.interpolation), S, S);
  for (int ch = 0; ch < C; ++ch) {
    // The 256 possible values, computed in float32 as ToTensor + Normalize do.
    const float mean = per_channel(cfg.pre.mean, ch), sd = per_channel(cfg.pre.std, ch);
    float lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = (static_cast<float>(v) / 255.0f - mean) / sd;
    float* dst = out + size_t(ch) * S * S;
    for (size_t i = 0; i < size_t(S) * S; ++i) dst[i] = lut[x.pixels[i * C + ch]];
  }
}

// (n indices) -> (n, C, S, S); the first error thrown by any image is rethrown.
Tensor preprocess_batch(const Dataset& ds, const std::vector<int64_t>& idx, const ViTConfig& cfg) {
  check_preprocess_config(cfg);
  const int64_t n = static_cast<int64_t>(idx.size());
  const size_t per = size_t(cfg.channels) * cfg.image_size * cfg.image_size;
  Tensor out = Tensor::empty({n, cfg.channels, cfg.image_size, cfg.image_size});
  float* dst = out.f32();
  std::exception_ptr error;
  std::mutex mu;
#pragma omp parallel for num_threads(num_threads()) schedule(dynamic, 8)
  for (int64_t i = 0; i < n; ++i) {
    try {
      preprocess_image(ds.image(idx[size_t(i)]), cfg, dst + size_t(i) * per);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace vitkit

// Image -> model input, exactly as torchvision's transforms on a PIL image:
// channel conversion (PIL .convert("L") / .convert("RGB")), Resize (PIL's
// Image.resize: separable two-pass resampling with antialiasing, uint8
// fixed-point), CenterCrop (zero padding when the image is smaller), ToTensor
// (/255) and Normalize(mean, std).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/io/dataset.h"
#include "vitkit/io/image.h"
#include "vitkit/model/config.h"

namespace vitkit {

// 3 -> 1: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (PIL); 1 -> 3: replication.
Image convert_channels(const Image& img, int channels);

// PIL's Image.resize((out_w, out_h), filter) on an 8-bit image: Nearest, Bilinear
// (triangle, support 1) or Bicubic (a = -0.5, support 2), the support scaled by
// the downscale factor; horizontal pass then vertical, each rounded to uint8.
Image resize_pil(const Image& img, int out_w, int out_h, Interpolation interp);

// torchvision's Resize(size) output (width, height): the shorter side becomes
// size, the longer int(size * long / short).
std::pair<int, int> resized_size(int width, int height, int size);

// torchvision's CenterCrop: offsets int(round((h - ch) / 2.0)) (round half to
// even, as Python); zeros where the crop lies outside a smaller image.
Image center_crop(const Image& img, int crop_w, int crop_h);

// One image -> float CHW (cfg.channels x cfg.image_size x cfg.image_size) in out:
// convert, Resize(cfg.pre.resize, or the crop size when 0), CenterCrop(crop or
// image_size), ToTensor, Normalize(mean, std). mean/std hold 1 or cfg.channels values.
void preprocess_image(const Image& img, const ViTConfig& cfg, float* out);

// Images idx[0..n) of ds -> (n, C, S, S) float32, decoded and preprocessed in
// parallel (OpenMP, num_threads()). Errors from any image are rethrown.
Tensor preprocess_batch(const Dataset& ds, const std::vector<int64_t>& idx, const ViTConfig& cfg);

}  // namespace vitkit

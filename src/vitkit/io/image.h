// Decoded 8-bit images (HWC, row-major) and decoding of image files: JPEG with
// libjpeg as PIL decodes it (io/jpeg.h), PNG, BMP, PPM/PGM with stb_image.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vitkit {

// pixels[(y * width + x) * channels + c]; channels is 1 (gray) or 3 (RGB).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// Decodes a file. Gray stays 1 channel, RGB 3; alpha is dropped (gray+alpha -> 1,
// RGBA -> 3) as PIL's .convert("RGB") / .convert("L") do; palettes are expanded.
// Throws vitkit::Error naming the file on failure.
Image decode_image(const std::string& path);

// Decodes an image held in memory; `name` is used in error messages.
Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name);

}  // namespace vitkit

#include "vitkit/io/image.h"

#include <stb/stb_image.h>

#include <climits>
#include <cstring>
#include <memory>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/jpeg.h"

namespace vitkit {

namespace {
constexpr int64_t kMaxPixels = int64_t(1) << 26;  // 67M pixels (8192 x 8192): beyond that a file is suspect
}

// Encoded bytes -> Image (HWC uint8). JPEG (by its SOI marker, whatever the file
// is called) goes to libjpeg, as in PIL; everything else to stb_image, where
// source components 1/2 decode to 1 channel, 3/4 to 3 (stb drops the alpha
// channel when asked for fewer components).
Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name) {
  check(size > 0, name, ": cannot decode image: the file is empty");
  if (is_jpeg(data, size)) return decode_jpeg(data, size, name);
  check(size <= size_t(INT_MAX), name, ": cannot decode image: file larger than 2 GiB");
  const int len = static_cast<int>(size);
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    fail(name, ": cannot decode image: ", stbi_failure_reason(),
         " (supported: JPEG, PNG, BMP, PPM/PGM, GIF, TGA)");
  check(w > 0 && h > 0 && int64_t(w) * h <= kMaxPixels, name, ": image size ", w, "x", h, " is not plausible");
  const int want = (comp == 1 || comp == 2) ? 1 : 3;
  int w2 = 0, h2 = 0, comp2 = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> px(stbi_load_from_memory(data, len, &w2, &h2, &comp2, want),
                                               stbi_image_free);
  if (!px) fail(name, ": cannot decode image: ", stbi_failure_reason());
  check(w2 == w && h2 == h, name, ": image size changed between header and decode");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = want;
  img.pixels.assign(px.get(), px.get() + size_t(w) * h * want);
  return img;
}

Image decode_image(const std::string& path) {
  std::vector<uint8_t> bytes = read_file(path);
  return decode_image_memory(bytes.data(), bytes.size(), path);
}

}  // namespace vitkit

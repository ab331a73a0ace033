// JPEG decoding with libjpeg (Debian: libjpeg62-turbo), set up exactly as PIL's
// Image.open(f).convert(...) decodes: libjpeg's defaults (JDCT_ISLOW integer
// IDCT, fancy upsampling), so the pixels are the ones torchvision sees.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "vitkit/io/image.h"

namespace vitkit {

// True when the bytes start with a JPEG SOI marker (FF D8 FF).
bool is_jpeg(const uint8_t* data, size_t size);

// Decodes a baseline or progressive 8-bit JPEG:
//   1 component  -> 1 channel (gray stays gray, as PIL's mode "L");
//   3 components -> 3 channels RGB (YCbCr or RGB in the file);
//   4 components -> CMYK or YCCK as PIL reads them (Adobe inverted CMYK, then
//                   PIL's CMYK -> RGB conversion), 3 channels.
// Errors (corrupt data libjpeg cannot decode, a truncated file, a size beyond
// 8192 x 8192 pixels, more than 1000 progressive scans, 12-bit data) throw
// vitkit::Error naming `name`; libjpeg's recoverable warnings ("corrupt JPEG
// data: N extraneous bytes") are ignored, as PIL ignores them.
Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name);

}  // namespace vitkit

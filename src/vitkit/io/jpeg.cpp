#include "vitkit/io/jpeg.h"

// jpeglib.h needs size_t and FILE declared first.
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include <jerror.h>
#include <jpeglib.h>

#include "vitkit/core/error.h"

namespace vitkit {

namespace {

constexpr int64_t kMaxPixels = int64_t(1) << 26;  // 8192 x 8192, as decode_image's cap
constexpr int kMaxScans = 1000;                  // progressive files with more are hostile (libjpeg-turbo's advice)

// libjpeg reports errors through error_exit, which must not return: it longjmps
// back to the phase function that called setjmp, with the message saved here.
struct ErrorMgr {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

extern "C" void jpeg_on_error(j_common_ptr cinfo) {
  ErrorMgr* e = reinterpret_cast<ErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (level -1) are recoverable corruption, which PIL ignores, except the
// end of the data before the image is complete: PIL refuses truncated files
// ("image file is truncated"), and so does vitkit. Trace messages are dropped.
extern "C" void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  ErrorMgr* e = reinterpret_cast<ErrorMgr*>(cinfo->err);
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
    (*cinfo->err->format_message)(cinfo, e->message);
    e->truncated = true;
    std::longjmp(e->jump, 1);
  }
  cinfo->err->num_warnings++;
}

// Bounds the work of a progressive file: each scan rereads the coefficients.
extern "C" void jpeg_on_progress(j_common_ptr cinfo) {
  j_decompress_ptr d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->is_decompressor && d->input_scan_number > kMaxScans) {
    ErrorMgr* e = reinterpret_cast<ErrorMgr*>(cinfo->err);
    std::snprintf(e->message, sizeof(e->message), "more than %d progressive scans (corrupt or hostile file)",
                  kMaxScans);
    std::longjmp(e->jump, 1);
  }
}

// The phases below hold only trivially destructible locals: a longjmp into
// them skips no destructor. They return false with err->message set on error.

// Header: reads the markers and picks the output colour space as PIL does
// (mode L / RGB / CMYK from the number of components).
bool read_header(jpeg_decompress_struct* cinfo, ErrorMgr* err, const uint8_t* data, size_t size) {
  if (setjmp(err->jump)) return false;
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(cinfo, TRUE);
  switch (cinfo->num_components) {
    case 1: cinfo->out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo->out_color_space = JCS_RGB; break;
    case 4: cinfo->out_color_space = JCS_CMYK; break;  // libjpeg turns YCCK into CMYK
    default:
      std::snprintf(err->message, sizeof(err->message),
                    "%d colour components (supported: 1 gray, 3 YCbCr/RGB, 4 CMYK/YCCK)", cinfo->num_components);
      return false;
  }
  // libjpeg's defaults, which PIL keeps (it changes them only in draft mode):
  // JDCT_ISLOW, fancy upsampling, no scaling, no quantization.
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  cinfo->scale_num = cinfo->scale_denom = 1;
  cinfo->quantize_colors = FALSE;
  jpeg_calc_output_dimensions(cinfo);
  return true;
}

// Decompression into out (output_height rows of row_bytes).
bool decompress(jpeg_decompress_struct* cinfo, ErrorMgr* err, uint8_t* out, size_t row_bytes) {
  if (setjmp(err->jump)) return false;
  jpeg_start_decompress(cinfo);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = out + size_t(cinfo->output_scanline) * row_bytes;
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {
      std::snprintf(err->message, sizeof(err->message), "decoder stopped at row %u of %u",
                    cinfo->output_scanline, cinfo->output_height);
      return false;
    }
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

// PIL's CMYK JPEG path: rawmode "CMYK;I" (Adobe's inverted polarity, assumed
// for every CMYK file), then Convert.c's cmyk2rgb:
//   nk = 255 - k, r = nk - muldiv255(c, nk), muldiv255(a, b) = ((t >> 8) + t) >> 8 with t = a*b + 128.
void cmyk_to_rgb(const uint8_t* cmyk, uint8_t* rgb, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = cmyk + 4 * i;
    const int nk = 255 - (255 - p[3]);  // k after the inversion is 255 - p[3]
    for (int c = 0; c < 3; ++c) {
      const int v = 255 - p[c];         // c after the inversion
      const int t = v * nk + 128;
      const int r = nk - (((t >> 8) + t) >> 8);
      rgb[3 * i + c] = static_cast<uint8_t>(r < 0 ? 0 : r > 255 ? 255 : r);
    }
  }
}

struct Decompressor {
  jpeg_decompress_struct cinfo;
  ErrorMgr err;
  jpeg_progress_mgr progress;
  Decompressor() {
    std::memset(&cinfo, 0, sizeof(cinfo));
    std::memset(&err, 0, sizeof(err));
    std::memset(&progress, 0, sizeof(progress));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_on_error;
    err.pub.emit_message = jpeg_on_message;
    progress.progress_monitor = jpeg_on_progress;
    jpeg_create_decompress(&cinfo);  // cannot fail here: only a version/struct-size mismatch errors
    cinfo.progress = &progress;
  }
  ~Decompressor() { jpeg_destroy_decompress(&cinfo); }
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;
};

}  // namespace

bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name) {
  check(size > 0, name, ": cannot decode JPEG: the file is empty");
  check(size <= 0xFFFFFFFFull, name, ": cannot decode JPEG: file larger than 4 GiB");
  Decompressor d;
  const auto failed = [&](const char* phase) {
    if (d.err.truncated)
      fail(name, ": truncated JPEG: ", d.err.message, " (the file ends before the image data does)");
    fail(name, ": cannot decode JPEG (", phase, "): ", d.err.message);
  };
  if (!read_header(&d.cinfo, &d.err, data, size)) failed("header");
  const int64_t w = d.cinfo.output_width, h = d.cinfo.output_height;
  check(w > 0 && h > 0 && w * h <= kMaxPixels, name, ": JPEG size ", w, "x", h, " is not plausible (at most ",
        kMaxPixels, " pixels)");
  const int comps = d.cinfo.output_components;
  check(comps == 1 || comps == 3 || comps == 4, name, ": JPEG decodes to ", comps, " components");
  std::vector<uint8_t> raw(size_t(w) * size_t(h) * size_t(comps));
  if (!decompress(&d.cinfo, &d.err, raw.data(), size_t(w) * comps)) failed("data");
  Image img;
  img.width = static_cast<int>(w);
  img.height = static_cast<int>(h);
  if (comps == 4) {
    img.channels = 3;
    img.pixels.resize(size_t(w) * size_t(h) * 3);
    cmyk_to_rgb(raw.data(), img.pixels.data(), size_t(w) * size_t(h));
  } else {
    img.channels = comps;
    img.pixels = std::move(raw);
  }
  return img;
}

}  // namespace vitkit

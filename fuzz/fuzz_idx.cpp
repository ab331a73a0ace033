// libFuzzer harness: the IDX reader (plain and gzipped; magic, type, dims,
// sizes), as images (3 dimensions) and as labels (1).
#include <cstdint>

#include "fuzz_util.h"
#include "vitkit/core/error.h"
#include "vitkit/io/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;
  const std::string path = vitkit::fuzz::scratch_file("idx", data, size);
  for (int ndim : {3, 1}) {
    try {
      vitkit::IdxArray a = vitkit::read_idx(path, ndim);
      (void)a;
    } catch (const vitkit::Error&) {
    }
  }
  return 0;
}

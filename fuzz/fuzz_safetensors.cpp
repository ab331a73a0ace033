// libFuzzer harness: the safetensors reader (header length, JSON, dtypes,
// shapes, offsets, overlap), reading every tensor it accepts.
#include <cstdint>
#include <vector>

#include "fuzz_util.h"
#include "vitkit/core/error.h"
#include "vitkit/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;
  const std::string path = vitkit::fuzz::scratch_file("safetensors", data, size);
  try {
    vitkit::SafetensorsReader r(path);
    r.metadata();
    for (const vitkit::StTensor& t : r.tensors()) {
      if (t.numel() > (1 << 20)) continue;
      std::vector<float> f(static_cast<size_t>(t.numel()));
      r.read_f32(t, f.data());
      r.read(t);
    }
  } catch (const vitkit::Error&) {
  }
  return 0;
}

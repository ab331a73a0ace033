// libFuzzer harness: the .pth reader (zip, restricted unpickler, state-dict
// discovery, view checks, strided reads) and the layout renaming on top.
// An input starting with "PK" is read as a whole archive; any other input is
// taken as data.pkl and wrapped in a torch.save-style zip holding four fixed
// storages (data/0: 64 bytes, data/1: 16, data/2: 0, data/3: 256), so that
// mutations reach the unpickler instead of failing the zip's CRC check.
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz_util.h"
#include "vitkit/core/error.h"
#include "vitkit/io/layouts.h"
#include "vitkit/io/pth.h"

namespace {

std::vector<uint8_t> wrap_pickle(const uint8_t* data, size_t size) {
  std::vector<uint8_t> s0(64), s1(16), s3(256);
  for (size_t i = 0; i < s0.size(); ++i) s0[i] = static_cast<uint8_t>(i * 37);
  for (size_t i = 0; i < s1.size(); ++i) s1[i] = static_cast<uint8_t>(i * 11 + 60);
  for (size_t i = 0; i < s3.size(); ++i) s3[i] = static_cast<uint8_t>(i);
  return vitkit::fuzz::make_zip({{"archive/data.pkl", std::vector<uint8_t>(data, data + size)},
                                 {"archive/data/0", s0},
                                 {"archive/data/1", s1},
                                 {"archive/data/2", {}},
                                 {"archive/data/3", s3},
                                 {"archive/version", {'3', '\n'}}});
}

void exercise(const uint8_t* data, size_t size) {
  auto reader = std::make_unique<vitkit::PthReader>("fuzz.pth", data, size);
  for (const vitkit::PthTensor& t : reader->tensors()) {
    if (t.numel() > (1 << 20)) continue;
    std::vector<float> f(static_cast<size_t>(t.numel()));
    reader->read_f32(t.name, f.data());
    reader->read(t.name);
  }
  // Renaming and q/k/v packing over whatever names the pickle holds.
  vitkit::RemappedSource renamed(std::move(reader), vitkit::layout_keymap(vitkit::layout("hf"), ""));
  for (const vitkit::SourceTensor& t : renamed.list()) {
    if (vitkit::shape_numel(t.shape) > (1 << 20)) continue;
    std::vector<float> f(static_cast<size_t>(vitkit::shape_numel(t.shape)));
    renamed.read_f32(t.name, f.data());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;
  std::vector<uint8_t> zip;
  if (!(size >= 2 && data[0] == 'P' && data[1] == 'K')) {
    zip = wrap_pickle(data, size);
    data = zip.data();
    size = zip.size();
  }
  try {
    exercise(data, size);
  } catch (const vitkit::Error&) {
  }
  return 0;
}

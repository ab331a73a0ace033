// libFuzzer harness: key maps. An input whose first byte is odd is a key map
// file (parsed, then applied to a few short names: std::regex backtracks, and
// a user's own pathological pattern may take exponential time on long names);
// otherwise its lines are tensor names (of untrusted checkpoints), renamed by
// every layout preset, packed and checked for collisions.
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "vitkit/core/error.h"
#include "vitkit/io/keymap.h"
#include "vitkit/io/layouts.h"

namespace {

// Tensors with the given names, each of shape (2, 3) or (3,), filled with zeros.
class NameSource : public vitkit::TensorSource {
 public:
  explicit NameSource(std::vector<vitkit::SourceTensor> t) : t_(std::move(t)) {}
  std::string path() const override { return "fuzz.pth"; }
  std::vector<vitkit::SourceTensor> list() const override { return t_; }
  void read_f32(const std::string& name, float* dst) const override {
    for (auto& t : t_)
      if (t.name == name) {
        for (int64_t i = 0; i < vitkit::shape_numel(t.shape); ++i) dst[i] = 0.f;
        return;
      }
    vitkit::fail("no tensor ", name);
  }

 private:
  std::vector<vitkit::SourceTensor> t_;
};

void apply_map(const std::string& text) {
  vitkit::KeyMap m = vitkit::KeyMap::parse(text, "fuzz.map");
  for (const char* n : {"a", "blocks.0.attn.qkv.weight", "x.1.q", "module.norm.w", "", "head.bias", "0.0.0"})
    m.apply(n);
}

void rename_names(const std::string& text) {
  std::vector<vitkit::SourceTensor> ts;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line) && ts.size() < 256)
    ts.push_back({line, vitkit::DType::F32, line.size() % 2 ? vitkit::Shape{2, 3} : vitkit::Shape{3}});
  static std::vector<vitkit::KeyMap> maps = [] {  // compiled once: std::regex compiles slowly
    std::vector<vitkit::KeyMap> v;
    for (const std::string& l : vitkit::layout_names()) v.push_back(vitkit::layout_keymap(vitkit::layout(l), ""));
    return v;
  }();
  for (const vitkit::KeyMap& map : maps) {
    try {
      vitkit::RemappedSource r(std::make_unique<NameSource>(ts), map);
      for (auto& t : r.list()) {
        std::vector<float> f(static_cast<size_t>(vitkit::shape_numel(t.shape)));
        r.read_f32(t.name, f.data());
      }
    } catch (const vitkit::Error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 4096) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] & 1) apply_map(text);
    else rename_names(text);
  } catch (const vitkit::Error&) {
  }
  return 0;
}

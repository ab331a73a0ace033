#include "vitkit/compress/half.h"

#include <regex>

#include "vitkit/core/error.h"
#include "vitkit/repr/bf16.h"
#include "vitkit/repr/f16.h"

namespace vitkit {

namespace {

// The layers a half pass converts: all, or those whose name matches `layers`.
std::vector<Linear*> targets(ViT& m, const PassArgs& a) {
  std::vector<Linear*> v;
  std::regex re;
  if (a.given("layers")) re = std::regex(a.text("layers"), std::regex::ECMAScript);  // validated by the framework
  for (Linear* l : m.linears())
    if (!a.given("layers") || std::regex_search(l->name, re)) v.push_back(l);
  if (v.empty()) throw UsageError(cat("layers=", a.text("layers"), " matches no layer"));
  return v;
}

// Converts each target with make(plain f32 weight, layer) -> representation.
template <typename Make>
nlohmann::json convert(ViT& m, const PassArgs& a, const char* kind, Make make) {
  const std::vector<Linear*> ls = targets(m, a);
  for (const Linear* l : ls)
    if (l->repr->kind() != "f32" && l->repr->kind() != "f32_packed")
      fail(kind, ": ", l->describe(), " already has a '", l->repr->kind(), "' representation (", l->repr->describe(),
           "); ", kind, " converts dense f32 layers");
  nlohmann::json names = nlohmann::json::array();
  int64_t weights = 0, bytes_before = 0, bytes_after = 0;
  std::vector<float> scratch;
  for (Linear* l : ls) {
    bytes_before += l->repr->file_bytes();
    std::unique_ptr<LinearRepr> r = make(l->repr->plain_weight(scratch), *l);
    bytes_after += r->file_bytes();
    m.set_repr(*l, std::move(r));  // the f32 weight is freed here
    names.push_back(l->name);
    weights += int64_t(l->in) * l->out;
  }
  return {{"layers", names}, {"weights", weights}, {"bytes_before", bytes_before}, {"bytes_after", bytes_after}};
}

std::vector<PassKey> half_keys() {
  return {PassKey("layers", PassKey::Type::Regex, "", "only the layers whose name matches (default: every linear layer)")};
}

class Bf16Pass : public Pass {
 public:
  std::string name() const override { return "bf16"; }
  std::string summary() const override {
    return "linear layers in bf16: bf16 weights and inputs, f32 accumulation (oneDNN's bf16 matmul where the CPU has "
           "bf16 dot products; elsewhere the same numerics without the speed)";
  }
  std::vector<PassKey> keys() const override { return half_keys(); }
  bool layers_select() const override { return true; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext&) const override {
    return convert(m, a, "bf16", [](const float* w, const Linear& l) {
      return std::make_unique<Bf16Linear>(w, l.in, l.out, l.repr->bias_tensor());
    });
  }
};

class F16Pass : public Pass {
 public:
  std::string name() const override { return "f16"; }
  std::string summary() const override {
    return "linear layers' weights stored as IEEE half (half the bytes in files and memory), f32 inputs and "
           "products";
  }
  std::vector<PassKey> keys() const override { return half_keys(); }
  bool layers_select() const override { return true; }
  nlohmann::json apply(ViT& m, const PassArgs& a, const PassContext&) const override {
    return convert(m, a, "f16", [](const float* w, const Linear& l) {
      return std::make_unique<F16Linear>(w, l.in, l.out, l.repr->bias_tensor());
    });
  }
};

}  // namespace

std::unique_ptr<Pass> make_bf16_pass() { return std::make_unique<Bf16Pass>(); }
std::unique_ptr<Pass> make_f16_pass() { return std::make_unique<F16Pass>(); }

void convert_linears_to_bf16(ViT& m) { apply_pass(m, "bf16"); }

}  // namespace vitkit

#include "vitkit/io/layouts.h"

#include <algorithm>

#include "vitkit/core/error.h"
#include "vitkit/io/unpickler.h"

namespace vitkit {

namespace {

// timm's VisionTransformer.
const char* kTimmRules = R"(
patch_embed\.proj\.(weight|bias) -> conv_proj.$1
cls_token -> class_token
pos_embed -> encoder.pos_embedding
blocks\.(\d+)\.norm1\.(weight|bias) -> encoder.layers.encoder_layer_$1.ln_1.$2
blocks\.(\d+)\.attn\.qkv\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.in_proj_$2
blocks\.(\d+)\.attn\.proj\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.out_proj.$2
blocks\.(\d+)\.norm2\.(weight|bias) -> encoder.layers.encoder_layer_$1.ln_2.$2
blocks\.(\d+)\.mlp\.fc1\.(weight|bias) -> encoder.layers.encoder_layer_$1.mlp.0.$2
blocks\.(\d+)\.mlp\.fc2\.(weight|bias) -> encoder.layers.encoder_layer_$1.mlp.3.$2
norm\.(weight|bias) -> encoder.ln.$1
head\.(weight|bias) -> heads.head.$1
)";

// transformers' ViTForImageClassification (and ViTModel without the "vit." prefix).
const char* kHfRules = R"(
(?:vit\.)?embeddings\.patch_embeddings\.projection\.(weight|bias) -> conv_proj.$1
(?:vit\.)?embeddings\.cls_token -> class_token
(?:vit\.)?embeddings\.position_embeddings -> encoder.pos_embedding
(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.query\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.in_proj_$2[q]
(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.key\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.in_proj_$2[k]
(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.value\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.in_proj_$2[v]
(?:vit\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.out_proj.$2
(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias) -> encoder.layers.encoder_layer_$1.ln_1.$2
(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias) -> encoder.layers.encoder_layer_$1.ln_2.$2
(?:vit\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias) -> encoder.layers.encoder_layer_$1.mlp.0.$2
(?:vit\.)?encoder\.layer\.(\d+)\.output\.dense\.(weight|bias) -> encoder.layers.encoder_layer_$1.mlp.3.$2
(?:vit\.)?layernorm\.(weight|bias) -> encoder.ln.$1
classifier\.(weight|bias) -> heads.head.$1
)";

// Models built on nn.TransformerEncoder(Layer); the non-encoder names are a
// convention documented in layouts.h.
const char* kTorchEncoderRules = R"(
(?:.*\.)?layers\.(\d+)\.self_attn\.in_proj_(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.in_proj_$2
(?:.*\.)?layers\.(\d+)\.self_attn\.out_proj\.(weight|bias) -> encoder.layers.encoder_layer_$1.self_attention.out_proj.$2
(?:.*\.)?layers\.(\d+)\.linear1\.(weight|bias) -> encoder.layers.encoder_layer_$1.mlp.0.$2
(?:.*\.)?layers\.(\d+)\.linear2\.(weight|bias) -> encoder.layers.encoder_layer_$1.mlp.3.$2
(?:.*\.)?layers\.(\d+)\.norm1\.(weight|bias) -> encoder.layers.encoder_layer_$1.ln_1.$2
(?:.*\.)?layers\.(\d+)\.norm2\.(weight|bias) -> encoder.layers.encoder_layer_$1.ln_2.$2
(?:patch_embed|patch_embed\.proj|conv_proj|patch_embedding)\.(weight|bias) -> conv_proj.$1
(?:cls_token|class_token) -> class_token
(?:pos_embed|pos_embedding|encoder\.pos_embedding) -> encoder.pos_embedding
(?:head|heads\.head|fc|classifier)\.(weight|bias) -> heads.head.$1
(?:.*\.)?norm\.(weight|bias) -> encoder.ln.$1
)";

const std::vector<Layout>& all_layouts() {
  static const std::vector<Layout> v = {
      {"torchvision", "", "norm=pre,act=gelu,pool=cls,norm_eps=1e-6", {"heads"}},
      {"timm", kTimmRules, "norm=pre,act=gelu,pool=cls,norm_eps=1e-6", {"heads"}},
      {"hf", kHfRules, "norm=pre,act=gelu,pool=cls,norm_eps=1e-12,mean=0.5:0.5:0.5,std=0.5:0.5:0.5", {"heads"}},
      {"torch-encoder", kTorchEncoderRules, "norm_eps=1e-5", {"heads", "norm", "act", "pool"}},
      {"custom", "", "", {"heads", "norm", "act", "pool"}},
  };
  return v;
}

}  // namespace

std::vector<std::string> layout_names() {
  std::vector<std::string> v;
  for (auto& l : all_layouts()) v.push_back(l.name);
  return v;
}

const Layout& layout(const std::string& name) {
  for (auto& l : all_layouts())
    if (l.name == name) return l;
  std::string names;
  for (auto& l : all_layouts()) names += (names.empty() ? "" : ", ") + l.name;
  throw UsageError(cat("--arch: unknown layout '", name, "' (known: ", names, ")"));
}

KeyMap layout_keymap(const Layout& l, const std::string& map_file) {
  KeyMap m;
  if (!map_file.empty()) m = KeyMap::load(map_file);
  m.append(KeyMap::parse(l.rules, "layout " + l.name));
  return m;
}

RemappedSource::RemappedSource(std::unique_ptr<TensorSource> inner, const KeyMap& map) : inner_(std::move(inner)) {
  const std::vector<SourceTensor> all = inner_->list();
  const std::string file = inner_->path();
  const bool strip = !all.empty() && std::all_of(all.begin(), all.end(), [](const SourceTensor& t) {
    return t.name.rfind("module.", 0) == 0;
  });
  std::map<std::string, const SourceTensor*> by_name;
  for (auto& t : all) by_name[t.name] = &t;

  for (const SourceTensor& t : all) {
    const KeyMap::Result r = map.apply(strip ? t.name.substr(7) : t.name);
    if (r.drop) {
      dropped_.push_back(t.name);
      continue;
    }
    std::string base;
    const int part = packed_part(r.name, &base);
    const std::string target = part < 0 ? r.name : base;
    auto it = index_.find(target);
    if (it == index_.end()) {
      Entry e;
      e.out = {target, t.dtype, t.shape};
      e.parts.assign(part < 0 ? 1 : 3, "");
      index_[target] = entries_.size();
      entries_.push_back(std::move(e));
      it = index_.find(target);
    }
    Entry& e = entries_[it->second];
    const size_t slot = part < 0 ? 0 : static_cast<size_t>(part);
    if ((part < 0) != (e.parts.size() == 1) || !e.parts[slot].empty()) {
      std::string other;
      for (auto& p : e.parts)
        if (!p.empty()) other += (other.empty() ? "" : "', '") + p;
      fail(file, ": key map: '", printable(t.name), "' and '", printable(other), "' both become '",
           printable(r.name), "'");
    }
    e.parts[slot] = t.name;
  }

  // Packed q, k, v: all three present, of one shape; concatenated along dim 0.
  for (Entry& e : entries_) {
    for (auto& p : e.parts) e.numel.push_back(p.empty() ? 0 : shape_numel(by_name.at(p)->shape));
    if (e.parts.size() == 1) continue;
    static const char* names[] = {"q", "k", "v"};
    for (size_t i = 0; i < 3; ++i)
      if (e.parts[i].empty()) {
        std::string have;
        for (size_t j = 0; j < 3; ++j)
          if (!e.parts[j].empty()) have += cat(have.empty() ? "" : ", ", names[j], " from '", printable(e.parts[j]), "'");
        fail(file, ": key map: packed tensor '", printable(e.out.name), "' has ", have, " but no ", names[i], " part");
      }
    const SourceTensor* q = by_name.at(e.parts[0]);
    for (size_t i = 1; i < 3; ++i) {
      const SourceTensor* o = by_name.at(e.parts[i]);
      if (o->shape != q->shape)
        fail(file, ": key map: the parts of '", printable(e.out.name), "' differ in shape: '", printable(q->name),
             "' is ", shape_str(q->shape), ", '", printable(o->name), "' is ", shape_str(o->shape));
      if (o->dtype != q->dtype) e.out.dtype = DType::F32;
    }
    if (q->shape.empty()) fail(file, ": key map: '", printable(q->name), "' is a scalar and cannot be packed");
    e.out.shape = q->shape;
    e.out.shape[0] *= 3;
  }
}

std::vector<SourceTensor> RemappedSource::list() const {
  std::vector<SourceTensor> v;
  for (auto& e : entries_) v.push_back(e.out);
  return v;
}

const RemappedSource::Entry& RemappedSource::find(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path(), ": no tensor named '", printable(name), "' (after renaming)");
  return entries_[it->second];
}

std::vector<std::string> RemappedSource::sources(const std::string& name) const { return find(name).parts; }

void RemappedSource::read_f32(const std::string& name, float* dst) const {
  const Entry& e = find(name);
  for (size_t i = 0; i < e.parts.size(); ++i) {
    inner_->read_f32(e.parts[i], dst);
    dst += e.numel[i];
  }
}

Tensor RemappedSource::read(const std::string& name) const {
  const Entry& e = find(name);
  if (e.parts.size() == 1) return inner_->read(e.parts[0]);
  Tensor f = Tensor::empty(e.out.shape, DType::F32);
  read_f32(name, f.f32());
  return e.out.dtype == DType::F32 ? f : f.to(e.out.dtype);
}

}  // namespace vitkit

#include "vitkit/io/importer.h"

#include <optional>

#include "vitkit/core/error.h"
#include "vitkit/io/arch_infer.h"
#include "vitkit/io/pth.h"
#include "vitkit/io/safetensors.h"

namespace vitkit {

std::unique_ptr<TensorSource> open_checkpoint(const std::string& path) {
  switch (sniff_checkpoint(path)) {
    case CheckpointFormat::TorchZip:
    case CheckpointFormat::TorchLegacy:  // PthReader explains how to re-save it
      return std::make_unique<PthReader>(path);
    case CheckpointFormat::Safetensors:
      return std::make_unique<SafetensorsReader>(path);
    case CheckpointFormat::Unknown: break;
  }
  // Neither: the reader the name suggests says what is wrong.
  const bool st = path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
  if (st) return std::make_unique<SafetensorsReader>(path);
  return std::make_unique<PthReader>(path);
}

ImportedCheckpoint import_checkpoint(const std::string& path, const ImportOptions& o) {
  const Layout& l = layout(!o.arch.empty() ? o.arch : o.map.empty() ? "torchvision" : "custom");
  KeyMap map = layout_keymap(l, o.map);
  ImportedCheckpoint ck;
  std::unique_ptr<TensorSource> src = open_checkpoint(path);
  ck.format = dynamic_cast<PthReader*>(src.get()) ? "pth" : "safetensors";
  ck.layout = l.name;
  // A vitkit file's own config is the base (unless --preset replaces it).
  std::optional<ViTConfig> base;
  const auto md = src->metadata();
  if (auto it = md.find("vitkit.config"); it != md.end() && o.preset.empty()) {
    try {
      nlohmann::json j = nlohmann::json::parse(it->second);
      if (auto pre = md.find("vitkit.preprocess"); pre != md.end()) j["preprocess"] = nlohmann::json::parse(pre->second);
      base = config_from_json(j);
    } catch (const std::exception& e) {
      fail(path, ": metadata vitkit.config is not a valid model config: ", e.what());
    }
  }
  ck.source = std::make_unique<RemappedSource>(std::move(src), map);
  ck.cfg = resolve_arch(ck.source->list(), path, l, o.preset, o.config, base ? &*base : nullptr);
  return ck;
}

bool needs_import(const std::string& path, const ImportOptions& o) {
  if (!o.arch.empty() || !o.map.empty()) return true;
  if (sniff_checkpoint(path) != CheckpointFormat::Safetensors) return true;
  if (!o.preset.empty()) return false;
  SafetensorsReader r(path);
  return !r.metadata().count("vitkit.config");
}

}  // namespace vitkit

// Importing a checkpoint that is not a vitkit file: a .pth/.pt written by
// torch.save or a safetensors file without vitkit metadata, in any naming layout.
//   open (pth.h or safetensors.h) -> rename (layouts.h: preset + key map)
//   -> architecture (arch_infer.h: shapes + layout defaults + --preset/--config)
// The weights are read later, on demand, through the returned source.
#pragma once
#include <memory>
#include <string>

#include "vitkit/io/layouts.h"
#include "vitkit/io/tensor_source.h"
#include "vitkit/model/config.h"

namespace vitkit {

struct ImportOptions {
  std::string arch;    // layout preset; empty: "torchvision", or "custom" when map is given
  std::string map;     // key map file, tried before the layout's rules
  std::string preset;  // architecture preset to start from
  std::string config;  // key=value,... or a TOML file, applied last
};

struct ImportedCheckpoint {
  std::unique_ptr<RemappedSource> source;  // tensors under vitkit's names
  ViTConfig cfg;
  std::string format;  // "pth" or "safetensors"
  std::string layout;  // the layout used
};

// A reader for a checkpoint file of either format (chosen by its first bytes).
std::unique_ptr<TensorSource> open_checkpoint(const std::string& path);

ImportedCheckpoint import_checkpoint(const std::string& path, const ImportOptions& o);

// True when path must go through import_checkpoint rather than the native
// reader: a layout or key map is given, the file is not safetensors, or it is
// safetensors without vitkit metadata and no preset was given.
bool needs_import(const std::string& path, const ImportOptions& o);

}  // namespace vitkit

// Quantization-aware training: the model `vitkit train --qat SPEC` trains.
//
// The float --init model is quantized exactly as `compress --pass SPEC` (or
// `--recipe R.toml`) would quantize it, calibrated on the train split when the
// spec needs calibration; its int layers then train through their quantizers
// (repr/int.h: the forward pass is the quantized model's own, gradients
// straight through the rounding and zero where a value was clipped, optionally
// learned step sizes). The trainer's output is therefore the real quantized
// model, the file compress would write, trained.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "vitkit/model/vit.h"
#include "vitkit/train/train_config.h"

namespace vitkit {

// Quantizes m by cfg.qat.spec (a recipe when it names a .toml file; a spec
// without a pass name, "bits=4,abits=4", is a quantize spec) and returns the
// passes' records. UsageError for a spec that is not quantization, a recipe
// with fine-tuning steps, or a spec that leaves no layer quantized.
std::vector<nlohmann::json> quantize_for_qat(ViT& m, const TrainConfig& cfg, bool progress);
// Sets cfg.qat's training options (learned step sizes) on m's int layers;
// UsageError when m has none, or a layer's format cannot learn its scales.
void set_qat_options(ViT& m, const QatConfig& q);
// The quantize spec --qat means: "quantize:" prefixed to a bare key list.
std::string qat_spec(const std::string& text);

}  // namespace vitkit

// Per-unit sensitivity to a compression pass, and mixed precision from it.
//
// The pass (e.g. quantize:bits=4,granularity=group,group=32) is applied to one
// unit at a time — a linear layer, a layer kind (every qkv, ...) or an
// encoder block — restricted to the unit's layers with an anchored `layers=`
// list as compile_recipe does (so the pass's layers= must choose exactly the
// layers it changes: Pass::layers_select), the rest of the model left as is.
// Each such model is compared with the unchanged one on the same images
// (analyze/compare.h compare_models): top-1 difference, agreement, KL mean,
// and the SQNR of the unit's own outputs (its layers' signal and noise
// summed). The units are then ranked, most sensitive first.
//
// From the ranking, plan_mixed chooses which units take the pass and which a
// higher-precision spec (--high, default quantize:bits=8) to meet a target
// average weight width or model size, and writes the choice as a recipe
// (compress/recipe.h) that `vitkit compress --recipe` applies.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/analyze/compare.h"
#include "vitkit/compress/pass.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/io/dataset.h"
#include "vitkit/model/vit.h"

namespace vitkit {

enum class SensitivityBy { Layer, Kind, Block };
// Most sensitive first: by KL mean (largest), top-1 loss (largest) or the unit's SQNR (lowest).
enum class SensitivityRank { Kl, Top1, Sqnr };
const char* to_string(SensitivityBy b);    // "layer", "kind", "block"
const char* to_string(SensitivityRank r);  // "kl", "top1", "sqnr"
// UsageError naming `flag` and the accepted values otherwise.
SensitivityBy parse_sensitivity_by(const std::string& s, const std::string& flag = "--by");
SensitivityRank parse_sensitivity_rank(const std::string& s, const std::string& flag = "--rank");

// One linear layer's weight width and file bytes in some state of the model.
struct LayerWidth {
  std::string name;
  int64_t weights = 0;  // in x out
  int bits = 32;        // weight_bits of its representation
  int64_t bytes = 0;    // LinearRepr::file_bytes (weights, scales, bias)
};
// The nominal weight bits of a representation: 32 for f32 (dense, packed,
// rounded), 16 for bf16 and f16, the format's bits for int / fixed point.
// Error for a representation it does not know.
int weight_bits(const LinearRepr& r);
std::vector<LayerWidth> layer_widths(const ViT& m);  // every linear layer, in order
// Weighted by each layer's weights.
double average_bits(const std::vector<LayerWidth>& v);

struct SensitivityUnit {
  std::string name;                 // the layer's name, the kind ("fc1") or "block 3"
  std::vector<std::string> layers;  // Linear::name, in model order
  int64_t weights = 0;
  std::vector<LayerWidth> low;      // the unit's layers after the pass
  // Measured against the unchanged model:
  double top1_diff = 0;  // points (B - A)
  double agreement = 0, kl_mean = 0;
  double signal = 0, noise = 0;  // sums over the unit's layers' outputs
  double seconds = 0;
  double sqnr_db() const;  // 10 log10(signal / noise); +inf when noise is 0
};

struct SensitivityOptions {
  std::string pass;  // the spec applied to each unit (without layers=)
  SensitivityBy by = SensitivityBy::Kind;
  SensitivityRank rank = SensitivityRank::Kl;
  int64_t batch = 256;
  bool progress = true;  // one line per unit on stderr
};

struct SensitivityResult {
  std::string pass, data;
  SensitivityBy by = SensitivityBy::Kind;
  SensitivityRank rank = SensitivityRank::Kl;
  int64_t images = 0;
  double top1_ref = 0;  // the unchanged model's top-1 (fraction)
  double seconds = 0;
  std::vector<SensitivityUnit> units;  // ranked: most sensitive first
  nlohmann::json to_json() const;
  std::string text() const;  // a table, one row per unit in rank order
  std::string csv() const;
};

// The units of m, in model order. Layer: every linear layer; kind: the six
// kinds present (patch, qkv, out_proj, fc1, fc2, head); block: the encoder
// blocks (the patch embedding and the head belong to none).
std::vector<SensitivityUnit> sensitivity_units(const ViT& m, SensitivityBy by);
// Validates spec for a study: a known pass with valid keys, one whose layers=
// selects (UsageError naming `flag` and the pass otherwise), and no layers= of
// its own (the study gives it).
void check_sensitivity_pass(const std::string& spec, const std::string& flag = "--pass");
// spec with layers= the anchored list of these layers.
std::string restricted_spec(const std::string& spec, const std::vector<std::string>& layers);
// Sorts units most sensitive first (stable; top-1 ties go by KL mean, other
// ties keep model order).
void rank_units(std::vector<SensitivityUnit>& units, SensitivityRank rank);

// The study: every unit of m measured on ds (all its images). ctx: the
// calibration images, when the pass needs them.
SensitivityResult run_sensitivity(const ViT& m, const Dataset& ds, const PassContext& ctx,
                                  const SensitivityOptions& o);

// ---- Mixed precision

struct MixedTarget {
  enum class Kind { Bits, Bytes } kind = Kind::Bits;
  double value = 0;  // average weight bits, or model bytes (model/cost.h model_cost)
};

struct MixedPlan {
  std::vector<std::string> low_units, low_layers;  // what takes the pass (units in rank order)
  std::vector<LayerWidth> layers;  // every linear layer as the plan leaves it
  double bits = 0;                 // average weight bits of the plan
  int64_t bytes = 0;               // the model's bytes under the plan
  double high_bits = 0, low_bits = 0;    // every unit at --high / at the pass
  int64_t high_bytes = 0, low_bytes = 0;
  Recipe recipe;
};

// Greedy, from the ranking: start with every layer at the high state (`high`:
// the layers' widths with the high spec applied to all, or the model as it is;
// high_model_bytes: that model's model_cost bytes), then move units to the
// pass, least sensitive first, until the average bits (or the bytes) are at
// or below the target. The target must lie between every unit at the pass
// and every unit high (UsageError naming --target-bits / --target-bytes).
// high_spec: the spec the recipe gives the rest ("" keeps those layers as
// they are; the recipe has no steps then when no unit takes the pass).
MixedPlan plan_mixed(const SensitivityResult& r, const std::vector<LayerWidth>& high, int64_t high_model_bytes,
                     const std::string& high_spec, const MixedTarget& target);

// The recipe: with the same pass for both, one step of high_spec whose
// override `name = [...]` gives low_layers low_spec's keys; with different
// passes, a step of high_spec skipping low_layers and a step of low_spec on
// them; high_spec "": only the low step. Validated (parsed back from its TOML).
Recipe mixed_recipe(const std::string& low_spec, const std::string& high_spec,
                    const std::vector<std::string>& low_layers, const std::string& description);

}  // namespace vitkit

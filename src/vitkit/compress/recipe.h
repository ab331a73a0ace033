// Compression recipes: a TOML file of steps, each a pass with its keys and
// per-layer overrides (mixed precision), applied in order with `--pass`es:
//
//   description = "int8, 4-bit MLPs, float head"
//   [[step]]
//   pass = "quantize"              # or: spec = "quantize:bits=8,act=dynamic"
//   bits = 8
//   [[step.override]]              # layers these select take these keys instead
//   kind = ["fc1", "fc2"]          # selectors (all given must match):
//   bits = 4                       #   name  = "heads.head" or a list (exact names)
//   granularity = "group"          #   layers = "REGEX" (searched in the name)
//   group = 32                     #   kind  = "patch|qkv|out_proj|fc1|fc2|head" or a list
//   [[step.override]]              #   block = 3 or a list (encoder blocks, from 0)
//   name = "heads.head"
//   skip = true                    # leaves the selected layers as they are
//
// A fine-tuning step trains the model as the steps before left it, with a
// train config's tables inside the step (compress/finetune.h):
//
//   [[step]]
//   finetune = true
//   [step.train]                   # [train] keys: epochs, batch, lr, min_lr, ...
//   epochs = 1
//   lr = 2e-4
//   [step.data]                    # [data] keys: dataset, train_limit, ...
//   train_limit = 12000
//   [step.distill]                 # optional: teacher = "original" is the model
//   teacher = "original"           #   compress started from, or a model file
//
// Overrides apply in order (a later one wins where two select a layer). A
// step with overrides becomes one pass spec per distinct set of keys, each
// restricted to its layers by an anchored `layers=` list, so the compression
// log records exactly what each layer got. Overrides need a pass whose
// `layers=` selects the layers it changes (quantize, bf16, f16); the step's own
// `layers=` narrows the set the overrides choose from.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/model/vit.h"

namespace vitkit {

struct RecipeOverride {
  // Selectors: empty means "any".
  std::vector<std::string> names, kinds;
  std::string layers;  // regex
  std::vector<int> blocks;
  bool skip = false;
  std::vector<std::pair<std::string, std::string>> keys;  // pass keys, text form, in file order
  bool selects(const Linear& l) const;
  std::string describe() const;  // "kind=fc1|fc2 block=3"
};

struct RecipeStep {
  // A fine-tuning step: the train config (TOML text: its [train], [data],
  // [augment], [distill] tables), validated; pass, keys and overrides empty.
  std::string finetune;
  bool is_finetune() const { return !finetune.empty(); }
  std::string pass;
  std::vector<std::pair<std::string, std::string>> keys;  // the step's own pass keys, in file order
  std::vector<RecipeOverride> overrides;
  // The step as a pass spec, "quantize:bits=8,..." (without overrides).
  std::string spec() const;
};

struct Recipe {
  std::string path, description;
  std::vector<RecipeStep> steps;
};

// Parses and validates a recipe (every pass, key and value checked, overrides
// merged with their step's keys; a pass without selecting layers= refuses
// overrides): UsageError naming the file, the step and the key.
Recipe load_recipe(const std::string& path);
Recipe parse_recipe(const std::string& text, const std::string& path);

// One compiled spec and where it came from.
struct RecipeSpec {
  std::string spec;      // a pass spec, or empty for a fine-tuning step
  std::string finetune;  // a fine-tuning step's train config (TOML)
  nlohmann::json origin;  // {"recipe": path, "step": 1-based, "override": describe() or absent}
};
// The recipe's steps as pass specs for model m (layer names resolved).
std::vector<RecipeSpec> compile_recipe(const Recipe& r, const ViT& m);
// Whether any step needs calibration images.
bool recipe_needs_calibration(const Recipe& r);

// A recipe written back as TOML (what analyze sensitivity writes).
std::string recipe_toml(const Recipe& r);

// "^(?:a|b)$" with the names' regex metacharacters escaped: the `layers=` value
// that selects exactly these layers (what compile_recipe gives each spec).
std::string anchored_layers(const std::vector<std::string>& names);

}  // namespace vitkit

// The round pass: weights (and optionally the input activations) of the layers
// that hold nearly all multiply-accumulates rounded to d decimals, so that many
// multiplications repeat (docs/reuse.md). Each rounded layer gets the "round"
// representation (repr/round.h: files store its weights as integer codes).
// Rounding: kernels/round.h round_decimal (halves away from zero, on the
// float's exact value).
//
//   round:decimals=3                   every block's qkv, out_proj, fc1, fc2 weights
//   round:decimals=2,activations=true  and their inputs at run time
//   round:decimals=3,layers=conv_proj|heads.head,biases=true
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vitkit/compress/pass.h"

namespace vitkit {

struct RoundOptions {
  int decimals = 3;
  bool activations = false;  // also round the layers' inputs at run time
  std::string layers;        // ECMAScript regex searched in Linear::name: more layers ("" none)
  bool biases = false;       // also round the biases
};

// The layers the pass rounds, in forward order: every block's qkv, out_proj,
// fc1 and fc2, plus the linears whose name matches `layers` (std::regex_search,
// ECMAScript). Throws UsageError for a bad pattern.
std::vector<Linear*> round_targets(ViT& m, const std::string& layers);

// Multiply-accumulates per image of the named layers, and of the whole forward
// pass (model/cost.h: every matmul, the attention products included).
struct MacShare {
  int64_t covered = 0, total = 0;
  double fraction() const { return total ? double(covered) / double(total) : 0; }
};
MacShare mac_share(const ViT& m, const std::vector<std::string>& layer_names);

// Applies the pass; returns its record (decimals, layers, weight counts, MACs).
// A layer must be dense f32, or rounded without its inputs (rounded again).
nlohmann::json round_model(ViT& m, const RoundOptions& o);

std::unique_ptr<Pass> make_round_pass();

}  // namespace vitkit

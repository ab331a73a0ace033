// The round pass: weights (and optionally the input activations) of the layers
// that hold nearly all multiply-accumulates rounded to d decimals, so that many
// multiplications repeat (docs/reuse.md). Rounding: kernels/round.h
// round_decimal (halves away from zero, on the float's exact value).
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
#include "vitkit/core/tensor.h"
#include "vitkit/model/linear_apply.h"

namespace vitkit {

struct RoundOptions {
  int decimals = 3;
  bool activations = false;  // also round the layers' inputs at run time
  std::string layers;        // ECMAScript regex searched in Linear::name: more layers ("" none)
  bool biases = false;       // also round the biases
};

// A linear layer whose input is rounded to d decimals before the multiplication
// by its (already rounded) weight. Holds its own copy of the weight, since a
// LinearRepr is not given the model's parameters; a pass that changes the
// weight afterwards must replace the repr.
class RoundActivationsRepr : public LinearRepr {
 public:
  // W (out, in), copied.
  RoundActivationsRepr(const float* W, int out, int in, int decimals);
  std::string kind() const override { return "round"; }
  // Y (M, out) = act(round(X) (M, in) W^T + bias) (+ Y when accumulate).
  void forward(const float* X, float* Y, int64_t M, const float* bias, Activation act,
               bool accumulate) const override;
  int decimals() const { return decimals_; }
  const float* weight() const { return w_.f32(); }

 private:
  Tensor w_;
  int out_, in_, decimals_;
};

// The layers the pass rounds, in forward order: every block's qkv, out_proj,
// fc1 and fc2, plus the linears whose name matches `layers` (std::regex_search,
// ECMAScript). Throws UsageError for a bad pattern.
std::vector<Linear*> round_targets(ViT& m, const std::string& layers);

// Multiply-accumulates per image of the named layers, and of the whole forward
// pass (analyze/macs.h: every matmul, the attention products included).
struct MacShare {
  int64_t covered = 0, total = 0;
  double fraction() const { return total ? double(covered) / double(total) : 0; }
};
MacShare mac_share(const ViT& m, const std::vector<std::string>& layer_names);

// Applies the pass; returns its record (decimals, layers, weight counts, MACs).
nlohmann::json round_model(ViT& m, const RoundOptions& o);
// Rebuilds the activation-rounding reprs of a loaded model from a record.
void restore_round(ViT& m, const nlohmann::json& record);

// The layer of that name (Linear::name), or null.
Linear* find_linear(ViT& m, const std::string& name);

std::unique_ptr<Pass> make_round_pass();

}  // namespace vitkit

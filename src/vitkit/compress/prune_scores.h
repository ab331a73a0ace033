// Importance scores of attention heads and MLP neurons, for structured pruning
// (compress/prune_structured.h): the lowest-scored are removed first.
//
//   l2       the L2 norm of the unit's grouped weights: a head's rows of q, k
//            and v (in_proj) and its columns of out_proj; a neuron's row of
//            fc1 and its column of fc2.
//   taylor   first-order Taylor importance (Michel et al. 2019, "Are Sixteen
//            Heads Really Better than One?"): a gate g = 1 on the unit's output,
//            I = sum over images of |dL/dg|, dL/dg = sum over tokens of
//            (unit output . its gradient) = sum of W .* dW over the unit's
//            columns of out_proj / fc2 (the same number, from the weight
//            gradient of one backward pass per image; L: cross-entropy).
//   entropy  a head's attention concentration: log T - its mean attention
//            entropy (nats, over queries and images). Heads that spread their
//            attention most evenly score lowest and go first.
//
// Scores are [block][unit]. Layers must be dense f32 (prune before quantizing).
#pragma once
#include <vector>

#include "vitkit/core/tensor.h"
#include "vitkit/model/vit.h"

namespace vitkit {

using UnitScores = std::vector<std::vector<double>>;  // [block][head or neuron]

UnitScores head_scores_l2(const ViT& m);
UnitScores neuron_scores_l2(const ViT& m);

// images (N, C, S, S) preprocessed for m, labels (N).
struct TaylorScores {
  UnitScores heads, neurons;
};
TaylorScores taylor_scores(const ViT& m, const Tensor& images, const std::vector<int>& labels, bool progress);

// Mean attention entropy per head (nats) over images (N, C, S, S).
UnitScores head_attention_entropy(const ViT& m, const Tensor& images, bool progress);

// An Error naming the layer unless every layer the scores read is dense f32.
void check_dense_for_pruning(const ViT& m, const char* pass, bool heads);

}  // namespace vitkit

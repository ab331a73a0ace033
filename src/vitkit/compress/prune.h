// The prune pass: unstructured sparsity. Layers become repr/sparse.h (only
// their kept weights held, trainable, the pruned ones exactly zero through
// fine-tuning and in files).
//
//   prune:sparsity=0.5                       L1 magnitude, per layer, the encoder's linear layers
//   prune:sparsity=0.9,method=random,scope=global,layers=mlp
//
// sparsity S: the share of each layer's weights that are zero afterwards
// (scope=layer), or of all the chosen layers' weights together (global: one
// magnitude threshold over them; random: a random subset of all of them).
// method l1 removes the smallest |w| (ties: the lower index), random a
// seeded uniform subset (--seed). Default layers: every encoder block's qkv,
// out_proj, fc1 and fc2 (layers=REGEX chooses others, the patch projection
// and head included). Pruning a layer that is already sparse keeps its pruned
// weights pruned and removes more up to S (iterative schedules); S below its
// current sparsity is an error.
#pragma once
#include <memory>

#include "vitkit/compress/pass.h"

namespace vitkit {

std::unique_ptr<Pass> make_prune_pass();

}  // namespace vitkit

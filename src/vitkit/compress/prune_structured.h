// Structured pruning: attention heads and MLP neurons removed physically.
// A pruned block holds smaller tensors (qkv 3 x heads x head_dim rows, out_proj
// that many columns; fc1 rows and fc2 columns per neuron), its shape is in the
// config's per-block list (model/config.h BlockShape), so the file is smaller,
// has fewer parameters and MACs, and loads and runs everywhere as any model.
//
//   prune-heads:ratio=0.5,score=l2|taylor|entropy,scope=global|layer,min_heads=1
//   prune-heads:count=6
//   prune-mlp:ratio=0.5,score=l2|taylor,scope=layer,min_neurons=1
//
// ratio R removes round(R x units) (global: of all blocks' units, the lowest
// scores anywhere; layer: of each block's); count N removes N (global) or N
// per block (layer). No block keeps fewer than min_heads / min_neurons: when
// that stops a request, fewer units go and the record says so ("requested",
// "removed", "limited_by_min"). Scores: compress/prune_scores.h.
#pragma once
#include <memory>
#include <vector>

#include "vitkit/compress/pass.h"

namespace vitkit {

std::unique_ptr<Pass> make_prune_heads_pass();
std::unique_ptr<Pass> make_prune_mlp_pass();

// keep[b]: the heads (or neurons) block b keeps, ascending; a block with all
// of them kept is unchanged. The layers concerned must be dense f32.
void remove_heads(ViT& m, const std::vector<std::vector<int>>& keep);
void remove_neurons(ViT& m, const std::vector<std::vector<int>>& keep);

// Which units to remove: scores [block][unit], n per block (layer scope) or
// n in all (global), lowest first (ties: lower block, lower unit), no block
// below min_keep. Returns the units kept per block, ascending.
std::vector<std::vector<int>> select_units(const std::vector<std::vector<double>>& scores, bool global,
                                           const std::vector<int64_t>& remove_per_block, int64_t remove_total,
                                           int min_keep);

}  // namespace vitkit

// Fine-tuning inside a compression schedule (a recipe's `finetune = true`
// step, compress/recipe.h): the model as the steps before left it trained
// with a train config's keys (train/trainer.h), its representations kept
// (pruned heads stay removed, sparse masks exact, quantized layers through
// their latent weights), and a record of the run (the config and the epoch
// history) appended to its compression log.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "vitkit/model/vit.h"

namespace vitkit {

struct FinetuneContext {
  const ViT* original = nullptr;  // [distill] teacher = "original": the model compress started from
  std::string workdir;            // where the run's checkpoint and history go (a fresh directory)
  nlohmann::json origin;          // where the step came from (recipe, step)
};

// Trains m (moved in) with config_toml (a train config without [model]);
// returns the trained model, its log extended by {"pass": "finetune", ...}.
std::unique_ptr<ViT> finetune(std::unique_ptr<ViT> m, const std::string& config_toml, const FinetuneContext& ctx,
                              nlohmann::json* record = nullptr);

}  // namespace vitkit

#include "vitkit/compress/qat.h"

#include <cstdio>

#include "vitkit/compress/pass.h"
#include "vitkit/compress/recipe.h"
#include "vitkit/core/error.h"
#include "vitkit/repr/int.h"
#include "vitkit/repr/lowrank.h"

namespace vitkit {

static bool is_recipe_path(const std::string& s) {
  return s.size() > 5 && s.compare(s.size() - 5, 5, ".toml") == 0;
}

std::string qat_spec(const std::string& text) {
  if (text.find(':') == std::string::npos && text.find('=') != std::string::npos) return "quantize:" + text;
  return text;
}

std::vector<nlohmann::json> quantize_for_qat(ViT& m, const TrainConfig& cfg, bool progress) {
  std::vector<std::string> specs;
  std::vector<nlohmann::json> origins;
  if (is_recipe_path(cfg.qat.spec)) {
    const Recipe r = load_recipe(cfg.qat.spec);
    for (const RecipeSpec& rs : compile_recipe(r, m)) {
      if (!rs.finetune.empty())
        throw UsageError(cat("--qat ", cfg.qat.spec, ": step ", rs.origin.value("step", 0),
                             " is a fine-tuning step; a QAT recipe holds the passes only (the training is the run's)"));
      specs.push_back(rs.spec);
      origins.push_back(rs.origin);
    }
  } else {
    const std::string spec = qat_spec(cfg.qat.spec);
    const PassSpec ps = parse_pass_spec(spec);
    if (ps.name != "quantize")
      throw UsageError(cat("--qat ", cfg.qat.spec, ": expected a quantize spec (quantize:bits=4,...) or a recipe "
                           "file (.toml), not the '", ps.name, "' pass"));
    specs.push_back(spec);
    origins.push_back({{"option", "--qat"}});
  }
  PassContext ctx;
  ctx.seed = cfg.seed;
  ctx.progress = progress;
  if (passes_need_calibration(specs)) {
    load_calibration(ctx, m, cfg.data, cfg.train_split, cfg.qat.calib);
    if (progress)
      std::fprintf(stderr, "qat calibration: %lld images of %s\n", (long long)ctx.calib.dim(0),
                   ctx.calib_source.c_str());
  }
  std::vector<nlohmann::json> records = apply_passes(m, specs, ctx, origins);
  set_qat_options(m, cfg.qat);
  return records;
}

void set_qat_options(ViT& m, const QatConfig& q) {
  int n = 0;
  for (Linear* l : m.linears()) {
    // The layer, or a low-rank layer's two factors.
    std::vector<LinearRepr*> parts{l->repr.get()};
    if (auto* lr = dynamic_cast<LowRankLinear*>(l->repr.get())) parts = {&lr->down(), &lr->up()};
    for (LinearRepr* part : parts) {
      auto* il = dynamic_cast<IntLinear*>(part);
      if (!il) continue;
      ++n;
      try {
        il->set_lsq(q.lsq);
      } catch (const Error& e) {
        throw UsageError(cat("--qat ", q.spec, ": layer ", l->name, " (", il->describe(), "): ", e.what()));
      }
    }
  }
  if (n == 0)
    throw UsageError(cat("--qat ", q.spec, ": no layer of the model is quantized (int), so there is nothing to "
                         "train through a quantizer"));
}

}  // namespace vitkit

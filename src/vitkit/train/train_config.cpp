#include "vitkit/train/train_config.h"

#include <toml++/toml.h>

#include <set>

#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/core/toml_text.h"

namespace vitkit {

namespace {

struct Reader {
  const toml::table& t;
  std::string where;  // "file [section]"
  std::set<std::string> seen;

  template <typename T>
  void get(const char* key, T& out) {
    seen.insert(key);
    auto node = t.get(key);
    if (!node) return;
    if constexpr (std::is_same_v<T, std::string>) {
      auto v = node->value<std::string>();
      if (!v) throw UsageError(cat(where, ": '", key, "' must be a string"));
      out = *v;
    } else if constexpr (std::is_same_v<T, bool>) {
      auto v = node->value<bool>();
      if (!v) throw UsageError(cat(where, ": '", key, "' must be true or false"));
      out = *v;
    } else if constexpr (std::is_floating_point_v<T>) {
      auto v = node->value<double>();
      if (!v) throw UsageError(cat(where, ": '", key, "' must be a number"));
      out = static_cast<T>(*v);
    } else {
      auto v = node->value<int64_t>();
      if (!v) throw UsageError(cat(where, ": '", key, "' must be an integer"));
      out = static_cast<T>(*v);
    }
  }
  void finish() {
    for (auto& [k, v] : t)
      if (!seen.count(std::string(k.str())))
        throw UsageError(cat(where, ": unknown key '", k.str(), "' (line ", v.source().begin.line, ")"));
  }
};

const toml::table& section(const toml::table& root, const char* name, const std::string& file) {
  static const toml::table empty;
  auto n = root.get(name);
  if (!n) return empty;
  if (!n->is_table()) throw UsageError(cat(file, ": [", name, "] must be a table"));
  return *n->as_table();
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& name, bool model_optional) {
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw UsageError(cat(name, ":", e.source().begin.line, ": TOML error: ", e.description()));
  }
  for (auto& [k, v] : root)
    if (!std::set<std::string>{"model", "data", "train", "augment", "distill", "qat"}.count(std::string(k.str())))
      throw UsageError(cat(name, ": unknown section or key '", k.str(), "' (line ", v.source().begin.line,
                           "); expected [model], [data], [train], [augment], [distill], [qat]"));
  TrainConfig c;
  c.source = text;
  // [model]: ViTConfig keys (model/config.h), preset first. Optional when
  // fine-tuning (--init gives the architecture).
  c.has_model = root.contains("model");
  if (!c.has_model && !model_optional)
    throw UsageError(cat(name, ": no [model] section: give the architecture (preset = \"vit_b_16\", or image_size, "
                           "patch, dim, depth, heads, mlp_dim, classes, ...), or fine-tune a model with --init MODEL"));
  const toml::table& model = section(root, "model", name);
  std::vector<std::pair<std::string, std::string>> kv;
  for (auto& [k, v] : model) kv.emplace_back(std::string(k.str()), toml_text(v, std::string(k.str()), name + " [model]"));
  try {
    apply_config_pairs(c.model, kv);
  } catch (const UsageError& e) {
    throw UsageError(cat(name, " [model]: ", e.what()));
  }
  try {
    if (c.has_model) c.model.validate();
  } catch (const Error& e) {
    throw UsageError(cat(name, ": ", e.what()));
  }

  Reader data{section(root, "data", name), name + " [data]", {}};
  data.get("dataset", c.data);
  data.get("train_split", c.train_split);
  data.get("test_split", c.test_split);
  data.get("train_limit", c.train_limit);
  data.get("test_limit", c.test_limit);
  data.finish();

  Reader tr{section(root, "train", name), name + " [train]", {}};
  tr.get("epochs", c.epochs);
  tr.get("batch", c.batch);
  tr.get("schedule", c.schedule);
  tr.get("lr", c.lr);
  tr.get("min_lr", c.min_lr);
  tr.get("warmup_lr", c.warmup_lr);
  tr.get("warmup_epochs", c.warmup_epochs);
  tr.get("weight_decay", c.opt.weight_decay);
  tr.get("beta1", c.opt.beta1);
  tr.get("beta2", c.opt.beta2);
  tr.get("eps", c.opt.eps);
  tr.get("label_smoothing", c.label_smoothing);
  tr.get("clip_grad", c.clip_grad);
  tr.get("seed", c.seed);
  tr.get("eval_every", c.eval_every);
  tr.finish();

  Reader au{section(root, "augment", name), name + " [augment]", {}};
  au.get("crop_padding", c.augment.crop_padding);
  au.get("hflip", c.augment.hflip);
  au.finish();

  Reader di{section(root, "distill", name), name + " [distill]", {}};
  di.get("teacher", c.distill.teacher);
  di.get("alpha", c.distill.alpha);
  di.get("temperature", c.distill.temperature);
  di.finish();

  Reader qa{section(root, "qat", name), name + " [qat]", {}};
  qa.get("spec", c.qat.spec);
  qa.get("lsq", c.qat.lsq);
  qa.get("calib", c.qat.calib);
  qa.finish();
  if (root.contains("qat") && c.qat.spec.empty())
    throw UsageError(cat(name, " [qat]: give spec = \"quantize:bits=...\" (or a recipe file)"));

  auto need = [&](bool ok, const std::string& msg) {
    if (!ok) throw UsageError(cat(name, ": ", msg));
  };
  need(c.epochs >= 1 && c.epochs <= 100000, "[train] epochs must be in 1..100000");
  need(c.batch >= 1 && c.batch <= 65536, "[train] batch must be in 1..65536");
  need(c.lr > 0 && c.lr < 10, "[train] lr must be in (0, 10)");
  need(c.min_lr >= 0 && c.warmup_lr >= 0 && c.warmup_epochs >= 0, "[train] min_lr, warmup_lr, warmup_epochs must be >= 0");
  need(c.schedule == "cosine" || c.schedule == "constant" || c.schedule == "linear",
       "[train] schedule must be cosine, constant or linear");
  need(c.label_smoothing >= 0 && c.label_smoothing < 1, "[train] label_smoothing must be in [0, 1)");
  need(c.opt.beta1 >= 0 && c.opt.beta1 < 1 && c.opt.beta2 >= 0 && c.opt.beta2 < 1, "[train] betas must be in [0, 1)");
  need(c.opt.weight_decay >= 0, "[train] weight_decay must be >= 0");
  need(c.eval_every >= 1, "[train] eval_every must be >= 1");
  need(c.augment.crop_padding >= 0 && c.augment.crop_padding <= c.model.image_size,
       "[augment] crop_padding must be in 0..image_size");
  need(c.augment.hflip >= 0 && c.augment.hflip <= 1, "[augment] hflip must be in [0, 1]");
  need(c.distill.alpha >= 0 && c.distill.alpha <= 1, "[distill] alpha must be in [0, 1]");
  need(c.distill.temperature > 0, "[distill] temperature must be > 0");
  need(c.qat.calib >= 1 && c.qat.calib <= 1000000, "[qat] calib must be in 1..1000000");
  return c;
}

TrainConfig load_train_config(const std::string& path, bool model_optional) {
  if (!file_exists(path)) throw UsageError(cat("train config ", path, " does not exist"));
  return parse_train_config(read_text_file(path), path, model_optional);
}

nlohmann::json TrainConfig::to_json() const {
  return {{"model", config_to_json(model)},
          {"data", {{"dataset", data}, {"train_split", train_split}, {"test_split", test_split},
                    {"train_limit", train_limit}, {"test_limit", test_limit}}},
          {"train", {{"epochs", epochs}, {"batch", batch}, {"schedule", schedule}, {"lr", lr}, {"min_lr", min_lr},
                     {"warmup_lr", warmup_lr}, {"warmup_epochs", warmup_epochs}, {"weight_decay", opt.weight_decay},
                     {"beta1", opt.beta1}, {"beta2", opt.beta2}, {"eps", opt.eps},
                     {"label_smoothing", label_smoothing}, {"clip_grad", clip_grad}, {"seed", seed}}},
          {"augment", {{"crop_padding", augment.crop_padding}, {"hflip", augment.hflip}}},
          {"distill", {{"teacher", distill.teacher}, {"alpha", distill.alpha}, {"temperature", distill.temperature}}},
          {"qat", {{"spec", qat.spec}, {"lsq", qat.lsq}, {"calib", qat.calib}}}};
}

}  // namespace vitkit

// vitkit info MODEL_OR_PRESET: architecture, parameters, bytes, MACs per layer.
#include <cstdio>
#include <map>

#include "commands.h"
#include "common.h"
#include "vitkit/core/error.h"
#include "vitkit/model/cost.h"
#include "vitkit/core/file.h"
#include "vitkit/report/table.h"

namespace vitkit::cli {

namespace {

struct InfoOpts {
  std::string model;
  LoadOptions load;
  CommonOpts common;
  bool layers = false;
};

// "4 x 32, mlp 256" per block, or one line when the blocks are uniform.
std::string block_shapes(const ViTConfig& c) {
  if (c.uniform())
    return cat("heads ", c.heads, c.block(0).head_dim * c.heads != c.dim ? cat(" x ", c.block(0).head_dim) : "",
               ", mlp ", c.mlp_dim);
  std::string s;
  for (int i = 0; i < c.depth; ++i) {
    const BlockShape b = c.block(i);
    s += cat(i ? "; " : "", b.heads, "x", b.head_dim, " mlp ", b.mlp_dim);
  }
  return s;
}

// A block layer's heads or MLP width ("3 heads x 32", "mlp 256"): what pruning changes.
std::string unit_shape(const ViTConfig& c, const LayerCost& l) {
  if (l.block < 0) return "";
  const BlockShape b = c.block(l.block);
  if (l.kind == "fc1" || l.kind == "fc2") return cat("mlp ", b.mlp_dim);
  return cat(b.heads, " heads x ", b.head_dim);
}

// Per layer kind: the representations of its layers ("f32", "bf16", "round x8, f32 x4").
std::map<std::string, std::string> reprs_by_kind(const std::vector<LayerCost>& costs) {
  std::map<std::string, std::map<std::string, int>> n;
  for (auto& l : costs)
    if (!l.repr.empty()) n[l.kind][l.repr]++;
  std::map<std::string, std::string> out;
  for (auto& [kind, counts] : n) {
    std::string s;
    for (auto& [r, k] : counts) s += cat(s.empty() ? "" : ", ", r, counts.size() > 1 ? cat(" x", k) : "");
    out[kind] = s;
  }
  return out;
}

void run_info(const InfoOpts& o) {
  apply_common(o.common);
  // A file's counts come from its layers' representations; a preset's from its (dense f32) config.
  const bool preset_only = is_preset_spec(o.model);
  std::unique_ptr<ViT> model;
  ViTConfig c;
  if (preset_only) {
    c = load_config(o.model, o.load);
  } else {
    model = load_model(o.model, o.load);
    c = model->cfg;
  }
  const std::vector<LayerCost> costs = model ? layer_costs(*model) : layer_costs(c);
  const ModelCost total = model ? model_cost(*model) : model_cost(c);
  const int64_t params = total.params, macs = total.macs;
  nlohmann::json j;
  j["model"] = o.model;
  j["config"] = config_to_json(c);
  j["parameters"] = params;
  j["bytes_f32"] = params * 4;
  j["bytes"] = total.bytes;
  if (!preset_only) j["file_bytes"] = file_size(o.model);
  j["tokens"] = c.tokens();
  j["macs"] = macs;
  j["flops"] = 2 * macs;
  nlohmann::json layers = nlohmann::json::array();
  for (auto& l : costs) {
    nlohmann::json e{{"name", l.name}, {"kind", l.kind}, {"block", l.block}, {"macs", l.macs}, {"params", l.params},
                     {"bytes", l.bytes}};
    if (!l.repr.empty()) e["repr"] = l.repr;
    if (l.block >= 0) e["shape"] = unit_shape(c, l);
    layers.push_back(e);
  }
  j["layers"] = layers;
  nlohmann::json blocks = nlohmann::json::array();  // per block, uniform or not
  for (int i = 0; i < c.depth; ++i)
    blocks.push_back({{"heads", c.block(i).heads}, {"head_dim", c.block(i).head_dim}, {"mlp_dim", c.block(i).mlp_dim}});
  j["blocks"] = blocks;
  if (model) {
    nlohmann::json reprs = nlohmann::json::object();
    for (const Linear* l : model->linears())
      reprs[l->name] = {{"repr", l->repr->kind()}, {"describe", l->repr->describe()},
                        {"train", to_string(l->repr->train_mode())}};
    j["representations"] = reprs;
    j["compression"] = compression_log(*model);
  }
  // Per kind: MACs per block and in all.
  const std::vector<std::string> kinds{"patch", "qkv", "attn_scores", "attn_values", "out_proj", "fc1", "fc2", "head"};
  std::map<std::string, int64_t> kind_total, kind_one, kind_count, kind_params, kind_bytes;
  std::map<std::string, bool> kind_varies;  // blocks of different shapes: no one "MACs each"
  for (auto& l : costs) {
    kind_total[l.kind] += l.macs;
    if (kind_count[l.kind] && kind_one[l.kind] != l.macs) kind_varies[l.kind] = true;
    kind_one[l.kind] = l.macs;
    kind_count[l.kind]++;
    kind_params[l.kind] += l.params;
    kind_bytes[l.kind] += l.bytes;
  }
  const std::map<std::string, std::string> kind_reprs = reprs_by_kind(costs);
  nlohmann::json by_kind = nlohmann::json::object();
  for (auto& k : kinds) {
    by_kind[k] = {{"count", kind_count[k]}, {"macs", kind_total[k]}, {"share", double(kind_total[k]) / double(macs)},
                  {"params", kind_params[k]}, {"bytes", kind_bytes[k]}};
    if (!kind_varies[k]) by_kind[k]["macs_each"] = kind_one[k];
    if (kind_reprs.count(k)) by_kind[k]["repr"] = kind_reprs.at(k);
  }
  j["macs_by_kind"] = by_kind;
  if (o.common.json) {
    print_json(j);
    return;
  }
  std::printf("model      %s%s\n", o.model.c_str(), preset_only ? " (preset)" : "");
  std::printf("arch       image %d, channels %d, patch %d, dim %d, depth %d, %s, classes %d\n", c.image_size,
              c.channels, c.patch, c.dim, c.depth, block_shapes(c).c_str(), c.classes);
  std::printf("variant    norm=%s act=%s pool=%s class_token=%s final_norm=%s qkv_bias=%s eps=%g\n",
              to_string(c.norm), to_string(c.act), to_string(c.pool), c.class_token ? "true" : "false",
              c.final_norm ? "true" : "false", c.qkv_bias ? "true" : "false", c.norm_eps);
  std::string mean, sd;
  for (size_t i = 0; i < c.pre.mean.size(); ++i) mean += (i ? ", " : "") + fmt_fixed(c.pre.mean[i], 4);
  for (size_t i = 0; i < c.pre.std.size(); ++i) sd += (i ? ", " : "") + fmt_fixed(c.pre.std[i], 4);
  std::printf("preprocess resize %d, crop %d, %s, mean [%s], std [%s]\n", c.pre.resize,
              c.pre.crop ? c.pre.crop : c.image_size, to_string(c.pre.interpolation), mean.c_str(), sd.c_str());
  std::printf("tokens     %d (%d patches%s)\n", c.tokens(), c.patches(), c.class_token ? " + class token" : "");
  std::printf("parameters %s (%s as f32; %s as stored", fmt_int(params).c_str(), fmt_bytes(double(params) * 4).c_str(),
              fmt_bytes(double(total.bytes)).c_str());
  if (!preset_only) std::printf(", file %s", fmt_bytes(double(file_size(o.model))).c_str());
  std::printf(")\n");
  std::printf("MACs       %s per image (%s FLOPs)\n", fmt_int(macs).c_str(), fmt_si(2.0 * macs).c_str());
  if (model) {
    const nlohmann::json log = compression_log(*model);
    for (size_t i = 0; i < log.size(); ++i)
      std::printf("%s %s\n", i ? "          " : "compressed", log[i].value("spec", "").c_str());
  }
  std::printf("\n");
  if (o.layers) {
    Table t({"layer", "kind", "shape", "repr", "MACs", "params", "bytes"});
    t.right_align({4, 5, 6});
    for (auto& l : costs)
      t.add({l.name, l.kind, unit_shape(c, l), l.repr, fmt_int(l.macs), fmt_int(l.params),
             l.bytes ? fmt_int(l.bytes) : ""});
    t.add({"embeddings, norms, class token", "", "", "f32", "", fmt_int(total.other_params),
           fmt_int(4 * total.other_params)});
    t.add({"total", "", "", "", fmt_int(macs), fmt_int(params), fmt_int(total.bytes)});
    std::fputs(t.text().c_str(), stdout);
    return;
  }
  Table t({"layer", "repr", "MACs each", "count", "MACs", "share", "params", "bytes"});
  t.right_align({2, 3, 4, 5, 6, 7});
  for (auto& k : kinds)
    t.add({k, kind_reprs.count(k) ? kind_reprs.at(k) : "", kind_varies[k] ? "varies" : fmt_int(kind_one[k]),
           std::to_string(kind_count[k]),
           fmt_int(kind_total[k]), fmt_fixed(100.0 * double(kind_total[k]) / double(macs), 2) + "%",
           kind_params[k] ? fmt_int(kind_params[k]) : "", kind_bytes[k] ? fmt_int(kind_bytes[k]) : ""});
  t.add({"other", "f32", "", "", "", "", fmt_int(total.other_params), fmt_int(4 * total.other_params)});
  t.add({"total", "", "", "", fmt_int(macs), "100.00%", fmt_int(params), fmt_int(total.bytes)});
  std::fputs(t.text().c_str(), stdout);
}

}  // namespace

void register_info(CLI::App& app) {
  auto o = std::make_shared<InfoOpts>();
  CLI::App* cmd = app.add_subcommand("info", "Architecture, parameters, bytes and MACs per layer of a model");
  cmd->add_option("model", o->model, "Model file (.safetensors, .pth) or preset (vit_b_16, vit_b_32, vit_l_16, ...)")
      ->required();
  cmd->add_flag("--layers", o->layers, "List every layer instead of one row per layer kind");
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->callback([o] { run_info(*o); });
}

}  // namespace vitkit::cli

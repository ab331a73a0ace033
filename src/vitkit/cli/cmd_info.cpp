// vitkit info MODEL_OR_PRESET: architecture, parameters, bytes, MACs per layer.
#include <cstdio>
#include <map>

#include "commands.h"
#include "common.h"
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

void run_info(const InfoOpts& o) {
  apply_common(o.common);
  ViTConfig c = load_config(o.model, o.load);
  const bool preset_only = is_preset_spec(o.model);
  auto costs = layer_costs(c);
  const int64_t params = parameter_count(c), macs = total_macs(c);
  nlohmann::json j;
  j["model"] = o.model;
  j["config"] = config_to_json(c);
  j["parameters"] = params;
  j["bytes_f32"] = params * 4;
  if (!preset_only) j["file_bytes"] = file_size(o.model);
  j["tokens"] = c.tokens();
  j["macs"] = macs;
  j["flops"] = 2 * macs;
  nlohmann::json layers = nlohmann::json::array();
  for (auto& l : costs)
    layers.push_back({{"name", l.name}, {"kind", l.kind}, {"block", l.block}, {"macs", l.macs}, {"params", l.params}});
  j["layers"] = layers;
  // Per kind: MACs per block and in all.
  std::vector<std::string> kinds{"patch", "qkv", "attn_scores", "attn_values", "out_proj", "fc1", "fc2", "head"};
  std::map<std::string, int64_t> kind_total, kind_one, kind_count;
  for (auto& l : costs) {
    kind_total[l.kind] += l.macs;
    kind_one[l.kind] = l.macs;
    kind_count[l.kind]++;
  }
  nlohmann::json by_kind = nlohmann::json::object();
  for (auto& k : kinds)
    by_kind[k] = {{"macs_each", kind_one[k]}, {"count", kind_count[k]}, {"macs", kind_total[k]},
                  {"share", double(kind_total[k]) / double(macs)}};
  j["macs_by_kind"] = by_kind;
  if (o.common.json) {
    print_json(j);
    return;
  }
  std::printf("model      %s%s\n", o.model.c_str(), preset_only ? " (preset)" : "");
  std::printf("arch       image %d, channels %d, patch %d, dim %d, depth %d, heads %d, mlp %d, classes %d\n",
              c.image_size, c.channels, c.patch, c.dim, c.depth, c.heads, c.mlp_dim, c.classes);
  std::printf("variant    norm=%s act=%s pool=%s class_token=%s final_norm=%s qkv_bias=%s eps=%g\n",
              to_string(c.norm), to_string(c.act), to_string(c.pool), c.class_token ? "true" : "false",
              c.final_norm ? "true" : "false", c.qkv_bias ? "true" : "false", c.norm_eps);
  std::string mean, sd;
  for (size_t i = 0; i < c.pre.mean.size(); ++i) mean += (i ? ", " : "") + fmt_fixed(c.pre.mean[i], 4);
  for (size_t i = 0; i < c.pre.std.size(); ++i) sd += (i ? ", " : "") + fmt_fixed(c.pre.std[i], 4);
  std::printf("preprocess resize %d, crop %d, %s, mean [%s], std [%s]\n", c.pre.resize,
              c.pre.crop ? c.pre.crop : c.image_size, to_string(c.pre.interpolation), mean.c_str(), sd.c_str());
  std::printf("tokens     %d (%d patches%s)\n", c.tokens(), c.patches(), c.class_token ? " + class token" : "");
  std::printf("parameters %s (%s as f32", fmt_int(params).c_str(), fmt_bytes(double(params) * 4).c_str());
  if (!preset_only) std::printf(", file %s", fmt_bytes(double(file_size(o.model))).c_str());
  std::printf(")\n");
  std::printf("MACs       %s per image (%s FLOPs)\n\n", fmt_int(macs).c_str(), fmt_si(2.0 * macs).c_str());
  if (o.layers) {
    Table t({"layer", "kind", "MACs", "params"});
    t.right_align({2, 3});
    for (auto& l : costs) t.add({l.name, l.kind, fmt_int(l.macs), fmt_int(l.params)});
    std::fputs(t.text().c_str(), stdout);
    return;
  }
  Table t({"layer", "MACs each", "count", "MACs", "share"});
  t.right_align({1, 2, 3, 4});
  for (auto& k : kinds)
    t.add({k, fmt_int(kind_one[k]), std::to_string(kind_count[k]), fmt_int(kind_total[k]),
           fmt_fixed(100.0 * double(kind_total[k]) / double(macs), 2) + "%"});
  t.add({"total", "", "", fmt_int(macs), "100.00%"});
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

// vitkit import SRC --arch LAYOUT [--map FILE] [--config ...] [--strict] -o OUT.safetensors:
// reads a foreign checkpoint (torch.save .pth/.pt, or safetensors with other
// names), renames its tensors, infers the architecture and writes a vitkit file.
#include <cstdio>

#include "commands.h"
#include "common.h"
#include "vitkit/core/error.h"
#include "vitkit/io/importer.h"
#include "vitkit/io/pth.h"

namespace vitkit::cli {

namespace {

struct ImportOpts {
  std::string src, out, dtype = "f32";
  LoadOptions load;
  CommonOpts common;
};

DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  throw UsageError(cat("--dtype: expected f32, f16 or bf16, got '", s, "'"));
}

void run_import(const ImportOpts& o) {
  apply_common(o.common);
  const DType dtype = parse_dtype(o.dtype);
  ImportedCheckpoint ck = import_checkpoint(o.src, {o.load.arch, o.load.map, o.load.preset, o.load.config});
  ViT m(ck.cfg);
  load_weights(m, *ck.source, o.load.strict);
  save_model(m, o.out, dtype);

  std::string dict_key;
  if (auto* pth = dynamic_cast<const PthReader*>(&ck.source->inner())) dict_key = pth->state_dict_key();
  const ViTConfig& c = m.cfg;
  if (o.common.json) {
    nlohmann::json j;
    j["source"] = o.src;
    j["format"] = ck.format;
    j["layout"] = ck.layout;
    j["state_dict_key"] = dict_key;
    j["tensors"] = ck.source->list().size();
    j["dropped"] = ck.source->dropped();
    j["config"] = config_to_json(c);
    j["output"] = o.out;
    print_json(j);
    return;
  }
  std::printf("imported   %s (%s, layout %s%s)\n", o.src.c_str(), ck.format.c_str(), ck.layout.c_str(),
              dict_key.empty() ? "" : cat(", state dict under '", dict_key, "'").c_str());
  std::printf("arch       image %d, channels %d, patch %d, dim %d, depth %d, heads %d, mlp %d, classes %d\n",
              c.image_size, c.channels, c.patch, c.dim, c.depth, c.heads, c.mlp_dim, c.classes);
  std::printf("variant    norm=%s act=%s pool=%s class_token=%s final_norm=%s qkv_bias=%s eps=%g\n",
              to_string(c.norm), to_string(c.act), to_string(c.pool), c.class_token ? "true" : "false",
              c.final_norm ? "true" : "false", c.qkv_bias ? "true" : "false", c.norm_eps);
  if (!ck.source->dropped().empty())
    std::printf("dropped    %zu tensor(s) by the key map\n", ck.source->dropped().size());
  std::printf("wrote      %s (%s)\n", o.out.c_str(), o.dtype.c_str());
}

}  // namespace

void register_import(CLI::App& app) {
  auto o = std::make_shared<ImportOpts>();
  CLI::App* cmd = app.add_subcommand(
      "import", "Convert a PyTorch checkpoint (.pth/.pt from torch.save, or safetensors in another naming) into a "
                "vitkit safetensors file");
  cmd->add_option("src", o->src, "The checkpoint: .pth/.pt/.bin (torch.save zip format) or .safetensors")->required();
  cmd->add_option("-o,--output", o->out, "Output .safetensors file")->check(output_file())->required();
  cmd->add_option("--dtype", o->dtype, "Dtype of the written weights: f32 (default), f16, bf16");
  add_model_opts(cmd, o->load);
  add_common(cmd, o->common);
  cmd->footer(
      "Layouts (--arch): torchvision (default), timm, hf, torch-encoder, custom (--map only).\n"
      "Key map (--map FILE): lines 'REGEX -> NAME' (ECMAScript, full match, $1 groups, first match wins),\n"
      "'REGEX -> -' drops a tensor, NAME[q]/[k]/[v] packs separate projections, '#' comments.\n"
      "What the shapes do not tell (heads; norm, act, pool for torch-encoder/custom) goes in --config.\n"
      "Example: vitkit import vit.pth --arch timm --config heads=6 -o vit.safetensors");
  cmd->callback([o] { run_import(*o); });
}

}  // namespace vitkit::cli

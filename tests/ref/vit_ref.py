"""Reference logits for vitkit's forward pass: torchvision's VisionTransformer
(vit_b_16, vit_b_32, a small one) and plain-PyTorch models for the variants
torchvision does not have (post-norm, relu, tanh-GELU, mean pooling, no class
token, no qkv bias, no final norm). Writes OUTDIR/vit/<case>.safetensors (weights,
torchvision names) and <case>.io.safetensors (input, logits)."""
import os

import torch
import torchvision

from _common import out_dir, randomize, save_safetensors, vitkit_config
from _models import RefViT

torch.set_num_threads(2)
OUT = out_dir("vit")


def write_case(name, model, cfg, batches, seed, metadata=True):
    randomize(model, seed)
    model.eval()
    sd = model.state_dict()
    md = vitkit_config(**cfg) if metadata else None
    save_safetensors(os.path.join(OUT, name + ".safetensors"), sd, md)
    io = {}
    g = torch.Generator().manual_seed(seed + 1)
    for b in batches:
        x = torch.randn(b, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=g)
        with torch.no_grad():
            y = model(x)
        io[f"input_b{b}"] = x
        io[f"logits_b{b}"] = y
    save_safetensors(os.path.join(OUT, name + ".io.safetensors"), io)


def torchvision_case(name, builder, batches, seed, metadata=True, **cfg_extra):
    model = builder()
    c = dict(image_size=model.image_size, channels=3, patch=model.patch_size, dim=model.hidden_dim,
             depth=len(model.encoder.layers), heads=model.encoder.layers[0].num_heads,
             mlp_dim=model.mlp_dim, classes=model.num_classes, norm_eps=1e-6)
    write_case(name, model, c, batches, seed, metadata)


def small_case(name, batches, seed, **kw):
    cfg = dict(image_size=32, channels=3, patch=8, dim=64, depth=2, heads=4, mlp_dim=96, classes=10, norm="pre",
               act="gelu", pool="cls", class_token=True, final_norm=True, qkv_bias=True, norm_eps=1e-6)
    cfg.update(kw)
    model = RefViT(**cfg)
    c = dict(cfg)
    c["preprocess"] = {"mean": [0.5] * cfg["channels"], "std": [0.25] * cfg["channels"]}
    write_case(name, model, c, batches, seed)


# torchvision's own models.
torchvision_case("vit_b_16", torchvision.models.vit_b_16, [1, 2], 1)
torchvision_case("vit_b_32_nometa", torchvision.models.vit_b_32, [1, 3], 2, metadata=False)
small_tv = lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                         hidden_dim=64, mlp_dim=96, num_classes=10)
torchvision_case("tv_small", small_tv, [1, 5], 3)
# Plain-PyTorch variants (same parameter names).
small_case("pre_gelu_cls", [1, 4], 10)
small_case("post_relu_nofinal", [1, 4], 11, norm="post", act="relu", final_norm=False, norm_eps=1e-5)
small_case("post_gelu_final", [2], 12, norm="post", act="gelu", final_norm=True)
small_case("pre_tanh_mean_nofinal", [1, 3], 13, act="gelu_tanh", pool="mean", final_norm=False)
small_case("mean_nocls_noqkvbias", [1, 3], 14, pool="mean", class_token=False, qkv_bias=False, act="relu")
small_case("gray28_p7_odd", [1, 6], 15, image_size=28, channels=1, patch=7, dim=48, heads=3, mlp_dim=80,
           classes=7, depth=3)
small_case("p4_depth6_long", [2], 16, image_size=48, patch=4, dim=32, heads=8, mlp_dim=64, depth=3)
print("vit_ref: wrote", len(os.listdir(OUT)), "files to", OUT)

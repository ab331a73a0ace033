"""Reference logits for vitkit's forward pass: torchvision's VisionTransformer
(vit_b_16, vit_b_32, a small one) and plain-PyTorch models for the variants
torchvision does not have (post-norm, relu, tanh-GELU, mean pooling, no class
token, no qkv bias, no final norm). Writes OUTDIR/vit/<case>.safetensors (weights,
torchvision names) and <case>.io.safetensors (input, logits)."""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from _common import out_dir, randomize, save_safetensors, vitkit_config

torch.set_num_threads(2)
OUT = out_dir("vit")


class Block(nn.Module):
    """One encoder block with torchvision's parameter names."""

    def __init__(self, dim, heads, mlp, norm, act, qkv_bias, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.self_attention = nn.MultiheadAttention(dim, heads, bias=True, batch_first=True)
        if not qkv_bias:
            self.self_attention.in_proj_bias = None
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.Identity(), nn.Identity(), nn.Linear(mlp, dim))
        self.norm, self.act, self.heads = norm, act, heads

    def attn(self, x):
        B, T, D = x.shape
        a = self.self_attention
        qkv = F.linear(x, a.in_proj_weight, a.in_proj_bias).view(B, T, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D // self.heads)
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
        return a.out_proj(o)

    def ff(self, x):
        h = self.mlp[0](x)
        h = {"gelu": F.gelu, "relu": F.relu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[self.act](h)
        return self.mlp[3](h)

    def forward(self, x):
        if self.norm == "pre":
            x = x + self.attn(self.ln_1(x))
            return x + self.ff(self.ln_2(x))
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.ff(x))


class RefViT(nn.Module):
    def __init__(self, image_size, channels, patch, dim, depth, heads, mlp_dim, classes, norm="pre", act="gelu",
                 pool="cls", class_token=True, final_norm=True, qkv_bias=True, norm_eps=1e-6):
        super().__init__()
        self.pool, self.patch = pool, patch
        self.conv_proj = nn.Conv2d(channels, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        T = (image_size // patch) ** 2 + (1 if class_token else 0)
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.zeros(1, T, dim))
        self.encoder.layers = nn.Module()
        for i in range(depth):
            self.encoder.layers.add_module(f"encoder_layer_{i}",
                                           Block(dim, heads, mlp_dim, norm, act, qkv_bias, norm_eps))
        self.encoder.ln = nn.LayerNorm(dim, eps=norm_eps) if final_norm else None
        self.heads = nn.Module()
        self.heads.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + self.encoder.pos_embedding
        for blk in self.encoder.layers.children():
            x = blk(x)
        if self.encoder.ln is not None:
            x = self.encoder.ln(x)
        first = 1 if self.class_token is not None else 0
        x = x[:, 0] if self.pool == "cls" else x[:, first:].mean(1)
        return self.heads.head(x)


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

"""Plain-PyTorch ViTs with torchvision's parameter names, for the variants
torchvision does not build (post-norm, relu, tanh-GELU, mean pooling, no class
token, no qkv bias, no final norm)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


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



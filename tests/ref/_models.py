"""Plain-PyTorch ViTs with torchvision's parameter names, for the variants
torchvision does not build (post-norm, relu, tanh-GELU, mean pooling, no class
token, no qkv bias, no final norm, per-block heads / head_dim / mlp_dim)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names and
    packing, written out because nn.MultiheadAttention needs heads x head_dim ==
    dim: q, k, v are heads x head_dim wide (A), in_proj_weight (3A, dim) holds
    [q; k; v], head h uses rows h*head_dim.. of each part, out_proj is (dim, A)."""

    def __init__(self, dim, heads, head_dim, qkv_bias):
        super().__init__()
        width = heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width)) if qkv_bias else None
        self.out_proj = nn.Linear(width, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)


class Block(nn.Module):
    """One encoder block with torchvision's parameter names. head_dim None:
    dim / heads (nn.MultiheadAttention, as torchvision builds it); otherwise
    q, k, v are heads x head_dim wide, which need not be dim."""

    def __init__(self, dim, heads, mlp, norm, act, qkv_bias, eps, head_dim=None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        if head_dim is None or head_dim * heads == dim:
            self.self_attention = nn.MultiheadAttention(dim, heads, bias=True, batch_first=True)
            if not qkv_bias:
                self.self_attention.in_proj_bias = None
        else:
            self.self_attention = SelfAttention(dim, heads, head_dim, qkv_bias)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.Identity(), nn.Identity(), nn.Linear(mlp, dim))
        self.norm, self.act, self.heads = norm, act, heads
        self.head_dim = head_dim if head_dim is not None else dim // heads

    def attn(self, x):
        B, T, _ = x.shape
        a, H, hd = self.self_attention, self.heads, self.head_dim
        qkv = F.linear(x, a.in_proj_weight, a.in_proj_bias).view(B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * hd)
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
    """blocks: per-block (heads, head_dim, mlp_dim), one per layer; None: every
    block is (heads, head_dim, mlp_dim), head_dim None meaning dim / heads."""

    def __init__(self, image_size, channels, patch, dim, depth, heads, mlp_dim, classes, norm="pre", act="gelu",
                 pool="cls", class_token=True, final_norm=True, qkv_bias=True, norm_eps=1e-6, head_dim=None,
                 blocks=None):
        super().__init__()
        if blocks is None:
            blocks = [(heads, head_dim, mlp_dim)] * depth
        if len(blocks) != depth:
            raise ValueError(f"blocks gives {len(blocks)} shapes for depth {depth}")
        self.pool, self.patch = pool, patch
        self.conv_proj = nn.Conv2d(channels, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        T = (image_size // patch) ** 2 + (1 if class_token else 0)
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.zeros(1, T, dim))
        self.encoder.layers = nn.Module()
        for i, (h, hd, mlp) in enumerate(blocks):
            self.encoder.layers.add_module(f"encoder_layer_{i}",
                                           Block(dim, h, mlp, norm, act, qkv_bias, norm_eps, head_dim=hd))
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



"""Shared by the peer benchmarks (run with Debian's /usr/bin/python3, PyTorch 1.13):
vitkit safetensors files read and written in pure Python, and torchvision's
VisionTransformer built from a vitkit config, so PyTorch, ONNX Runtime and vitkit
run the same weights."""
import json
import os
import struct
import subprocess

import numpy as np
import torch
import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer

_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """(tensors: dict name -> torch.Tensor float32, metadata: dict)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        raw = data[a:b]
        if h["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        elif h["dtype"] in _NP:
            arr = np.frombuffer(raw, dtype=_NP[h["dtype"]]).astype(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {h['dtype']}; the peer benchmarks need float weights")
        out[name] = torch.from_numpy(arr.reshape(h["shape"]).copy())
    return out, meta


def write_safetensors(path, tensors, metadata):
    """dict name -> float32 tensor, with string metadata; written atomically."""
    header, blobs, off = {"__metadata__": {k: str(v) for k, v in metadata.items()}}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def vitkit_config(vitkit, spec, config=None):
    """The architecture vitkit builds for a preset or file (+ --config), from `vitkit info --json`."""
    cmd = [vitkit, "info", spec, "--json"] + (["--config", config] if config else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["config"]


def check_torchvision_arch(cfg):
    """torchvision's VisionTransformer is pre-norm, exact GELU, class token, final norm, qkv bias."""
    want = {"norm": "pre", "act": "gelu", "pool": "cls", "class_token": True, "final_norm": True, "qkv_bias": True}
    bad = {k: cfg.get(k) for k, v in want.items() if cfg.get(k, v) != v}
    if bad:
        raise SystemExit(f"peer benchmarks: torchvision's VisionTransformer cannot build {bad} (needs {want})")


def build_torchvision(cfg):
    """torchvision's VisionTransformer for a vitkit config (its conv_proj for cfg's channels)."""
    check_torchvision_arch(cfg)
    m = VisionTransformer(image_size=cfg["image_size"], patch_size=cfg["patch"], num_layers=cfg["depth"],
                          num_heads=cfg["heads"], hidden_dim=cfg["dim"], mlp_dim=cfg["mlp_dim"],
                          num_classes=cfg["classes"], dropout=float(cfg.get("dropout", 0.0)))
    if cfg["channels"] != 3:
        m.conv_proj = nn.Conv2d(cfg["channels"], cfg["dim"], kernel_size=cfg["patch"], stride=cfg["patch"])
    for mod in m.modules():
        if isinstance(mod, nn.LayerNorm):
            mod.eps = float(cfg.get("norm_eps", 1e-6))
    return m


def load_model(path):
    """(torchvision model with the file's weights, eval mode; its vitkit config)."""
    tensors, meta = read_safetensors(path)
    if "vitkit.config" not in meta:
        raise SystemExit(f"{path}: no vitkit.config metadata (write it with vitkit or bench/peers/weights.py)")
    cfg = json.loads(meta["vitkit.config"])
    m = build_torchvision(cfg)
    m.load_state_dict(tensors, strict=True)
    return m.eval(), cfg


def input_shape(cfg, batch):
    return (batch, cfg["channels"], cfg["image_size"], cfg["image_size"])

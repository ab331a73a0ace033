"""Shared helpers for the reference generators (run with Debian's /usr/bin/python3)."""
import json
import os
import struct
import sys

import numpy as np
import torch

_DTYPES = {
    torch.float32: ("F32", np.float32), torch.float16: ("F16", np.float16),
    torch.float64: ("F64", np.float64), torch.int8: ("I8", np.int8), torch.uint8: ("U8", np.uint8),
    torch.int16: ("I16", np.int16), torch.int32: ("I32", np.int32), torch.int64: ("I64", np.int64),
}


def out_dir(sub):
    """OUTDIR/sub from argv[1], created."""
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    d = os.path.join(sys.argv[1], sub)
    os.makedirs(d, exist_ok=True)
    return d


def save_safetensors(path, tensors, metadata=None):
    """Writes a dict name -> torch.Tensor as safetensors (BF16 via raw bits)."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            code, raw = "BF16", t.view(torch.int16).numpy().tobytes()
        else:
            code, npt = _DTYPES[t.dtype]
            raw = t.numpy().astype(npt).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
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


def randomize(model, seed, std=0.02):
    """Every parameter random (torchvision zero-inits the head): weights N(0, std),
    norm weights 1 + N(0, 0.1), biases N(0, 0.02)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                s = std if p.dim() > 1 else 0.02
                if "pos_embedding" in name or "class_token" in name:
                    s = 0.5
                p.copy_(s * torch.randn(p.shape, generator=g))


def vitkit_config(**kw):
    """The vitkit.config / vitkit.preprocess metadata for a model."""
    pre = kw.pop("preprocess", None)
    md = {"vitkit.config": json.dumps(kw)}
    if pre is not None:
        md["vitkit.preprocess"] = json.dumps(pre)
    return md

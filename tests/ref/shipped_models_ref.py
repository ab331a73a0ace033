#!/usr/bin/python3
"""The shipped models in torchvision: tests/shipped_models_test.cpp.

Usage: /usr/bin/python3 tests/ref/shipped_models_ref.py OUTDIR [N] [NAME ...]

Loads each models/NAME.safetensors (default: every model in MODELS) into
torchvision's VisionTransformer (conv_proj made for one input channel) with
load_state_dict(strict=True), runs the first N Fashion-MNIST test images
(default: the model's count in MODELS; 0: all 10,000) through torchvision's
ToTensor + Normalize(mean, std) from the file's metadata, and writes into
OUTDIR/shipped_models/NAME/:
  logits.npy    N x 10 float32
  result.json   {"images": N, "top1": ..., "correct": ...}
Writes nothing for a model (and says so) when it or Debian's
dataset-fashion-mnist is absent; the C++ test then skips.
"""
import gzip
import json
import os
import sys

import numpy as np
import torch
from torchvision import transforms

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "peers"))
import _vit  # noqa: E402  (safetensors reader and torchvision builder shared with the peer benchmarks)

# name -> test images checked by default (Debian's torch multiplies with the
# reference BLAS, about 1.5 GFLOP/s: 1,000 images of the default model take
# about 55 s; the teacher, 126 M MACs per image, gets 100, about 17 s).
MODELS = {"vit-tiny-fmnist": 1000, "vit-small-fmnist": 100}
FMNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def run(name, n, outdir):
    path = os.path.join(ROOT, "models", name + ".safetensors")
    for p in (path, os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")):
        if not os.path.exists(p):
            print(f"shipped_models_ref: {p} is absent; nothing written for {name}")
            return
    out = os.path.join(outdir, "shipped_models", name)
    os.makedirs(out, exist_ok=True)
    model, cfg = _vit.load_model(path)
    _, meta = _vit.read_safetensors(path)
    pre = json.loads(meta["vitkit.preprocess"])
    images = read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")).copy()  # writable for ToTensor
    labels = read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    if n <= 0 or n > len(images):
        n = len(images)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(pre["mean"], pre["std"])])
    logits = []
    with torch.no_grad():
        for i in range(0, n, 250):
            x = torch.stack([tf(img) for img in images[i:min(n, i + 250)]])  # HxW uint8 -> 1xHxW
            logits.append(model(x))
    logits = torch.cat(logits).numpy().astype(np.float32)
    correct = int((logits.argmax(1) == labels[:n]).sum())
    np.save(os.path.join(out, "logits.npy"), logits)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"images": n, "correct": correct, "top1": correct / n}, f)
    print(f"shipped_models_ref: {name} in torchvision, top-1 on the first {n} test images: {100 * correct / n:.2f}%")


def main():
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR [N] [NAME ...]")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else None
    names = sys.argv[3:] or list(MODELS)
    for name in names:
        if name not in MODELS:
            sys.exit(f"shipped_models_ref: unknown model {name!r} (known: {', '.join(MODELS)})")
    torch.set_num_threads(2)
    for name in names:
        run(name, MODELS[name] if n is None else n, sys.argv[1])


if __name__ == "__main__":
    main()

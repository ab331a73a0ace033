"""Random weights for a vitkit preset or config, written as a vitkit safetensors
file (torchvision names + vitkit.config metadata) that vitkit, PyTorch and the
ONNX export all load, so the three runtimes run the same model.

usage: /usr/bin/python3 weights.py SPEC [--config FILE.toml|k=v,...] [--seed N] --vitkit BIN -o OUT.safetensors
  SPEC: a vitkit preset (vit_b_16, ...); the architecture comes from `vitkit info`.
Weights: torchvision's initialisation from torch.manual_seed(seed), plus a random
head (torchvision's is zero, which would make every logit 0)."""
import argparse
import json

import torch

from _vit import build_torchvision, vitkit_config, write_safetensors


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("--config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vitkit", required=True)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    cfg = vitkit_config(a.vitkit, a.spec, a.config)
    torch.manual_seed(a.seed)
    m = build_torchvision(cfg)
    with torch.no_grad():
        m.heads.head.weight.normal_(0, 0.02)
    pre = cfg.pop("preprocess", None)
    md = {"vitkit.config": json.dumps(cfg), "vitkit.version": "peers-weights.py"}
    if pre is not None:
        md["vitkit.preprocess"] = json.dumps(pre)
    write_safetensors(a.output, m.state_dict(), md)


if __name__ == "__main__":
    main()

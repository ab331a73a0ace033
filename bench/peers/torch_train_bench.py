"""PyTorch 1.13 side of the training benchmark (issue [train] item 7): optimizer
steps per second of torchvision's VisionTransformer with a vitkit model's
architecture and weights, AdamW, cross-entropy, random images and labels.
One step: zero_grad, forward, loss, backward, AdamW step, as `vitkit bench --train` times it.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 torch_train_bench.py MODEL.safetensors --batch B --threads T
           [--precision fp32] [--reps N] [--warmup N] [--seed N]
Prints one JSON line: {"runtime": "pytorch", "version", "times_ms": [...]} (one per step).
Exit status 3: this precision is not supported here.

Precisions: PRECISIONS below (fp32 only so far; adding one is one entry)."""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from _vit import input_shape, load_model

PRECISIONS = {"fp32": lambda model, x: (model, x)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.precision not in PRECISIONS:
        print(f"torch_train_bench.py: precision {a.precision} not supported ({', '.join(PRECISIONS)})",
              file=sys.stderr)
        sys.exit(3)
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    model, cfg = load_model(a.model)
    model.train()
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn(input_shape(cfg, a.batch), generator=g)
    y = torch.randint(0, cfg["classes"], (a.batch,), generator=g)
    model, x = PRECISIONS[a.precision](model, x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    times = []
    for i in range(a.warmup + a.reps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt * 1e3)
    print(json.dumps({"runtime": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(),
                      "times_ms": times}))


if __name__ == "__main__":
    main()

"""PyTorch 1.13 side of the peer benchmark: inference latency of torchvision's
VisionTransformer with a vitkit model's weights.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 torch_bench.py MODEL.safetensors --batch B --threads T
           [--precision fp32] [--reps N] [--warmup N] [--seed N]
Prints one JSON line: {"runtime": "pytorch", "version", "times_ms": [...]}.
Exit status 3: this precision is not supported here.

Precisions: PRECISIONS below, one function each turning (model, input) into
what runs. bf16 converts model and input to bfloat16 (CPU autocast fails on
1.13's fused attention fast path). Adding one (int8) is one entry there."""
import argparse
import json
import sys
import time

import torch

from _vit import input_shape, load_model

PRECISIONS = {
    "fp32": lambda model, x: (model, x),
    "bf16": lambda model, x: (model.to(torch.bfloat16), x.to(torch.bfloat16)),
}


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
        print(f"torch_bench.py: precision {a.precision} not supported ({', '.join(PRECISIONS)})", file=sys.stderr)
        sys.exit(3)
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    model, cfg = load_model(a.model)
    x = torch.randn(input_shape(cfg, a.batch), generator=torch.Generator().manual_seed(a.seed))
    model, x = PRECISIONS[a.precision](model, x)
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            model(x)
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt * 1e3)
    print(json.dumps({"runtime": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(),
                      "times_ms": times}))


if __name__ == "__main__":
    main()

"""PyTorch 1.13 side of the peer benchmark: inference latency of torchvision's
VisionTransformer with a vitkit model's weights.

usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 torch_bench.py MODEL.safetensors --batch B --threads T
           [--precision fp32] [--reps N] [--warmup N] [--seed N] [--input X.npy -o LOGITS.npy]
Prints one JSON line: {"runtime": "pytorch", "version", "times_ms": [...]}.
With --input (N x C x H x W float32, preprocessed): no timing; the logits of
those inputs (batches of B) are written to -o, and the JSON line gives
model_bytes (the converted model's state_dict as torch.save writes it).
Exit status 3: this precision is not supported here.

Precisions: PRECISIONS below, one function each turning (model, input) into
what runs. bf16 converts model and input to bfloat16 (CPU autocast fails on
1.13's fused attention fast path). int8 is PyTorch's dynamic quantization,
torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
(int8 weights per tensor, u8 activations quantized per tensor at run time) on
the quantized engine TORCH_QENGINE (default onednn; Debian's 1.13 has onednn
and qnnpack, no fbgemm). It converts only modules whose type is nn.Linear: the
MLP's two linears and the head. Attention's in_proj (a parameter that
nn.MultiheadAttention passes to F.multi_head_attention_forward), its out_proj
(NonDynamicallyQuantizableLinear) and the patch projection (Conv2d) stay fp32."""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

from _vit import input_shape, load_model


def int8_dynamic(model):
    """quantize_dynamic on TORCH_QENGINE; returns the model and how many linears it converted."""
    engine = os.environ.get("TORCH_QENGINE", "onednn")
    if engine not in torch.backends.quantized.supported_engines:
        raise SystemExit(f"torch_bench.py: quantized engine {engine} not in {torch.backends.quantized.supported_engines}")
    torch.backends.quantized.engine = engine
    q = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    n = sum(1 for m in q.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))
    return q, n


PRECISIONS = {
    "fp32": lambda model, x: (model, x),
    "bf16": lambda model, x: (model.to(torch.bfloat16), x.to(torch.bfloat16)),
    "int8": lambda model, x: (int8_dynamic(model)[0], x),
}


def predict(model, a):
    """Logits of a.input's images, a.batch at a time, written to a.output (.npy)."""
    import io

    import numpy as np

    if not a.output:
        raise SystemExit("torch_bench.py: --input needs -o LOGITS.npy")
    x = torch.from_numpy(np.load(a.input).astype(np.float32))
    with torch.inference_mode():
        y = torch.cat([model(x[i:i + a.batch]).float() for i in range(0, len(x), a.batch)])
    np.save(a.output, y.numpy())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    out = {"runtime": "pytorch", "version": torch.__version__, "precision": a.precision,
           "model_bytes": buf.getbuffer().nbytes, "images": len(x)}
    if a.precision == "int8":
        out["quantized_engine"] = torch.backends.quantized.engine
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input")
    p.add_argument("-o", "--output")
    a = p.parse_args()
    if a.precision not in PRECISIONS:
        print(f"torch_bench.py: precision {a.precision} not supported ({', '.join(PRECISIONS)})", file=sys.stderr)
        sys.exit(3)
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    model, cfg = load_model(a.model)
    x = torch.randn(input_shape(cfg, a.batch), generator=torch.Generator().manual_seed(a.seed))
    model, x = PRECISIONS[a.precision](model, x)
    if a.input:
        predict(model, a)
        return
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            model(x)
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt * 1e3)
    out = {"runtime": "pytorch", "version": torch.__version__, "threads": torch.get_num_threads(), "times_ms": times}
    if a.precision == "int8":
        out["quantized_engine"] = torch.backends.quantized.engine
    print(json.dumps(out))


if __name__ == "__main__":
    main()

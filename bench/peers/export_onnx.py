"""Exports a vitkit safetensors model to ONNX with PyTorch 1.13's torch.onnx.export
(opset 17, static shapes: one file per batch size, so ONNX Runtime can specialise).

usage: /usr/bin/python3 export_onnx.py MODEL.safetensors --batch N [--precision fp32] -o OUT.onnx
Exit status 3: this precision has no export here (run.sh then shows "n/a").

Precisions: EXPORTS below, one function each (fp32 exports the model as is).
Adding one (int8) is one entry there and one in ort_bench.js's PRECISIONS."""
import argparse
import os
import sys

import torch

from _vit import input_shape, load_model


def export_fp32(model, cfg, batch, out):
    # Not under no_grad: there nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which the ONNX exporter of 1.13 lacks.
    x = torch.zeros(input_shape(cfg, batch))
    torch.onnx.export(model, x, out, opset_version=17, input_names=["images"], output_names=["logits"],
                      do_constant_folding=True)


EXPORTS = {"fp32": export_fp32}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--precision", default="fp32", help=f"one of {', '.join(EXPORTS)} (exit status 3 otherwise)")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    if a.precision not in EXPORTS:
        print(f"export_onnx.py: precision {a.precision} not supported ({', '.join(EXPORTS)})", file=sys.stderr)
        sys.exit(3)
    model, cfg = load_model(a.model)
    tmp = a.output + ".tmp"
    EXPORTS[a.precision](model, cfg, a.batch, tmp)
    os.replace(tmp, a.output)


if __name__ == "__main__":
    main()

"""Exports a vitkit safetensors model to ONNX with PyTorch 1.13's torch.onnx.export
(opset 17, static shapes: one file per batch size, so ONNX Runtime can specialise).

usage: /usr/bin/python3 export_onnx.py MODEL.safetensors --batch N [--precision fp32|int8] -o OUT.onnx
Exit status 3: this precision has no export here (run.sh then shows "n/a").

Precisions: EXPORTS below, one function each (fp32 exports the model as is).
int8 is ONNX Runtime's dynamic quantization as onnxruntime.quantization's
quantize_dynamic emits it (its Python quantizer is not packaged here; the graph
is rewritten with the onnx package, Debian's python3-onnx): the fp32 export,
then every MatMul or Gemm with a constant weight becomes

    DynamicQuantizeLinear(x) -> (x_u8, x_scale, x_zero_point)       per tensor, asymmetric u8
    MatMulInteger(x_u8, W_s8, x_zero_point) -> Cast(float) -> Mul(x_scale * w_scale) [-> Add(bias)]

and the patch projection's Conv the same with ConvInteger. Weights are int8,
symmetric (zero point 0), **per output channel** (w_scale a vector over the
output columns, applied after the integer product; quantize_dynamic's default
is one scale per tensor: --per-tensor); vitkit's quantize:bits=8 is per output
channel too, with per-row (per-token) activation scales. ONNX Runtime fuses the
pattern into DynamicQuantizeMatMul (graph optimisation level "all"). Attention's
two activation products stay float, as in vitkit."""
import argparse
import io
import os
import sys

import numpy as np
import torch

from _vit import input_shape, load_model


def export_fp32(model, cfg, batch, out):
    # Not under no_grad: there nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which the ONNX exporter of 1.13 lacks.
    x = torch.zeros(input_shape(cfg, batch))
    torch.onnx.export(model, x, out, opset_version=17, input_names=["images"], output_names=["logits"],
                      do_constant_folding=True)


def quantize_weight(w, axis, per_tensor):
    """Symmetric int8 codes of w and the scales: one per index along axis (the
    output channels), or one for the whole tensor."""
    a = np.abs(w)
    amax = a.max() if per_tensor else a.max(axis=tuple(i for i in range(w.ndim) if i != axis))
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if not per_tensor:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, np.atleast_1d(scale).astype(np.float32)


def quantize_graph(model, per_tensor=False):
    """Rewrites an fp32 ONNX model in place: MatMul/Gemm with a constant weight ->
    DynamicQuantizeLinear + MatMulInteger + Cast + Mul (+ Add), Conv with a constant
    weight -> the same with ConvInteger. Returns the number of rewritten nodes."""
    import onnx
    from onnx import helper, numpy_helper, TensorProto

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    uses = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    new_inits, nodes, rewritten = [], [], 0

    def const(name, arr):
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def attrs(n):
        return {a.name: helper.get_attribute_value(a) for a in n.attribute}

    for n in g.node:
        op, at = n.op_type, attrs(n)
        w_name = n.input[1] if len(n.input) > 1 else None
        if w_name not in inits:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        bias = None
        if op == "MatMul" and w.ndim == 2:
            wk, axis = w, 1  # (K, N): output channels are columns
        elif (op == "Gemm" and w.ndim == 2 and at.get("alpha", 1.0) == 1.0 and at.get("beta", 1.0) == 1.0
              and not at.get("transA", 0)):
            wk, axis = (w.T if at.get("transB", 0) else w), 1
            if len(n.input) > 2 and n.input[2]:
                if n.input[2] not in inits:
                    nodes.append(n)
                    continue
                bias = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
        elif op == "Conv" and w.ndim == 4 and at.get("group", 1) == 1:
            wk, axis = w, 0  # (C_out, C_in, kh, kw)
            if len(n.input) > 2 and n.input[2]:
                bias = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
        else:
            nodes.append(n)
            continue
        p = f"{n.name or n.output[0]}_int8"
        x = n.input[0]
        q, scale = quantize_weight(wk, axis, per_tensor)
        wq = const(p + "/w_s8", q)
        ws = const(p + "/w_scale", scale if op != "Conv" or per_tensor else scale.reshape(-1, 1, 1))
        nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [p + "/x_u8", p + "/x_scale", p + "/x_zp"],
                                      name=p + "/quantize"))
        if op == "Conv":
            conv_at = {k: v for k, v in at.items() if k in ("dilations", "group", "kernel_shape", "pads", "strides",
                                                               "auto_pad")}
            nodes.append(helper.make_node("ConvInteger", [p + "/x_u8", wq, p + "/x_zp"], [p + "/y_s32"],
                                          name=p + "/conv", **conv_at))
        else:
            nodes.append(helper.make_node("MatMulInteger", [p + "/x_u8", wq, p + "/x_zp"], [p + "/y_s32"],
                                          name=p + "/matmul"))
        nodes.append(helper.make_node("Cast", [p + "/y_s32"], [p + "/y_f32"], to=TensorProto.FLOAT, name=p + "/cast"))
        nodes.append(helper.make_node("Mul", [p + "/x_scale", ws], [p + "/scales"], name=p + "/scales_mul"))
        out = n.output[0] if bias is None else p + "/y_scaled"
        nodes.append(helper.make_node("Mul", [p + "/y_f32", p + "/scales"], [out], name=p + "/output_scale_mul"))
        if bias is not None:
            b = const(p + "/bias", bias.reshape(-1, 1, 1) if op == "Conv" else bias)
            nodes.append(helper.make_node("Add", [out, b], [n.output[0]], name=p + "/bias_add"))
        rewritten += 1
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    onnx.checker.check_model(model)
    return rewritten


def export_int8(model, cfg, batch, out, per_tensor=False):
    import onnx

    buf = io.BytesIO()
    export_fp32(model, cfg, batch, buf)
    m = onnx.load_from_string(buf.getvalue())
    n = quantize_graph(m, per_tensor)
    print(f"export_onnx.py: int8: {n} MatMul/Gemm/Conv nodes quantized "
          f"({'per tensor' if per_tensor else 'per output channel'})", file=sys.stderr)
    onnx.save(m, out)


EXPORTS = {"fp32": export_fp32, "int8": export_int8}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--precision", default="fp32", help=f"one of {', '.join(EXPORTS)} (exit status 3 otherwise)")
    p.add_argument("--per-tensor", action="store_true",
                   help="int8: one weight scale per tensor (quantize_dynamic's default) instead of per output channel")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    if a.precision not in EXPORTS:
        print(f"export_onnx.py: precision {a.precision} not supported ({', '.join(EXPORTS)})", file=sys.stderr)
        sys.exit(3)
    model, cfg = load_model(a.model)
    tmp = a.output + ".tmp"
    if a.precision == "int8":
        try:
            import onnx  # noqa: F401
        except ImportError:
            print("export_onnx.py: int8 needs the onnx package (apt-get install python3-onnx)", file=sys.stderr)
            sys.exit(3)
        export_int8(model, cfg, a.batch, tmp, a.per_tensor)
    else:
        EXPORTS[a.precision](model, cfg, a.batch, tmp)
    os.replace(tmp, a.output)


if __name__ == "__main__":
    main()

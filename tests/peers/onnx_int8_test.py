"""ctest peers_onnx_int8: the peer benchmark's int8 ONNX graph (bench/peers/export_onnx.py
--precision int8) on the default model, run by ONNX Runtime, against vitkit.

Checks: every MatMul/Gemm/Conv with a constant weight was rewritten (25 MatMulInteger,
1 ConvInteger, no float weight products left, the file under 0.4x the fp32
model file) and ONNX Runtime's logits of 64 Fashion-MNIST test images (random inputs when
the data set is absent) agree with vitkit's int8 model (`vitkit compress --pass
quantize:bits=8`) and with vitkit fp32: max |difference| within 12% of max |logit|,
top-1 agreement at least 90%.

usage: /usr/bin/python3 onnx_int8_test.py VITKIT WORKDIR
Exit status 77 (skipped): no python3-onnx, node, or npm onnxruntime-node in bench/peers
(`npm install --ignore-scripts` there, as bench/peers/run.sh does), or no shipped model."""
import gzip
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "bench", "peers")
MODEL = os.path.join(ROOT, "models", "vit-tiny-fmnist.safetensors")
FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
N = 64


def skip(why):
    print(f"onnx_int8_test: skipped: {why}")
    sys.exit(77)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"onnx_int8_test: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def main():
    vitkit, work = sys.argv[1], sys.argv[2]
    try:
        import onnx
    except ImportError:
        skip("no onnx python package (apt-get install python3-onnx)")
    if not os.path.exists(MODEL):
        skip(f"{MODEL} is absent")
    try:
        if subprocess.run(["node", "-e", "require('onnxruntime-node')"], cwd=PEERS, capture_output=True).returncode:
            skip("npm onnxruntime-node is not installed in bench/peers")
    except FileNotFoundError:
        skip("no node")
    os.makedirs(work, exist_ok=True)

    # inputs: the first N test images, preprocessed as the model's metadata says
    if os.path.exists(FMNIST):
        with gzip.open(FMNIST, "rb") as f:
            raw = f.read()
        img = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:N].astype(np.float32) / 255
        x = ((img - np.float32(0.2860)) / np.float32(0.3530))[:, None]
    else:
        x = np.random.default_rng(0).standard_normal((N, 1, 28, 28), dtype=np.float32)
    xs = os.path.join(work, "inputs.npy")
    np.save(xs, x.astype(np.float32))

    onnx_int8 = os.path.join(work, "int8.onnx")
    run([sys.executable, "-W", "ignore", os.path.join(PEERS, "export_onnx.py"), MODEL, "--batch", "32",
         "--precision", "int8", "-o", onnx_int8], cwd=PEERS)
    g = onnx.load(onnx_int8).graph
    inits = {t.name for t in g.initializer}
    ops = [n.op_type for n in g.node]
    left = [n.name for n in g.node if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1 and n.input[1] in inits]
    assert not left, f"float products with constant weights left: {left}"
    assert ops.count("MatMulInteger") == 25 and ops.count("ConvInteger") == 1, \
        f"{ops.count('MatMulInteger')} MatMulInteger, {ops.count('ConvInteger')} ConvInteger (want 25, 1)"
    assert ops.count("DynamicQuantizeLinear") == 26
    ratio = os.path.getsize(onnx_int8) / os.path.getsize(MODEL)
    assert ratio < 0.4, f"int8 .onnx is {ratio:.2f} of the fp32 model file"

    ort = os.path.join(work, "ort-int8.npy")
    run(["node", os.path.join(PEERS, "ort_predict.js"), onnx_int8, "--input", xs, "-o", ort, "--threads", "2"], cwd=PEERS)
    q = os.path.join(work, "vitkit-int8.safetensors")
    run([vitkit, "compress", MODEL, "--pass", "quantize:bits=8", "-o", q])
    got = np.load(ort)
    for name, f in (("vitkit int8", q), ("vitkit fp32", MODEL)):
        y = os.path.join(work, name.replace(" ", "-") + ".npy")
        run([vitkit, "predict", f, "--input", xs, "-o", y, "--threads", "2"])
        want = np.load(y)
        assert got.shape == want.shape, f"{got.shape} vs {want.shape}"
        diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
        agree = float((got.argmax(1) == want.argmax(1)).mean())
        print(f"onnx_int8_test: ONNX Runtime int8 vs {name}: max |diff| {diff:.4f} "
              f"({100 * diff / scale:.1f}% of max |logit| {scale:.3f}), top-1 agreement {100 * agree:.1f}%")
        assert diff <= 0.12 * scale, f"ONNX Runtime int8 vs {name}: max |diff| {diff} > 12% of {scale}"
        assert agree >= 0.9, f"ONNX Runtime int8 vs {name}: top-1 agreement {agree}"
    print("onnx_int8_test: passed")


if __name__ == "__main__":
    main()

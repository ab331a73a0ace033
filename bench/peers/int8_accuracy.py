"""Top-1 and model bytes of the three int8 runtimes of the peer benchmark, on
the same preprocessed inputs: the first N Fashion-MNIST test images, preprocessed
once here (pixel / 255, the model's mean and std, as vitkit and torchvision do)
and written as one .npy that every runtime reads.

  vitkit       `vitkit compress MODEL --pass quantize:bits=8`, then `vitkit predict --input X.npy`
               (and the fp32 model the same way, the reference)
  onnxruntime  export_onnx.py --precision int8 (and fp32), then ort_predict.js
  pytorch      torch_bench.py --precision int8 (quantize_dynamic) --input X.npy (and fp32);
               with OpenBLAS preloaded when run.sh has unpacked it (results/cache), else Debian's BLAS

usage: /usr/bin/python3 int8_accuracy.py [MODEL.safetensors] [--limit N] [--threads T] [--batch B]
           [--vitkit BIN] [--out DIR] [--per-tensor]
  MODEL: default models/vit-tiny-fmnist.safetensors. A model that is not a Fashion-MNIST
  classifier (1 channel, 28 x 28, 10 classes; e.g. a preset's random weights) gets model
  bytes only. --limit: images (default all 10,000). Writes DIR/accuracy.json and accuracy.md
  (default DIR: results/accuracy-<time>) and prints the markdown table.

Per runtime and precision: top-1 against the labels, top-1 agreement with the same
runtime's fp32 and with vitkit fp32, max |logit - vitkit fp32 logit|, and the model's
bytes (vitkit: the .safetensors file; ONNX Runtime: the .onnx file; PyTorch: its
state_dict as torch.save writes it)."""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _vit import read_safetensors  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"
OPENBLAS = os.path.join(HERE, "results", "cache", "openblas", "usr", "lib", "x86_64-linux-gnu", "openblas-pthread")


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def run(cmd, env=None, **kw):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run(cmd, env=e, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"int8_accuracy.py: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=os.path.join(ROOT, "models", "vit-tiny-fmnist.safetensors"))
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--vitkit", default=os.environ.get("VITKIT", os.path.join(ROOT, "build", "vitkit")))
    p.add_argument("--out")
    p.add_argument("--per-tensor", action="store_true", help="ONNX int8 with one weight scale per tensor")
    a = p.parse_args()
    out = a.out or os.path.join(HERE, "results", "accuracy-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    model = os.path.abspath(a.model)
    _, meta = read_safetensors(model)
    cfg = json.loads(meta["vitkit.config"])
    pre = json.loads(meta.get("vitkit.preprocess", "null") or "null")
    classify = (cfg["channels"] == 1 and cfg["image_size"] == 28 and cfg["classes"] == 10 and pre is not None
                and os.path.exists(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")))
    stem = os.path.basename(model).removesuffix(".safetensors")
    threads = str(a.threads)

    # inputs: one .npy for all runtimes
    xs = os.path.join(out, "inputs.npy")
    labels = None
    n = a.batch
    if classify:
        images = read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
        n = len(images) if a.limit <= 0 else min(a.limit, len(images))
        x = images[:n].astype(np.float32) / np.float32(255)
        x = (x - np.float32(pre["mean"][0])) / np.float32(pre["std"][0])
        np.save(xs, x[:, None].astype(np.float32))
        labels = labels[:n]
    else:
        rng = np.random.default_rng(0)
        np.save(xs, rng.standard_normal((1, cfg["channels"], cfg["image_size"], cfg["image_size"]), np.float32))

    rows = []  # (runtime, precision, how, logits path or None, bytes)
    # vitkit
    q = os.path.join(out, stem + "-int8.safetensors")
    run([a.vitkit, "compress", model, "--pass", "quantize:bits=8", "-o", q])
    for prec, f in (("fp32", model), ("int8", q)):
        y = os.path.join(out, f"vitkit-{prec}.npy")
        if classify:
            run([a.vitkit, "predict", f, "--input", xs, "-o", y, "--threads", threads])
        rows.append(("vitkit", prec, "safetensors file", y if classify else None, os.path.getsize(f)))
    # ONNX Runtime
    have_ort = subprocess.run(["node", "-e", "require('onnxruntime-node')"], cwd=HERE, capture_output=True).returncode == 0
    for prec in ("fp32", "int8"):
        o = os.path.join(out, f"{stem}-{prec}-b{a.batch}.onnx")
        cmd = [sys.executable, "-W", "ignore", os.path.join(HERE, "export_onnx.py"), model, "--batch", str(a.batch),
               "--precision", prec, "-o", o] + (["--per-tensor"] if a.per_tensor and prec == "int8" else [])
        run(cmd)
        y = os.path.join(out, f"onnxruntime-{prec}.npy")
        if classify and have_ort:
            run(["node", os.path.join(HERE, "ort_predict.js"), o, "--input", xs, "-o", y, "--threads", threads], cwd=HERE)
        rows.append(("onnxruntime", prec, ".onnx file", y if classify and have_ort else None, os.path.getsize(o)))
    # PyTorch
    env = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": threads}
    if os.path.exists(os.path.join(OPENBLAS, "libblas.so.3")):
        env.update(LD_LIBRARY_PATH=OPENBLAS, OPENBLAS_NUM_THREADS=threads)
    engine = None
    for prec in ("fp32", "int8"):
        y = os.path.join(out, f"pytorch-{prec}.npy")
        j = json.loads(run([sys.executable, os.path.join(HERE, "torch_bench.py"), model, "--batch", str(a.batch),
                            "--threads", threads, "--precision", prec, "--input", xs, "-o", y], env=env, cwd=HERE))
        engine = j.get("quantized_engine", engine)
        rows.append(("pytorch", prec, "state_dict (torch.save)", y if classify else None, j["model_bytes"]))

    ref = np.load(rows[0][3]) if classify else None
    res = []
    for rt, prec, how, y, nbytes in rows:
        r = {"runtime": rt, "precision": prec, "bytes": nbytes, "bytes_what": how}
        if y:
            lg = np.load(y)
            same_fp32 = np.load(next(z[3] for z in rows if z[0] == rt and z[1] == "fp32"))
            r.update(top1=float((lg.argmax(1) == labels).mean()),
                     agree_own_fp32=float((lg.argmax(1) == same_fp32.argmax(1)).mean()),
                     agree_vitkit_fp32=float((lg.argmax(1) == ref.argmax(1)).mean()),
                     max_abs_diff_vitkit_fp32=float(np.abs(lg - ref).max()))
        res.append(r)
    doc = {"model": model, "images": int(n) if classify else 0, "threads": a.threads,
           "onnx_weights": "per tensor" if a.per_tensor else "per output channel",
           "torch_quantized_engine": engine, "torch_blas": "openblas" if "LD_LIBRARY_PATH" in env else "debian default",
           "rows": res}
    with open(os.path.join(out, "accuracy.json"), "w") as f:
        json.dump(doc, f, indent=2)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"
    lines = ["| runtime | precision | top-1 | agrees with its fp32 | agrees with vitkit fp32 | max abs logit diff "
             "(vs vitkit fp32) | model bytes |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in res:
        d = r.get("max_abs_diff_vitkit_fp32")
        lines.append(f"| {r['runtime']} | {r['precision']} | {pct(r.get('top1'))} | {pct(r.get('agree_own_fp32'))} | "
                     f"{pct(r.get('agree_vitkit_fp32'))} | {'n/a' if d is None else f'{d:.4f}'} | {r['bytes']:,} |")
    md = "\n".join(lines) + "\n\n"
    md += (f"{os.path.relpath(model, ROOT)}, {doc['images']} test images, {a.threads} threads; ONNX int8 weights "
           f"{doc['onnx_weights']}; PyTorch quantized engine {engine}, BLAS {doc['torch_blas']}.\n")
    with open(os.path.join(out, "accuracy.md"), "w") as f:
        f.write(md)
    sys.stdout.write(md + f"\n(results in {out})\n")


if __name__ == "__main__":
    main()

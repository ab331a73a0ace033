#!/usr/bin/env python3
"""Quantization-aware training study on the default model (docs/quantization.md, QAT section).

For each width (W8A8, W6A6, W4A8, W4A4, W3A8, W2A8; weights symmetric per output
channel, inputs dynamic per token), all through the CLI:
  PTQ  vitkit compress MODEL --pass quantize:bits=W,abits=A -o ptq   then eval on the test split
  QAT  vitkit train --config configs/qat/qat-fmnist.toml --init MODEL --qat bits=W,abits=A [--lsq] -o qat
       (the config's epochs, distilled from the float model), then eval on the test split
The fine-tuning settings are the config's, fixed before any result was seen; the
test split is scored once per model, at the end. Writes OUT/qat.csv, qat.md, qat.svg.

    bench/qat_study.py [--vitkit build/vitkit] [--out docs/quantization] [--widths 8:8,4:4] [--threads 2]
                       [--epochs N] [--no-lsq]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svgplot  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(SRC, "models/vit-tiny-fmnist.safetensors")
CONFIG = os.path.join(SRC, "configs/qat/qat-fmnist.toml")
WIDTHS = "8:8,6:6,4:8,4:4,3:8,2:8"


def cli(a, *args):
    cmd = [a.vitkit, *args, "--threads", str(a.threads), "--json", "-q"]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {p.stderr}")
    print(f"  {time.time() - t:7.1f} s  {' '.join(args)[:150]}", file=sys.stderr, flush=True)
    return json.loads(p.stdout), time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vitkit", default=os.path.join(SRC, "build/vitkit"))
    ap.add_argument("--out", default=os.path.join(SRC, "docs/quantization"))
    ap.add_argument("--widths", default=WIDTHS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=0, help="override the config's epochs")
    ap.add_argument("--no-lsq", action="store_true", help="weight scales from the range each step, not learned")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vitkit-qat-")
    base, _ = cli(a, "eval", MODEL, "--data", "fashion-mnist")
    rows = [{"spec": "fp32", "w": 32, "a": 32, "ptq_top1": base["top1"], "qat_top1": base["top1"],
             "qat_top3": base["top3"], "epochs": 0, "minutes": 0.0, "file_bytes": os.path.getsize(MODEL)}]
    for wa in a.widths.split(","):
        w, x = (int(v) for v in wa.split(":"))
        spec = f"quantize:bits={w},abits={x}"
        ptq = os.path.join(tmp, f"ptq-w{w}a{x}.safetensors")
        cli(a, "compress", MODEL, "--pass", spec, "-o", ptq)
        e_ptq, _ = cli(a, "eval", ptq, "--data", "fashion-mnist")
        qat = os.path.join(tmp, f"qat-w{w}a{x}.safetensors")
        args = ["train", "--config", CONFIG, "--init", MODEL, "--qat", spec, "-o", qat]
        if not a.no_lsq:
            args.append("--lsq")
        if a.epochs:
            args += ["--epochs", str(a.epochs)]
        t, secs = cli(a, *args)
        e_qat, _ = cli(a, "eval", qat, "--data", "fashion-mnist")
        row = {"spec": f"W{w}A{x}", "w": w, "a": x, "ptq_top1": e_ptq["top1"], "qat_top1": e_qat["top1"],
               "qat_top3": e_qat["top3"], "epochs": t["epochs_done"],
               "minutes": round(sum(h["seconds"] for h in t["history"]) / 60, 2), "file_bytes": os.path.getsize(qat)}
        print(f"{row['spec']}: PTQ {100 * row['ptq_top1']:.2f}%  QAT {100 * row['qat_top1']:.2f}%  "
              f"({row['epochs']} epochs, {row['minutes']} min)", flush=True)
        rows.append(row)
        write(rows, a.out, base["top1"])


def write(rows, out, fp32):
    cols = ["spec", "w", "a", "ptq_top1", "qat_top1", "qat_top3", "epochs", "minutes", "file_bytes"]
    with open(os.path.join(out, "qat.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        wr.writerows(rows)
    with open(os.path.join(out, "qat.md"), "w") as f:
        f.write("| spec | PTQ top-1 | QAT top-1 | QAT − fp32 | QAT top-3 | epochs | minutes | file |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['spec']} | {100 * r['ptq_top1']:.2f}% | {100 * r['qat_top1']:.2f}% | "
                    f"{100 * (r['qat_top1'] - fp32):+.2f} | {100 * r['qat_top3']:.2f}% | {r['epochs']} | "
                    f"{r['minutes']} | {r['file_bytes'] // 1024} KiB |\n")
    q = [r for r in rows if r["w"] < 32]
    a8 = [r for r in q if r["a"] == 8]
    series = {"PTQ (inputs 8 bits)": [(r["w"], 100 * r["ptq_top1"]) for r in a8],
              "QAT (inputs 8 bits)": [(r["w"], 100 * r["qat_top1"]) for r in a8],
              "PTQ (W = A)": [(r["w"], 100 * r["ptq_top1"]) for r in q if r["a"] == r["w"]],
              "QAT (W = A)": [(r["w"], 100 * r["qat_top1"]) for r in q if r["a"] == r["w"]],
              "fp32": [(min(r["w"] for r in q), 100 * fp32), (8, 100 * fp32)]}
    series = {k: sorted(v) for k, v in series.items() if v}
    svgplot.line_panels([("vit-tiny-fmnist, Fashion-MNIST test", series)], os.path.join(out, "qat.svg"),
                        "weight bits", "top-1 %", title="PTQ and QAT against bits")


if __name__ == "__main__":
    main()

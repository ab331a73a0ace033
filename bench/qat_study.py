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
    bench/qat_study.py --extras    # OUT/qat_extra.{csv,md}: W4A4 with static inputs, W2A8 without LSQ
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
    ap.add_argument("--replot", action="store_true", help="rewrite qat.md and qat.svg from qat.csv")
    ap.add_argument("--extras", action="store_true",
                    help="the side rows: W4A4 with static mse-calibrated inputs (LSQ), W2A8 without LSQ")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vitkit-qat-")
    if a.extras:
        return extras(a, tmp)
    if a.replot:  # the table and plot again from OUT/qat.csv
        with open(os.path.join(a.out, "qat.csv")) as f:
            rows = [{k: (float(v) if k in ("ptq_top1", "qat_top1", "qat_top3", "minutes") else
                         int(v) if k in ("w", "a", "epochs", "file_bytes") else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
        return write(rows, a.out, rows[0]["qat_top1"])
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


def extras(a, tmp):
    """Rows beside the main study, same config: static inputs (what integer-only hardware
    needs: one input scale per layer, here learned) and the LSQ ablation at 2 bits."""
    rows = []
    for name, spec, lsq in (("W4A4 static mse, LSQ", "quantize:bits=4,abits=4,act=static,calib=mse", True),
                            ("W2A8, scales from the range (no LSQ)", "quantize:bits=2,abits=8", False)):
        ptq = os.path.join(tmp, "ptq.safetensors")
        calib = ["--data", "fashion-mnist", "--calib", "512", "--compare-limit", "1"] if "static" in spec else []
        cli(a, "compress", MODEL, "--pass", spec, "-o", ptq, *calib)
        e_ptq, _ = cli(a, "eval", ptq, "--data", "fashion-mnist")
        qat = os.path.join(tmp, "qat.safetensors")
        t, _ = cli(a, "train", "--config", CONFIG, "--init", MODEL, "--qat", spec, "-o", qat,
                   *(["--lsq"] if lsq else []))
        e_qat, _ = cli(a, "eval", qat, "--data", "fashion-mnist")
        rows.append({"row": name, "spec": spec, "lsq": lsq, "ptq_top1": e_ptq["top1"], "qat_top1": e_qat["top1"],
                     "epochs": t["epochs_done"], "minutes": round(sum(h["seconds"] for h in t["history"]) / 60, 2)})
        print(f"{name}: PTQ {100 * e_ptq['top1']:.2f}%  QAT {100 * e_qat['top1']:.2f}%", flush=True)
        with open(os.path.join(a.out, "qat_extra.csv"), "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
        with open(os.path.join(a.out, "qat_extra.md"), "w") as f:
            f.write("| row | spec | PTQ top-1 | QAT top-1 | epochs | minutes |\n|---|---|---:|---:|---:|---:|\n")
            for r in rows:
                f.write(f"| {r['row']} | `{r['spec']}`{' --lsq' if r['lsq'] else ''} | {100 * r['ptq_top1']:.2f}% | "
                        f"{100 * r['qat_top1']:.2f}% | {r['epochs']} | {r['minutes']} |\n")


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
    lo = 84.0  # the interesting range; a point below it sits on the bottom edge, its value in the legend
    below = [f"W{r['w']}A{r['a']} {100 * r['ptq_top1']:.1f}%" for r in q if 100 * r["ptq_top1"] < lo]
    series = {"PTQ (inputs 8 bits)" + (f" ({', '.join(below)} below)" if below else ""):
              [(r["w"], 100 * r["ptq_top1"]) for r in a8],
              "QAT (inputs 8 bits)": [(r["w"], 100 * r["qat_top1"]) for r in a8],
              "PTQ (W = A)": [(r["w"], 100 * r["ptq_top1"]) for r in q if r["a"] == r["w"]],
              "QAT (W = A)": [(r["w"], 100 * r["qat_top1"]) for r in q if r["a"] == r["w"]],
              "fp32": [(min(r["w"] for r in q), 100 * fp32), (8, 100 * fp32)]}
    series = {k: sorted(v) for k, v in series.items() if v}
    svgplot.line_panels([("vit-tiny-fmnist, Fashion-MNIST test", series)], os.path.join(out, "qat.svg"),
                        "weight bits", "top-1 %", title="PTQ and QAT against bits", ylim=(lo, 92.0))


if __name__ == "__main__":
    main()

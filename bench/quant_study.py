#!/usr/bin/env python3
"""Accuracy against bits per calibrator: `vitkit compress MODEL --pass
quantize:bits=B,abits=B,...` for B in 8, 6, 5, 4, 3 (weights symmetric per
output channel; inputs dynamic per token, or static from 512 balanced
training images with each calibrator), compared with the float model on the
first N Fashion-MNIST test images (`--compare-limit`). Also 4-bit weights in
groups of 32 with 8-bit inputs, and the extra passes given with --spec.
Writes OUT/bits.csv, OUT/bits.md and OUT/bits.svg (top-1 against bits, a line
per calibrator, a panel per model).

No choice is made from these numbers: they describe what each configuration
costs. (Choosing a calibrator belongs on a validation split: analyze
sensitivity's default.)

    bench/quant_study.py [--vitkit build/vitkit] [--out docs/quantization] [--limit 2000] [--threads 2]
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["models/vit-tiny-fmnist.safetensors", "models/vit-small-fmnist.safetensors"]
BITS = [8, 6, 5, 4, 3]
CALIBS = ["dynamic", "minmax", "sigma:3", "percentile:99.99", "mse", "entropy"]
EXTRA = ["quantize:bits=4,group=32", "quantize:bits=8,attention=true",
         "quantize:bits=8,act=static,calib=mse,attention=true", "quantize:format=fixed,bits=8",
         "quantize:bits=8,abits=0", "quantize:bits=4,abits=0"]


def spec_of(bits, calib):
    s = f"quantize:bits={bits},abits={bits}"
    return s if calib == "dynamic" else s + f",act=static,calib={calib}"


def run(vitkit, model, spec, limit, threads, tmp):
    out = os.path.join(tmp, "out.safetensors")
    cmd = [vitkit, "compress", model, "--pass", spec, "-o", out, "--data", "fashion-mnist", "--compare-limit",
           str(limit), "--threads", str(threads), "--json", "-q"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {p.stderr}")
    c = json.loads(p.stdout)["compare"]
    return {"model": os.path.basename(model), "spec": spec, "file_bytes": os.path.getsize(out),
            "orig_bytes": os.path.getsize(model), "top1_orig": c["a"]["top1"], "top1": c["b"]["top1"],
            "agreement": c["agreement"], "kl_mean": c["kl"]["mean"], "images": c["images"]}


def svg_plot(rows, path):
    """Top-1 (y) against bits (x), a line per calibrator, a panel per model."""
    models = sorted({r["model"] for r in rows})
    PW, H, L, T, B, G = 380, 380, 60, 30, 50, 40
    W = L + len(models) * (PW + G) + 150
    colors = {"dynamic": "#1f77b4", "minmax": "#ff7f0e", "sigma:3": "#2ca02c", "percentile:99.99": "#d62728",
              "mse": "#9467bd", "entropy": "#8c564b"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for k, model in enumerate(models):
        mr = [r for r in rows if r["model"] == model and r.get("calib")]
        x0p = L + k * (PW + G)
        y0, y1 = max(0.0, min(100 * r["top1"] for r in mr) - 2), 100 * mr[0]["top1_orig"] + 2
        X = lambda b: x0p + (b - 2.5) / (8.5 - 2.5) * PW
        Y = lambda v: H - B - (v - y0) / (y1 - y0) * (H - T - B)
        out += [f'<line x1="{x0p}" y1="{H-B}" x2="{x0p+PW}" y2="{H-B}" stroke="black"/>',
                f'<line x1="{x0p}" y1="{T}" x2="{x0p}" y2="{H-B}" stroke="black"/>',
                f'<text x="{x0p+PW/2}" y="{T-10}" text-anchor="middle">{model}</text>',
                f'<text x="{x0p+PW/2}" y="{H-14}" text-anchor="middle">bits (weights = inputs)</text>']
        for b in BITS:
            out.append(f'<text x="{X(b):.1f}" y="{H-B+15}" text-anchor="middle">{b}</text>')
        for i in range(6):
            v = y0 + (y1 - y0) * i / 5
            out.append(f'<text x="{x0p-6}" y="{Y(v)+4:.1f}" text-anchor="end">{v:.0f}</text>')
            out.append(f'<line x1="{x0p}" y1="{Y(v):.1f}" x2="{x0p+PW}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        fy = Y(100 * mr[0]["top1_orig"])
        out.append(f'<line x1="{x0p}" y1="{fy:.1f}" x2="{x0p+PW}" y2="{fy:.1f}" stroke="black" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x0p+PW-4}" y="{fy-4:.1f}" text-anchor="end">f32</text>')
        for cal in CALIBS:
            pts = sorted((r["bits"], 100 * r["top1"]) for r in mr if r["calib"] == cal)
            if not pts:
                continue
            d = " ".join(f"{X(b):.1f},{Y(v):.1f}" for b, v in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colors[cal]}" stroke-width="1.5"/>')
            for b, v in pts:
                out.append(f'<circle cx="{X(b):.1f}" cy="{Y(v):.1f}" r="3" fill="{colors[cal]}"/>')
    for i, cal in enumerate(CALIBS):
        x = L + len(models) * (PW + G)
        out.append(f'<text x="{x}" y="{T+20+16*i}" fill="{colors[cal]}">{cal}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vitkit", default=os.path.join(SRC, "build/vitkit"))
    ap.add_argument("--out", default=os.path.join(SRC, "docs/quantization"))
    ap.add_argument("--limit", type=int, default=2000, help="test images compared (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--calibs", nargs="*", default=CALIBS, help="calibrators (dynamic: per-token inputs)")
    ap.add_argument("--append", action="store_true", help="add the rows to OUT/bits.csv instead of replacing it")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from OUT/bits.csv")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    csv_path = os.path.join(a.out, "bits.csv")
    if a.plot_only:
        with open(csv_path) as f:
            rows = [{k: (float(v) if k not in ("model", "spec", "calib") else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
        svg_plot(rows, os.path.join(a.out, "bits.svg"))
        return
    rows = []
    if a.append and os.path.exists(csv_path):
        with open(csv_path) as f:
            rows = [{k: (float(v) if k not in ("model", "spec", "calib") else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.models:
            jobs = [(b, c, spec_of(b, c)) for c in a.calibs for b in BITS] + [(0, "", s) for s in EXTRA]
            for bits, calib, spec in jobs:
                r = run(a.vitkit, os.path.join(SRC, m), spec, a.limit, a.threads, tmp)
                r["bits"], r["calib"] = bits, calib
                print(f"{r['model']} {spec}: top-1 {100*r['top1']:.2f}% (f32 {100*r['top1_orig']:.2f}%), "
                      f"agreement {100*r['agreement']:.2f}%, KL {r['kl_mean']:.2e}, {r['file_bytes']} B",
                      file=sys.stderr, flush=True)
                rows.append(r)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(a.out, "bits.md"), "w") as f:
        f.write("| model | pass | top-1 | f32 top-1 | Δ points | agreement | KL mean | file | of f32 |\n")
        f.write("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['model']} | `{r['spec']}` | {100*r['top1']:.2f}% | {100*r['top1_orig']:.2f}% | "
                    f"{100*(r['top1']-r['top1_orig']):+.2f} | {100*r['agreement']:.2f}% | {r['kl_mean']:.2e} | "
                    f"{r['file_bytes']/2**10:.0f} KiB | {r['file_bytes']/r['orig_bytes']:.3f} |\n")
    svg_plot(rows, os.path.join(a.out, "bits.svg"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What each compression pass costs: file size against top-1, agreement and
KL with the original, on the whole Fashion-MNIST test set, for the shipped
models. Runs `vitkit compress MODEL --pass SPEC --data fashion-mnist
--compare-limit 0 --json` per pass and writes a CSV, a markdown table and an
SVG plot (file size against top-1) into the output folder.

    bench/compress_study.py [--vitkit build/vitkit] [--out docs/compression] [--threads 2]
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
SPECS = ["bf16", "f16", "round:decimals=3", "round:decimals=2", "round:decimals=2,activations=true",
         "round:decimals=1", "round:decimals=1,activations=true"]


def run(vitkit, model, spec, threads, tmp):
    out = os.path.join(tmp, "out.safetensors")
    cmd = [vitkit, "compress", model, "--pass", spec, "-o", out, "--data", "fashion-mnist", "--compare-limit", "0",
           "--threads", str(threads), "--json", "-q"]
    j = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    c = j["compare"]
    return {"model": os.path.basename(model), "pass": spec, "file_bytes": os.path.getsize(out),
            "orig_bytes": os.path.getsize(model), "top1_orig": c["a"]["top1"], "top1": c["b"]["top1"],
            "agreement": c["agreement"], "kl_mean": c["kl"]["mean"], "kl_p99": c["kl"]["p99"],
            "max_abs_logit_diff": c["max_abs_logit_diff"], "images": c["images"]}


def svg_plot(rows, path):
    """File size (MiB, x) against top-1 (%, y), a series per model, points labelled."""
    W, H, L, R, T, B = 760, 440, 70, 200, 30, 50
    xs = [r["file_bytes"] / 2**20 for r in rows] + [r["orig_bytes"] / 2**20 for r in rows]
    ys = [100 * r["top1"] for r in rows] + [100 * r["top1_orig"] for r in rows]
    x0, x1 = 0, max(xs) * 1.05
    y0, y1 = min(ys) - 0.5, max(ys) + 0.3
    X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - R)
    Y = lambda v: H - B - (v - y0) / (y1 - y0) * (H - T - B)
    colors = ["#1f77b4", "#d62728"]
    placed = []  # label positions so far: a label that would overlap one moves down

    def label_at(x, y):
        while any(abs(x - px) < 60 and abs(y - py) < 11 for px, py in placed):
            y += 11
        placed.append((x, y))
        return y
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
           f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">file size (MiB)</text>',
           f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">'
           'Fashion-MNIST test top-1 (%)</text>']
    for i in range(6):
        v = x0 + (x1 - x0) * i / 5
        out.append(f'<text x="{X(v):.1f}" y="{H-B+15}" text-anchor="middle">{v:.1f}</text>')
        w = y0 + (y1 - y0) * i / 5
        out.append(f'<text x="{L-6}" y="{Y(w)+4:.1f}" text-anchor="end">{w:.1f}</text>')
        out.append(f'<line x1="{L}" y1="{Y(w):.1f}" x2="{W-R}" y2="{Y(w):.1f}" stroke="#ddd"/>')
    for k, model in enumerate(sorted({r["model"] for r in rows})):
        mr = [r for r in rows if r["model"] == model]
        c = colors[k % 2]
        ox, oy = X(mr[0]["orig_bytes"] / 2**20), Y(100 * mr[0]["top1_orig"])
        out.append(f'<rect x="{ox-4:.1f}" y="{oy-4:.1f}" width="8" height="8" fill="{c}"/>')
        out.append(f'<text x="{ox+7:.1f}" y="{oy+4:.1f}" fill="{c}">f32</text>')
        for r in mr:
            px, py = X(r["file_bytes"] / 2**20), Y(100 * r["top1"])
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{c}"/>')
            label = r["pass"].replace("round:decimals=", "d").replace(",activations=true", "+inputs")
            ly = label_at(px + 7, py + 4)
            out.append(f'<text x="{px+7:.1f}" y="{ly:.1f}" fill="{c}">{label}</text>')
        out.append(f'<text x="{W-R+20}" y="{T+20+18*k}" fill="{c}">{model}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vitkit", default=os.path.join(SRC, "build/vitkit"))
    ap.add_argument("--out", default=os.path.join(SRC, "docs/compression"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from OUT/passes.csv")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.plot_only:
        with open(os.path.join(a.out, "passes.csv")) as f:
            rows = [{k: (v if k in ("model", "pass") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
        svg_plot(rows, os.path.join(a.out, "passes.svg"))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in MODELS:
            for spec in SPECS:
                r = run(a.vitkit, os.path.join(SRC, m), spec, a.threads, tmp)
                print(f"{r['model']} {spec}: {r['file_bytes']} B, top-1 {100*r['top1']:.2f}% "
                      f"(f32 {100*r['top1_orig']:.2f}%), agreement {100*r['agreement']:.2f}%, KL {r['kl_mean']:.2e}",
                      file=sys.stderr)
                rows.append(r)
    with open(os.path.join(a.out, "passes.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(a.out, "passes.md"), "w") as f:
        f.write("| model | pass | file | of f32 | top-1 | f32 top-1 | agreement | KL mean | KL p99 | max abs logit diff |\n")
        f.write("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['model']} | `{r['pass']}` | {r['file_bytes']/2**20:.2f} MiB | "
                    f"{r['file_bytes']/r['orig_bytes']:.3f} | {100*r['top1']:.2f}% | {100*r['top1_orig']:.2f}% | "
                    f"{100*r['agreement']:.2f}% | {r['kl_mean']:.2e} | {r['kl_p99']:.2e} | "
                    f"{r['max_abs_logit_diff']:.3f} |\n")
    svg_plot(rows, os.path.join(a.out, "passes.svg"))


if __name__ == "__main__":
    main()

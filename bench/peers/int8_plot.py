"""SVG bar chart of a bench/peers/run.sh --precision fp32,int8 run (standard library only):
one panel per (model, batch, threads) case, a group of bars per runtime, fp32 and
int8 side by side; batch 1 as latency (ms, lower is better), larger batches as
images/s (higher is better), each bar labelled with its value.

usage: /usr/bin/python3 int8_plot.py RESULTS_DIR/summary.json -o OUT.svg"""
import argparse
import json

COLORS = {"fp32": "#9ecae1", "int8": "#08519c"}
NAMES = {"vitkit": "vitkit", "onnxruntime": "ONNX Runtime", "pytorch": "PyTorch", "pytorch-openblas": "PyTorch+OpenBLAS"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summary")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    with open(a.summary) as f:
        doc = json.load(f)
    cases, order = {}, []
    for r in doc["rows"]:
        key = (r["model"], r["batch"], r["threads"])
        if key not in cases:
            cases[key] = {}
            order.append(key)
        for rt, s in r["runtimes"].items():
            if s:
                cases[key].setdefault(rt, {})[r["precision"]] = s["median_ms"]
    PW, PH, L, T, B, GAP = 380, 300, 60, 40, 60, 30
    W, H = len(order) * (PW + GAP) + GAP, PH + T + B + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for k, key in enumerate(order):
        model, batch, threads = key
        latency = batch == 1
        ox = GAP + k * (PW + GAP)
        rts = [rt for rt in ("vitkit", "onnxruntime", "pytorch-openblas", "pytorch") if rt in cases[key]]
        vals = {rt: {pr: (ms if latency else batch / (ms * 1e-3)) for pr, ms in cases[key][rt].items()} for rt in rts}
        vmax = max(v for d in vals.values() for v in d.values()) * 1.15
        Y = lambda v: T + PH - v / vmax * PH  # noqa: E731
        title = f"{model}, batch {batch}, {threads} threads: " + ("latency (ms, lower is better)" if latency
                                                                 else "images/s (higher is better)")
        out.append(f'<text x="{ox + PW / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
        out.append(f'<line x1="{ox + L}" y1="{T + PH}" x2="{ox + PW}" y2="{T + PH}" stroke="black"/>')
        out.append(f'<line x1="{ox + L}" y1="{T}" x2="{ox + L}" y2="{T + PH}" stroke="black"/>')
        for i in range(6):
            v = vmax * i / 5
            out.append(f'<line x1="{ox + L}" y1="{Y(v):.1f}" x2="{ox + PW}" y2="{Y(v):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{ox + L - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
        gw = (PW - L) / max(1, len(rts))
        bw = gw * 0.32
        for j, rt in enumerate(rts):
            gx = ox + L + j * gw + gw * 0.15
            for m, pr in enumerate(("fp32", "int8")):
                if pr not in vals[rt]:
                    continue
                v = vals[rt][pr]
                x = gx + m * (bw + 4)
                out.append(f'<rect x="{x:.1f}" y="{Y(v):.1f}" width="{bw:.1f}" height="{T + PH - Y(v):.1f}" '
                           f'fill="{COLORS[pr]}"/>')
                out.append(f'<text x="{x + bw / 2:.1f}" y="{Y(v) - 4:.1f}" text-anchor="middle">'
                           f'{v:.1f}</text>' if v < 100 else
                           f'<text x="{x + bw / 2:.1f}" y="{Y(v) - 4:.1f}" text-anchor="middle">{v:.0f}</text>')
            out.append(f'<text x="{gx + bw + 2:.1f}" y="{T + PH + 16}" text-anchor="middle">{NAMES.get(rt, rt)}</text>')
    ly = H - 18
    for m, pr in enumerate(("fp32", "int8")):
        out.append(f'<rect x="{GAP + m * 80}" y="{ly - 9}" width="12" height="12" fill="{COLORS[pr]}"/>')
        out.append(f'<text x="{GAP + m * 80 + 16}" y="{ly + 1}">{pr}</text>')
    meta = doc.get("meta", {})
    out.append(f'<text x="{W - GAP}" y="{ly + 1}" text-anchor="end" fill="#555">{meta.get("cpu", "")}, '
               f'{meta.get("cores", "?")} cores, {meta.get("started", "")}; medians of {meta.get("rounds", "?")} '
               f'interleaved rounds x {meta.get("reps", "?")} reps</text>')
    out.append("</svg>")
    with open(a.output, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Pruning studies on the shipped models (docs/pruning.md), all through the CLI:

  heads     prune-heads ratio 0 .. 0.75 (l2 and taylor scores, global), one-shot
            and iterative (steps of 0.25 of the original heads), each with and
            without fine-tuning: parameters, MACs, top-1, top-3 on the test split.
  mlp       prune-mlp ratio 0 .. 0.75 (l2, taylor), one-shot, with and without fine-tuning.
  sparse    prune sparsity 0.1 .. 0.9, l1 against random, layer against global,
            before fine-tuning (all) and after (l1 and random, layer scope).
  latency   bench of physically pruned models against their MACs, in one
            interleaved run (vit_b_16 at batch 1 with random weights, and the
            default model at batch 256).

Fine-tuning: `vitkit train --init` with FT_CONFIG's keys (one epoch of the
first --ft-images training images, AdamW lr 2e-4 cosine to 1e-5, no warmup);
nothing is chosen from the test numbers (the settings are fixed beforehand).
Writes OUT/<study>.csv, OUT/<study>.md and OUT/<study>.svg.

    bench/prune_study.py [--vitkit build/vitkit] [--out docs/pruning] [--studies heads,mlp,sparse,latency]
                         [--models tiny,small] [--limit 10000] [--ft-images 12000] [--threads 2]
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
MODELS = {"tiny": "models/vit-tiny-fmnist.safetensors", "small": "models/vit-small-fmnist.safetensors"}
FT_CONFIG = """[data]
dataset = "fashion-mnist"
train_limit = {images}
test_limit = 1000

[train]
epochs = 1
batch = 64
lr = 2e-4
min_lr = 1e-5
warmup_epochs = 0
weight_decay = 0.05
label_smoothing = 0.1
clip_grad = 1.0
seed = 7

[augment]
crop_padding = 1
hflip = 0.5
"""


class Runner:
    def __init__(self, a, tmp):
        self.a, self.tmp, self.n = a, tmp, 0

    def cli(self, *args):
        cmd = [self.a.vitkit, *args, "--threads", str(self.a.threads), "--json", "-q"]
        t = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)}: {p.stderr}")
        print(f"  {time.time() - t:6.1f} s  {' '.join(args)[:150]}", file=sys.stderr)
        return json.loads(p.stdout)

    def path(self, stem):
        self.n += 1
        return os.path.join(self.tmp, f"{self.n}-{stem}.safetensors")

    def compress(self, model, specs, calib=False):
        out = self.path("c")
        args = ["compress", model, "-o", out]
        for s in specs:
            args += ["--pass", s]
        if calib:
            args += ["--data", "fashion-mnist", "--calib", "256", "--compare-limit", "1"]
        return out, self.cli(*args)

    def finetune(self, model):
        cfg = os.path.join(self.tmp, "ft.toml")
        with open(cfg, "w") as f:
            f.write(FT_CONFIG.format(images=self.a.ft_images))
        out = self.path("ft")
        t = time.time()
        self.cli("train", "--config", cfg, "--init", model, "-o", out)
        return out, time.time() - t

    def score(self, model):
        e = self.cli("eval", model, "--data", "fashion-mnist", "--limit", str(self.a.limit))
        i = self.cli("info", model)
        return {"params": i["parameters"], "macs": i["macs"], "file_bytes": i["file_bytes"], "top1": e["top1"],
                "top3": e["top3"], "heads": sum(b["heads"] for b in i["blocks"]),
                "mlp": sum(b["mlp_dim"] for b in i["blocks"])}


def write(rows, out, name, cols):
    with open(os.path.join(out, name + ".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c, "")
                cells.append(f"{100 * v:.2f}%" if c in ("top1", "top3") else f"{v:.3f}" if isinstance(v, float)
                             else str(v))
            f.write("| " + " | ".join(cells) + " |\n")


def study_structured(r, a, unit):
    """unit: heads or mlp. One-shot and (heads) iterative, with and without fine-tuning."""
    pass_name = "prune-heads" if unit == "heads" else "prune-mlp"
    rows = []
    for mname in a.models:
        model = os.path.join(SRC, MODELS[mname])
        base = r.score(model)
        for score in ("l2", "taylor"):
            for mode in (["oneshot", "iterative"] if unit == "heads" else ["oneshot"]):
                prev = model
                for step, ratio in enumerate((0.0, 0.25, 0.5, 0.75)):
                    row = {"model": mname, "score": score, "mode": mode, "ratio": ratio}
                    if ratio == 0:
                        rows.append({**row, **base, "finetuned": False})
                        continue
                    if mode == "oneshot":
                        out, _ = r.compress(model, [f"{pass_name}:ratio={ratio},score={score}"], score != "l2")
                    else:  # a quarter of the original heads more at each step, from the last (fine-tuned) step
                        total = base["heads"]
                        out, _ = r.compress(prev, [f"{pass_name}:count={total // 4},score={score}"], score != "l2")
                    s = r.score(out)
                    rows.append({**row, **s, "finetuned": False})
                    ft, secs = r.finetune(out)
                    s = r.score(ft)
                    rows.append({**row, **s, "finetuned": True, "ft_seconds": round(secs, 1)})
                    prev = ft
                    print(f"{unit} {mname} {score} {mode} {ratio}: {rows[-2]['top1']:.4f} -> {rows[-1]['top1']:.4f}",
                          file=sys.stderr)
    return rows


def study_sparse(r, a):
    rows = []
    for mname in a.models:
        model = os.path.join(SRC, MODELS[mname])
        base = r.score(model)
        for method in ("l1", "random"):
            for scope in ("layer", "global"):
                rows.append({"model": mname, "method": method, "scope": scope, "sparsity": 0.0, **base,
                             "finetuned": False})
                for s10 in range(1, 10):
                    sp = s10 / 10
                    out, _ = r.compress(model, [f"prune:sparsity={sp},method={method},scope={scope}"])
                    row = {"model": mname, "method": method, "scope": scope, "sparsity": sp}
                    rows.append({**row, **r.score(out), "finetuned": False})
                    if scope == "layer" and sp in (0.5, 0.7, 0.9):
                        ft, secs = r.finetune(out)
                        rows.append({**row, **r.score(ft), "finetuned": True, "ft_seconds": round(secs, 1)})
                    print(f"sparse {mname} {method} {scope} {sp}: {rows[-1]['top1']:.4f}", file=sys.stderr)
    return rows


def study_latency(r, a):
    """One bench run per model family: the unpruned and pruned files side by side (interleaved rounds)."""
    rows = []
    cases = [("vit_b_16", "vit_b_16", 1, ["prune-heads:ratio=0.5,scope=layer", "prune-mlp:ratio=0.5,scope=layer"]),
             ("tiny", os.path.join(SRC, MODELS["tiny"]), 256, None)]
    for name, model, batch, specs in cases:
        files = [model]
        if specs:
            files.append(r.compress(model, specs[:1])[0])
            files.append(r.compress(model, specs[1:])[0])
            files.append(r.compress(model, specs)[0])
        else:
            for ratio in (0.25, 0.5, 0.75):
                files.append(r.compress(model, [f"prune-heads:ratio={ratio},scope=layer",
                                                f"prune-mlp:ratio={ratio},scope=layer"])[0])
        b = r.cli("bench", *files, "--batch", str(batch), "--reps", "7", "--warmup", "2")
        base = None
        for f, row in zip(files, b["rows"]):
            i = r.cli("info", f)
            ms = row["median_ms"] if "median_ms" in row else sorted(row["times_ms"])[len(row["times_ms"]) // 2]
            if base is None:
                base = (i["macs"], ms)
            rows.append({"model": name, "batch": batch, "heads": sum(x["heads"] for x in i["blocks"]),
                         "mlp": sum(x["mlp_dim"] for x in i["blocks"]), "macs": i["macs"], "median_ms": ms,
                         "mac_reduction": base[0] / i["macs"], "speedup": base[1] / ms})
            rows[-1]["speedup_share"] = ((rows[-1]["speedup"] - 1) / (rows[-1]["mac_reduction"] - 1)
                                         if rows[-1]["mac_reduction"] > 1 else 1.0)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vitkit", default=os.path.join(SRC, "build", "vitkit"))
    ap.add_argument("--out", default=os.path.join(SRC, "docs", "pruning"))
    ap.add_argument("--studies", default="heads,mlp,sparse,latency")
    ap.add_argument("--models", default="tiny")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--ft-images", type=int, default=12000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.models = a.models.split(",")
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = Runner(a, tmp)
        for st in a.studies.split(","):
            if st in ("heads", "mlp"):
                rows = study_structured(r, a, st)
                cols = ["model", "score", "mode", "ratio", "finetuned", "heads", "mlp", "params", "macs", "top1",
                        "top3", "ft_seconds"]
                write(rows, a.out, st, cols)
                panels = []
                for m in a.models:
                    series = {}
                    for x in rows:
                        if x["model"] == m:
                            k = f"{x['score']} {x['mode']}{' +ft' if x['finetuned'] else ''}"
                            series.setdefault(k, []).append((x["ratio"], 100 * x["top1"]))
                    for k in list(series):  # the unpruned point starts every curve
                        if "+ft" in k:
                            series[k] = [p for p in series[k.replace(" +ft", "")] if p[0] == 0] + series[k]
                    panels.append((m, series))
                svgplot.line_panels(panels, os.path.join(a.out, st + ".svg"), f"share of {st} removed", "top-1 (%)",
                                    f"prune-{st}: test top-1 against the share removed")
            elif st == "sparse":
                rows = study_sparse(r, a)
                write(rows, a.out, "sparse", ["model", "method", "scope", "sparsity", "finetuned", "params",
                                              "file_bytes", "top1", "top3", "ft_seconds"])
                panels = []
                for m in a.models:
                    series = {}
                    for x in rows:
                        if x["model"] == m and (not x["finetuned"] or x["sparsity"] == 0):
                            series.setdefault(f"{x['method']} {x['scope']}", []).append((x["sparsity"], 100 * x["top1"]))
                        if x["model"] == m and x["finetuned"]:
                            series.setdefault(f"{x['method']} layer +ft", []).append((x["sparsity"], 100 * x["top1"]))
                    panels.append((m, series))
                svgplot.line_panels(panels, os.path.join(a.out, "sparse.svg"), "sparsity", "top-1 (%)",
                                    "prune: test top-1 against sparsity")
            elif st == "latency":
                rows = study_latency(r, a)
                write(rows, a.out, "latency", ["model", "batch", "heads", "mlp", "macs", "median_ms",
                                               "mac_reduction", "speedup", "speedup_share"])
                panels = [(m, {"measured": [(x["mac_reduction"], x["speedup"]) for x in rows if x["model"] == m],
                               "speed = MACs": [(x["mac_reduction"], x["mac_reduction"]) for x in rows
                                                if x["model"] == m]})
                          for m in sorted({x["model"] for x in rows})]
                svgplot.line_panels(panels, os.path.join(a.out, "latency.svg"), "MAC reduction (x)", "speedup (x)",
                                    "physically pruned models: speedup against MACs removed")
            else:
                raise SystemExit(f"unknown study {st}")


if __name__ == "__main__":
    main()

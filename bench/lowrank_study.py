#!/usr/bin/env python3
"""Low-rank and distillation study (docs/lowrank.md), all through the CLI.

  methods  for the default model and the teacher: lowrank params=P (P = 0.5, 0.33,
           0.25 of each encoder linear layer's weights) with method svd, asvd and
           whiten (calibration: 512 class-balanced training images), scored on the
           test split; then the P = 0.33 models fine-tuned 2 epochs, distilled from
           the original (configs/recipes/lowrank-whiten-third.toml's step, the
           method swapped), scored again. The default model's whiten run is
           configs/recipes/lowrank-chain.toml, whose last step (int8) gives the chain.
  distill  the student configs/students/vit-mini-fmnist.toml trained from scratch
           and distilled from the teacher (vit-mini-fmnist-distill.toml), seeds 0 and 1.
Settings were fixed before any result was seen; each model's test split is scored
once. Writes OUT/methods.csv, distill.csv, lowrank.md (tables) and the plots
lowrank_methods.svg, distill.svg.

    bench/lowrank_study.py methods [--models tiny,small] [--finetune svd,asvd,whiten] [--threads 1]
    bench/lowrank_study.py distill [--seeds 0,1] [--threads 1]
    bench/lowrank_study.py report      # the tables and plots again from the CSVs
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svgplot  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"tiny": os.path.join(SRC, "models/vit-tiny-fmnist.safetensors"),
          "small": os.path.join(SRC, "models/vit-small-fmnist.safetensors")}
RECIPE = os.path.join(SRC, "configs/recipes/lowrank-whiten-third.toml")
CHAIN = os.path.join(SRC, "configs/recipes/lowrank-chain.toml")
STUDENT = os.path.join(SRC, "configs/students/vit-mini-fmnist.toml")
STUDENT_KD = os.path.join(SRC, "configs/students/vit-mini-fmnist-distill.toml")
PARAMS = [0.5, 0.33, 0.25]
METHODS = ["svd", "asvd", "whiten"]


def cli(a, *args):
    cmd = [a.vitkit, *args, "--threads", str(a.threads), "--json", "-q"]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=SRC)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {p.stderr}")
    print(f"  {time.time() - t:7.1f} s  {' '.join(args)[:160]}", file=sys.stderr, flush=True)
    return json.loads(p.stdout)


def append(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def test_eval(a, model):
    e = cli(a, "eval", model, "--data", "fashion-mnist")
    return e["top1"], e["top3"]


def lowrank_record(j):
    return next(p for p in j["passes"] if p["pass"] == "lowrank")


def methods(a, tmp):
    out = os.path.join(a.out, "methods.csv")
    for name in a.models.split(","):
        model = MODELS[name]
        base1, base3 = test_eval(a, model)
        for P in PARAMS:
            for m in METHODS:
                spec = f"lowrank:params={P},method={m}"
                o = os.path.join(tmp, f"{name}-{m}-{P}.safetensors")
                j = cli(a, "compress", model, "--pass", spec, "--data", "fashion-mnist", "--calib", "512",
                        "--compare-limit", "500", "-o", o)
                rec = lowrank_record(j)
                t1, t3 = test_eval(a, o)
                row = {"model": name, "method": m, "params": P, "stage": "lowrank", "epochs": 0,
                       "linear_before": rec["weights_before"], "linear_after": rec["weights_after"],
                       "model_params": j["steps"][-1]["params"], "file_bytes": os.path.getsize(o),
                       "top1": t1, "top3": t3, "orig_top1": base1, "orig_top3": base3,
                       "latency_ms": j["steps"][-1]["latency_ms"], "orig_latency_ms": j["steps"][0]["latency_ms"],
                       "agreement": j["compare"]["agreement"] if "compare" in j else "", "minutes": 0}
                append(out, row)
                print(f"{name} {spec}: {100 * t1:.2f}% (original {100 * base1:.2f}%)", flush=True)
        for m in a.finetune.split(","):
            if not m:
                continue
            text = open(RECIPE).read().replace('method = "whiten"', f'method = "{m}"')
            recipe = os.path.join(tmp, f"{name}-{m}.toml")
            open(recipe, "w").write(text)
            o = os.path.join(tmp, f"{name}-{m}-ft.safetensors")
            t = time.time()
            j = cli(a, "compress", model, "--recipe", recipe, "--data", "fashion-mnist", "--calib", "512",
                    "--compare-limit", "500", "-o", o)
            minutes = round((time.time() - t) / 60, 2)
            rec = lowrank_record(j)

            def row(stage, path, jj, first):
                t1, t3 = test_eval(a, path)
                append(out, {"model": name, "method": m, "params": 0.33, "stage": stage, "epochs": 2,
                             "linear_before": rec["weights_before"], "linear_after": rec["weights_after"],
                             "model_params": jj["steps"][-1]["params"], "file_bytes": os.path.getsize(path),
                             "top1": t1, "top3": t3, "orig_top1": base1, "orig_top3": base3,
                             "latency_ms": jj["steps"][-1]["latency_ms"], "orig_latency_ms": first["latency_ms"],
                             "agreement": jj["compare"]["agreement"], "minutes": minutes})
                return t1
            t1 = row("finetuned", o, j, j["steps"][0])
            stage = "finetuned"
            if name == "tiny" and m == "whiten":  # the chain (configs/recipes/lowrank-chain.toml): then int8
                c = os.path.join(tmp, f"{name}-chain.safetensors")
                # Its comparison is against the fine-tuned model; the agreement with the original is recomputed.
                jc = cli(a, "compress", o, "--pass", "quantize:bits=8", "--data", "fashion-mnist",
                         "--compare-limit", "500", "-o", c)
                jo = cli(a, "analyze", "compare", model, c, "--data", "fashion-mnist", "--limit", "500")
                jc["compare"] = {"agreement": jo["agreement"]}
                t1 = row("chain-int8", c, jc, j["steps"][0])
                stage = "chain-int8"
            print(f"{name} {m} fine-tuned ({stage}): {100 * t1:.2f}% (original {100 * base1:.2f}%)", flush=True)


def distill(a, tmp):
    out = os.path.join(a.out, "distill.csv")
    teacher = MODELS["small"]
    t1t, t3t = test_eval(a, teacher)
    bt = cli(a, "bench", teacher, "--batch", "1")
    for seed in [int(s) for s in a.seeds.split(",")]:
        for kind, config in (("scratch", STUDENT), ("distilled", STUDENT_KD)):
            text = re.sub(r"(?m)^seed = \d+", f"seed = {seed}", open(config).read())
            text = text.replace('teacher = "models/', f'teacher = "{SRC}/models/')
            cfg = os.path.join(tmp, f"student-{kind}-{seed}.toml")
            open(cfg, "w").write(text)
            o = os.path.join(tmp, f"student-{kind}-{seed}.safetensors")
            t = time.time()
            cli(a, "train", "--config", cfg, "-o", o)
            minutes = round((time.time() - t) / 60, 2)
            t1, t3 = test_eval(a, o)
            bs = cli(a, "bench", o, "--batch", "1")
            info = cli(a, "info", o)
            append(out, {"kind": kind, "seed": seed, "params": info["parameters"],
                         "teacher_params": cli(a, "info", teacher)["parameters"], "top1": t1, "top3": t3,
                         "teacher_top1": t1t, "teacher_top3": t3t, "latency_ms": bench_ms(bs),
                         "teacher_latency_ms": bench_ms(bt), "minutes": minutes})
            print(f"student {kind} seed {seed}: {100 * t1:.2f}%", flush=True)


def bench_ms(b):
    return b["rows"][0]["median_ms"]


def read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [{k: (float(v) if re.fullmatch(r"-?[0-9.e+-]+", v or "x") else v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def report(a):
    rows, drows = read(os.path.join(a.out, "methods.csv")), read(os.path.join(a.out, "distill.csv"))
    md = []
    if rows:
        md.append("| model | method | linear weights kept | cut | stage | top-1 | Δ original | top-3 | agreement | "
                  "ms batch 1 (original) | file |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            md.append(f"| {r['model']} | {r['method']} | {r['params']} | {r['linear_before'] / r['linear_after']:.2f}× | "
                      f"{r['stage']}{' (' + str(int(r['epochs'])) + ' ep)' if r['epochs'] else ''} | "
                      f"{100 * r['top1']:.2f}% | {100 * (r['top1'] - r['orig_top1']):+.2f} | {100 * r['top3']:.2f}% | "
                      f"{100 * r['agreement']:.1f}% | {r['latency_ms']:.3f} ({r['orig_latency_ms']:.3f}) | "
                      f"{int(r['file_bytes']) // 1024} KiB |" if r["agreement"] != "" else
                      f"| {r['model']} | {r['method']} | {r['params']} | | {r['stage']} | {100 * r['top1']:.2f}% | | | | | |")
        panels = []
        for name in dict.fromkeys(r["model"] for r in rows):
            rs = [r for r in rows if r["model"] == name]
            series = {}
            for m in METHODS:
                pts = sorted((r["linear_before"] / r["linear_after"], 100 * r["top1"]) for r in rs
                             if r["method"] == m and r["stage"] == "lowrank")
                if pts:
                    series[f"{m}"] = pts
                ft = [(r["linear_before"] / r["linear_after"], 100 * r["top1"]) for r in rs
                      if r["method"] == m and r["stage"] == "finetuned"]
                if ft:
                    series[f"{m} + 2 epochs"] = ft
            cuts = [r["linear_before"] / r["linear_after"] for r in rs]
            series["original"] = [(min(cuts), 100 * rs[0]["orig_top1"]), (max(cuts), 100 * rs[0]["orig_top1"])]
            series["original − 0.5"] = [(min(cuts), 100 * rs[0]["orig_top1"] - 0.5),
                                        (max(cuts), 100 * rs[0]["orig_top1"] - 0.5)]
            panels.append((f"{name}: Fashion-MNIST test", series))
        svgplot.line_panels(panels, os.path.join(a.out, "lowrank_methods.svg"), "linear weights cut (×)",
                            "top-1 %", title="Low-rank methods, before and after fine-tuning")
    if drows:
        md.append("\n| student | seed | params | teacher ÷ student | top-1 | top-3 | ms batch 1 | speedup | minutes |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in drows:
            md.append(f"| {r['kind']} | {int(r['seed'])} | {int(r['params']):,} | "
                      f"{r['teacher_params'] / r['params']:.1f}× | {100 * r['top1']:.2f}% | {100 * r['top3']:.2f}% | "
                      f"{r['latency_ms']:.3f} | {r['teacher_latency_ms'] / r['latency_ms']:.2f}× | {r['minutes']} |")
        t = drows[0]
        md.append(f"| teacher | | {int(t['teacher_params']):,} | 1.0× | {100 * t['teacher_top1']:.2f}% | "
                  f"{100 * t['teacher_top3']:.2f}% | {t['teacher_latency_ms']:.3f} | 1.00× | |")
        series = {k: [(int(r["seed"]), 100 * r["top1"]) for r in drows if r["kind"] == k]
                  for k in ("scratch", "distilled")}
        svgplot.line_panels([("vit-mini-fmnist (student), Fashion-MNIST test", series)],
                            os.path.join(a.out, "distill.svg"), "seed", "top-1 %",
                            title="Student from scratch against distilled from the teacher")
    with open(os.path.join(a.out, "lowrank.md"), "w") as f:
        f.write("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["methods", "distill", "report"])
    ap.add_argument("--vitkit", default=os.path.join(SRC, "build/vitkit"))
    ap.add_argument("--out", default=os.path.join(SRC, "docs/lowrank"))
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--finetune", default="svd,asvd,whiten", help="methods fine-tuned at P = 0.33")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="vitkit-lowrank-")
    if a.phase == "methods":
        methods(a, tmp)
    elif a.phase == "distill":
        distill(a, tmp)
    report(a)


if __name__ == "__main__":
    main()

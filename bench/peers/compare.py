"""Summarises a bench/peers/run.sh results directory: per (model, mode, batch,
threads, precision) each runtime's median, min and max over every rep of every
round, and the ratios vitkit/peer of the medians (time: below 1 vitkit is
faster; images/s is the inverse). Writes summary.md and summary.json there and
prints the markdown.

usage: /usr/bin/python3 compare.py RESULTS_DIR"""
import csv
import json
import os
import statistics
import sys


def times_of(runtime, path):
    """The per-rep times (ms) a runtime's burst wrote."""
    with open(path) as f:
        j = json.load(f)
    if runtime == "vitkit":
        return j["rows"][0]["times_ms"]
    return j["times_ms"]


def fmt_ms(v):
    return "n/a" if v is None else (f"{v:.1f}" if v >= 100 else f"{v:.2f}")


def collect(out):
    """{case key: {runtime: {"times": [...], "status": set()}}} and the case order."""
    cases, order = {}, []
    with open(os.path.join(out, "runs.tsv")) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            key = (r["model"], r["mode"], int(r["batch"]), int(r["threads"]), r["precision"])
            if key not in cases:
                cases[key] = {}
                order.append(key)
            e = cases[key].setdefault(r["runtime"], {"times": [], "status": set(), "file": r["file"]})
            e["status"].add(r["status"])
            if r["status"] == "ok":
                e["times"] += times_of(r["runtime"], r["raw"])
    return cases, order


def stats(times):
    if not times:
        return None
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "n": len(times)}


def command(key, meta):
    model, mode, batch, threads, precision = key
    c = (f"bench/peers/run.sh --model {model} --batch {batch} --threads {threads} --precision {precision} "
         f"--rounds {meta['rounds']} --reps {meta['reps']}")
    return c + (" --train" if mode == "train" else "")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    with open(os.path.join(out, "meta.json")) as f:
        meta = json.load(f)
    cases, order = collect(out)
    runtimes = []
    for key in order:
        for rt in cases[key]:
            if rt not in runtimes:
                runtimes.append(rt)
    peers = [rt for rt in runtimes if rt != "vitkit"]
    rows = []
    for key in order:
        model, mode, batch, threads, precision = key
        per = {rt: stats(cases[key][rt]["times"]) if rt in cases[key] else None for rt in runtimes}
        v = per.get("vitkit")
        ratios = {rt: (v["median_ms"] / per[rt]["median_ms"] if v and per[rt] else None) for rt in peers}
        rows.append({"model": model, "mode": mode, "batch": batch, "threads": threads, "precision": precision,
                     "file": next(iter(cases[key].values()))["file"],
                     "runtimes": per, "vitkit_time_ratio": ratios,
                     "vitkit_images_per_s": batch / (v["median_ms"] * 1e-3) if v else None,
                     "command": command(key, meta)})
    head = ["model", "mode", "batch", "threads", "precision"] + [f"{rt} ms" for rt in runtimes] + \
           [f"vitkit/{rt}" for rt in peers] + ["vitkit images/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
    for r in rows:
        cells = [r["model"], r["mode"], str(r["batch"]), str(r["threads"]), r["precision"]]
        cells += [fmt_ms(r["runtimes"][rt]["median_ms"] if r["runtimes"][rt] else None) for rt in runtimes]
        cells += ["n/a" if r["vitkit_time_ratio"][rt] is None else f"{r['vitkit_time_ratio'][rt]:.2f}" for rt in peers]
        cells.append("n/a" if r["vitkit_images_per_s"] is None else f"{r['vitkit_images_per_s']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n\n"
    md += ("Medians (ms per batch: one forward, or one training step with --train) over "
           f"{meta['rounds']} interleaved rounds of {meta['reps']} reps after {meta['warmup']} warmup; "
           "vitkit/X is the ratio of median times (below 1: vitkit is faster).\n")
    md += (f"Machine: {meta['cpu']}, {meta['cores']} cores; load average {meta['load_start']} at the start, "
           f"{meta['load_end']} at the end.\n\nReproduce a row:\n\n")
    md += "".join(f"    {r['command']}\n" for r in rows)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    sys.stdout.write(md)
    sys.stdout.write(f"\n(results in {out})\n")


if __name__ == "__main__":
    main()

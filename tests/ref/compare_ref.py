#!/usr/bin/python3
"""Reference values for tests/compare_test.cpp (analyze/compare.h's compare_logits).

Usage: /usr/bin/python3 tests/ref/compare_ref.py OUTDIR

Writes OUTDIR/compare/logits.safetensors: random pairs of float32 logits
(N images x 10 classes) of two "models" A and B, with labels, in groups that
stress the comparison: B = A plus small noise, near-ties (the two best logits
a few ulps apart, so argmax may flip), large logits (+-80, where a float32
softmax underflows), identical rows (KL exactly 0), exact ties inside a row
(argmax and top-5 rank the lower index first), and B unrelated to A. Beside
them, torch's values computed in float64 from the float32 logits:
  kl            per image, F.kl_div(log_softmax(B), log_softmax(A), log_target=True).sum(-1)
  kl_stats      mean, median, p99 (torch.quantile, linear), max
  max_abs_diff  max |A - B| over images and classes
  counts        agreement (argmax A == argmax B), top-1 and top-5 of A and of B
  class_counts  per true class: images, top-1 of A, top-1 of B
Only Debian's torch is used; no network.
"""
import os

import torch
import torch.nn.functional as F

from _common import out_dir, save_safetensors

CLASSES = 10


def groups(g):
    """(A, B) float32 pairs, group by group."""
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    out = []
    a = 3 * randn(150, CLASSES)                       # B = A + small noise
    out.append((a, a + 0.5 * randn(150, CLASSES)))
    a = 2 * randn(60, CLASSES)                        # near-ties: best two a few ulps apart
    best = a.argmax(-1)
    second = (best + 1 + torch.randint(0, CLASSES - 1, (60,), generator=g)) % CLASSES
    top = a.gather(1, best[:, None]).squeeze(1).float()
    a[torch.arange(60), second] = torch.nextafter(top, torch.full_like(top, -1e9)).double()
    b = a.clone()
    b[torch.arange(60), best] -= 1e-6 * (torch.rand(60, generator=g, dtype=torch.float64) < 0.5)
    out.append((a, b))
    a = torch.empty(60, CLASSES, dtype=torch.float64).uniform_(-80, 80, generator=g)  # large logits
    a[:20, 0], a[20:40, 1] = 80, -80
    b = (a + 5 * randn(60, CLASSES)).clamp(-80, 80)
    out.append((a, b))
    a = 4 * randn(50, CLASSES)                        # identical rows
    out.append((a, a.clone()))
    a = torch.round(randn(30, CLASSES))               # exact ties inside rows (small integers)
    out.append((a, torch.round(randn(30, CLASSES))))
    out.append((3 * randn(50, CLASSES), 3 * randn(50, CLASSES)))  # unrelated
    return [(x.float(), y.float()) for x, y in out]


def main():
    d = out_dir("compare")
    g = torch.Generator().manual_seed(20240611)
    pairs = groups(g)
    a = torch.cat([p[0] for p in pairs])
    b = torch.cat([p[1] for p in pairs])
    n = a.shape[0]
    # Labels: A's prediction for about 60% of the images, a random class otherwise.
    rand_labels = torch.randint(0, CLASSES, (n,), generator=g)
    labels = torch.where(torch.rand(n, generator=g) < 0.6, a.argmax(-1), rand_labels)

    a64, b64 = a.double(), b.double()
    la, lb = F.log_softmax(a64, dim=-1), F.log_softmax(b64, dim=-1)
    kl = F.kl_div(lb, la, reduction="none", log_target=True).sum(-1)
    # Ranks: a stable descending sort puts the lower index first among equal logits.
    order_a = torch.sort(a, dim=-1, descending=True, stable=True).indices
    order_b = torch.sort(b, dim=-1, descending=True, stable=True).indices
    assert torch.equal(order_a[:, 0], a.argmax(-1)) and torch.equal(order_b[:, 0], b.argmax(-1))
    hit1_a, hit1_b = order_a[:, 0] == labels, order_b[:, 0] == labels
    top5_a = (order_a[:, :5] == labels[:, None]).any(-1)
    top5_b = (order_b[:, :5] == labels[:, None]).any(-1)
    agree = order_a[:, 0] == order_b[:, 0]
    counts = torch.tensor([int(agree.sum()), int(hit1_a.sum()), int(hit1_b.sum()), int(top5_a.sum()),
                           int(top5_b.sum())], dtype=torch.int64)
    class_counts = torch.stack([
        torch.bincount(labels, minlength=CLASSES),
        torch.bincount(labels[hit1_a], minlength=CLASSES),
        torch.bincount(labels[hit1_b], minlength=CLASSES)], dim=1)
    kl_stats = torch.stack([kl.mean(), torch.quantile(kl, 0.5), torch.quantile(kl, 0.99), kl.max()])
    save_safetensors(os.path.join(d, "logits.safetensors"), {
        "a": a, "b": b, "labels": labels.to(torch.int32), "kl": kl, "kl_stats": kl_stats,
        "max_abs_diff": (a64 - b64).abs().max().reshape(1), "counts": counts,
        "class_counts": class_counts.to(torch.int64)})
    print(f"compare_ref: {n} images, agreement {int(counts[0])}, KL mean {float(kl.mean()):.6g} "
          f"p99 {float(kl_stats[2]):.6g}, max|A-B| {float((a64 - b64).abs().max()):.6g}")


if __name__ == "__main__":
    main()

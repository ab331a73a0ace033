"""Line plots as plain SVG (no matplotlib on these machines): panels side by
side, each with named series of (x, y) points, axes with ticks, a legend."""

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    step = (hi - lo) / n
    mag = 10 ** len(str(int(step))) / 10 if step >= 1 else 1
    while step < 1 and mag > step:
        mag /= 10
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= step:
            step = m * mag
            break
    start = (lo // step) * step
    t, v = [], start
    while v <= hi + 1e-9:
        if v >= lo - 1e-9:
            t.append(round(v, 10))
        v += step
    return t


def line_panels(panels, path, xlabel, ylabel, title="", ylim=None, width=380, height=320):
    """panels: [(panel title, {series name: [(x, y), ...]})]; writes path."""
    L, T, B, G, LEG = 60, 40, 50, 30, 190
    W = L + len(panels) * (width + G) + LEG
    H = T + height + B
    xs = [x for _, s in panels for pts in s.values() for x, _ in pts]
    ys = [y for _, s in panels for pts in s.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = ylim if ylim else (min(ys), max(ys))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    names = []
    for _, s in panels:
        for n in s:
            if n not in names:
                names.append(n)
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{W}" height="{H}" fill="white"/>']
    if title:
        out.append(f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>')
    for p, (ptitle, series) in enumerate(panels):
        ox = L + p * (width + G)

        def X(x):
            return ox + (x - x0) / (x1 - x0) * width

        def Y(y):
            return T + height - (y - y0) / (y1 - y0) * height

        out.append(f'<rect x="{ox}" y="{T}" width="{width}" height="{height}" fill="none" stroke="#888"/>')
        out.append(f'<text x="{ox + width / 2}" y="{T - 6}" text-anchor="middle">{ptitle}</text>')
        for t in _ticks(x0, x1):
            out.append(f'<line x1="{X(t):.1f}" y1="{T + height}" x2="{X(t):.1f}" y2="{T + height + 4}" stroke="#888"/>')
            out.append(f'<text x="{X(t):.1f}" y="{T + height + 16}" text-anchor="middle">{t:g}</text>')
        for t in _ticks(y0, y1):
            out.append(f'<line x1="{ox}" y1="{Y(t):.1f}" x2="{ox + width}" y2="{Y(t):.1f}" stroke="#eee"/>')
            if p == 0:
                out.append(f'<text x="{ox - 5}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        out.append(f'<text x="{ox + width / 2}" y="{H - 10}" text-anchor="middle">{xlabel}</text>')
        for n, pts in series.items():
            pts = sorted(pts)
            d = " ".join(f"{X(x):.1f},{Y(min(max(y, y0), y1)):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color[n]}" stroke-width="1.8"/>')
            for x, y in pts:
                out.append(f'<circle cx="{X(x):.1f}" cy="{Y(min(max(y, y0), y1)):.1f}" r="2.5" fill="{color[n]}"/>')
    out.append(f'<text transform="translate(14,{T + height / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    lx = L + len(panels) * (width + G)
    for i, n in enumerate(names):
        y = T + 14 + 16 * i
        out.append(f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 18}" y2="{y - 4}" stroke="{color[n]}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 24}" y="{y}">{n}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")

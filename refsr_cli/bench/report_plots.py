"""The report's plots as inline SVG (no plotting library): PSNR against parallax, and speed against quality.

Axes are fitted to the data (a logarithmic axis where the values span more than :data:`LOG_SPAN` times),
each data kind has its own marker shape, and markers of different methods at the same x are set a few
pixels apart (:data:`DODGE_PX`) so that none hides another — the x value in the tooltip stays exact.
"""
from __future__ import annotations

import html
import math
import statistics

from refsr_cli.metrics import mean_of

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
SHAPES = ("circle", "square", "triangle", "diamond", "down")
LOG_SPAN = 8.0
DODGE_PX = 5.0
WIDTH, HEIGHT = 560, 340
MARGIN = (58, 18, 32, 46)       # left, right, top, bottom


def method_colors(report: dict) -> dict[str, str]:
    methods = list(dict.fromkeys(r["method"] for r in report.get("results", [])))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def data_shapes(report: dict) -> dict[str, str]:
    data = list(dict.fromkeys(r["data"] for r in report.get("results", [])))
    return {d: SHAPES[i % len(SHAPES)] for i, d in enumerate(data)}


# ------------------------------------------------------------------------------------------------
# Axes
# ------------------------------------------------------------------------------------------------

def _linear_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 10) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    return [t for t in ticks if lo <= t <= hi]


def fitted_axis(values: list[float], pixels: tuple[float, float], floor: float | None = None,
                least_pad: float = 0.5):
    """``(to_pixel, ticks, log)`` for an axis that spans ``values`` with a margin.

    ``pixels``: screen coordinates of the low and high ends (high < low for a y axis); ``floor``: a value
    the axis never goes below (parallax ≥ 0). Logarithmic when all values are positive and span more than
    :data:`LOG_SPAN` times.
    """
    lo, hi = min(values), max(values)
    log = lo > 0 and hi / lo > LOG_SPAN
    if log:
        lo, hi = math.log10(lo) - 0.06, math.log10(hi) + 0.06
    else:
        pad = max(least_pad, 0.08 * (hi - lo))
        lo, hi = lo - pad, hi + pad
        if floor is not None:
            lo = max(lo, floor)
    a, b = pixels

    def to_pixel(v: float) -> float:
        t = math.log10(v) if log else v
        return a + (t - lo) / (hi - lo) * (b - a)

    ticks = _log_ticks(10 ** lo, 10 ** hi) if log else _linear_ticks(lo, hi)
    return to_pixel, ticks, log


def _frame(title: str, label: str, x_label: str, y_label: str, xs: list[float], ys: list[float],
           x_floor: float | None = None, x_inset: float = 0.0):
    """SVG head, axes, grid and labels; returns ``(parts, sx, sy)``. ``x_inset``: pixels kept free at both
    ends of the x axis (for markers set sideways of their value)."""
    ml, mr, mt, mb = MARGIN
    pw, ph = WIDTH - ml - mr, HEIGHT - mt - mb
    sx, xticks, xlog = fitted_axis(xs, (ml + x_inset, ml + pw - x_inset), floor=x_floor)
    xticks = [t for t in xticks if ml <= sx(t) <= ml + pw]
    sy, yticks, _ = fitted_axis(ys, (mt + ph, mt), least_pad=0.3)
    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(label)}">',
             f'<text x="{ml + pw / 2}" y="19" text-anchor="middle" class="pt">{esc(title)}</text>',
             f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in xticks:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tk">{t:g}</text>')
    for t in yticks:
        y = sy(t)
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" class="tk">{t:g}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{HEIGHT - 8}" text-anchor="middle" class="ax">'
                 f'{esc(x_label)}{" (log scale)" if xlog else ""}</text>'
                 f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" class="ax" '
                 f'transform="rotate(-90 14 {mt + ph / 2})">{esc(y_label)}</text>')
    return parts, sx, sy


def marker(shape: str, x: float, y: float, color: str, r: float = 4.5, title: str = "") -> str:
    """One marker; ``title`` becomes its tooltip."""
    tip = f"<title>{html.escape(title)}</title>" if title else ""
    style = f'fill="{color}" stroke="#fff" stroke-width="0.8"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" {style}>{tip}</circle>'
    if shape == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" {style}>{tip}</rect>'
    corners = {"triangle": [(0, -1.25), (1.15, 0.85), (-1.15, 0.85)],
               "down": [(0, 1.25), (1.15, -0.85), (-1.15, -0.85)],
               "diamond": [(0, -1.35), (1.1, 0), (0, 1.35), (-1.1, 0)]}[shape]
    points = " ".join(f"{x + dx * r:.1f},{y + dy * r:.1f}" for dx, dy in corners)
    return f'<polygon points="{points}" {style}>{tip}</polygon>'


def legend_marker(shape: str, color: str = "#444") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="14" height="14" viewBox="0 0 14 14" '
            f'class="lm">{marker(shape, 7, 7, color, 4.5)}</svg>')


# ------------------------------------------------------------------------------------------------
# PSNR against parallax
# ------------------------------------------------------------------------------------------------

def joined_views(report: dict, scale: int, data: str) -> bool:
    """Whether the views of a data kind are the same images at other parallaxes (a light field's views:
    a line between them means something), rather than separate cases (the real pairs: points only)."""
    views: dict[str, set] = {}
    for r in report.get("images", []):
        if r["scale"] == scale and r["data"] == data:
            views.setdefault(str(r["view"]), set()).add(r["image"])
    sets = list(views.values())
    return len(sets) > 1 and all(s == sets[0] for s in sets)


def psnr_parallax_svg(report: dict, scale: int, data: str, colors: dict[str, str], shape: str) -> str:
    """One panel: mean PSNR (± its std as an error bar) against mean parallax, per method and view."""
    rows = [r for r in report.get("results", []) if r["scale"] == scale and r["data"] == data
            and r.get("psnr") is not None and r.get("parallax") is not None]
    if not rows:
        return ""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    spread = [(r["psnr"] - (r.get("psnr_std") or 0), r["psnr"] + (r.get("psnr_std") or 0)) for r in rows]
    dodge = min(DODGE_PX, 60.0 / len(methods))
    parts, sx, sy = _frame(f"×{scale} · {data}: PSNR against parallax", f"PSNR against parallax, ×{scale}, {data}",
                           "mean parallax (HR px)", "PSNR (dB)", [r["parallax"] for r in rows],
                           [v for pair in spread for v in pair], x_floor=0.0,
                           x_inset=dodge * (len(methods) - 1) / 2 + 6)

    def at(r):
        return sx(r["parallax"]) + (methods.index(r["method"]) - (len(methods) - 1) / 2) * dodge, sy(r["psnr"])

    if joined_views(report, scale, data):
        for method in methods:
            line = sorted((r for r in rows if r["method"] == method), key=lambda r: r["parallax"])
            if len(line) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(at, line))
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colors.get(method, "#333")}" '
                             f'stroke-width="1.6" opacity="0.8"/>')
    for r in rows:
        x, y = at(r)
        color = colors.get(r["method"], "#333")
        std = r.get("psnr_std")
        if std:
            lo, hi = sy(r["psnr"] - std), sy(r["psnr"] + std)
            parts.append(f'<path d="M{x:.1f},{lo:.1f}V{hi:.1f}M{x - 3:.1f},{lo:.1f}h6M{x - 3:.1f},{hi:.1f}h6" '
                         f'stroke="{color}" stroke-width="1.2" fill="none"/>')
        spread_text = f" ± {std:.2f}" if std else ""
        parts.append(marker(shape, x, y, color, title=f"{r['method']} — {data} {r.get('view_label', r['view'])}: "
                            f"{r['psnr']:.2f}{spread_text} dB at {r['parallax']:.1f} px (n = {r['n']})"))
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------
# Speed against quality
# ------------------------------------------------------------------------------------------------

def speed_quality_points(report: dict) -> list[dict]:
    """Per (scale, method): mean PSNR and median seconds per output megapixel over the method's images.

    Returns ``[{"scale", "method", "psnr", "seconds_per_mp", "images"}]``; images without a recorded size
    (a report from before sizes were kept) are left out.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in report.get("images", []):
        if r.get("psnr") is not None and r.get("megapixels") and r.get("seconds") is not None:
            groups.setdefault((r["scale"], r["method"]), []).append(r)
    return [{"scale": scale, "method": method, "psnr": mean_of(r["psnr"] for r in items),
             "seconds_per_mp": statistics.median(r["seconds"] / r["megapixels"] for r in items),
             "images": len(items)}
            for (scale, method), items in groups.items()]


def speed_quality_svg(points: list[dict], scale: int, colors: dict[str, str]) -> str:
    """One panel per scale: a point per method at (seconds per output megapixel, mean PSNR), named."""
    points = [p for p in points if p["scale"] == scale and p["seconds_per_mp"] > 0]
    if not points:
        return ""
    parts, sx, sy = _frame(f"×{scale}: speed against quality", f"PSNR against seconds per megapixel, ×{scale}",
                           "seconds per output megapixel (lower is faster)", "mean PSNR (dB)",
                           [p["seconds_per_mp"] for p in points], [p["psnr"] for p in points])
    placed: list[tuple[float, float, float]] = []          # (left, right, baseline) of each label
    for p in sorted(points, key=lambda p: -p["psnr"]):
        x, y = sx(p["seconds_per_mp"]), sy(p["psnr"])
        color = colors.get(p["method"], "#333")
        parts.append(marker("circle", x, y, color, 5, f"{p['method']} ×{scale}: {p['psnr']:.2f} dB, "
                            f"{p['seconds_per_mp']:.3g} s/MP (median over {p['images']} images)"))
        # A label goes beside its point (left of it near the right edge), moved down while it would
        # overlap one already placed; its width is estimated from the 11-px bold font.
        width = 7.0 * len(p["method"])
        left = x - 8 - width if x + 8 + width > WIDTH - MARGIN[1] else x + 8
        ly = y + 4
        while any(left < r and left + width > l and abs(ly - b) < 12 for l, r, b in placed):
            ly += 12
        placed.append((left, left + width, ly))
        parts.append(f'<text x="{left:.1f}" y="{ly:.1f}" class="pl" fill="{color}">{html.escape(p["method"])}</text>')
    parts.append("</svg>")
    return "".join(parts)

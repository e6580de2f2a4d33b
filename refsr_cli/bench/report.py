"""The bench report: ``report.json``, ``report.md`` and one self-contained ``report.html``, plus the rich table.

The HTML page references no external file: crops are embedded as base64 PNG ``data:`` URIs, the plot
is inline SVG drawn here (no plotting library), the style sheet is inline, and every piece of text
that came from data (method labels, file names, commands) is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

from refsr_cli.data.files import atomic_write

COLUMNS = ("method", "scale", "data", "view", "n", "parallax", "psnr", "ssim", "ifc", "seconds", "vs_pm")
HEADERS = {"method": "Method", "scale": "×", "data": "Data", "view": "View", "n": "n",
           "parallax": "Parallax (px)", "psnr": "PSNR (dB)", "ssim": "SSIM", "ifc": "IFC",
           "seconds": "s / image", "vs_pm": "vs PatchMatch"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")


# ------------------------------------------------------------------------------------------------
# Cells
# ------------------------------------------------------------------------------------------------

def _num(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _pm(mean, std, digits: int) -> str:
    if mean is None:
        return "–"
    if std is None:          # a single image has no spread
        return _num(mean, digits)
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def _seconds(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(value) -> str:
    if value is None:
        return ""
    return f"{value:.0f}×" if value >= 10 else f"{value:.2f}×"


def cells(row: dict) -> dict[str, str]:
    """Display strings of one result row (shared by Markdown, HTML and the terminal)."""
    return {"method": str(row["method"]), "scale": str(row["scale"]), "data": str(row["data"]),
            "view": str(row.get("view_label", row["view"])), "n": str(row["n"]),
            "parallax": _num(row.get("parallax"), 1),
            "psnr": _pm(row.get("psnr"), row.get("psnr_std"), 2),
            "ssim": _pm(row.get("ssim"), row.get("ssim_std"), 4),
            "ifc": _pm(row.get("ifc"), row.get("ifc_std"), 3),
            "seconds": _seconds(row.get("seconds")),
            "vs_pm": _ratio(row.get("speedup_vs_patchmatch"))}


# ------------------------------------------------------------------------------------------------
# JSON and Markdown
# ------------------------------------------------------------------------------------------------

SUITE_HEADERS = ("Method", "×", "cases", "mean PSNR (dB)", "mean SSIM", "Δ vs PatchMatch (dB)", "Δ vs MDSR (dB)",
                 "below bicubic")


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.2f}"


def suite_cells(row: dict) -> list[str]:
    """One row of the suite summary (mean over the cases, gains over baselines on the same cases)."""
    below = row.get("below_bicubic")
    return [row["method"], str(row["scale"]), str(row["cases"]), _num(row.get("psnr"), 2), _num(row.get("ssim"), 4),
            _signed(row.get("vs_patchmatch")), _signed(row.get("vs_mdsr")),
            "–" if below is None else (f"{len(below)}: {', '.join(below)}" if below else "0")]


def _clean(value):
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(report: dict) -> str:
    return json.dumps(_clean(report), indent=1, allow_nan=False) + "\n"


def to_markdown(report: dict) -> str:
    lines = ["# refsr bench", ""]
    env = report.get("environment", {})
    lines.append(f"`{env.get('command', 'refsr bench')}` — {env.get('date', '')}, {env.get('processor', '')}, "
                 f"{env.get('cpu_count', '?')} cores, device {env.get('device', '?')}, torch {env.get('torch', '?')}")
    lines += ["", "| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
              "|" + "|".join(" --- " if c in ("method", "data", "view") else " ---: " for c in COLUMNS) + "|"]
    for row in report.get("results", []):
        c = cells(row)
        lines.append("| " + " | ".join(c[k].replace("|", "\\|") for k in COLUMNS) + " |")
    for data in dict.fromkeys(r["data"] for r in report.get("suites", [])):
        lines += ["", f"## Suite `{data}`: mean over its cases", "",
                  "| " + " | ".join(SUITE_HEADERS) + " |", "| --- |" + " ---: |" * (len(SUITE_HEADERS) - 2) + " --- |"]
        lines += ["| " + " | ".join(suite_cells(r)) + " |" for r in report["suites"] if r["data"] == data]
    if report.get("speed"):
        lines += ["", "## Speed against PatchMatch (median over the same images)", "",
                  "| Method | × | images | s / image | PatchMatch s / image | speed-up |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for s in report["speed"]:
            lines.append(f"| {s['method']} | {s['scale']} | {s['images']} | {_seconds(s['seconds'])} | "
                         f"{_seconds(s['patchmatch_seconds'])} | {_ratio(s['speedup'])} |")
    settings = report.get("settings", {})
    lines += ["", "## Notes", ""]
    for key in ("metrics", "seconds", "parallax"):
        if settings.get(key):
            lines.append(f"- {key}: {settings[key]}")
    threads = sorted({(r['method'], r.get('threads')) for r in report.get('results', [])}, key=str)
    if threads:
        lines.append("- torch threads per method: " + ", ".join(f"{m} {t}" for m, t in dict(threads).items()))
    cache = report.get("cache", {})
    lines.append(f"- cache: {cache.get('computed', 0)} image results computed, {cache.get('reused', 0)} reused")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# The plot (inline SVG)
# ------------------------------------------------------------------------------------------------

def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt_tick(t: float) -> str:
    return f"{t:g}"


def psnr_plot_svg(rows: list[dict], scale: int, colors: dict[str, str], width: int = 560,
                  height: int = 330) -> str:
    """PSNR against parallax at one scale: one line per method and test set, a marker per view."""
    points = [r for r in rows if r["scale"] == scale and r.get("psnr") is not None and r.get("parallax") is not None]
    esc = html.escape
    if not points:
        return ""
    ml, mr, mt, mb = 56, 16, 30, 44
    pw, ph = width - ml - mr, height - mt - mb
    xs = [r["parallax"] for r in points]
    ys = [r["psnr"] for r in points]
    x_lo, x_hi = 0.0, max(xs) * 1.08 + 1e-6
    y_lo, y_hi = min(ys), max(ys)
    pad = max(0.5, 0.08 * (y_hi - y_lo))
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def sx(x):
        return ml + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y):
        return mt + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="PSNR against parallax, ×{scale}">',
             f'<text x="{ml + pw / 2}" y="18" text-anchor="middle" class="pt">×{scale}: PSNR against parallax</text>',
             f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(x_lo, x_hi):
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + ph}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle" class="tk">{_fmt_tick(t)}</text>')
    for t in _ticks(y_lo, y_hi):
        y = sy(t)
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" class="tk">{_fmt_tick(t)}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle" class="ax">'
                 f'mean parallax (HR px)</text>')
    parts.append(f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" class="ax" '
                 f'transform="rotate(-90 14 {mt + ph / 2})">PSNR (dB)</text>')
    series: dict[tuple, list[dict]] = {}
    for r in points:
        series.setdefault((r["method"], r["data"]), []).append(r)
    datasets = list(dict.fromkeys(r["data"] for r in points))
    for (method, data), items in series.items():
        items = sorted(items, key=lambda r: r["parallax"])
        color = colors.get(method, "#333")
        dashed = ' stroke-dasharray="5 3"' if datasets.index(data) % 2 else ""
        if len(items) > 1:
            path = " ".join(f"{sx(r['parallax']):.1f},{sy(r['psnr']):.1f}" for r in items)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dashed}/>')
        for r in items:
            title = esc(f"{method} — {data} {r.get('view_label', r['view'])}: {r['psnr']:.2f} dB at "
                        f"{r['parallax']:.1f} px")
            marker = (f'<circle cx="{sx(r["parallax"]):.1f}" cy="{sy(r["psnr"]):.1f}" r="4" fill="{color}">'
                      if datasets.index(data) == 0 else
                      f'<rect x="{sx(r["parallax"]) - 4:.1f}" y="{sy(r["psnr"]) - 4:.1f}" width="8" height="8" '
                      f'fill="{color}">')
            closing = "</circle>" if datasets.index(data) == 0 else "</rect>"
            parts.append(f"{marker}<title>{title}</title>{closing}")
    parts.append("</svg>")
    return "".join(parts)


def _legend(colors: dict[str, str], datasets: list[str]) -> str:
    esc = html.escape
    items = [f'<span class="lg"><span class="sw" style="background:{c}"></span>{esc(m)}</span>'
             for m, c in colors.items()]
    shapes = []
    for i, d in enumerate(datasets):
        shape = "● solid line" if i == 0 else ("■ dashed line" if i % 2 else "■ solid line")
        shapes.append(f'<span class="lg">{esc(d)}: {shape}</span>')
    return f'<p class="legend">{"".join(items)}</p><p class="legend">{"".join(shapes)}</p>'


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em}code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{padding:4px 9px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{background:#f6f6f6;position:sticky;top:0}td.l,th.l{text-align:left}
tr.sep td{border-top:2px solid #bbb}td.best{font-weight:700}
.plots{display:flex;flex-wrap:wrap;gap:1em}.pt{font-size:14px;font-weight:600}.tk{font-size:11px;fill:#444}
.ax{font-size:12px;fill:#222}.legend{font-size:.88em;margin:.3em 0}.lg{margin-right:1.2em;white-space:nowrap}
.sw{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}
.crops{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:1.2em}
figure{margin:0;text-align:center;font-size:.8em}
figure img{width:192px;height:192px;image-rendering:pixelated;border:1px solid #ccc;display:block}
figcaption{max-width:192px;overflow-wrap:anywhere}
.notes li{margin:.2em 0}
"""


def _png_data_uri(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _method_colors(report: dict) -> dict[str, str]:
    methods = list(dict.fromkeys(r["method"] for r in report.get("results", [])))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}


def to_html(report: dict, base: str | os.PathLike) -> str:
    """The page; ``base`` is the report folder the showcase crop paths are relative to."""
    esc = html.escape
    base = Path(base)
    env = report.get("environment", {})
    rows = report.get("results", [])
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>refsr bench report</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>refsr bench</h1>",
           f'<p class="meta"><code>{esc(str(env.get("command", "refsr bench")))}</code><br>'
           f'{esc(str(env.get("date", "")))} · {esc(str(env.get("processor", "")))} · '
           f'{esc(str(env.get("cpu_count", "?")))} cores · device {esc(str(env.get("device", "?")))}'
           f'{" (" + esc(str(env["gpu"])) + ")" if env.get("gpu") else ""} · refsr {esc(str(env.get("refsr", "")))}'
           f' · torch {esc(str(env.get("torch", "")))} · python {esc(str(env.get("python", "")))}</p>']

    # Table, best PSNR/SSIM/IFC of each (scale, data, view) group in bold.
    out.append("<h2>Results</h2>")
    best: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["scale"], r["data"], str(r["view"]))
        for m in ("psnr", "ssim", "ifc"):
            if r.get(m) is not None:
                best.setdefault(key, {})
                best[key][m] = max(best[key].get(m, -math.inf), r[m])
    out.append('<table class="results"><thead><tr>' +
               "".join(f'<th class="{"l" if c in ("method", "data", "view") else ""}">{esc(HEADERS[c])}</th>'
                       for c in COLUMNS) + "</tr></thead><tbody>")
    previous = None
    for r in rows:
        key = (r["scale"], r["data"], str(r["view"]))
        c = cells(r)
        tds = []
        for col in COLUMNS:
            classes = []
            if col in ("method", "data", "view"):
                classes.append("l")
            if col in ("psnr", "ssim", "ifc") and r.get(col) is not None and best.get(key, {}).get(col) == r[col]:
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{cls}>{esc(c[col])}</td>")
        sep = ' class="sep"' if previous is not None and key != previous else ""
        out.append(f"<tr{sep}>{''.join(tds)}</tr>")
        previous = key
    out.append("</tbody></table>")

    for data in dict.fromkeys(r["data"] for r in report.get("suites", [])):
        out.append(f"<h2>Suite {esc(data)}: mean over its cases</h2>")
        out.append('<table class="results"><thead><tr>' + "".join(
            f'<th class="{"l" if i in (0, len(SUITE_HEADERS) - 1) else ""}">{esc(h)}</th>'
            for i, h in enumerate(SUITE_HEADERS)) + "</tr></thead><tbody>")
        previous = None
        for r in report["suites"]:
            if r["data"] != data:
                continue
            sep = ' class="sep"' if previous is not None and r["scale"] != previous else ""
            left = (0, len(SUITE_HEADERS) - 1)
            out.append(f"<tr{sep}>" + "".join(f'<td class="l">{esc(v)}</td>' if i in left else f"<td>{esc(v)}</td>"
                                              for i, v in enumerate(suite_cells(r))) + "</tr>")
            previous = r["scale"]
        out.append("</tbody></table>")

    # Plot
    colors = _method_colors(report)
    scales = list(dict.fromkeys(r["scale"] for r in rows))
    svgs = [psnr_plot_svg(rows, s, colors) for s in scales]
    svgs = [s for s in svgs if s]
    if svgs:
        out.append("<h2>PSNR against parallax</h2>")
        out.append(_legend(colors, list(dict.fromkeys(r["data"] for r in rows))))
        out.append('<div class="plots">' + "".join(svgs) + "</div>")

    # Speed
    if report.get("speed"):
        out.append("<h2>Speed against PatchMatch</h2>")
        out.append("<table><thead><tr><th class=\"l\">Method</th><th>×</th><th>images</th><th>s / image</th>"
                   "<th>PatchMatch s / image</th><th>speed-up</th></tr></thead><tbody>")
        for s in report["speed"]:
            out.append(f"<tr><td class=\"l\">{esc(str(s['method']))}</td><td>{s['scale']}</td><td>{s['images']}</td>"
                       f"<td>{esc(_seconds(s['seconds']))}</td><td>{esc(_seconds(s['patchmatch_seconds']))}</td>"
                       f"<td>{esc(_ratio(s['speedup']))}</td></tr>")
        out.append("</tbody></table>")

    # Crops
    if report.get("showcase"):
        out.append("<h2>Side by side</h2>")
        out.append("<p class=\"meta\">The same region of the first image of each test group (the most textured "
                   "window of the ground truth), shown enlarged 1.5× without smoothing. PSNR under a method is "
                   "that of the whole image.</p>")
        for item in report["showcase"]:
            y, x, side = item["region"]
            parallax = item.get("parallax")
            out.append(f"<h3>×{item['scale']} · {esc(str(item['data']))} {esc(str(item['view_label']))} · "
                       f"{esc(str(item['image']))} · region ({x}, {y}) {side}×{side}"
                       f"{f' · parallax {parallax:.1f} px' if parallax is not None else ''}</h3>")
            out.append('<div class="crops">')
            for tile in item["tiles"]:
                uri = _png_data_uri(base / tile["file"])
                if uri is None:
                    continue
                caption = esc(str(tile["label"]))
                if tile.get("psnr") is not None:
                    caption += f"<br>{tile['psnr']:.2f} dB"
                out.append(f'<figure><img alt="{esc(str(tile["label"]))}" src="{uri}">'
                           f"<figcaption>{caption}</figcaption></figure>")
            out.append("</div>")

    settings = report.get("settings", {})
    cache = report.get("cache", {})
    out.append("<h2>Notes</h2><ul class=\"notes\">")
    for key in ("metrics", "seconds", "parallax"):
        if settings.get(key):
            out.append(f"<li><b>{esc(key)}</b>: {esc(str(settings[key]))}</li>")
    out.append("<li><b>vs PatchMatch</b>: median PatchMatch time ÷ median time of the method, on the same "
               "images; rows record the torch threads each method ran with.</li>")
    for d in settings.get("data", []):
        out.append(f"<li><b>data {esc(str(d.get('label')))}</b>: {esc(str(d.get('kind')))}, "
                   f"{esc(str(d.get('path')))}, views {esc(', '.join(map(str, d.get('views', []))))}</li>")
    out.append(f"<li><b>cache</b>: {cache.get('computed', 0)} image results computed in this run, "
               f"{cache.get('reused', 0)} reused.</li></ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_reports(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out`` (each atomically)."""
    out = Path(out)
    files = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write(files["json"], lambda p: p.write_text(to_json(report), encoding="utf-8"))
    atomic_write(files["md"], lambda p: p.write_text(to_markdown(report), encoding="utf-8"))
    page = to_html(report, out)
    atomic_write(files["html"], lambda p: p.write_text(page, encoding="utf-8"))
    return files


def rich_table(report: dict):
    """The results (and any suite summary) as rich tables (printed by ``refsr bench``)."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title="refsr bench", show_lines=False)
    for col in COLUMNS:
        table.add_column(HEADERS[col], justify="left" if col in ("method", "data", "view") else "right",
                         no_wrap=True)
    previous = None
    for r in report.get("results", []):
        key = (r["scale"], r["data"], str(r["view"]))
        if previous is not None and key != previous:
            table.add_section()
        c = cells(r)
        table.add_row(*[c[k] for k in COLUMNS])
        previous = key
    tables = [table]
    for data in dict.fromkeys(r["data"] for r in report.get("suites", [])):
        suite = Table(title=f"suite {data}: mean over its cases")
        for i, header in enumerate(SUITE_HEADERS):
            suite.add_column(header, justify="left" if i in (0, len(SUITE_HEADERS) - 1) else "right")
        previous = None
        for r in report["suites"]:
            if r["data"] == data:
                if previous is not None and r["scale"] != previous:
                    suite.add_section()
                suite.add_row(*suite_cells(r))
                previous = r["scale"]
        tables.append(suite)
    return Group(*tables)

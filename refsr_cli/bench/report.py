"""The bench report: ``report.json``, ``report.md`` and one self-contained ``report.html``, plus the rich table.

Each opens with the headline (:mod:`refsr_cli.bench.headline`). The HTML page references no external
file: crops are embedded as base64 PNG ``data:`` URIs (:mod:`refsr_cli.bench.report_crops`), the plots
are inline SVG (:mod:`refsr_cli.bench.report_plots`), style sheet and script are inline, and every piece
of text that came from data (method labels, file names, commands) is HTML-escaped.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from refsr_cli.bench import report_crops, report_plots
from refsr_cli.bench.headline import BASELINE_NAMES, BASELINES, data_name, headline, speed_text
from refsr_cli.data.files import atomic_write

# The report's files in its folder, by kind.
REPORT_FILES = {"json": "report.json", "md": "report.md", "html": "report.html"}

COLUMNS = ("method", "scale", "data", "view", "n", "parallax", "psnr", "ssim", "ifc", "seconds", "vs_pm")
HEADERS = {"method": "Method", "scale": "×", "data": "Data", "view": "View", "n": "n",
           "parallax": "Parallax (px)", "psnr": "PSNR (dB)", "ssim": "SSIM", "ifc": "IFC",
           "seconds": "s / image", "vs_pm": "vs PatchMatch"}


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


HEADLINE_HEADERS = ("×", "Data", "Best RefSR network", "PSNR (dB)",
                    *(f"Δ {BASELINE_NAMES[b]} (dB)" for b in BASELINES), "Speed vs PatchMatch", "Images")
HEADLINE_NOTE = ("Δ: the mean over the images both methods have of the network's PSNR minus the baseline's; "
                 "speed: median PatchMatch time ÷ median network time on the same images. A RefSR network is a "
                 "reference-based one: its variant needs a reference (mdsr does not).")
NO_HEADLINE = "No reference-based network ran, so there is nothing to hold against the baselines."


def headline_cells(row: dict) -> list[str]:
    """One headline row's display strings (shared by Markdown, HTML and the terminal)."""
    best = row["method"] + (f" (tied: {', '.join(row['tied'])})" if row["tied"] else "")
    speed = row["speedup_vs_patchmatch"]
    return [str(row["scale"]), data_name(row["data"]), best, _num(row["psnr"], 2),
            *(_signed(row[f"vs_{b}"]) for b in BASELINES), "–" if speed is None else speed_text(speed),
            str(row["cases"])]


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


REGION_HEADERS = ("Method", "×", "Data", "View", "PSNR covered", "PSNR outside", "PSNR whole", "SSIM covered",
                  "SSIM outside")


def region_cells(report: dict) -> list[list[str]]:
    """Rows of a partial reference's pairs (wide/tele): PSNR/SSIM inside its footprint, outside, whole."""
    return [[str(r["method"]), str(r["scale"]), str(r["data"]), str(r.get("view_label", r["view"])),
             _num(r["psnr_covered"], 2), _num(r.get("psnr_outside"), 2), _num(r.get("psnr"), 2),
             _num(r.get("ssim_covered"), 4), _num(r.get("ssim_outside"), 4)]
            for r in report.get("results", []) if r.get("psnr_covered") is not None]


def to_markdown(report: dict) -> str:
    lines = ["# refsr bench", ""]
    env = report.get("environment", {})
    lines.append(f"`{env.get('command', 'refsr bench')}` — {env.get('date', '')}, {env.get('processor', '')}, "
                 f"{env.get('cpu_count', '?')} cores, device {env.get('device', '?')}, torch {env.get('torch', '?')}")
    lines += ["", "## Headline", ""]
    rows = headline(report)
    if rows:
        lines += ["| " + " | ".join(HEADLINE_HEADERS) + " |", "| ---: | --- | --- |" + " ---: |" * 6]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in headline_cells(r)) + " |" for r in rows]
        lines += [""] + [f"- {r['sentence']}" for r in rows] + ["", HEADLINE_NOTE]
    else:
        lines.append(NO_HEADLINE)
    lines += ["", "## Results", "", "| " + " | ".join(HEADERS[c] for c in COLUMNS) + " |",
              "|" + "|".join(" --- " if c in ("method", "data", "view") else " ---: " for c in COLUMNS) + "|"]
    for row in report.get("results", []):
        c = cells(row)
        lines.append("| " + " | ".join(c[k].replace("|", "\\|") for k in COLUMNS) + " |")
    for data in dict.fromkeys(r["data"] for r in report.get("suites", [])):
        lines += ["", f"## Suite `{data}`: mean over its cases", "",
                  "| " + " | ".join(SUITE_HEADERS) + " |", "| --- |" + " ---: |" * (len(SUITE_HEADERS) - 2) + " --- |"]
        lines += ["| " + " | ".join(suite_cells(r)) + " |" for r in report["suites"] if r["data"] == data]
    regions = region_cells(report)
    if regions:
        lines += ["", "## By region: a reference that covers part of the view", "",
                  "| " + " | ".join(REGION_HEADERS) + " |", "| --- | ---: | --- | --- |" + " ---: |" * 5]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in regions]
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
#headline table{font-size:.95em}td.up{color:#1a7f37}td.down{color:#c62828}
.reading{font-size:1.02em}.reading li{margin:.25em 0}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots svg{max-width:100%;height:auto}
.pt{font-size:14px;font-weight:600}.tk{font-size:11px;fill:#444}.ax{font-size:12px;fill:#222}
.pl{font-size:11px;font-weight:600}
.legend{font-size:.88em;margin:.3em 0}.lg{margin-right:1.2em;white-space:nowrap}
.sw{display:inline-block;width:14px;height:4px;margin-right:5px;vertical-align:middle}.lm{vertical-align:middle}
.notes li{margin:.2em 0}
""" + report_crops.CSS


def _environment_html(env: dict) -> str:
    esc = html.escape
    return (f'<p class="meta"><code>{esc(str(env.get("command", "refsr bench")))}</code><br>'
            f'{esc(str(env.get("date", "")))} · {esc(str(env.get("processor", "")))} · '
            f'{esc(str(env.get("cpu_count", "?")))} cores · device {esc(str(env.get("device", "?")))}'
            f'{" (" + esc(str(env["gpu"])) + ")" if env.get("gpu") else ""} · refsr {esc(str(env.get("refsr", "")))}'
            f' · torch {esc(str(env.get("torch", "")))} · python {esc(str(env.get("python", "")))}</p>')


def _headline_html(report: dict) -> str:
    """The comparison people come for, first: a table and its reading, one sentence per row."""
    esc = html.escape
    rows = headline(report)
    out = ['<section id="headline"><h2>Headline</h2>']
    if not rows:
        return out[0] + f'<p class="reading">{esc(NO_HEADLINE)}</p></section>'
    left = (1, 2)
    out.append("<table><thead><tr>" + "".join(f'<th class="{"l" if i in left else ""}">{esc(h)}</th>'
                                              for i, h in enumerate(HEADLINE_HEADERS)) + "</tr></thead><tbody>")
    for r in rows:
        signs = [None, None, None, None, *(r[f"vs_{b}"] for b in BASELINES), None, None]
        tds = []
        for i, (text, sign) in enumerate(zip(headline_cells(r), signs)):
            classes = (["l"] if i in left else []) + (["up" if sign > 0 else "down"] if sign else [])
            tds.append(f'<td class="{" ".join(classes)}">{esc(text)}</td>' if classes else f"<td>{esc(text)}</td>")
        out.append(f"<tr>{''.join(tds)}</tr>")
    out.append("</tbody></table>")
    out.append('<ul class="reading">' + "".join(f"<li>{esc(r['sentence'])}</li>" for r in rows) + "</ul>")
    out.append(f'<p class="meta">{esc(HEADLINE_NOTE)}</p></section>')
    return "\n".join(out)


def _results_html(rows: list[dict]) -> str:
    """Every row, best PSNR/SSIM/IFC of each (scale, data, view) group in bold."""
    esc = html.escape
    best: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["scale"], r["data"], str(r["view"]))
        for m in ("psnr", "ssim", "ifc"):
            if r.get(m) is not None:
                best.setdefault(key, {})
                best[key][m] = max(best[key].get(m, -math.inf), r[m])
    out = ["<h2>All results</h2>", '<table class="results"><thead><tr>' +
           "".join(f'<th class="{"l" if c in ("method", "data", "view") else ""}">{esc(HEADERS[c])}</th>'
                   for c in COLUMNS) + "</tr></thead><tbody>"]
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
    return "\n".join(out)


def _suites_html(report: dict) -> str:
    esc = html.escape
    out = []
    left = (0, len(SUITE_HEADERS) - 1)
    for data in dict.fromkeys(r["data"] for r in report.get("suites", [])):
        out.append(f"<h2>Suite {esc(data)}: mean over its cases</h2>")
        out.append('<table class="results"><thead><tr>' + "".join(
            f'<th class="{"l" if i in left else ""}">{esc(h)}</th>' for i, h in enumerate(SUITE_HEADERS))
            + "</tr></thead><tbody>")
        previous = None
        for r in report["suites"]:
            if r["data"] != data:
                continue
            sep = ' class="sep"' if previous is not None and r["scale"] != previous else ""
            out.append(f"<tr{sep}>" + "".join(f'<td class="l">{esc(v)}</td>' if i in left else f"<td>{esc(v)}</td>"
                                              for i, v in enumerate(suite_cells(r))) + "</tr>")
            previous = r["scale"]
        out.append("</tbody></table>")
    return "\n".join(out)


def _regions_html(report: dict) -> str:
    esc = html.escape
    regions = region_cells(report)
    if not regions:
        return ""
    left = (0, 2, 3)
    head = "".join(f'<th class="{"l" if i in left else ""}">{esc(h)}</th>' for i, h in enumerate(REGION_HEADERS))
    body = "".join("<tr>" + "".join(f'<td class="l">{esc(v)}</td>' if i in left else f"<td>{esc(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in regions)
    return ("<h2>By region: a reference that covers part of the view</h2>"
            '<p class="meta">Covered: the HR pixels inside the aligned reference\'s footprint; outside: the rest.</p>'
            f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def _plots_html(report: dict) -> str:
    """PSNR against parallax (a panel per scale and data kind) and speed against quality (a panel per scale)."""
    esc = html.escape
    rows = report.get("results", [])
    colors, shapes = report_plots.method_colors(report), report_plots.data_shapes(report)
    groups = list(dict.fromkeys((r["scale"], r["data"]) for r in rows))
    panels = [report_plots.psnr_parallax_svg(report, s, d, colors, shapes[d]) for s, d in groups]
    out = []
    if any(panels):
        joined = any(report_plots.joined_views(report, s, d) for s, d in groups)
        methods = "".join(f'<span class="lg"><span class="sw" style="background:{c}"></span>{esc(m)}</span>'
                          for m, c in colors.items())
        kinds = "".join(f'<span class="lg">{report_plots.legend_marker(shapes[d])} {esc(d)}</span>'
                        for d in dict.fromkeys(d for _, d in groups))
        out += ["<h2>PSNR against parallax</h2>", f'<p class="legend">{methods}</p><p class="legend">{kinds}</p>',
                f'<p class="meta">Mean PSNR of each method and view against the view\'s mean parallax; bars: ± one '
                f'standard deviation over the images. '
                f'{"Lines join the views of a data set made of the same images; " if joined else ""}'
                f'markers of methods at the same parallax are set {report_plots.DODGE_PX:g} px apart sideways '
                f'(the tooltip gives the exact values).</p>',
                '<div class="plots">' + "".join(panels) + "</div>"]
    points = report_plots.speed_quality_points(report)
    scatters = [report_plots.speed_quality_svg(points, s, colors) for s in dict.fromkeys(s for s, _ in groups)]
    if any(scatters):
        out += ["<h2>Speed against quality</h2>",
                '<p class="meta">One point per method: mean PSNR over all images of the scale against the median '
                'seconds per output megapixel (so that images of different sizes count alike). Up and to the left '
                'is better: a network is worth it over PatchMatch when it sits above it, or level and to its '
                'left.</p>', '<div class="plots">' + "".join(scatters) + "</div>"]
    return "\n".join(out)


def _speed_html(report: dict) -> str:
    esc = html.escape
    if not report.get("speed"):
        return ""
    out = ["<h2>Speed against PatchMatch</h2>",
           "<table><thead><tr><th class=\"l\">Method</th><th>×</th><th>images</th><th>s / image</th>"
           "<th>PatchMatch s / image</th><th>speed-up</th></tr></thead><tbody>"]
    for s in report["speed"]:
        out.append(f"<tr><td class=\"l\">{esc(str(s['method']))}</td><td>{s['scale']}</td><td>{s['images']}</td>"
                   f"<td>{esc(_seconds(s['seconds']))}</td><td>{esc(_seconds(s['patchmatch_seconds']))}</td>"
                   f"<td>{esc(_ratio(s['speedup']))}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _notes_html(report: dict) -> str:
    esc = html.escape
    settings = report.get("settings", {})
    cache = report.get("cache", {})
    out = ["<h2>Notes</h2><ul class=\"notes\">"]
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
    return "\n".join(out)


def to_html(report: dict, base: str | os.PathLike) -> str:
    """The page, headline first; ``base`` is the report folder the showcase crop paths are relative to."""
    sections = [_headline_html(report), _plots_html(report),
                report_crops.showcase_html(report["showcase"], base) if report.get("showcase") else "",
                _suites_html(report), _regions_html(report), _results_html(report.get("results", [])),
                _speed_html(report),
                _notes_html(report)]
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      "<title>refsr bench report</title>", f"<style>{_CSS}</style></head><body>",
                      "<h1>refsr bench</h1>", _environment_html(report.get("environment", {})),
                      *[s for s in sections if s], "</body></html>"]) + "\n"


def write_reports(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out`` (each atomically).

    Adds ``report["headline"]`` (:func:`refsr_cli.bench.headline.headline`), so that the dict the caller
    holds is the one ``report.json`` records.
    """
    out = Path(out)
    report["headline"] = headline(report)
    files = {kind: out / name for kind, name in REPORT_FILES.items()}
    atomic_write(files["json"], lambda p: p.write_text(to_json(report), encoding="utf-8"))
    atomic_write(files["md"], lambda p: p.write_text(to_markdown(report), encoding="utf-8"))
    page = to_html(report, out)
    atomic_write(files["html"], lambda p: p.write_text(page, encoding="utf-8"))
    return files


def rich_table(report: dict):
    """The results (and any suite summary) as rich tables, then the headline's sentences (printed by
    ``refsr bench``: the last lines on the terminal are the reading of the run)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

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
    regions = region_cells(report)
    if regions:
        by_region = Table(title="by region: a reference that covers part of the view")
        for i, header in enumerate(REGION_HEADERS):
            by_region.add_column(header, justify="left" if i in (0, 2, 3) else "right")
        for row in regions:
            by_region.add_row(*row)
        tables.append(by_region)
    reading = [r["sentence"] for r in headline(report)] or [NO_HEADLINE]
    return Group(*tables, Text("\n".join(reading), style="bold"))

"""The bench report as a researcher meets it: the headline, the plots, the crops, the terminal's last lines.

Reports come from real benches on the tiny photo store of test_bench (two light fields of 80×112, views
(1,1) and (7,7)) and on its view-(1,1) pairs as a folder: bicubic, PatchMatch, a tiny CrossNet, the same
checkpoint again under the label ``mine`` (so that two reference-based networks tie exactly) and a tiny
MDSR. The headline is recomputed here from ``report.json``'s per-image scores with NumPy.
"""
import base64
import io
import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
from rich.console import Console

from refsr_cli.bench.report import rich_table, to_html, to_markdown
from refsr_cli.bench.run import run_bench
from test_bench import H, SCALE, W, _make_store, _tiny, _write_pairs

REFERENCE_BASED = {"crossnet", "crossnetpp", "crossmpi", "refsrnet"}     # docs/models.md; mdsr is single-image
METHODS = ["bicubic", "patchmatch", "crossnet", "mine", "mdsr"]


def tiny_reports(root):
    """Bench the tiny store (views 1 and 7) and its pairs folder into ``root/store`` and ``root/pairs-report``."""
    store = _make_store(root)
    crossnet, mdsr = _tiny("crossnet", root / "crossnet.pt"), _tiny("mdsr", root / "mdsr.pt")
    weights = {"crossnet": crossnet, "mine": crossnet, "mdsr": mdsr}
    pairs = root / "pairs"
    pairs.mkdir(exist_ok=True)
    _write_pairs(pairs, store)
    common = dict(methods=METHODS, weights=weights, scales=[SCALE], jobs=1, device="cpu")
    run_bench(data=store, views=[1, 7], out=root / "store", **common)
    run_bench(pairs=pairs, out=root / "pairs-report", **common)
    return root / "store", root / "pairs-report"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """``(store report folder, its report.json, pairs report.json)``."""
    store, pairs = tiny_reports(tmp_path_factory.mktemp("report"))
    return store, json.loads((store / "report.json").read_text()), json.loads((pairs / "report.json").read_text())


def _merged(a, b):
    """Two real reports as one with two data kinds (what a run over two built-in sets records)."""
    return {**a, "results": a["results"] + b["results"], "images": a["images"] + b["images"]}


def _independent_headline(report):
    """Per (scale, data): best reference-based method, its Δ dB against each baseline on the shared images and
    its speed-up against PatchMatch (median ratio), from ``report["images"]`` and the results' variants."""
    variant = {r["method"]: r["variant"] for r in report["results"]}
    out = {}
    for scale, data in dict.fromkeys((i["scale"], i["data"]) for i in report["images"]):
        scores = {}
        for i in report["images"]:
            if i["scale"] == scale and i["data"] == data:
                scores.setdefault(i["method"], {})[(str(i["view"]), i["image"])] = (i["psnr"], i["seconds"])
        candidates = [m for m in scores if variant[m] in REFERENCE_BASED]
        shared = set.intersection(*(set(scores[m]) for m in candidates))
        mean = {m: np.mean([scores[m][c][0] for c in shared]) for m in candidates}
        best = max(mean.values())
        winners = {m for m in candidates if best - mean[m] < 0.005}
        leader = next(m for m in report["settings"]["methods"] if m in winners)     # a tie goes to the first listed
        row = {"winners": winners, "leader": leader}
        for base in ("patchmatch", "mdsr", "bicubic"):
            keys = sorted(set(scores[base]) & shared)
            row[base] = np.mean([scores[leader][k][0] - scores[base][k][0] for k in keys])
        keys = sorted(shared & set(scores["patchmatch"]))
        row["speedup"] = (np.median([scores["patchmatch"][k][1] for k in keys])
                          / np.median([scores[leader][k][1] for k in keys]))
        out[(scale, data)] = row
    return out


def test_headline_numbers_recomputed_from_report_json(reports):
    _, store, pairs = reports
    for report in (store, pairs):
        expected = _independent_headline(report)
        assert [(r["scale"], r["data"]) for r in report["headline"]] == list(expected)
        for row in report["headline"]:
            mine = expected[(row["scale"], row["data"])]
            # crossnet and mine are one checkpoint: an exact tie, named, the first listed method leading it.
            assert mine["winners"] == {"crossnet", "mine"} and mine["leader"] == "crossnet"
            assert row["method"] == "crossnet" and row["tied"] == ["mine"]
            for base in ("patchmatch", "mdsr", "bicubic"):
                assert row[f"vs_{base}"] == pytest.approx(mine[base], abs=1e-9)
            assert row["speedup_vs_patchmatch"] == pytest.approx(mine["speedup"], rel=1e-9)
            assert row["cases"] == (4 if report is store else 2)


def test_headline_sentence_follows_the_numbers(reports):
    _, store, _ = reports
    row = store["headline"][0]
    said = row["sentence"]
    assert said.startswith(f"At ×{SCALE} on ") and "crossnet ties with mine as the best RefSR network" in said
    for base, name in (("patchmatch", "PatchMatch"), ("mdsr", "MDSR")):
        gap = row[f"vs_{base}"]
        assert f"{abs(gap):.2f} dB {'above' if gap > 0 else 'below'} {name}" in said
    # Bicubic is named only when the network does not beat it.
    assert ("bicubic" in said) == (row["vs_bicubic"] < 0.005)
    speed = row["speedup_vs_patchmatch"]
    assert re.search(rf"at {speed:.1f}× PatchMatch's speed\.$" if 1 <= speed < 10 else r"× PatchMatch's speed\.$",
                     said)


def test_headline_is_generic_over_data_kinds_and_opens_md_and_html(reports):
    folder, store, pairs = reports
    merged = _merged(store, pairs)
    from refsr_cli.bench.headline import headline

    rows = headline(merged)
    assert [r["data"] for r in rows] == [store["results"][0]["data"], "pairs"]
    md, page = to_markdown(merged), to_html(merged, folder)
    # The headline comes before the full table, in both, with the same sentences.
    assert md.index("## Headline") < md.index("## Results")
    assert page.index('id="headline"') < page.index("All results")
    for r in rows:
        assert f"- {r['sentence']}" in md
        assert f"<li>{r['sentence']}</li>" in page.replace("&#x27;", "'")


def test_no_reference_based_network_says_so(reports):
    folder, store, _ = reports
    baselines = {**store, "results": [r for r in store["results"] if r["method"] in ("bicubic", "patchmatch")],
                 "images": [i for i in store["images"] if i["method"] in ("bicubic", "patchmatch")]}
    assert "No reference-based network ran" in to_markdown(baselines)
    assert "No reference-based network ran" in to_html(baselines, folder)


def test_terminal_ends_with_the_headline_sentences(reports):
    _, store, _ = reports
    out = io.StringIO()
    Console(file=out, width=240, color_system=None).print(rich_table(store))
    last = out.getvalue().strip().splitlines()[-len(store["headline"]):]
    assert last == [r["sentence"] for r in store["headline"]]


def _svg_panels(page):
    return re.findall(r"<svg[^>]*aria-label=\"([^\"]*)\".*?</svg>", page, flags=re.S), \
        re.findall(r"<svg[^>]*aria-label=\"[^\"]*\".*?</svg>", page, flags=re.S)


def test_parallax_plots_fit_the_data_with_error_bars_and_a_shape_per_data_kind(reports):
    folder, store, pairs = reports
    page = to_html(_merged(store, pairs), folder)
    labels, panels = _svg_panels(page)
    parallax = {lab: p for lab, p in zip(labels, panels) if lab.startswith("PSNR against parallax")}
    assert len(parallax) == 2                                   # one per data kind at the one scale
    store_panel = next(p for lab, p in parallax.items() if lab.endswith(store["results"][0]["data"]))
    # The x ticks stay near the data (views at about 1.4 and 9.9 px), not out to the largest value ever seen.
    xs = [r["parallax"] for r in store["results"]]
    ticks = [float(t) for t in re.findall(r'y="\d+" text-anchor="middle" class="tk">([\d.]+)<', store_panel)]
    assert ticks and min(xs) - 1.5 <= min(ticks) and max(ticks) <= max(xs) + 1.5
    # An error bar (± std over the group's two images) per row.
    for report in (store, pairs):
        panel = next(p for lab, p in parallax.items() if lab.endswith(report["results"][0]["data"]))
        assert panel.count('<path d="M') == len(report["results"]) and all(r["psnr_std"] for r in report["results"])
    # Each data kind its own marker shape (markers are the white-edged shapes), and the legend shows those
    # shapes and no line style the plots lack.
    shapes = {lab.rsplit(", ", 1)[-1]: set(re.findall(r'<(circle|rect|polygon)[^>]*stroke="#fff"', panel))
              for lab, panel in parallax.items()}
    assert shapes == {store["results"][0]["data"]: {"circle"}, "pairs": {"rect"}}
    legend = page[page.index('<p class="legend">'):page.index('<div class="plots">')]
    assert legend.count('class="lm"') == 2 and "dashed" not in page


def test_speed_quality_scatter_is_seconds_per_megapixel_against_psnr(reports):
    folder, store, _ = reports
    from refsr_cli.bench.report_plots import speed_quality_points

    points = {(p["scale"], p["method"]): p for p in speed_quality_points(store)}
    assert set(points) == {(SCALE, m) for m in METHODS}
    megapixels = H * W / 1e6                        # every image of the store is H×W
    for method in METHODS:
        images = [i for i in store["images"] if i["method"] == method]
        assert points[(SCALE, method)]["seconds_per_mp"] == pytest.approx(
            np.median([i["seconds"] for i in images]) / megapixels, rel=1e-9)
        assert points[(SCALE, method)]["psnr"] == pytest.approx(np.mean([i["psnr"] for i in images]), abs=1e-9)
    labels, _ = _svg_panels(to_html(store, folder))
    assert f"PSNR against seconds per megapixel, ×{SCALE}" in labels


def _uri_png(uri):
    return iio.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_crops_one_row_per_case_with_difference_to_gt_and_zoom(reports):
    folder, store, _ = reports
    page = to_html(store, folder)
    rows = re.findall(r'<div class="row">(.*?)</div></div>', page, flags=re.S)
    assert len(rows) == len(store["showcase"]) == 2
    item = store["showcase"][0]
    figures = re.findall(r"<figure>(.*?)</figure>", rows[0], flags=re.S)
    assert len(figures) == len(item["tiles"])
    # The difference view of bicubic, recomputed from the crop files: 16 greys of 4·mean|crop − GT|.
    files = {t["label"]: folder / t["file"] for t in item["tiles"]}
    gt = iio.imread(files["GT"]).astype(int)
    bicubic = next(f for f in figures if "<figcaption>bicubic" in f)
    shown = _uri_png(re.search(r'class="dif"[^>]*src="([^"]+)"', bicubic).group(1))
    error = np.abs(iio.imread(files["bicubic"]).astype(int) - gt).mean(axis=2) * 4
    assert np.array_equal(shown.reshape(error.shape), (np.minimum(error // 16, 15) * 17).astype(np.uint8))
    assert shown.max() > 0                                      # bicubic is not the GT
    gt_figure = next(f for f in figures if "<figcaption>GT" in f)
    assert 'class="dif"' not in gt_figure                       # nothing to compare the GT with
    # Larger crops, zoom overlay and its script inside the page.
    assert "grid-auto-columns:256px" in page and 'id="zoom"' in page and "addEventListener('keydown'" in page

"""A reference that covers only part of the view (wide + telephoto): zoom, footprint, blended SR, region
metrics, the CLI and the bench case."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from refsr_cli.cli import main
from refsr_cli.data.image_io import array_to_tensor, read_image, tensor_to_array, write_image
from refsr_cli.inference.footprint import BAND_LR, Footprint, footprint_inference
from refsr_cli.inference.methods import load_method
from refsr_cli.metrics import evaluate_regions
from refsr_cli.ops.prealign import estimate_alignment
from refsr_cli.ops.resize import downscale, imresize


def _tele_case(zoom: float, scale: int = 4):
    """HR = a real photo; the reference: its central half in each dimension, at ``zoom`` reference
    pixels per LR pixel."""
    import skimage.data

    hr = array_to_tensor(skimage.data.astronaut()[:448, :448])[None]
    H, W = hr.shape[-2:]
    centre = hr[..., H // 4: 3 * H // 4, W // 4: 3 * W // 4]
    side = round(centre.shape[-1] * zoom / scale)
    tele = imresize(centre, size=(side, side)).clamp(0, 1)
    return hr, downscale(hr, scale).clamp(0, 1), tele


@pytest.mark.parametrize("zoom", [1.5, 2.0, 3.0, 5.0])
def test_the_zoom_of_a_telephoto_reference_is_estimated_within_one_percent(zoom):
    hr, lr, tele = _tele_case(zoom)
    alignment = estimate_alignment(lr, tele, 4)
    footprint = Footprint(alignment.matrix, tuple(tele.shape[-2:]), tuple(hr.shape[-2:]), 4)
    true_zoom = tele.shape[-1] / (hr.shape[-1] / 2 / 4)      # reference pixels per LR pixel, as drawn
    assert abs(footprint.zoom / true_zoom - 1) < 0.01, (footprint.zoom, true_zoom)
    assert abs(footprint.coverage - 0.25) < 0.01


def test_footprint_geometry_mask_weights_and_crop():
    # The identity map of a 40×60 HR grid onto a 20×30 reference at the HR density: its top-left quarter.
    fp = Footprint(np.eye(3), (20, 30), (40, 60), 4)
    assert fp.zoom == pytest.approx(4.0)
    mask = fp.mask()
    assert mask[:20, :30].all() and not mask[20:].any() and not mask[:, 30:].any()
    assert fp.coverage == pytest.approx(0.25)
    w = fp.weights()[0, 0]
    assert float(w[20:].max()) == 0 and float(w[:, 30:].max()) == 0      # nothing outside
    assert float(w[19, 0]) == 0 and float(w[0, 29]) == 0                  # 0 along the edges inside the view
    # Rising inwards from the edges, and no ramp along the view's own border (the footprint reaches it).
    assert torch.all(w[10, :29].diff() <= 1e-6) and torch.all(w[:19, 5].diff() <= 1e-6)
    in_ramp = 30 - 2 * BAND_LR                     # half-way into the ramp of the right edge
    assert float(w[0, 0]) > float(w[10, in_ramp]) > 0
    # The LR crop of the reference path: the footprint (5×7.5 LR px) plus context, clipped to the image.
    assert fp.lr_box((10, 15)) == (0, 10, 0, 15)


def _run(method, lr, ref):
    return method(lr, ref)


def test_outside_the_footprint_the_output_is_single_image_sr_and_inside_the_reference_is_used():
    import skimage.data

    _, right, _ = skimage.data.stereo_motorcycle()
    hr = array_to_tensor(right[:192, 256:512])[None]
    lr = downscale(hr, 4).clamp(0, 1)
    ref = hr.clone()      # a perfect reference where it has content, so that using it shows
    # The reference sees the left 128 columns of the view only (its pixels beyond them are smeared).
    fp = Footprint(np.eye(3), (192, 128), tuple(hr.shape[-2:]), 4)
    smeared = ref.clone()
    smeared[..., 128:] = ref[..., 127:128]
    net = load_method("refsrnet", 4)
    calls = []

    def run(method, lr_, ref_):
        calls.append((method.name, tuple(lr_.shape[-2:])))
        return method(lr_, ref_)

    sr, aux = footprint_inference(net, lr, smeared, fp, run)
    mdsr, _ = load_method("mdsr", 4)(lr)
    weights = fp.weights()[0, 0]
    outside = weights == 0
    assert torch.equal(sr[0][:, outside], mdsr[0][:, outside])
    # The reference path ran on the footprint's LR crop (32 columns + 8 of context), not the whole view.
    assert ("mdsr", (48, 64)) in calls and ("refsrnet", (48, 40)) in calls
    # Deep inside, the reference-based result, which beats single-image SR there.
    inner = weights == 1
    scores = evaluate_regions(sr[0].clamp(0, 1), hr[0], inner)
    single = evaluate_regions(mdsr[0].clamp(0, 1), hr[0], inner)
    assert scores["psnr_covered"] > single["psnr_covered"] + 1.0
    # No dip along the edge: the blend band scores at least the worse of its two inputs.
    band = (weights > 0) & (weights < 1)
    whole_ref, _ = net(lr, net.bind_pair(lr, smeared))
    mixed = evaluate_regions(sr[0].clamp(0, 1), hr[0], band)["psnr_covered"]
    parts = [evaluate_regions(x[0].clamp(0, 1), hr[0], band)["psnr_covered"] for x in (mdsr, whole_ref)]
    assert mixed >= min(parts) - 0.05
    assert BAND_LR * 4 <= 128


def test_region_metrics_match_an_independent_computation():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.random((3, 40, 50), dtype=np.float32))
    sr = (gt + torch.from_numpy(rng.normal(0, 0.05, (3, 40, 50)).astype(np.float32))).clamp(0, 1)
    sr[:, :, 25:] = (sr[:, :, 25:] + 0.1).clamp(0, 1)          # the right half is worse
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[:, :25] = True
    scores = evaluate_regions(sr, gt, mask)
    se = ((sr.double() - gt.double()) ** 2).mean(0).numpy()
    assert scores["psnr_covered"] == pytest.approx(10 * np.log10(1 / se[:, :25].mean()), abs=1e-4)
    assert scores["psnr_outside"] == pytest.approx(10 * np.log10(1 / se[:, 25:].mean()), abs=1e-4)
    assert scores["psnr_covered"] > scores["psnr_outside"]
    assert scores["ssim_covered"] > scores["ssim_outside"]
    empty = evaluate_regions(sr, gt, torch.zeros(40, 50, dtype=torch.bool))
    assert empty["psnr_covered"] is None and empty["psnr_outside"] is not None


def test_infer_with_a_telephoto_reference_writes_the_footprint_and_region_metrics(tmp_path):
    hr, lr, tele = _tele_case(4.0)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    write_image(pairs / "moto_lr.png", tensor_to_array(lr[0]))
    write_image(pairs / "moto_ref.png", tensor_to_array(tele[0]))
    write_image(pairs / "moto_hr.png", tensor_to_array(hr[0]))
    out = tmp_path / "sr"
    res = CliRunner().invoke(main, ["infer", str(pairs), "--scale", "4", "--out", str(out), "--method", "crossnet",
                                    "--prealign", "--save-warped", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads([line for line in res.output.splitlines() if line.startswith("{")][0])
    assert 3.8 < record["geometry"]["zoom"] < 4.2
    assert 0.2 < record["geometry"]["coverage"] < 0.3
    assert record["psnr_covered"] is not None and record["psnr_outside"] is not None
    assert (out / "moto_footprint.png").is_file()
    # refsr metrics --mask reads the footprint infer wrote and finds the same regions.
    res = CliRunner().invoke(main, ["metrics", str(out), str(pairs), "--mask", str(out), "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["images"][0]
    assert row["psnr_covered"] == pytest.approx(record["psnr_covered"], abs=1e-6)
    assert row["psnr_outside"] == pytest.approx(record["psnr_outside"], abs=1e-6)
    # A mask of another size is refused, naming the file.
    write_image(tmp_path / "small.png", np.zeros((8, 8, 3), np.uint8))
    res = CliRunner().invoke(main, ["metrics", str(out), str(pairs), "--mask", str(tmp_path / "small.png")])
    assert res.exit_code == 1 and "small.png" in res.output


def _fallback_record(tmp_path, name, lr, ref):
    pairs = tmp_path / name
    pairs.mkdir()
    lr = (lr * 255).round() / 255          # what the 8-bit file holds
    write_image(pairs / f"{name}_lr.png", tensor_to_array(lr[0]))
    write_image(pairs / f"{name}_ref.png", tensor_to_array(ref[0]))
    out = tmp_path / f"{name}_sr"
    res = CliRunner().invoke(main, ["infer", str(pairs), "--scale", "4", "--out", str(out), "--prealign", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads([line for line in res.output.splitlines() if line.startswith("{")][0])
    # Single-image SR of the whole view: MDSR's output, to the 8-bit rounding.
    written, _ = read_image(out / f"{name}_sr.png")
    mdsr, _ = load_method("mdsr", 4)(lr)
    assert float((written - mdsr[0].clamp(0, 1)).abs().max()) <= 1 / 255 + 1e-6
    return record, res.output


def test_a_reference_that_cannot_be_aligned_gives_single_image_sr_with_a_notice(tmp_path):
    import skimage.data

    _, lr, _ = _tele_case(4.0)
    other = array_to_tensor(skimage.data.hubble_deep_field()[:300, :300])[None]   # another scene
    record, output = _fallback_record(tmp_path, "other", lr, other)
    assert record["status"] == "done" and record["geometry"]["fallback"] == "mdsr"
    assert "cannot be aligned" in record["geometry"]["reason"]
    assert "other: the reference cannot be aligned with the LR view" in output and "single-image SR (mdsr)" in output


def test_a_reference_covering_under_two_percent_of_the_view_gives_single_image_sr(tmp_path):
    import skimage.data

    # A telephoto crop of 13 % × 13 % of the view (1.7 %) at 8 reference pixels per LR pixel: it aligns.
    hr = array_to_tensor(skimage.data.hubble_deep_field()[:872, :1000])[None]
    lr = downscale(hr, 4).clamp(0, 1)
    crop = hr[..., 290 - 56: 290 + 57, 333 - 65: 333 + 65]
    tele = imresize(crop, size=(2 * crop.shape[-2], 2 * crop.shape[-1])).clamp(0, 1)
    record, output = _fallback_record(tmp_path, "tiny", lr, tele)
    geometry = record["geometry"]
    assert geometry["fallback"] == "mdsr" and geometry["coverage"] < 0.02 and 7.9 < geometry["zoom"] < 8.1
    assert "under 2%" in geometry["reason"] and "tiny: the reference covers 1.7% of the view" in output


def test_the_bench_wide_tele_case_scores_inside_and_outside_the_footprint(tmp_path):
    from refsr_cli.bench.run import run_bench

    report = run_bench(methods=["mdsr", "crossnetpp"], scales=[8], out=tmp_path / "r", suite="wide-tele", jobs=1)
    rows = {r["method"]: r for r in report["results"]}
    assert set(rows) == {"mdsr", "crossnetpp"} and all(r["data"] == "wide/tele" for r in rows.values())
    for r in rows.values():
        assert r["psnr_covered"] is not None and r["psnr_outside"] is not None
        assert min(r["psnr_covered"], r["psnr_outside"]) <= r["psnr"] <= max(r["psnr_covered"], r["psnr_outside"])
    # Outside the footprint the network's output is MDSR's (up to the blend band, which lies inside).
    assert rows["crossnetpp"]["psnr_outside"] == pytest.approx(rows["mdsr"]["psnr_outside"], abs=0.01)
    # The report shows the regions: a table with each method's covered / outside / whole PSNR.
    md = (tmp_path / "r" / "report.md").read_text()
    table = md[md.index("## By region"):]
    r = rows["crossnetpp"]
    assert f"| crossnetpp | 8 | wide/tele | stereo_motorcycle/tele | {r['psnr_covered']:.2f} | {r['psnr_outside']:.2f} | {r['psnr']:.2f} |" in table
    assert "By region" in (tmp_path / "r" / "report.html").read_text()

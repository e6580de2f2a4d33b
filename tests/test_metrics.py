"""Metrics: agreement with skimage, IFC properties and an independent subband check, the CLI."""
import csv
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from refsr_cli import metrics as M
from refsr_cli.cli import main
from refsr_cli.errors import RefsrError


@pytest.fixture(scope="module")
def pair():
    """A 96×120 astronaut crop (H×W×3 float in [0, 1]) and a noisy, blurred version of it."""
    gt = data.astronaut()[60:156, 180:300].astype(np.float64) / 255
    rng = np.random.default_rng(1)
    sr = np.clip(gaussian_filter(gt, (0.7, 0.7, 0)) + rng.normal(0, 0.02, gt.shape), 0, 1)
    return sr, gt


def chw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float()


def ski_ssim(a, b, **kw):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, **kw)


# -------------------------------------------------------------------------------------- PSNR / SSIM

def test_psnr_ssim_agree_with_skimage_rgb(pair):
    sr, gt = pair
    sr32, gt32 = chw(sr), chw(gt)
    a, b = sr32.permute(1, 2, 0).double().numpy(), gt32.permute(1, 2, 0).double().numpy()  # same float32 data
    assert abs(M.psnr(sr32, gt32) - peak_signal_noise_ratio(b, a, data_range=1)) < 1e-6
    assert abs(M.ssim(sr32, gt32) - ski_ssim(b, a, channel_axis=2)) < 1e-4


@pytest.mark.parametrize("crop", [0, 4])
def test_y_and_crop_agree_with_skimage(pair, crop):
    sr, gt = pair
    ys, yg = color.rgb2ycbcr(sr)[..., 0] / 255, color.rgb2ycbcr(gt)[..., 0] / 255  # BT.601, RGB input
    if crop:
        ys, yg = ys[crop:-crop, crop:-crop], yg[crop:-crop, crop:-crop]
        ref_rgb = peak_signal_noise_ratio(gt[crop:-crop, crop:-crop], sr[crop:-crop, crop:-crop], data_range=1)
        assert abs(M.psnr(sr.transpose(2, 0, 1), gt.transpose(2, 0, 1), crop=crop) - ref_rgb) < 1e-6
    a, b = sr.transpose(2, 0, 1), gt.transpose(2, 0, 1)
    assert abs(M.psnr(a, b, y=True, crop=crop) - peak_signal_noise_ratio(yg, ys, data_range=1)) < 1e-6
    assert abs(M.ssim(a, b, y=True, crop=crop) - ski_ssim(yg, ys)) < 1e-4
    # Y is not the same number as RGB: the option really changes the convention
    assert abs(M.psnr(a, b, y=True) - M.psnr(a, b)) > 0.05


def test_identical_and_constant_images_are_well_defined():
    x = torch.rand(3, 80, 80, generator=torch.Generator().manual_seed(0))
    values = M.evaluate(x, x)
    assert values["psnr"] == math.inf and values["ssim"] == pytest.approx(1.0)
    assert math.isfinite(values["ifc"]) and values["ifc"] > 0
    flat = torch.full((3, 80, 80), 0.5)
    v = M.evaluate(flat, flat)
    assert v == {"psnr": math.inf, "ssim": pytest.approx(1.0), "ifc": 0.0}
    v = M.evaluate(flat * 0.8, flat)  # constant vs constant: SSIM finite, IFC 0 (no information)
    assert all(math.isfinite(v[k]) for k in ("psnr", "ssim", "ifc")) and v["ifc"] == 0.0
    assert math.isnan(M.evaluate(torch.rand(3, 40, 40), torch.rand(3, 40, 40))["ifc"])  # too small for IFC


def test_bad_tensor_inputs():
    with pytest.raises(RefsrError, match="differs"):
        M.psnr(torch.rand(3, 20, 20), torch.rand(3, 20, 21))
    with pytest.raises(RefsrError, match="NaN"):
        M.ssim(torch.full((3, 20, 20), float("nan")), torch.rand(3, 20, 20))
    with pytest.raises(RefsrError, match="11×11"):
        M.ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(RefsrError, match="crop"):
        M.psnr(torch.rand(3, 20, 20), torch.rand(3, 20, 20), crop=10)


# ---------------------------------------------------------------------------------------------- IFC

@pytest.fixture(scope="module")
def gray():
    return data.camera()[100:228, 150:310].astype(np.float64)  # 128×160, 0–255


def test_ifc_of_identity_is_far_above_degraded(gray):
    same = M.ifc_gray(gray, gray)
    degraded = M.ifc_gray(gray, gaussian_filter(gray, 1.0))
    assert same > 5 * degraded > 0


def test_ifc_falls_monotonically_with_blur_and_noise(gray):
    blurs = [M.ifc_gray(gray, gaussian_filter(gray, s)) for s in (0.5, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in zip(blurs, blurs[1:])), blurs
    rng = np.random.default_rng(0)
    noise = rng.normal(size=gray.shape)
    noisy = [M.ifc_gray(gray, gray + s * noise) for s in (2, 5, 10, 20)]
    assert all(a > b for a, b in zip(noisy, noisy[1:])), noisy


def test_ifc_band_mapping():
    # the authors' wtree bands 4…25 are orientations 3 and 0 of every level, coarsest first
    keys = [M.ifc_band_key(k) for k in M.IFC_SUBBANDS]
    assert keys == [(3, 3), (3, 0), (2, 3), (2, 0), (1, 3), (1, 0), (0, 3), (0, 0)]
    assert [M.ifc_window(k) for k in M.IFC_SUBBANDS] == [3, 3, 5, 5, 9, 9, 17, 17]


def _subband_reference(y, yn, winsize):
    """ifcvec's computation for one subband written out with plain loops (independent of the module)."""
    m = 3
    h, w = (y.shape[0] // m) * m, (y.shape[1] // m) * m
    y, yn = y[:h, :w], yn[:h, :w]
    r = winsize // 2
    # reflect1 = mirror without repeating the edge sample = numpy's "reflect"
    py, pyn = np.pad(y, r, mode="reflect"), np.pad(yn, r, mode="reflect")
    gh, gw = h // m, w // m
    g = np.zeros((gh, gw))
    vv = np.zeros((gh, gw))
    n = winsize * winsize
    tol = 1e-15
    for i in range(gh):
        for j in range(gw):
            cy, cx = i * m + 1, j * m + 1  # block centre
            a = py[cy:cy + winsize, cx:cx + winsize]
            b = pyn[cy:cy + winsize, cx:cx + winsize]
            sx = max(np.sum((a - a.mean()) ** 2), 0)
            sy = max(np.sum((b - b.mean()) ** 2), 0)
            cxy = np.sum((a - a.mean()) * (b - b.mean()))
            gg = cxy / (sx + tol)
            v = (sy - gg * cxy) / n
            if sx < tol:
                gg, v = 0, sy
            if sy < tol:
                gg, v = 0, 0
            if gg < 0:
                gg, v = 0, sy
            g[i, j], vv[i, j] = gg, max(v, tol) if v > tol else tol
    vectors = [y[k:k + h - 2, l:l + w - 2].ravel() for l in range(3) for k in range(3)]
    cu = np.cov(np.stack(vectors), bias=True)
    inv = np.linalg.inv(cu)
    ss = np.zeros((gh, gw))
    for i in range(gh):
        for j in range(gw):
            u = y[i * m:i * m + 3, j * m:j * m + 3].T.ravel()  # MATLAB column order (irrelevant to uᵀC⁻¹u)
            ss[i, j] = u @ inv @ u / 9
    lam = np.linalg.eigvalsh(cu)
    off = math.ceil(r / m)
    total = 0.0
    for i in range(off, gh - off):
        for j in range(off, gw - off):
            for lj in lam:
                total += math.log2(1 + g[i, j] ** 2 * ss[i, j] * lj / (vv[i, j] + 1e-10))
    return total


def test_ifc_one_subband_against_a_plain_loop(gray):
    import pyrtools as pt

    dist = gaussian_filter(gray, 1.2) + np.random.default_rng(3).normal(0, 3, gray.shape)
    k = 16  # pyrtools level 1, orientation 3: a 64×80 band, 9×9 window, 2-block border
    key = M.ifc_band_key(k)
    ref_band = pt.pyramids.SteerablePyramidSpace(gray, 4, 5, "reflect1").pyr_coeffs[key]
    dist_band = pt.pyramids.SteerablePyramidSpace(dist, 4, 5, "reflect1").pyr_coeffs[key]
    assert ref_band.shape == (64, 80)
    expected = _subband_reference(ref_band, dist_band, M.ifc_window(k))
    assert M.ifc_subband(ref_band, dist_band, k) == pytest.approx(expected, rel=1e-9)
    # and IFC is the sum of the eight bands over the pixel count
    ref_pyr = pt.pyramids.SteerablePyramidSpace(gray, 4, 5, "reflect1").pyr_coeffs
    dist_pyr = pt.pyramids.SteerablePyramidSpace(dist, 4, 5, "reflect1").pyr_coeffs
    total = sum(M.ifc_subband(ref_pyr[M.ifc_band_key(b)], dist_pyr[M.ifc_band_key(b)], b) for b in M.IFC_SUBBANDS)
    assert M.ifc_gray(gray, dist) == pytest.approx(total / gray.size, rel=1e-12)
    # The ground truth's side is kept between calls by content: an edited ground truth of the same size
    # (the same array object, changed in place) is scored afresh, not from the kept one.
    edited = gray.copy()
    first = M.ifc_gray(edited, dist)
    edited[:40] = gaussian_filter(edited[:40], 2.0)
    ref_pyr = pt.pyramids.SteerablePyramidSpace(edited, 4, 5, "reflect1").pyr_coeffs
    total = sum(M.ifc_subband(ref_pyr[M.ifc_band_key(b)], dist_pyr[M.ifc_band_key(b)], b) for b in M.IFC_SUBBANDS)
    assert M.ifc_gray(edited, dist) == pytest.approx(total / gray.size, rel=1e-12) != first


# ---------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def folders(tmp_path, pair):
    sr, gt = pair
    (tmp_path / "sr").mkdir()
    (tmp_path / "gt").mkdir()
    to8 = lambda a: (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
    iio.imwrite(tmp_path / "gt" / "a.png", to8(gt))
    iio.imwrite(tmp_path / "gt" / "b.png", to8(gt))
    iio.imwrite(tmp_path / "sr" / "a_sr.png", to8(sr))   # infer's naming meets plain names
    iio.imwrite(tmp_path / "sr" / "b.png", to8(gt))      # identical: PSNR inf
    return tmp_path


def _strict(text):
    def bad(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=bad)


def test_cli_table_json_csv(folders):
    runner = CliRunner()
    res = runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt")])
    assert res.exit_code == 0, res.output
    assert "a" in res.stdout and "inf" in res.stdout and "mean (2)" in res.stdout

    res = runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt"), "--json", "--jobs", "1",
                               "--csv", str(folders / "m.csv")])
    assert res.exit_code == 0, res.output
    doc = _strict(res.stdout)
    names = [r["name"] for r in doc["images"]]
    assert names == ["a", "b"]
    a = doc["images"][0]
    gt8 = iio.imread(folders / "gt" / "a.png") / 255.0
    sr8 = iio.imread(folders / "sr" / "a_sr.png") / 255.0
    assert abs(a["psnr"] - peak_signal_noise_ratio(gt8, sr8, data_range=1)) < 1e-6
    assert doc["images"][1]["psnr"] is None and doc["mean"]["psnr"] is None  # inf → null
    assert doc["mean"]["ssim"] == pytest.approx((a["ssim"] + 1.0) / 2)
    rows = list(csv.DictReader(open(folders / "m.csv")))
    assert [r["name"] for r in rows] == ["a", "b", "mean"] and rows[1]["psnr"] == "inf"
    assert float(rows[0]["ssim"]) == pytest.approx(a["ssim"])

    res = runner.invoke(main, ["metrics", "--y", "--crop", "4", str(folders / "sr" / "a_sr.png"),
                               str(folders / "gt" / "a.png"), "--json"])
    assert res.exit_code == 0, res.output
    y = _strict(res.stdout)["images"][0]
    assert y["psnr"] != pytest.approx(a["psnr"], abs=1e-3)


def test_cli_parallel_jobs_give_the_same_numbers(folders):
    runner = CliRunner()
    one = _strict(runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt"), "--json",
                                       "--jobs", "1"]).stdout)
    two = _strict(runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt"), "--json",
                                       "--jobs", "2"]).stdout)
    assert one == two


def test_cli_errors(folders, tmp_path):
    runner = CliRunner()
    iio.imwrite(folders / "sr" / "c.png", np.zeros((96, 120, 3), np.uint8))
    res = runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt")])
    assert res.exit_code == 1 and "c.png" in res.stderr and "no ground truth" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    (folders / "sr" / "c.png").unlink()

    iio.imwrite(folders / "gt" / "d.png", np.zeros((96, 120, 3), np.uint8))
    res = runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt")])
    assert res.exit_code == 1 and "d.png" in res.stderr and "no SR image" in res.stderr
    (folders / "gt" / "d.png").unlink()

    iio.imwrite(folders / "sr" / "b.png", np.zeros((90, 120, 3), np.uint8))
    res = runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt")])
    assert res.exit_code == 1 and "b.png" in res.stderr and "differs" in res.stderr

    (folders / "sr" / "b.png").write_bytes(b"not an image")
    res = runner.invoke(main, ["metrics", str(folders / "sr"), str(folders / "gt")])
    assert res.exit_code == 1 and "b.png" in res.stderr and "cannot read" in res.stderr

    (tmp_path / "empty").mkdir()
    res = runner.invoke(main, ["metrics", str(tmp_path / "empty"), str(folders / "gt")])
    assert res.exit_code == 1 and "no images found" in res.stderr

    res = runner.invoke(main, ["metrics", str(folders / "sr")])
    assert res.exit_code == 2  # usage error: GT missing

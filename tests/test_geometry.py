"""Reading a pair's geometry from the pair: direction, span and spread of the reference's displacement."""
import math

import numpy as np
import pytest
import skimage.data
import torch

from refsr_cli.archs import build_model, spec
from refsr_cli.inference.methods import Method
from refsr_cli.ops.geometry import estimate_geometry, sweep_geometry
from refsr_cli.ops.resize import downscale
from refsr_cli.ops.warp import shift


def _photo(h=256, w=320):
    img = torch.from_numpy(skimage.data.astronaut()[100:100 + h + 40, 120:120 + w + 40]).permute(2, 0, 1).float() / 255
    return img[None]


def _pair(dx, dy, h=256, w=320):
    """target = the photo; ref = the photo displaced so that target(p) = ref(p + (dx, dy))."""
    big = _photo(h, w)
    target = big[..., 20:20 + h, 20:20 + w]
    ref = shift(big, -dx, -dy)[..., 20:20 + h, 20:20 + w]     # shift(x, a, b)(p) = x(p + (a, b))
    return target, ref


@pytest.mark.parametrize("dx, dy", [(9.0, 0.0), (0.0, -7.0), (6.0, 6.0), (-5.0, 3.0)])
def test_a_known_shift_gives_its_direction_and_span(dx, dy):
    target, ref = _pair(dx, dy)
    g = estimate_geometry(target, ref)
    assert g is not None and g.matches >= 50
    length = math.hypot(dx, dy)
    assert g.direction[0] * dx / length + g.direction[1] * dy / length > 0.99      # direction, signed
    # The ends are the 2nd and 98th percentiles of displacements measured at the working size (320 px →
    # 256 px here, so 1.25 px per working pixel): a few tenths of a working pixel of matching noise.
    assert g.span[0] == pytest.approx(length, abs=1.5) and g.span[1] == pytest.approx(length, abs=1.5)
    assert g.across < 1.5 and g.parallax == pytest.approx(length, abs=0.5)


def test_an_lr_target_is_matched_against_the_reference_at_its_level_of_detail():
    target, ref = _pair(12.0, -4.0)
    g = estimate_geometry(downscale(target, 4).clamp(0, 1), ref)
    assert g is not None
    assert g.shift[0] == pytest.approx(12.0, abs=1.0) and g.shift[1] == pytest.approx(-4.0, abs=1.0)


def test_stereo_motorcycle_against_its_disparity_map():
    """The real rectified pair: horizontal direction, span within the map's 2nd–98th percentiles ± 3 px."""
    left, right, disparity = skimage.data.stereo_motorcycle()
    h, w = 496, 736
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a[:h, :w])).permute(2, 0, 1).float()[None] / 255  # noqa: E731
    g = estimate_geometry(to_t(right), to_t(left))      # right(x) = left(x + d)
    d = np.asarray(disparity[:h, :w], np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    lo, hi = np.percentile(d, [2, 98])
    assert g.direction[0] > 0.995 and g.across < 3
    assert g.span[0] == pytest.approx(lo, abs=3) and g.span[1] == pytest.approx(hi, abs=3)


def test_a_reference_of_another_scene_gives_no_estimate():
    target = _pair(0, 0)[0]
    other = torch.from_numpy(skimage.data.coffee()[:256, :320]).permute(2, 0, 1).float()[None] / 255
    assert estimate_geometry(target, other) is None


def test_crossmpi_sweeps_the_estimated_geometry_unless_it_is_given():
    target, ref = _pair(10.0, 0.0, 128, 160)
    lr = downscale(target, 4).clamp(0, 1)
    torch.manual_seed(0)
    method = Method.from_model(build_model("crossmpi", **spec("crossmpi").tiny), scale=4)
    assert method.bind_pair(lr, ref) is ref            # Cross-MPI sweeps: its reference is not moved
    g = method.geometry
    assert g is not None and g.direction[0] > 0.99
    baseline, planes = method.pair_options["baseline"], method.pair_options["disparities"]
    assert baseline == pytest.approx(g.direction)
    sweep = sweep_geometry(g)["disparity_range"]
    assert float(planes.min()) == pytest.approx(sweep[0]) and float(planes.max()) == pytest.approx(sweep[1])
    assert float(planes.min()) < 10.0 < float(planes.max())
    sr, _ = method(lr, ref)
    assert sr.shape == target.shape
    # Given geometry (flags, a light field's known baseline) is used as it is: nothing is estimated.
    method.forward_options = {"baseline": (1.0, 1.0)}
    method.bind_pair(lr, ref)
    assert method.geometry is None and method.pair_options == {}
    # A single-image network reads no geometry.
    mdsr = Method.from_model(build_model("mdsr", **spec("mdsr").tiny), scale=4)
    assert mdsr.bind_pair(lr, ref) is ref and mdsr.geometry is None


@pytest.mark.parametrize("variant", ["crossnet", "refsrnet"])
def test_a_bounded_search_gets_its_reference_centred_on_the_pairs_displacement(variant):
    """target(p) = ref(p + (23, -6)): the reference handed to the network is ref shifted by that much."""
    target, ref = _pair(23.0, -6.0, 128, 192)
    lr = downscale(target, 4).clamp(0, 1)
    torch.manual_seed(0)
    method = Method.from_model(build_model(variant, **spec(variant).tiny), scale=4)
    centred = method.bind_pair(lr, ref)
    dx, dy = method.reference_shift             # whole pixels; the LR (32×48) resolves a quarter of one
    assert abs(dx - 23) <= 1 and abs(dy + 6) <= 1 and method.pair_options == {}
    assert torch.equal(centred, shift(ref, float(dx), float(dy)))
    inner = (..., slice(8, -16), slice(8, -32))          # away from the clamped border
    assert (centred - target)[inner].abs().mean() < 0.25 * (ref - target)[inner].abs().mean()
    # A given shift replaces the estimate, and nothing is estimated.
    method.given_shift = (0, 0)
    assert method.bind_pair(lr, ref) is ref and method.geometry is None


def _infer(tmp_path, variant: str, dx: float, width: int):
    """``(invoke, args)``: a pair displaced by ``(dx, 0)`` and a tiny untrained ``variant`` checkpoint on
    disk; ``invoke(*extra, out=NAME)`` runs ``refsr infer … --json`` and returns (result, its JSON line)."""
    import json

    from click.testing import CliRunner

    from refsr_cli.archs.checkpoint import save_checkpoint
    from refsr_cli.cli import main
    from refsr_cli.data.image_io import write_image

    target, ref = _pair(dx, 0.0, 128, width)
    write_image(tmp_path / "pairs" / "a_lr.png", downscale(target, 4).clamp(0, 1)[0])
    write_image(tmp_path / "pairs" / "a_ref.png", ref[0])
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / f"{variant}.pt", build_model(variant, **spec(variant).tiny), 4)
    args = ["infer", str(tmp_path / "pairs"), "--scale", "4", "--weights", str(weights), "--json"]

    def invoke(*extra, out):
        result = CliRunner().invoke(main, [*args, *extra, "--out", str(tmp_path / out)])
        lines = [json.loads(x) for x in result.output.splitlines() if x.startswith("{")]
        return result, (lines[0] if lines else None)

    return invoke, args


def test_infer_prints_and_records_the_estimated_geometry(tmp_path):
    invoke, _ = _infer(tmp_path, "crossmpi", 10.0, 160)
    result, line = invoke(out="sr")
    assert result.exit_code == 0, result.output
    assert "geometry read from the pair: parallax along (+1.00" in result.output
    assert line["geometry"]["direction"][0] > 0.99 and line["geometry"]["span"][0] < 10.5 < line["geometry"]["span"][1] + 1.5
    # Flags override the estimate: nothing is estimated or recorded.
    result, _ = invoke("--baseline", "1", "0", out="sr2")
    assert result.exit_code == 0 and "geometry" not in result.output


def test_infer_centres_the_reference_and_a_given_shift_overrides_it(tmp_path):
    from click.testing import CliRunner

    from refsr_cli.cli import main

    invoke, args = _infer(tmp_path, "crossnet", 20.0, 192)
    result, line = invoke(out="sr")
    assert result.exit_code == 0, result.output
    assert "reference shifted by (+" in result.output
    assert abs(line["geometry"]["reference_shift"][0] - 20) <= 1
    result, _ = invoke("--reference-shift", "0", "0", out="sr2")
    assert result.exit_code == 0 and "geometry" not in result.output and "shifted" not in result.output
    result = CliRunner().invoke(main, [*args[:4], "--method", "mdsr", "--reference-shift", "1", "0",
                                       "--out", str(tmp_path / "sr3")])
    assert result.exit_code == 2 and "--reference-shift applies to the" in result.output


def _affine_pair(h=256, w=320):
    """target = the photo; ref = the photo seen through a turned, zoomed, moved camera: target(p) = ref(A·p)."""
    from refsr_cli.ops.prealign import resample_reference

    angle, zoom = math.radians(3.0), 1.04
    c, s = zoom * math.cos(angle), zoom * math.sin(angle)
    a = np.array([[c, -s, 6.0], [s, c, -4.0], [0.0, 0.0, 1.0]])
    target = _photo(h, w)[..., 20:20 + h, 20:20 + w]
    # ref(q) = target(A⁻¹·q): sampling it at A·p gives the target back.
    ref = resample_reference(target, np.linalg.inv(a), (h, w))
    return target, ref, a


def test_a_pair_that_is_not_rectified_is_aligned_by_an_affine_map_that_maps_points_back_within_a_pixel():
    from refsr_cli.ops.geometry import correspondences, estimate_aligned_geometry, fit_affine

    target, ref, a = _affine_pair()
    g, affine = estimate_aligned_geometry(target, ref)
    assert affine is not None
    # The round trip: target points mapped by the fitted map land within a pixel of where the true one puts them.
    ys, xs = np.mgrid[30:226:16, 30:290:16]
    pts = np.stack((xs.ravel(), ys.ravel(), np.ones(xs.size)))
    assert np.abs((affine @ pts - a @ pts)[:2]).max() < 1.0
    assert np.abs((np.linalg.inv(affine) @ (a @ pts) - pts)[:2]).max() < 1.0
    # What is left for the sweep is (nearly) nothing; without the map it spreads over pixels both ways.
    assert max(abs(g.span[0]), abs(g.span[1])) < 1.5 and g.across < 1.5
    plain = estimate_geometry(target, ref)
    assert plain.across > 4 and plain.span[1] - plain.span[0] > 8
    # fit_affine on the correspondences themselves, as estimate_aligned_geometry calls it.
    p, q = correspondences(target, ref)
    assert np.abs(fit_affine(p, q) - affine).max() < 1e-9


def test_a_rectified_pair_is_not_resampled_and_crossmpi_aligns_only_what_needs_it():
    from refsr_cli.ops.geometry import estimate_aligned_geometry

    target, ref = _pair(9.0, 0.0)
    assert estimate_aligned_geometry(target, ref)[1] is None
    torch.manual_seed(0)
    method = Method.from_model(build_model("crossmpi", **spec("crossmpi").tiny), scale=4)
    lr = downscale(target, 4).clamp(0, 1)
    assert method.bind_pair(lr, ref) is ref and method.alignment is None
    target, ref, _ = _affine_pair()
    lr = downscale(target, 4).clamp(0, 1)
    aligned = method.bind_pair(lr, ref)
    assert method.alignment is not None and aligned.shape == ref.shape
    inner = (..., slice(24, -24), slice(24, -24))
    assert (aligned - target)[inner].abs().mean() < 0.5 * (ref - target)[inner].abs().mean()
    lo, hi = method.pair_options["disparities"].min(), method.pair_options["disparities"].max()
    assert -6 < float(lo) < 0 < float(hi) < 6           # a sweep of the small residual, not of the motion


def test_a_reference_of_another_scene_is_not_copied_the_single_image_fallback_runs():
    target, ref = _pair(6.0, 0.0, 128, 160)
    lr = downscale(target, 4).clamp(0, 1)
    other = torch.from_numpy(skimage.data.coffee()[:128, :160]).permute(2, 0, 1).float()[None] / 255
    torch.manual_seed(0)
    method = Method.from_model(build_model("crossnet", **spec("crossnet").tiny), scale=4)
    single = Method.from_model(build_model("mdsr", **spec("mdsr").tiny), scale=4)
    method.fallback = single
    method.bind_pair(lr, other)
    assert method.reference_unmatched and method.geometry is None
    assert torch.equal(method(lr, other)[0], single(lr, None)[0])
    method.bind_pair(lr, ref)                        # its own reference: the network runs
    assert not method.reference_unmatched
    assert not torch.equal(method(lr, ref)[0], single(lr, None)[0])
    # Without a single-image method to fall back on, the network runs with its trained defaults.
    method.fallback = None
    method.bind_pair(lr, other)
    assert not method.reference_unmatched
    # The shipped fallback is the registry's reference-free variant.
    assert Method.from_model(build_model("crossnet", **spec("crossnet").tiny), scale=4).fallback_method().name == "mdsr"


def test_infer_says_when_it_falls_back_to_single_image_sr(tmp_path):
    from refsr_cli.data.image_io import write_image

    invoke, _ = _infer(tmp_path, "crossnet", 6.0, 160)
    other = torch.from_numpy(skimage.data.coffee()[:128, :160]).permute(2, 0, 1).float() / 255
    write_image(tmp_path / "pairs" / "a_ref.png", other)
    result, line = invoke(out="sr")
    assert result.exit_code == 0, result.output
    assert "the reference matches nothing in the LR view" in result.output and line["geometry"] == {"fallback": "mdsr"}

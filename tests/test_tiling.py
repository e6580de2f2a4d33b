"""Tiled inference: tile layout, weights that sum to one, and tiled output == whole-image output."""
import math

import pytest
import skimage.data
import torch

from refsr_cli.archs import build_model, spec
from refsr_cli.inference.methods import Method, load_method
from refsr_cli.ops.resize import downscale
from refsr_cli.inference.tiling import axis_weights, plan_axis, tile_grid, tiled_inference
from refsr_cli.ops.warp import shift


def _psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def scene():
    hr = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)[None, :, :256, :320]
    return downscale(hr, 4), shift(hr, 3.0, 2.0)   # LR, and a reference with a small parallax


@pytest.mark.parametrize("length", [64, 512, 520, 768, 1000, 4000, 6000])
def test_plan_covers_aligned_with_bounded_overlap(length):
    spans = plan_axis(length, 512, 64, align=64)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert b0 % 64 == 0 and (a1 - a0) % 64 == 0 and a1 - a0 <= 512
        assert a1 - b0 == 64            # exactly the requested overlap: cost stays modest
    if length > 512:
        work = sum(b - a for a, b in spans) / length
        assert work < 1.16
    total = torch.zeros(length)
    for (a, b), w in zip(spans, axis_weights(spans, length)):
        total[a:b] += w
        assert float(w.min()) >= 0
    assert torch.allclose(total, torch.ones(length), atol=1e-6)


def test_weights_are_smooth_and_avoid_tile_edges():
    spans = plan_axis(1000, 512, 128)
    w0 = axis_weights(spans, 1000)[0]
    overlap_start = spans[1][0]
    assert float(w0[:overlap_start].min()) == 1.0                 # no ramp at the image border
    assert float(w0[-32:].max()) == 0.0                            # dead zone at the interior edge
    assert float(w0.diff().abs().max()) < 0.06                     # no step anywhere


def test_grid_validation():
    with pytest.raises(ValueError, match="multiples"):
        tile_grid(1000, 1000, 4, tile=500, overlap=64)
    with pytest.raises(ValueError, match="third"):
        tile_grid(1000, 1000, 4, tile=128, overlap=64)
    with pytest.raises(ValueError, match="at least 64"):
        tile_grid(1000, 1000, 4, tile=512, overlap=0)


def test_tiled_bicubic_is_exactly_whole_image(scene):
    lr, _ = scene
    bicubic = load_method("bicubic", 4)
    whole, _ = tiled_inference(bicubic, lr, None, 4, tile=0)
    out = torch.full_like(whole, 7.0)   # a preallocated output is overwritten, not added to
    tiled, _ = tiled_inference(bicubic, lr, None, 4, tile=192, overlap=64, out=out)
    assert tiled is out and tiled.shape == (1, 3, 256, 320)
    # Bicubic is local (2 LR px = 8 HR px of support) and weights vanish 16 px from tile edges.
    assert float((whole - tiled).abs().max()) < 1e-5


@pytest.mark.parametrize("name", ["crossnet"])   # FlowNetS inside: the widest receptive field
def test_tiny_network_tiled_equals_whole_within_seam_target(scene, name):
    lr, ref = scene[0][..., :, :64], scene[1][..., :, :256]
    torch.manual_seed(0)
    method = Method.from_model(build_model(name, **spec(name).tiny), scale=4)
    whole, aux_whole = tiled_inference(method, lr, ref, 4, tile=0, aux_keys=("flow", "warped"))
    calls = []
    tiled, aux_tiled = tiled_inference(method, lr, ref, 4, tile=192, overlap=64, aux_keys=("flow", "warped"),
                                       progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4, 4)          # 2 × 2 tiles on the 256 × 256 output
    assert tiled.shape == whole.shape == (1, 3, 256, 256)
    assert _psnr(tiled, whole) >= 45
    assert set(aux_tiled) == set(aux_whole) and aux_tiled["warped"].shape == (1, 3, 256, 256)
    assert _psnr(aux_tiled["warped"], aux_whole["warped"]) >= 40

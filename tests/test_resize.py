"""MATLAB-compatible bicubic: compared with an independent, loop-based transcription of imresize.m."""
import math

import numpy as np
import pytest
import torch

from refsr_cli.ops.resize import back_project, downscale, imresize, upscale


def _matlab_cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _matlab_contributions(in_len, out_len, scale, antialias=True):
    """Straight transcription of MATLAB's ``contributions`` (imresize.m), scalar loops, 1-based."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        h = lambda x: scale * _matlab_cubic(scale * x)  # noqa: E731
        kernel_width = kernel_width / scale
    else:
        h = _matlab_cubic
    rows = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kernel_width / 2)
        p = math.ceil(kernel_width) + 2
        idx = [left + j for j in range(p)]
        w = [h(u - i) for i in idx]
        total = sum(w)
        w = [v / total for v in w]
        aux = list(range(1, in_len + 1)) + list(range(in_len, 0, -1))
        idx = [aux[(i - 1) % len(aux)] for i in idx]
        rows.append([(i - 1, v) for i, v in zip(idx, w) if v != 0])
    return rows


def _matlab_resize_axis(a: np.ndarray, out_len: int, scale: float, axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, 0)
    rows = _matlab_contributions(a.shape[0], out_len, scale)
    out = np.zeros((out_len,) + a.shape[1:])
    for o, taps in enumerate(rows):
        for i, w in taps:
            out[o] += w * a[i]
    return np.moveaxis(out, 0, axis)


def _matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """H×W(×C) float64; MATLAB resizes the dimension with the smaller scale first (equal here)."""
    out_h, out_w = math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale)
    return _matlab_resize_axis(_matlab_resize_axis(img, out_h, scale, 0), out_w, scale, 1)


@pytest.mark.parametrize("scale", [1 / 8, 1 / 4, 1 / 3, 0.5, 2, 4, 8])
def test_matches_independent_matlab_transcription(scale):
    rng = np.random.default_rng(0)
    img = rng.random((37, 29, 3))
    expected = _matlab_imresize(img, scale)
    got = imresize(torch.from_numpy(img).permute(2, 0, 1).float()[None], scale=scale)[0]
    got = got.permute(1, 2, 0).double().numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 2e-6  # float32 round-off only


def test_float64_agrees_to_machine_precision():
    img = np.random.default_rng(1).random((40, 64))
    expected = _matlab_imresize(img, 0.25)
    got = imresize(torch.from_numpy(img), scale=0.25).numpy()
    assert np.abs(got - expected).max() < 1e-12


def test_linear_ramp_stays_linear_away_from_borders():
    # A symmetric, normalised kernel reproduces a linear ramp: away from the mirrored borders,
    # imresize(1:32, 0.5) samples the ramp at MATLAB's positions u = x/s + 0.5(1 - 1/s) = 2x - 0.5.
    ramp = torch.arange(1, 33, dtype=torch.float64)[None, :]
    got = imresize(ramp, size=(1, 16))[0].numpy()
    x = np.arange(1, 17)
    assert np.allclose(got[4:12], (2 * x - 0.5)[4:12], atol=1e-12)


def test_downscale_upscale_shapes_and_batching():
    x = torch.rand(2, 3, 40, 64)
    lr = downscale(x, 8)
    assert lr.shape == (2, 3, 5, 8)
    assert upscale(lr, 8).shape == x.shape
    # Batched result equals per-image result.
    assert torch.allclose(downscale(x[1:], 8), lr[1:], atol=1e-6)
    with pytest.raises(ValueError):
        downscale(torch.rand(1, 3, 41, 64), 8)


def test_constant_image_is_preserved():
    x = torch.full((1, 3, 16, 24), 0.3)
    assert torch.allclose(downscale(x, 4), torch.full((1, 3, 4, 6), 0.3), atol=1e-6)
    assert torch.allclose(upscale(downscale(x, 4), 4), x, atol=1e-6)


def test_back_projection_makes_the_output_downscale_to_its_lr_and_keeps_finer_detail():
    """An SR that put content in the wrong place (a shifted patch) is pulled back towards what its LR
    shows, and detail the LR cannot see (a checkerboard at the HR Nyquist, ↓4 → ~0) is left alone."""
    torch.manual_seed(0)
    hr = imresize(torch.rand(1, 3, 16, 16), size=(64, 64)).clamp(0, 1)
    lr = downscale(hr, 4)
    wrong = hr.clone()
    wrong[..., 16:48, 16:48] = hr[..., 20:52, 8:40]          # reference content in the wrong place
    fine = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.1 - 0.05
    before = (downscale(wrong, 4) - lr).abs().mean()
    fixed = back_project(wrong + fine, lr, 4, steps=2)
    assert (downscale(fixed, 4) - lr).abs().mean() < 0.2 * before
    assert (fixed - hr).pow(2).mean() < (wrong - hr).pow(2).mean()
    # The checkerboard's energy survives (what remains of it after removing the smooth correction).
    residual = fixed - back_project(wrong, lr, 4, steps=2)
    assert (residual * fine).mean() > 0.9 * (fine * fine).mean()
    assert torch.equal(back_project(wrong, lr, 4, steps=0), wrong)

"""Procedural light fields: geometry (sub-pixel shifts, slants, occlusion order), determinism, format."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter, map_coordinates
from scipy.optimize import minimize
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from refsr_cli.prepare.synthetic import (
    GENERATOR_VERSION, Layer, _scene, background_extent, render_layers, render_light_field,
    synthetic_attributes,
)

QUIET = {"noise": 0.0, "photometric": 0.0}   # pure geometry: no per-view jitter


def test_shape_dtype_and_disparity_range():
    views, disp = render_light_field(3, height=64, width=96, max_disparity=6.0, return_disparity=True)
    assert views.shape == (8, 8, 64, 96, 3) and views.dtype == np.uint8
    assert disp.shape == (64, 96) and disp.dtype == np.float32
    assert disp.min() >= 0.0 and disp.max() <= 6.0
    assert views.std() > 10                    # textured, not blank
    small = render_light_field(3, height=32, width=48, max_disparity=4.0, grid=5)
    assert small.shape == (5, 5, 32, 48, 3)


def test_views_shift_by_layer_disparity_subpixel():
    # Background only, fronto-parallel: every view is view (0,0) translated by d·(r, c)/7.
    views, disp = render_light_field(2, height=96, width=128, max_disparity=20.0, num_objects=0,
                                     slant=False, return_disparity=True, **QUIET)
    d = float(disp[0, 0])
    assert np.all(disp == d) and 1.0 < d < 6.0 and abs(d - round(d)) > 0.05   # a real sub-pixel case
    grey = views.astype(np.float64).mean(axis=4)
    m = 8                                                    # margin: content entering at the borders
    h, w = grey.shape[2] - 2 * m, grey.shape[3] - 2 * m
    hann = window("hann", (h, w))
    yy, xx = np.mgrid[m:m + h, m:m + w].astype(np.float64)
    for r, c in [(0, 3), (5, 0), (2, 6), (7, 7)]:
        # view(r,c)(p) = view(0,0)(p + s) with s = d·(r,c)/7. Phase correlation after removing the
        # integer part (a window biases large shifts towards zero)...
        expected = np.array([d * r / 7, d * c / 7])
        iy, ix = np.round(expected).astype(int)
        ref = grey[0, 0, m + iy:m + iy + h, m + ix:m + ix + w]
        moving = grey[r, c, m:m + h, m:m + w]
        frac, _, _ = phase_cross_correlation(ref * hann, moving * hann, upsample_factor=200,
                                             normalization=None)
        # (the windowed estimator itself is biased by a few hundredths of a pixel on these crops)
        np.testing.assert_allclose(frac + (iy, ix), expected, atol=0.05)
        # ...and a least-squares fit with an independent interpolator (quintic spline), tighter: a
        # Keys-kernel renderer was off by ~0.03 px here, the cubic-spline one by < 0.006 px.
        def cost(t):
            warped = map_coordinates(grey[0, 0], [yy + t[0], xx + t[1]], order=5)
            return ((warped - grey[r, c, m:m + h, m:m + w]) ** 2).mean()

        fit = minimize(cost, np.round(expected), method="Nelder-Mead",
                       options={"xatol": 1e-4, "fatol": 1e-9}).x
        np.testing.assert_allclose(fit, expected, atol=0.01)


def _smooth_texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.random((h, w, 3)), (3, 3, 0))
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return tex.astype(np.float32)


@pytest.mark.parametrize("axis", ["y", "x"])
def test_slanted_layer_matches_analytic_warp(axis):
    # A slanted plane d(q) = d0 + s·q_axis: view (r,c) at p shows the texture at q = p + d(q)·(c,r)/7.
    # Compare with an independent sampler (cubic B-spline map_coordinates) at the analytic q.
    height, width, grid = 48, 64, 8
    d0, slope = 2.0, 0.06
    dmax = d0 + slope * (height if axis == "y" else width) + 1
    y0, x0, bh, bw = background_extent(height, width, dmax)
    tex = _smooth_texture(1, bh, bw)
    frame = render_layers([Layer(tex, None, (y0, x0), d0, slope, axis)], height, width, grid).numpy()
    py, px = np.mgrid[0:height, 0:width].astype(np.float64)
    for r, c in [(0, 7), (7, 0), (3, 5), (7, 7)]:
        u = np.array([r, c]) / (grid - 1)
        g = np.array([slope, 0.0]) if axis == "y" else np.array([0.0, slope])
        s = (d0 + g[0] * py + g[1] * px) / (1 - g @ u)               # d at q, solved exactly
        qy, qx = py + u[0] * s, px + u[1] * s
        ref = np.stack([map_coordinates(tex[:, :, k].astype(np.float64), [qy - y0, qx - x0], order=3)
                        for k in range(3)], axis=2)
        err = np.abs(frame[r, c] - ref)[2:-2, 2:-2]
        assert err.max() < 0.01, (r, c, err.max())
        # …and the plane really moved: a fronto-parallel (slope 0) warp would be far off.
        flat = np.stack([map_coordinates(tex[:, :, k].astype(np.float64),
                                         [py + u[0] * d0 - y0, px + u[1] * d0 - x0], order=3)
                         for k in range(3)], axis=2)
        assert np.abs(frame[r, c] - flat)[2:-2, 2:-2].max() > 0.02


def test_near_layer_covers_far_layer_and_moves_more():
    height, width, grid = 48, 64, 8
    y0, x0, bh, bw = background_extent(height, width, 2.0)
    bg = Layer(_smooth_texture(2, bh, bw) * 0.3, None, (y0, x0), 2.0)   # dark, far, d = 2

    def square(color, top, left, size, d):
        rgb = np.broadcast_to(np.array(color, np.float32), (size + 8, size + 8, 3)).copy()
        alpha = np.zeros((size + 8, size + 8), np.float32)
        alpha[4:-4, 4:-4] = 1.0
        return Layer(rgb, alpha, (top - 4, left - 4), d)

    mid = square((0.0, 1.0, 0.0), 10, 10, 20, 7.0)                      # green, d = 7
    near = square((1.0, 0.0, 0.0), 20, 20, 16, 14.0)                    # red, d = 14, overlaps green
    views = render_layers([bg, mid, near], height, width, grid).numpy()
    red, green = np.array([1, 0, 0]), np.array([0, 1, 0])
    for k in (0, 7):
        v = views[k, k]
        # Red square interior at (20..35) − 14·k/7 in both axes: red on top of green.
        a = 20 - 2 * k
        assert np.allclose(v[a + 1:a + 15, a + 1:a + 15], red, atol=1e-4), k
        # Green interior away from red: green.
        b = 10 - k
        assert np.allclose(v[b + 1:b + 3, b + 1:b + 19], green, atol=1e-4), k
    # The red square moved by 14 px (diagonally), the green one by 7 px: in view (7,7) the pixels that
    # red covered in view (0,0) but no longer covers are green where green still is, background else.
    # Green spans 3…22 and red 6…21 (both axes) in view (7,7): pixel 22 was red, is now green.
    assert np.allclose(views[7, 7][22, 22], green, atol=1e-4)
    assert views[7, 7][24:35, 24:35].max() < 0.31                       # background shows again


def test_scene_layers_are_drawn_back_to_front():
    # The sampler must order layers by disparity with disjoint bands, or compositing is wrong.
    for seed in range(6):
        layers, _ = _scene(seed, 64, 96, 20.0, 8, {"num_objects": None, "slant": True, "defocus": 1.0})
        assert layers[0].alpha is None
        ranges = []
        for layer in layers:
            h, w = layer.rgb.shape[:2]
            ys, xs = np.mgrid[0:h, 0:w] + np.array(layer.origin)[:, None, None]
            inside = np.ones((h, w), bool) if layer.alpha is None else layer.alpha > 0
            if layer.alpha is None:                                  # background: frame area only
                inside &= (ys >= 0) & (ys < 64) & (xs >= 0) & (xs < 96)
            d = layer.disparity_at(ys[inside], xs[inside])
            ranges.append((d.min(), d.max()))
        assert all(lo >= -1e-9 and hi <= 20.0 + 1e-9 for lo, hi in ranges), ranges
        for (_, far_hi), (near_lo, _) in zip(ranges, ranges[1:]):
            assert far_hi <= near_lo + 1e-9, (seed, ranges)


def test_full_render_nearest_object_moves_by_its_disparity():
    views, disp = render_light_field(11, height=96, width=128, max_disparity=20.0, num_objects=3,
                                     slant=False, return_disparity=True, **QUIET)
    d_near = float(disp.max())
    mask = binary_erosion(disp == d_near, iterations=4)              # interior of the nearest object
    assert mask.sum() > 100 and d_near > 8
    ys, xs = np.nonzero(mask)
    v77 = views[7, 7].astype(np.float64)

    def moved(d):  # view (7,7) sampled where a point of view (0,0) with disparity d lands
        return np.stack([map_coordinates(v77[:, :, k], [ys - d, xs - d], order=3, mode="nearest")
                         for k in range(3)], axis=1)

    src = views[0, 0].astype(np.float64)[ys, xs]
    err_near = np.abs(moved(d_near) - src).mean()
    err_bg = np.abs(moved(float(disp.min())) - src).mean()
    assert err_near < 3.0 and err_bg > 4 * err_near, (err_near, err_bg)


def test_deterministic_and_seed_dependent():
    a = render_light_field(5, height=64, width=96, max_disparity=8.0)
    b = render_light_field(5, height=64, width=96, max_disparity=8.0)
    c = render_light_field(6, height=64, width=96, max_disparity=8.0)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_identical_bytes_in_another_process_with_other_threads_and_hash_seed():
    digest = hashlib.sha256(render_light_field(9, height=64, width=96, max_disparity=8.0).tobytes())
    code = ("import hashlib, torch; torch.set_num_threads(2); "
            "from refsr_cli.prepare.synthetic import render_light_field as r; "
            "print(hashlib.sha256(r(9, height=64, width=96, max_disparity=8.0).tobytes()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                         check=True, timeout=120)
    assert out.stdout.strip() == digest.hexdigest()


def test_options_and_attributes():
    with pytest.raises(TypeError):
        render_light_field(0, height=32, width=48, bogus=1)
    with pytest.raises(ValueError):
        render_light_field(0, height=32, width=48, max_disparity=100.0)
    attrs = synthetic_attributes(height=320, width=512, max_disparity=51.2, noise=0.5)
    assert attrs["generator_version"] == GENERATOR_VERSION and attrs["source"] == "synthetic"
    assert attrs["max_disparity"] == 51.2 and "'noise': 0.5" in attrs["options"]
    assert all(isinstance(v, (str, int, float)) for v in attrs.values())   # storable as HDF5 attributes

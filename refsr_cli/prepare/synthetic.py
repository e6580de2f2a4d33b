"""Procedural layered light fields that behave like Lytro captures (``refsr prepare synthetic``).

A scene is a stack of textured layers, back to front: an opaque background that fills the frame and a
few foreground objects with soft, non-rectangular masks. Textures are cut from scikit-image's bundled
natural photographs at (roughly) their native scale, so the renders carry natural image statistics:
smooth regions, edges, mild texture. Each layer lies on a plane — fronto-parallel or slanted along one
image axis (a floor, a ceiling, a receding wall) — and the layers occupy disjoint disparity bands, so
drawing them back to front is a correct occlusion order in every view.

Geometry (docs/architecture.md): a scene point at ``(x, y)`` in view ``(0, 0)`` appears at
``(x − d·c/(G−1), y − d·r/(G−1))`` in view ``(r, c)``, where ``d ≥ 0`` is its disparity in pixels between
views ``(0, 0)`` and ``(G−1, G−1)``. A layer's disparity is affine in one reference-view coordinate,
``d(q) = d0 + slope·q_y`` (or ``q_x``), and ``0 ≤ d ≤ max_disparity``.

Rendering is separable and exact up to the interpolation kernel: with a slope along y, view ``(r, c)`` is
``T(q_x, q_y)`` with ``q_x = p_x + (c/(G−1))·d(q_y)`` (a per-row constant shift — one horizontal pass per
angular column ``c``, 8 of them) and ``q_y = (p_y + r·d0/(G−1)) / (1 − r·slope/(G−1))``, which depends on
``p_y`` and ``r`` only (one vertical pass per view with weights constant along each row). Both passes
use cubic-spline interpolation (prefilter + B-spline taps) on textures that were resized with antialiasing, so sub-pixel shifts
carry no aliasing. Slopes along x run the same code on transposed arrays. Layers are premultiplied RGBA;
soft mask edges come from an antialiased mask plus the layer's defocus blur.

Per view, a mild photometric difference (gain per channel, a small aperture vignette) and
signal-dependent sensor noise are added before rounding to uint8. Everything is drawn from
``numpy.random.default_rng(seed)`` (PCG64) and a seeded ``torch.Generator``: identical bytes for a seed,
in any process, independent of hash seeds; reductions never depend on the thread count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, spline_filter1d

from refsr_cli.ops.resize import imresize

#: Bump when the same seed and parameters would render different bytes.
GENERATOR_VERSION = 1

#: Offline scikit-image photographs used as textures, with sampling weights. Photos of natural scenes
#: dominate; noise-like textures (gravel, hubble, retina) are rare so that they cannot dominate the
#: statistics (docs/design.md §3). ``stereo_motorcycle`` is deliberately NOT a source: it is the real test
#: pair that the synthetic statistics are compared against.
TEXTURE_SOURCES: dict[str, float] = {
    "astronaut": 3.0, "coffee": 3.0, "chelsea": 2.0, "rocket": 1.5,
    "immunohistochemistry": 1.0, "camera": 1.5, "moon": 0.4, "retina": 0.4, "brick": 1.0,
    "grass": 0.6, "gravel": 0.2, "hubble_deep_field": 0.15,
}

#: Log-uniform range of the texture scale (output px per source px). Below 1 = a wider field of view
#: than the photo: tuned so that bicubic ×4 PSNR and gradient statistics approach real captures
#: (benchmarks/bench_synthetic.py, docs/synthetic.md).
TEXTURE_SCALE = (0.3, 0.8)
#: Defocus blur σ (px) per view step of disparity away from the focal plane (one Lytro sub-aperture
#: spans about one view step, so its blur grows with |d − d_focus|/(G−1)).
DEFOCUS_PER_STEP = 0.3

#: Defaults of the keyword options of :func:`render_light_field`.
DEFAULT_OPTIONS: dict = {
    "num_objects": None,      # foreground layers; None = 3…7 drawn from the seed
    "slant": True,            # allow slanted (non fronto-parallel) layers
    "noise": 1.0,             # sensor-noise strength (0 = off)
    "photometric": 1.0,       # per-view gain/vignette strength (0 = off)
    "defocus": 1.0,           # defocus-blur strength (0 = only a small optical blur)
    "return_disparity": False,
}


# --------------------------------------------------------------------------------------------- sources
@lru_cache(maxsize=None)
def _source_image(name: str) -> np.ndarray:
    """A decoded skimage photo as float32 ``H×W×3`` in [0, 1], cached per process.

    Each joblib worker process decodes its own copy once; the loaders read files bundled with
    scikit-image (never the network).
    """
    import skimage.data

    if name not in TEXTURE_SOURCES:
        raise ValueError(f"unknown texture source {name!r}")
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.float32) / 255.0
    image.setflags(write=False)
    return image


# --------------------------------------------------------------------------------------------- layers
@dataclass
class Layer:
    """One planar layer in reference-view (0, 0) coordinates.

    ``rgb`` is ``h×w×3`` (not premultiplied), ``alpha`` ``h×w`` in [0, 1] or None (opaque); canvas
    pixel ``(0, 0)`` sits at frame position ``origin = (y0, x0)``. Disparity: ``d(q) = disparity +
    slope·q[axis]`` with ``q`` in frame pixels and ``axis`` 'y' or 'x'. Transparent layers need ≥ 4
    pixels of zero alpha around their support (sampling outside the canvas gives transparency); the
    opaque background must cover every sampled position (:func:`background_extent`).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    origin: tuple[int, int]
    disparity: float
    slope: float = 0.0
    axis: str = "y"
    name: str = field(default="")

    def disparity_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        q = ys if self.axis == "y" else xs
        return self.disparity + self.slope * q


def background_extent(height: int, width: int, max_layer_disparity: float) -> tuple[int, int, int, int]:
    """Canvas ``(y0, x0, h, w)`` that an opaque layer with disparities ≤ the given one must cover."""
    margin = int(math.ceil(max_layer_disparity)) + 3
    return -3, -3, height + margin + 3, width + margin + 3


def _bspline(t: torch.Tensor) -> list[torch.Tensor]:
    """Cubic B-spline weights of taps −1, 0, 1, 2 for fractional offsets ``t`` in [0, 1).

    Applied to spline-prefiltered samples this is exact cubic-spline interpolation: its frequency
    response barely depends on ``t``, so views at different sub-pixel offsets are equally sharp (a
    Keys kernel blurs a half-pixel shift visibly more than an integer one and biases the shift by a
    few hundredths of a pixel).
    """
    s = 1.0 - t
    t2, t3 = t * t, t * t * t
    return [s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
            t3 / 6.0]


def _prefilter(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Cubic-spline coefficients along ``axis`` (scipy's recursive filter, mirror boundaries)."""
    out = spline_filter1d(x.numpy(), order=3, axis=axis, mode="mirror", output=np.float32)
    return torch.from_numpy(out)


def _render_layer_y(texture: torch.Tensor, origin: tuple[int, int], d0: float, slope: float,
                    grid: int, out_rows: tuple[int, int], out_cols: tuple[int, int], frame: torch.Tensor,
                    disparity: torch.Tensor | None = None) -> None:
    """Render a layer whose disparity varies along y only into ``frame`` for every view, compositing.

    ``texture``: ``h×w×C`` (C = 3 opaque or 4 premultiplied RGBA). ``frame``: ``G×G×H×W×3`` view stack,
    indexed [r, c] (already transposed by the caller for x slopes, with r and c swapped). ``disparity``
    (optional, ``G×G×H×W``, transposed alike) receives the layer's disparity wherever it covers a view
    pixel (opaque, or rendered alpha > 0.5 — :func:`disparity_map`'s rule, in every view).
    """
    g1 = grid - 1
    h, w, channels = texture.shape
    oy0, oy1 = out_rows
    ox0, ox1 = out_cols
    qy = torch.arange(h, dtype=torch.float64) + origin[0]           # frame row of each canvas row
    d_rows = d0 + slope * qy
    # Pass 1, per angular column c: horizontal shift constant along each canvas row.
    texture = _prefilter(texture, 1)
    passes = []
    cols = torch.arange(ox1 - ox0, dtype=torch.int64)
    for c in range(grid):
        pos = (c / g1) * d_rows - origin[1] + ox0                    # canvas x of px = ox0, per row
        base = torch.floor(pos)
        weights = [wk.to(torch.float32)[:, None, None] for wk in _bspline(pos - base)]
        start = base.to(torch.int64)
        acc = None
        for k in range(4):
            idx = (start[:, None] + (k - 1) + cols[None, :]).clamp_(0, w - 1)
            taps = texture.gather(1, idx[:, :, None].expand(-1, -1, channels))
            acc = taps * weights[k] if acc is None else acc.add_(taps * weights[k])
        if channels == 4:
            # Beyond its canvas a layer is transparent. Clamped taps would read spline coefficients,
            # which are not zero near content, so positions outside the canvas are zeroed instead.
            where = pos[:, None] + cols[None, :]
            acc.mul_(((where >= 0) & (where <= w - 1)).to(torch.float32)[:, :, None])
        passes.append(acc)
    stack = _prefilter(torch.stack(passes), 1)                       # [c, h, wo, C]
    # Pass 2, per angular row r: vertical resampling, weights constant along each output row.
    py = torch.arange(oy0, oy1, dtype=torch.float64)
    acc = torch.empty(grid, oy1 - oy0, ox1 - ox0, channels, dtype=torch.float32)
    taps = torch.empty_like(acc)                                      # buffers reused across rows r
    for r in range(grid):
        qrow = (py + r * d0 / g1) / (1.0 - r * slope / g1) - origin[0]
        base = torch.floor(qrow)
        inside = ((qrow >= 0) & (qrow <= h - 1)) if channels == 4 else torch.ones_like(qrow, dtype=torch.bool)
        weights = [(wk * inside).to(torch.float32)[None, :, None, None] for wk in _bspline(qrow - base)]
        start = base.to(torch.int64)
        torch.index_select(stack, 1, (start - 1).clamp_(0, h - 1), out=acc)
        acc.mul_(weights[0])
        for k in range(1, 4):
            torch.index_select(stack, 1, (start + (k - 1)).clamp_(0, h - 1), out=taps)
            acc.addcmul_(taps, weights[k])
        target = frame[r, :, oy0:oy1, ox0:ox1, :]
        if disparity is not None:
            # The output row py of view r shows canvas row qrow, whose disparity is that of frame row
            # qrow + y0 — for every angular column and every output column (d varies along y only).
            d_out = (d0 + slope * (qrow + origin[0])).to(torch.float32)[None, :, None]
            d_target = disparity[r, :, oy0:oy1, ox0:ox1]
            if channels == 3:
                d_target.copy_(d_out.expand_as(d_target))
            else:
                d_target.copy_(torch.where(acc[..., 3] > 0.5, d_out, d_target))
        if channels == 3:
            target.copy_(acc)
        else:
            alpha = acc[..., 3:].clamp_(0.0, 1.0)
            target.addcmul_(target, alpha, value=-1.0).add_(acc[..., :3])


def _out_range(lo: float, hi: float, shift_max: float, size: int) -> tuple[int, int]:
    """Output interval covering canvas span ``[lo, hi]`` moved by 0…−shift_max, clipped to the frame."""
    a = max(0, int(math.floor(lo - shift_max)) - 2)
    b = min(size, int(math.ceil(hi)) + 3)
    return a, max(a, b)


def render_layers(layers: list[Layer], height: int, width: int, grid: int = 8, disparity: bool = False):
    """Composite ``layers`` (back to front; ``layers[0]`` opaque) into a ``G×G×H×W×3`` float view stack.

    With ``disparity=True`` returns ``(views, disparity)``, ``disparity`` float32 ``G×G×H×W``: per view,
    the disparity of the front-most layer covering each pixel (the ground truth of optical flow between
    views: pixel ``p`` of view ``(r, c)`` shows the point at ``p + d·(c − c0, r − r0)/(G−1)`` of view
    ``(r0, c0)``).
    """
    if not layers or layers[0].alpha is not None:
        raise ValueError("the first (back) layer must be opaque (alpha=None)")
    frame = torch.zeros(grid, grid, height, width, 3, dtype=torch.float32)
    disp = torch.zeros(grid, grid, height, width, dtype=torch.float32) if disparity else None
    for layer in layers:
        h, w = layer.rgb.shape[:2]
        rgb = torch.from_numpy(np.ascontiguousarray(layer.rgb, dtype=np.float32))
        if layer.alpha is None:
            texture = rgb
        else:
            a = torch.from_numpy(np.ascontiguousarray(layer.alpha, dtype=np.float32))[:, :, None]
            texture = torch.cat((rgb * a, a), dim=2)                  # premultiplied: interpolates right
        y0, x0 = layer.origin
        corners_y = np.array([y0, y0 + h - 1], dtype=np.float64)
        corners_x = np.array([x0, x0 + w - 1], dtype=np.float64)
        dmax = float(np.max(layer.disparity_at(
            np.array([y0, y0, y0 + h - 1, y0 + h - 1.0]), np.array([x0, x0 + w - 1.0, x0, x0 + w - 1]))))
        if layer.alpha is None:
            rows, cols = (0, height), (0, width)
        else:
            rows = _out_range(corners_y[0], corners_y[1], dmax, height)
            cols = _out_range(corners_x[0], corners_x[1], dmax, width)
        if rows[1] <= rows[0] or cols[1] <= cols[0]:
            continue
        if layer.axis == "y":
            _render_layer_y(texture, (y0, x0), layer.disparity, layer.slope, grid, rows, cols, frame, disp)
        else:
            # Slope along x: swap x↔y everywhere (texture, origin, output box, and view r↔c).
            _render_layer_y(texture.transpose(0, 1).contiguous(), (x0, y0), layer.disparity, layer.slope,
                            grid, cols, rows, frame.permute(1, 0, 3, 2, 4),
                            None if disp is None else disp.permute(1, 0, 3, 2))
    return (frame, disp) if disparity else frame


def disparity_map(layers: list[Layer], height: int, width: int) -> np.ndarray:
    """Disparity of view (0, 0) per pixel: that of the front-most layer with alpha > 0.5 there."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.zeros((height, width), dtype=np.float32)
    for layer in layers:
        h, w = layer.rgb.shape[:2]
        y0, x0 = layer.origin
        cy = ys.astype(np.int64) - y0
        cx = xs.astype(np.int64) - x0
        inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        if layer.alpha is None:
            cover = inside
        else:
            cover = np.zeros_like(inside)
            cover[inside] = layer.alpha[cy[inside], cx[inside]] > 0.5
        out[cover] = layer.disparity_at(ys, xs)[cover]
    return out


# ------------------------------------------------------------------------------------ scene sampling
def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    """Antialiased bicubic resize of ``H×W×3`` (float64 products: no thread-count dependence in practice)."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float64))
    out = imresize(x, scale=scale)
    return out.numpy().transpose(1, 2, 0).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, tries: int = 1, mirror: bool = False) -> np.ndarray:
    """An ``h×w×3`` texture: a crop of a natural photo at near-native scale, or a smooth colour field.

    With ``tries > 1`` the most detailed of several source crops is kept: a photographer frames
    content, so a real background is rarely mostly empty sky or out-of-focus blur. With ``mirror``
    a photo smaller than ``h×w`` at the drawn scale is extended by mirroring instead of being
    enlarged: the sources are barely larger than a 320×512 frame, and forcing them to cover it would
    make every background an up-sampled (too smooth) image.
    """
    if not mirror and rng.random() < 0.08:
        # Smooth regions (walls, sky, out-of-focus surfaces) are common in real captures.
        coarse = rng.random((3, 3 + rng.integers(0, 3), 4 + rng.integers(0, 3)))
        coarse = 0.15 + 0.7 * (0.6 * coarse + 0.4 * coarse.mean(axis=0, keepdims=True))
        field_ = imresize(torch.from_numpy(coarse), size=(h, w)).numpy().transpose(1, 2, 0)
        return np.clip(field_, 0, 1).astype(np.float32)
    names = list(TEXTURE_SOURCES)
    p = np.array([TEXTURE_SOURCES[n] for n in names])
    name = names[rng.choice(len(names), p=p / p.sum())]
    src = _source_image(name)
    sh, sw = src.shape[:2]
    scale = math.exp(rng.uniform(math.log(TEXTURE_SCALE[0]), math.log(TEXTURE_SCALE[1])))
    if mirror:
        scale = max(scale, 0.75 * (h + 1) / sh, 0.75 * (w + 1) / sw)  # mirror ≤ a quarter
    else:
        scale = max(scale, (h + 1) / sh, (w + 1) / sw)
    # Crop the source region first (resizing the whole retina photo each time would be wasteful).
    ch, cw = min(sh, int(math.ceil(h / scale)) + 8), min(sw, int(math.ceil(w / scale)) + 8)
    best = -1.0
    for _ in range(tries):
        yy = int(rng.integers(0, sh - ch + 1))
        xx = int(rng.integers(0, sw - cw + 1))
        crop = src[yy:yy + ch:2, xx:xx + cw:2, 1]
        detail = float(np.abs(np.diff(crop, axis=1)).mean()) if tries > 1 else 0.0
        if detail > best:
            best, y, x = detail, yy, xx
    tex = _resize(src[y:y + ch, x:x + cw], scale)[:h, :w]
    if tex.shape[0] < h or tex.shape[1] < w:                         # mirror (or rounding guard)
        py, px = h - tex.shape[0], w - tex.shape[1]
        ty, tx = int(rng.integers(0, py + 1)), int(rng.integers(0, px + 1))
        tex = np.pad(tex, ((ty, py - ty), (tx, px - tx), (0, 0)), mode="symmetric")
    if rng.random() < 0.5:
        tex = tex[:, ::-1]
    if name in ("camera", "moon", "brick", "grass", "gravel"):       # grey sources: give them a tint
        tint = 1.0 + rng.normal(0.0, 0.12, 3)
        tex = tex * (tint / tint.mean())
    if name in ("gravel", "hubble_deep_field", "grass"):             # keep noise-like textures tame
        tex = tex.mean(axis=(0, 1)) + 0.6 * (tex - tex.mean(axis=(0, 1)))
    gain = 1.0 + rng.normal(0.0, 0.06, 3)
    return np.clip(tex * gain + rng.normal(0.0, 0.03), 0.0, 1.0).astype(np.float32)


def _blob_mask(rng: np.random.Generator, h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """Antialiased mask of a random shape: a star-shaped blob, a rotated polygon, or a blobby level set."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = ys - cy, xs - cx
    kind = rng.random()
    if kind < 0.45:
        theta = np.arctan2(dy, dx)
        rad = np.ones_like(theta)
        for k in range(2, 7):
            rad += rng.normal(0.0, 0.25 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        aspect = rng.uniform(0.6, 1.0)
        dist = radius * rad - np.hypot(dx, dy / aspect)             # > 0 inside, ≈ pixels
    elif kind < 0.8:
        # Convex polygon with vertices on a circle (boxes, signs, man-made objects: straight edges).
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
        my, mx = vy.mean(), vx.mean()                                # inside a convex polygon
        dist = np.full_like(dx, np.inf)
        for i in range(n):
            ey, ex = vy[(i + 1) % n] - vy[i], vx[(i + 1) % n] - vx[i]
            norm = max(math.hypot(ey, ex), 1e-6)
            side = lambda yy, xx: (ex * (yy - vy[i]) - ey * (xx - vx[i])) / norm  # noqa: E731
            sign = 1.0 if side(my, mx) >= 0 else -1.0
            dist = np.minimum(dist, sign * side(ys, xs))
    else:
        coarse = rng.normal(size=(max(2, h // 24), max(2, w // 24)))
        smooth = imresize(torch.from_numpy(coarse)[None], size=(h, w))[0].numpy()
        envelope = 1.0 - np.hypot(dx, dy) / radius                   # keeps the set near the centre
        f = smooth + 2.0 * envelope - 1.0
        gy, gx = np.gradient(f)
        dist = f / np.maximum(np.hypot(gx, gy), 1e-3)
    return np.clip(0.5 + dist, 0.0, 1.0).astype(np.float32)


def _scene(seed: int, height: int, width: int, max_disparity: float, grid: int, opts: dict):
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x52454653]))  # 'REFS'
    big_d = float(max_disparity)
    n_obj = int(rng.integers(3, 8)) if opts["num_objects"] is None else int(opts["num_objects"])
    # Disjoint disparity bands: background in [0, 0.3·D], objects above, sorted far → near.
    obj_d = np.sort(rng.uniform(0.35 * big_d, big_d, n_obj))
    edges = np.concatenate(([0.3 * big_d], 0.5 * (obj_d[1:] + obj_d[:-1]), [big_d]))
    d_focus = rng.uniform(0.0, big_d)
    defocus = float(opts["defocus"])

    def blur_sigma(d: float) -> float:
        # Lytro-like: one sub-aperture spans ~1 view step, so defocus ∝ |d − d_focus|/(G−1).
        return defocus * DEFOCUS_PER_STEP * abs(d - d_focus) / max(grid - 1, 1)

    layers: list[Layer] = []
    # Background: a plane within [0, 0.3·D]; often slanted like a floor or wall.
    lo_bg, hi_bg = 0.0, 0.3 * big_d
    d_a, d_b = np.sort(rng.uniform(lo_bg, hi_bg, 2))
    axis = "y" if rng.random() < 0.65 else "x"
    span = height if axis == "y" else width
    slanted = opts["slant"] and rng.random() < 0.7
    if slanted:
        near_first = rng.random() < (0.8 if axis == "y" else 0.5)   # floors get nearer downwards
        slope = (d_b - d_a) / span * (1 if near_first else -1)
        d0 = d_a if near_first else d_b
    else:
        slope, d0 = 0.0, 0.5 * (d_a + d_b)
    y0, x0, bh, bw = background_extent(height, width, hi_bg)
    tex = _texture(rng, bh, bw, tries=3, mirror=True)
    sigma = blur_sigma(d0 + 0.5 * slope * span)
    tex = gaussian_filter(tex, (sigma, sigma, 0), mode="nearest", truncate=3.0)
    layers.append(Layer(tex, None, (y0, x0), float(d0), float(slope), axis, "background"))
    # Objects: random shapes, each within its own disparity band.
    for i in range(n_obj):
        radius = rng.uniform(0.1, 0.45) * height
        cy = rng.uniform(-0.1, 1.1) * height
        cx = rng.uniform(-0.1, 1.1) * width
        pad = int(3 * 3.0 + 4)                                      # blur tail + interpolation taps
        oy0 = int(max(math.floor(cy - 1.6 * radius), -pad - 2))
        ox0 = int(max(math.floor(cx - 1.6 * radius), -pad - 2))
        oy1 = int(min(math.ceil(cy + 1.6 * radius), height + big_d + pad + 2))
        ox1 = int(min(math.ceil(cx + 1.6 * radius), width + big_d + pad + 2))
        if oy1 - oy0 < 8 or ox1 - ox0 < 8:
            continue
        h, w = oy1 - oy0, ox1 - ox0
        alpha = _blob_mask(rng, h, w, cy - oy0, cx - ox0, radius)
        rgb = _texture(rng, h, w)
        # Stay inside the band: |slope|·extent ≤ the band's room around the object's disparity.
        lo, hi = edges[i], edges[i + 1]
        axis = "y" if rng.random() < 0.5 else "x"
        ext = h if axis == "y" else w
        centre = oy0 + 0.5 * h if axis == "y" else ox0 + 0.5 * w
        dc = float(obj_d[i])
        room = 0.9 * min(dc - lo, hi - dc)
        slope = rng.uniform(-1, 1) * 2 * room / ext if (opts["slant"] and rng.random() < 0.5) else 0.0
        sigma = blur_sigma(dc)
        rgb = gaussian_filter(rgb, (sigma, sigma, 0), mode="nearest", truncate=3.0)
        alpha = gaussian_filter(alpha, sigma, mode="constant", truncate=3.0)
        alpha[:4], alpha[-4:], alpha[:, :4], alpha[:, -4:] = 0, 0, 0, 0  # transparent border (see render)
        layers.append(Layer(rgb, alpha, (oy0, ox0), dc - slope * centre, float(slope), axis, f"object{i}"))
    return layers, rng


def _check(seed, height, width, max_disparity, grid, options) -> dict:
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown render_light_field option(s): {', '.join(sorted(unknown))}")
    opts = {**DEFAULT_OPTIONS, **options}
    if int(seed) < 0:
        raise ValueError("seed must be ≥ 0")
    if height < 16 or width < 16 or grid < 2:
        raise ValueError("height and width must be ≥ 16 and grid ≥ 2")
    if not 0 < max_disparity <= 0.25 * width:
        raise ValueError(f"max_disparity must be in (0, {0.25 * width:g}] px for width {width}")
    return opts


def render_light_field(seed: int, height: int = 320, width: int = 512, max_disparity: float = 20.0,
                       grid: int = 8, **options):
    """Render one procedural light field.

    Args:
        seed: any integer ≥ 0; the scene, the photometric jitter and the noise all follow from it.
        height, width: view size in pixels.
        max_disparity: upper bound of the disparity ``d`` (pixels, per axis, between views (0,0) and
            (G−1,G−1)); 20 matches Flower at 320×512, ~0.1·width gives wide-baseline (CrossNet++) sets.
        grid: angular views per axis.
        **options: ``num_objects`` (None = 3…7), ``slant`` (True), ``noise`` (1.0), ``photometric`` (1.0),
            ``defocus`` (1.0), ``return_disparity`` (False; True: view (0,0)'s; ``"views"``: every view's).
    Returns:
        uint8 ``[grid, grid, height, width, 3]`` indexed [row, col, y, x, rgb]; with
        ``return_disparity=True`` the tuple ``(views, disparity)`` where ``disparity`` is float32
        ``[height, width]``, the disparity of view (0, 0) per pixel; with ``return_disparity="views"``
        ``disparity`` is ``[grid, grid, height, width]``, each view's (see :func:`render_layers`).
    """
    opts = _check(seed, height, width, max_disparity, grid, options)
    layers, rng = _scene(seed, height, width, max_disparity, grid, opts)
    per_view = opts["return_disparity"] == "views"
    frame = render_layers(layers, height, width, grid, disparity=per_view)
    if per_view:
        frame, view_disparity = frame
    # Photometric differences between views: per-channel gain and the aperture vignette of a plenoptic
    # camera (outer sub-apertures are a little darker).
    strength = float(opts["photometric"])
    if strength > 0:
        g1 = max(grid - 1, 1)
        rr, cc = np.mgrid[0:grid, 0:grid] / g1 - 0.5
        vignette = 1.0 - 0.04 * (rr ** 2 + cc ** 2) / 0.5
        gain = vignette[:, :, None] * (1.0 + rng.normal(0.0, 0.008, (grid, grid, 3)))
        gain = 1.0 + strength * (gain - 1.0)
        frame.mul_(torch.from_numpy(gain.astype(np.float32))[:, :, None, None, :])
    # Sensor noise: Poisson-Gaussian (variance a·I + b, ~1.3 DN at mid-grey), then rounding to uint8.
    # Done one angular row at a time into reused buffers: fresh 100 MB temporaries cost more in page
    # faults than the arithmetic.
    noise = float(opts["noise"])
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
    views = torch.empty(frame.shape, dtype=torch.uint8)
    sigma = torch.empty(frame.shape[1:], dtype=torch.float32)
    draw = torch.empty_like(sigma)
    for r in range(grid):
        row = frame[r]
        if noise > 0:
            torch.clamp(row, 0.0, 1.0, out=sigma).mul_(5e-5).add_(4e-6)
            # numpy's square root: torch's in-place sqrt on CPU gave 1-ulp differences between processes
            # (about one in eight), which broke the byte-identical rendering a seed promises.
            np.sqrt(sigma.numpy(), out=sigma.numpy())
            sigma.mul_(noise)
            torch.randn(sigma.shape, generator=gen, out=draw)
            row.addcmul_(draw, sigma)
        views[r].copy_(row.clamp_(0.0, 1.0).mul_(255.0).add_(0.5).floor_())
    views = views.numpy()
    if per_view:
        return views, view_disparity.numpy()
    if opts["return_disparity"]:
        return views, disparity_map(layers, height, width)
    return views


# The generator's name as stores record it. It is part of the settings that key `prepare`'s resume digest,
# so it keeps the spelling of the module's path before the package was split into subpackages: stores
# prepared earlier stay "already prepared" instead of being rendered again.
GENERATOR_NAME = "refsr_cli.synthetic.render_light_field"


def synthetic_attributes(height: int = 320, width: int = 512, max_disparity: float = 20.0, grid: int = 8,
                         **options) -> dict:
    """What a store should record about the generator, so that a set can be reproduced or told apart."""
    import skimage

    opts = {k: v for k, v in {**DEFAULT_OPTIONS, **options}.items() if k != "return_disparity"}
    unknown = set(opts) - set(DEFAULT_OPTIONS)
    if unknown:
        raise TypeError(f"unknown render_light_field option(s): {', '.join(sorted(unknown))}")
    return {
        "source": "synthetic",
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "height": int(height),
        "width": int(width),
        "grid": int(grid),
        "max_disparity": float(max_disparity),
        "options": repr({k: opts[k] for k in sorted(opts)}),
        "texture_sources": ",".join(sorted(TEXTURE_SOURCES)),
        "skimage_version": skimage.__version__,
        "geometry": "point (x,y) in view (0,0) appears at (x - d*c/(grid-1), y - d*r/(grid-1)) in view (r,c)",
    }

"""Drawing one training pair: the crop window, the papers' parallax shift of Ref, and flips.

Shared by the light-field and the video datasets, which differ only in how they read pixels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from refsr_cli.data.image_io import array_to_tensor
from refsr_cli.ops.resize import downscale
from refsr_cli.ops.warp import shift

# read(window) → uint8 H×W×3, window = (y0, x0, h, w) in the full image
Reader = Callable[[tuple[int, int, int, int]], np.ndarray]


def sample_pair(rng: np.random.Generator, read_hr: Reader, read_ref: Reader, height: int, width: int,
                scale: int, crop: tuple[int, int] | None, parallax_shift: int, flips: bool):
    """Cut an ``(lr, ref, hr)`` training sample from an HR image and its reference, both ``height×width``.

    Args:
        rng: the sample's generator; every random choice is drawn from it, in a fixed order.
        read_hr, read_ref: read a window of the HR image / the reference.
        crop: HR window ``(h, w)`` (multiples of ``scale``), or ``None`` for the whole image cut down to
            a multiple of the scale.
        parallax_shift: Ref is offset by integers in ``[−p, p]`` along x and y (the papers' augmentation).
        flips: random horizontal/vertical flips, the same for all three tensors.
    Returns:
        ``lr`` ``3×h/s×w/s``, ``ref`` and ``hr`` ``3×h×w`` (float32, [0, 1]), and the ``geometry`` of the
        draw (``x0, y0, dx, dy, flip_x, flip_y``) for moving per-image data (landmarks) into the sample.
    """
    p = parallax_shift
    dx, dy = (int(v) for v in rng.integers(-p, p + 1, size=2)) if p > 0 else (0, 0)
    if crop is None:
        ch, cw = height - height % scale, width - width % scale
        x0 = y0 = 0
        hr = array_to_tensor(read_hr((0, 0, ch, cw)))
        ref = array_to_tensor(read_ref((0, 0, ch, cw)))
        if dx or dy:
            ref = shift(ref[None], float(dx), float(dy))[0]  # integer shift, borders clamped
    else:
        ch, cw = crop
        # Choose the window so that the shifted Ref window also lies inside the image: integer offsets
        # are exact copies, no interpolation or invented border pixels. Where the image is too small
        # for the full shift, the shift is clipped.
        dx = int(np.clip(dx, -(width - cw), width - cw))
        dy = int(np.clip(dy, -(height - ch), height - ch))
        x0 = int(rng.integers(max(0, -dx), width - cw - max(0, dx) + 1))
        y0 = int(rng.integers(max(0, -dy), height - ch - max(0, dy) + 1))
        hr = array_to_tensor(read_hr((y0, x0, ch, cw)))
        ref = array_to_tensor(read_ref((y0 + dy, x0 + dx, ch, cw)))
    flip_x = flip_y = False
    if flips:
        flip_x, flip_y = (bool(v) for v in rng.integers(0, 2, size=2))
        dims = [d for d, f in ((-1, flip_x), (-2, flip_y)) if f]
        if dims:
            hr, ref = hr.flip(dims), ref.flip(dims)
    lr = downscale(hr, scale).clamp_(0, 1)
    geometry = {"x0": x0, "y0": y0, "dx": dx, "dy": dy, "flip_x": flip_x, "flip_y": flip_y}
    return lr.contiguous(), ref.contiguous(), hr.contiguous(), geometry


def partial_reference(ref, rng: np.random.Generator, smallest: float = 0.3):
    """``ref`` (``3×H×W``) as a prealigned telephoto reference looks when it covers only part of the view:
    a random rectangle (each side ``smallest``–100 % of the image's, anywhere inside it) keeps its pixels,
    and every pixel outside takes the nearest pixel of the rectangle — the border smear that resampling a
    smaller reference onto the whole view leaves (``ops.prealign.resample_reference`` clamps at its
    borders). Trains a network to use the reference only where it has content."""
    import torch

    _, h, w = ref.shape
    sides = rng.uniform(smallest, 1.0, size=2)
    rh, rw = max(1, int(round(sides[0] * h))), max(1, int(round(sides[1] * w)))
    y0, x0 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    rows = torch.arange(h).clamp(y0, y0 + rh - 1)
    cols = torch.arange(w).clamp(x0, x0 + rw - 1)
    return ref[:, rows][:, :, cols].contiguous()


def window_of(image: np.ndarray) -> Reader:
    """A :data:`Reader` over an array already in memory."""
    return lambda w: image[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]

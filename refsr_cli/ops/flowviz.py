"""Flow fields as colour images: the Middlebury colour wheel (Baker et al., IJCV 2011).

Hue encodes direction, saturation encodes magnitude relative to the largest motion (or ``max_flow``):
white is no motion, red points right (+x), and the wheel goes red → yellow → green → cyan → blue →
magenta as the direction turns towards −y … as in the Middlebury ``flowToColor`` code.
"""
from __future__ import annotations

import numpy as np
import torch


def color_wheel() -> np.ndarray:
    """The 55×3 Middlebury wheel (RY 15, YG 6, GC 4, CB 11, BM 13, MR 6), values 0…255."""
    segments = [(15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0))]
    rows = []
    for count, start, end in segments:
        t = np.arange(count)[:, None] / count
        rows.append(np.asarray(start)[None, :] * (1 - t) + np.asarray(end)[None, :] * t)
    return np.floor(np.concatenate(rows)).astype(np.float64)


def flow_to_color(flow: torch.Tensor | np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """``2×H×W`` (or ``1×2×H×W``) flow in pixels → ``H×W×3`` uint8 colour image."""
    f = flow.detach().float().cpu().numpy() if isinstance(flow, torch.Tensor) else np.asarray(flow, np.float64)
    if f.ndim == 4:
        f = f[0]
    u, v = f[0].astype(np.float64), f[1].astype(np.float64)
    bad = ~np.isfinite(u) | ~np.isfinite(v)
    u, v = np.where(bad, 0, u), np.where(bad, 0, v)
    radius = np.sqrt(u * u + v * v)
    norm = max_flow if max_flow is not None else float(radius.max())
    norm = norm if norm > 1e-12 else 1.0
    u, v, radius = u / norm, v / norm, radius / norm
    wheel = color_wheel()
    ncols = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi              # −1…1, as in the reference implementation
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % ncols
    frac = (fk - k0)[..., None]
    col = (1 - frac) * wheel[k0] / 255 + frac * wheel[k1] / 255
    r = np.clip(radius, 0, 1)[..., None]
    col = 1 - r * (1 - col)                         # saturation grows with magnitude
    col = np.where((radius > 1)[..., None], col * 0.75, col)  # beyond max_flow: darker
    col[bad] = 0
    return np.clip(np.floor(255 * col + 0.5), 0, 255).astype(np.uint8)

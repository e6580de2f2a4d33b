"""Parallax of an image pair by block matching: the mean displacement that brings one view onto the other.

Used by the benchmark to place each pair on its PSNR-against-parallax plot where no ground truth exists.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from refsr_cli.ops.windows import box_mean


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma ``1×1×H×W`` of an RGB ``3×H×W`` image."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
    return (x * w).sum(0, keepdim=True)[None]          # 1×1×H×W



@torch.inference_mode()
def estimate_parallax(hr: torch.Tensor, ref: torch.Tensor, direction: tuple[float, float] | None,
                      max_shift: int = 48, block: int = 15) -> float:
    """Mean displacement magnitude (HR px) that brings ``ref`` onto ``hr``, by block matching.

    Matching runs on luma gradients (robust to gain differences between views), with ``block×block``
    mean absolute differences. ``direction=(bx, by)``: 1-D search of ``ref(p + δ·b)`` for integer
    ``δ ∈ [−max_shift, max_shift]`` with parabolic sub-pixel refinement (a light-field baseline), at
    half resolution above 256 px.
    ``None``: 2-D search at half resolution (quarter above 640 px) within the same radius (video
    frames, folder pairs); its resolution is that pixel step.
    Ties go to the smaller displacement. The mean is taken over the more distinctive quarter of the
    pixels (largest gap between the median and the best cost), away from the borders: textureless
    pixels have no measurable displacement. This is an estimate; see ``docs/bench.md`` for its error.
    """
    g, r = luma(hr.float().cpu()), luma(ref.float().cpu())
    factor = 1
    if direction is None:
        factor = 4 if max(g.shape[-2:]) > 640 else 2              # bounds the (2R+1)² shifts' cost
        g, r = F.avg_pool2d(g, factor), F.avg_pool2d(r, factor)
        radius = max(1, max_shift // factor)
        shifts = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
        block = max(5, block // 2 | 1)
    else:
        factor = 2 if max(g.shape[-2:]) > 256 else 1          # sub-pixel refinement keeps the precision
        if factor > 1:
            g, r = F.avg_pool2d(g, factor), F.avg_pool2d(r, factor)
        radius = max(1, max_shift // factor)
        block = max(5, (block // factor) | 1)
        bx, by = direction
        shifts = [(round(d * bx), round(d * by)) for d in range(-radius, radius + 1)]
    h, w = g.shape[-2:]
    pad = radius
    if h <= 2 * pad + block or w <= 2 * pad + block:
        pad = radius = max(1, min(h, w) // 4)
        shifts = [s for s in shifts if abs(s[0]) <= radius and abs(s[1]) <= radius]

    def gradients(x):
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")[0, 0]
        return torch.stack((x[1:-1, 2:] - x[1:-1, :-2], x[2:, 1:-1] - x[:-2, 1:-1]))

    gg = gradients(g)
    rp = F.pad(gradients(r)[None], (pad, pad, pad, pad), mode="replicate")[0]
    lengths = torch.tensor([math.hypot(dx, dy) for dx, dy in shifts])
    costs = []
    for start in range(0, len(shifts), 64):                     # 64 shifts at a time bounds the memory
        moved = torch.stack([rp[:, pad + dy: pad + dy + h, pad + dx: pad + dx + w]
                             for dx, dy in shifts[start:start + 64]])
        costs.append(box_mean((gg[None] - moved).abs().sum(1), block))
    cost = torch.cat(costs)                                     # S×H×W
    # A tiny penalty on |shift| settles ties (flat or periodic texture) towards no displacement.
    ranked = cost + 1e-4 * lengths[:, None, None] / max(float(lengths.max()), 1.0) * cost.mean()
    best = ranked.argmin(0)
    lowest = cost.gather(0, best[None])[0]
    distinct = cost.median(0).values - lowest
    if direction is None:
        magnitude = lengths[best] * factor
    else:
        idx = best.clamp(1, len(shifts) - 2)
        c0 = cost.gather(0, (idx - 1)[None])[0]
        c1 = cost.gather(0, idx[None])[0]
        c2 = cost.gather(0, (idx + 1)[None])[0]
        denom = c0 - 2 * c1 + c2
        offset = torch.where(denom > 1e-12, 0.5 * (c0 - c2) / denom.clamp_min(1e-12), torch.zeros_like(c1))
        delta = (idx.float() - radius) + offset.clamp(-0.5, 0.5)
        magnitude = delta.abs() * math.hypot(*direction) * factor
    border = pad + block // 2
    inner = (slice(border, h - border), slice(border, w - border))
    magnitude, distinct = magnitude[inner].flatten(), distinct[inner].flatten()
    if magnitude.numel() == 0:
        return float("nan")
    keep = distinct >= torch.quantile(distinct, 0.75)
    return float(magnitude[keep].mean())

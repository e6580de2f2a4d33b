"""Coarse-to-fine block matching: a dense backward flow between two views of one size, in tens of ms.

``match_flow(target, ref)`` returns ``V`` with ``target(p) ≈ ref(p + V(p))`` (docs/design.md §2). Both images
are turned into locally normalised luma (zero mean, unit contrast over a ``BLOCK×BLOCK`` window), so that a
sum of squared differences over a window behaves like 2·(1 − normalised cross-correlation) and exposure or
white-balance differences between the two cameras do not matter. A pyramid of halvings is matched from the
top: an exhaustive search over ``±radius`` at the coarsest level (a quarter of its width by default, which
reaches displacements of a quarter of the image at every level below), then at each finer level the
upsampled flow is refined by the best of ``(2·REFINE+1)²`` candidate offsets, with a 3×3 median between
levels against isolated mismatches, and a parabola through the costs for sub-pixel precision at the end.

``reliable(…)`` keeps the pixels a summary can trust: structured in two directions (no ramps or
straight edges, along which any position fits), well matched, and consistent with the
reverse flow (the reference matched back to the target lands within half a pixel of where it started), which
removes occlusions and the arbitrary answers of unrelated images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from refsr_cli.ops.warp import backward_warp, sampling_grid

BLOCK = 7              # window (px) of the matching cost and of the local normalisation
REFINE = 1             # search radius (px) around the upsampled flow at each finer level
COARSEST = 32          # the pyramid stops when its long side would drop below this
MIN_CONTRAST = 0.01    # local luma std below which a pixel is flat (unmatchable)
MIN_CORNER = 0.05      # corner strength below which a window is a ramp or a straight edge (ambiguous)


def luma(image: torch.Tensor) -> torch.Tensor:
    """``N×1×H×W`` Rec. 601 luma of ``N×3×H×W`` (``N×1×H×W`` passes through)."""
    if image.shape[1] == 1:
        return image
    weights = image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (image[:, :3] * weights).sum(dim=1, keepdim=True)


def _box(x: torch.Tensor) -> torch.Tensor:
    """Window mean (borders replicated) from running sums along rows, then columns: a few operations a
    pixel whatever ``BLOCK`` (3× faster on the CPU than a pooling or convolution pass). Not
    :func:`refsr_cli.ops.windows.box_mean`, which clips windows at the borders and gathers four corners
    per window: here every window has ``BLOCK²`` samples, as the normalisation assumes."""
    r = BLOCK // 2
    x = F.pad(x, [r + 1, r, 0, 0], mode="replicate").cumsum(-1)
    x = F.pad(x[..., BLOCK:] - x[..., :-BLOCK], [0, 0, r + 1, r], mode="replicate").cumsum(-2)
    return (x[..., BLOCK:, :] - x[..., :-BLOCK, :]) / (BLOCK * BLOCK)


def local_contrast(gray: torch.Tensor) -> torch.Tensor:
    """Standard deviation of ``gray`` (``N×1×H×W``) over the window around each pixel."""
    mean = _box(gray)
    return (_box(gray * gray) - mean * mean).clamp_min(0).sqrt()


def normalise(gray: torch.Tensor) -> torch.Tensor:
    """``(gray − local mean) / local contrast`` (flat areas go to ~0 instead of amplified noise)."""
    return (gray - _box(gray)) / (local_contrast(gray) + MIN_CONTRAST)


def corner_strength(gray: torch.Tensor) -> torch.Tensor:
    """Smaller eigenvalue of the window's structure tensor of the normalised ``gray`` (``N×1×H×W``): large
    where the window has structure in two directions, ~0 on ramps and straight edges, where a match slides
    along the structure and any position along it fits (the aperture problem)."""
    g = normalise(gray)
    gx = F.pad(g[..., :, 2:] - g[..., :, :-2], [1, 1, 0, 0], mode="replicate") / 2
    gy = F.pad(g[..., 2:, :] - g[..., :-2, :], [0, 0, 1, 1], mode="replicate") / 2
    a, b, c = _box(gx * gx), _box(gx * gy), _box(gy * gy)
    return (a + c) / 2 - (((a - c) / 2) ** 2 + b * b).sqrt()


def _argmin_channels(cost: torch.Tensor) -> torch.Tensor:
    """``cost.argmin(dim=1)`` (first minimum) for ``N×K×H×W``, as a running minimum over the ``K`` planes:
    on the CPU a reduction across channels is several times slower than ``K`` whole-plane comparisons."""
    best_cost, best = cost[:, 0].clone(), torch.zeros(cost.shape[:1] + cost.shape[2:], dtype=torch.long)
    for k in range(1, cost.shape[1]):
        better = cost[:, k] < best_cost
        best_cost = torch.where(better, cost[:, k], best_cost)
        best = torch.where(better, k, best)
    return best


def _median3(flow: torch.Tensor) -> torch.Tensor:
    n, c, h, w = flow.shape
    patches = F.unfold(F.pad(flow, [1] * 4, mode="replicate"), 3).view(n, c, 9, h, w)
    return patches.median(dim=2).values


def _exhaustive(t: torch.Tensor, r: torch.Tensor, radius: int) -> torch.Tensor:
    """Best integer displacement in ``[−radius, radius]²`` per pixel: ``N×2×H×W``."""
    n, _, h, w = t.shape
    k = 2 * radius + 1
    padded = F.pad(r, [radius] * 4, mode="replicate")
    candidates = F.unfold(padded, k).view(n, k * k, h, w)          # candidate j = (dy, dx) in row-major order
    cost = _box((t - candidates) ** 2)
    best = _argmin_channels(cost)
    dy, dx = best // k - radius, best % k - radius
    return torch.stack((dx, dy), dim=1).to(t.dtype)


def _costs_at(t: torch.Tensor, r: torch.Tensor, flow: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Matching cost of ``flow + offset`` for each of the ``K×2`` ``offsets``: ``N×K×H×W``.

    One ``grid_sample`` of ``r`` for all candidates (their grids stacked along the rows), sampled as
    :func:`~refsr_cli.ops.warp.backward_warp` does (bilinear, borders clamped)."""
    n, _, h, w = t.shape
    kk = len(offsets)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=t.dtype), torch.arange(w, dtype=t.dtype), indexing="ij")
    x = (xs + flow[:, 0]).unsqueeze(1) + offsets[:, 0].view(1, kk, 1, 1)          # N×K×H×W
    y = (ys + flow[:, 1]).unsqueeze(1) + offsets[:, 1].view(1, kk, 1, 1)
    grid = sampling_grid(x, y, h, w).view(n, kk * h, w, 2)
    warped = F.grid_sample(r, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return _box((t - warped.view(n, kk, h, w)) ** 2)


def _refine(t: torch.Tensor, r: torch.Tensor, flow: torch.Tensor, radius: int) -> torch.Tensor:
    """``flow`` moved by the best integer offset within ``±radius`` in x and y."""
    steps = torch.arange(-radius, radius + 1, dtype=t.dtype)
    oy, ox = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack((ox.flatten(), oy.flatten()), dim=1)      # K×2
    best = _argmin_channels(_costs_at(t, r, flow, offsets))
    return flow + offsets[best].permute(0, 3, 1, 2)


def _subpixel(t: torch.Tensor, r: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``flow`` moved to the vertex of a parabola through the costs at ``±1`` px in x and in y (at most
    half a pixel, where the cost is a minimum); returns (flow, cost at the integer position)."""
    offsets = t.new_tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
    c0, xm, xp, ym, yp = _costs_at(t, r, flow, offsets).unbind(dim=1)

    def vertex(minus, plus):
        curvature = minus + plus - 2 * c0
        ok = (curvature > 1e-6) & (c0 <= minus) & (c0 <= plus)
        return torch.where(ok, 0.5 * (minus - plus) / curvature.clamp_min(1e-6), 0.0).clamp(-0.5, 0.5)

    return flow + torch.stack((vertex(xm, xp), vertex(ym, yp)), dim=1), c0.unsqueeze(1)


def match_flow(target: torch.Tensor, ref: torch.Tensor, radius: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward flow ``target → ref`` and its matching cost.

    Args:
        target, ref: ``N×C×H×W`` (C = 1 or 3), the same size, in [0, 1].
        radius: exhaustive search radius at the coarsest level (default: a quarter of its long side).
    Returns:
        ``(flow, cost)``: ``N×2×H×W`` pixels and ``N×1×H×W`` (about 2·(1 − NCC); 0 = a perfect match).
    """
    if target.shape != ref.shape:
        raise ValueError(f"match_flow needs two images of one size, not {tuple(target.shape)} and {tuple(ref.shape)}")
    t, r = luma(target.float()), luma(ref.float())
    pyramid = [(t, r)]
    while max(pyramid[-1][0].shape[-2:]) // 2 >= COARSEST and min(pyramid[-1][0].shape[-2:]) >= 2 * BLOCK:
        pyramid.append(tuple(F.avg_pool2d(x, 2, ceil_mode=True) for x in pyramid[-1]))
    levels = [(normalise(a), normalise(b)) for a, b in pyramid]
    tc, rc = levels[-1]
    flow = _exhaustive(tc, rc, radius or max(2, max(tc.shape[-2:]) // 4))
    for i in range(len(levels) - 2, -1, -1):
        tl, rl = levels[i]
        flow = 2.0 * F.interpolate(_median3(flow), size=tl.shape[-2:], mode="bilinear", align_corners=False)
        flow = _refine(tl, rl, flow, REFINE)
    return _subpixel(*levels[0], flow)


def reliable(target: torch.Tensor, ref: torch.Tensor, flow: torch.Tensor, cost: torch.Tensor,
             reverse: torch.Tensor, max_cost: float = 0.6, tolerance: float = 0.5) -> torch.Tensor:
    """``N×1×H×W`` mask of trustworthy pixels of ``flow`` (``target → ref``): textured in the target, a
    matching cost below ``max_cost``, landing inside ``ref``, and the ``reverse`` flow (``ref → target``)
    bringing them back within ``tolerance`` px."""
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    round_trip = flow + backward_warp(reverse, flow)
    consistent = round_trip[:, 0] ** 2 + round_trip[:, 1] ** 2 <= tolerance ** 2
    gray = luma(target.float())
    textured = (local_contrast(gray) > 2 * MIN_CONTRAST) & (corner_strength(gray) > MIN_CORNER)
    return (inside & consistent & textured[:, 0] & (cost[:, 0] < max_cost)).unsqueeze(1)

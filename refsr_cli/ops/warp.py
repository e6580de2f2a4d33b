"""Backward warping and size padding: the geometry shared by every network.

Flow fields are ``N×2×H×W``: channel 0 = x (columns), channel 1 = y (rows), in pixels of the scale
they live at. Backward warping: ``out(p) = in(p + V(p))``, bilinear, borders clamped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _base_grid(n: int, h: int, w: int, device, dtype) -> torch.Tensor:
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=0).unsqueeze(0).expand(n, -1, -1, -1)


def sampling_grid(x: torch.Tensor, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``grid_sample`` coordinates (``align_corners=True``) of pixel positions in an ``h×w`` image.

    ``x`` (columns) and ``y`` (rows): tensors of one shape ``S``, in pixels. Returns ``S×2`` with the last
    dimension ``(x, y)`` normalised so that pixel centre 0 is −1 and pixel centre ``w−1`` (``h−1``) is +1.
    """
    return torch.stack((x * (2.0 / max(w - 1, 1)) - 1.0, y * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (``N×C×H×W``) at ``p + flow(p)`` (``flow``: ``N×2×H×W``, pixels).

    Bilinear with border clamping: ``grid_sample(align_corners=True, padding_mode="border")``.
    """
    n, _, h, w = image.shape
    if flow.shape[-2:] != (h, w):
        raise ValueError(f"flow {tuple(flow.shape[-2:])} and image {(h, w)} sizes differ")
    coords = _base_grid(n, h, w, flow.device, flow.dtype) + flow
    grid = sampling_grid(coords[:, 0], coords[:, 1], h, w)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def shift(image: torch.Tensor, dx: float, dy: float = 0.0) -> torch.Tensor:
    """``out(x, y) = in(x + dx, y + dy)`` for every pixel (a constant-flow backward warp)."""
    n, _, h, w = image.shape
    flow = image.new_empty(n, 2, h, w)
    flow[:, 0] = dx
    flow[:, 1] = dy
    return backward_warp(image, flow)


def pad_to_multiple(x: torch.Tensor, multiple: int = 64) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``N×C×H×W`` at the bottom/right to multiples of ``multiple``; returns ``(padded, (H, W))``.

    Reflection padding (replicate where the image is too small to reflect), undone by :func:`crop_to`.
    """
    h, w = x.shape[-2:]
    return pad_bottom_right(x, (-h) % multiple, (-w) % multiple), (h, w)


def pad_bottom_right(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad ``…×H×W`` by ``pad_h`` rows at the bottom and ``pad_w`` columns at the right, by reflection
    (by replication where the image is too small to reflect)."""
    if pad_h == 0 and pad_w == 0:
        return x
    h, w = x.shape[-2:]
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``size``."""
    return x[..., : size[0], : size[1]]

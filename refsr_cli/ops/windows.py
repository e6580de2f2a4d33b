"""Sums and means over rectangular windows from an integral image: four look-ups per window, whatever
its size."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def window_sums(x: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
                ) -> torch.Tensor:
    """Sums of ``x`` (``…×H×W``) over the windows rows ``[y0, y1)`` × columns ``[x0, x1)``.

    ``y0``, ``y1``: ``(Gy,)`` integer tensors in ``0…H``; ``x0``, ``x1``: ``(Gx,)`` in ``0…W``.
    Returns ``…×Gy×Gx``: window ``(i, j)`` spans rows ``y0[i]…y1[i]−1`` and columns ``x0[j]…x1[j]−1``.
    """
    ii = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    y0, y1, x0, x1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    return ii[..., y1, x1] - ii[..., y0, x1] - ii[..., y1, x0] + ii[..., y0, x0]


def box_mean(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean of ``x`` (``…×H×W``) over the ``block×block`` window centred on each pixel (same size; windows
    clipped at the borders, so border means cover fewer pixels)."""
    r = block // 2
    h, w = x.shape[-2:]
    y0, y1 = torch.arange(h).sub(r).clamp(0, h), torch.arange(h).add(r + 1).clamp(0, h)
    x0, x1 = torch.arange(w).sub(r).clamp(0, w), torch.arange(w).add(r + 1).clamp(0, w)
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).float()
    return window_sums(x, y0, y1, x0, x1) / area

"""Pixel losses between an output and its target (CrossNet's Charbonnier, CrossNet++'s warping loss)."""
from __future__ import annotations

import torch


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss ``mean(sqrt((pred − target)² + eps²))`` (CrossNet's SR loss, eps = 0.001).

    ``pred``, ``target``: same shape (e.g. ``N×3×H×W``). Returns a scalar.
    """
    diff = pred - target
    return torch.sqrt(diff * diff + eps * eps).mean()


def warping_loss(warped: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """CrossNet++ warping loss: ½·mean squared error between the stage-1 warped reference and the HR.

    ``warped``: ``aux["warped_stage1"]`` (``N×3×H×W``); ``hr``: ground truth of the LR view, same shape.
    """
    return 0.5 * torch.mean((warped - hr) ** 2)

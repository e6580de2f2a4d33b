"""The interface every network implements."""
from __future__ import annotations

import torch
import torch.nn as nn


class RefSRModel(nn.Module):
    """Base class: ``forward(lr, ref, scale) -> (sr, aux)``.

    Args of forward:
        lr:  ``N×3×h×w`` float in [0, 1].
        ref: ``N×3×(s·h)×(s·w)`` float in [0, 1] (ignored by single-image models such as MDSR).
        scale: 4 or 8.
    Returns:
        sr:  ``N×3×(s·h)×(s·w)``.
        aux: dict of intermediates for users and losses, e.g. ``"flow"`` (``N×2×H×W`` at full
             resolution), ``"flows"`` (list per scale), ``"warped"`` (``N×3×H×W``), ``"alpha"``,
             ``"depth"``, ``"confidence"``. Losses document which keys they need.

    Subclasses set ``self.config`` to the keyword arguments that rebuild them exactly.
    """

    config: dict
    # True when some layers serve one scale only (MDSR's per-scale heads and upsamplers): a checkpoint then
    # runs only at the scale it was trained for (archs/checkpoint.load_model refuses the others).
    scale_specific = False

    def forward(self, lr: torch.Tensor, ref: torch.Tensor, scale: int):  # pragma: no cover - abstract
        raise NotImplementedError

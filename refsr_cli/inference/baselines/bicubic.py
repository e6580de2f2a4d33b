"""The bicubic baseline: the MATLAB-compatible bicubic upscaling that inverts the LR degradation."""
from __future__ import annotations

import torch

from refsr_cli.errors import RefsrError
from refsr_cli.ops.resize import upscale


def bicubic(lr: torch.Tensor, ref: torch.Tensor | None = None, scale: int = 4,
            **options) -> tuple[torch.Tensor, dict]:
    """Upscale ``lr`` (``N×3×h×w``) by ``scale`` with :func:`refsr_cli.ops.resize.upscale`; ``ref`` is ignored.

    Returns ``(sr, {})``, ``sr`` ``N×3×(s·h)×(s·w)`` clamped to [0, 1] (bicubic overshoots at edges).
    """
    if options:
        raise RefsrError(f"the bicubic baseline takes no options (got {', '.join(sorted(options))})")
    return upscale(lr, int(scale)).clamp_(0, 1), {}

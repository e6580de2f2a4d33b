"""Classical baselines, called like the networks: ``fn(lr, ref, scale, **options) -> (sr, aux)``.

``lr`` is ``N×3×h×w``, ``ref`` ``N×3×(s·h)×(s·w)`` (ignored by ``bicubic``, may be ``None`` there),
``sr`` ``N×3×(s·h)×(s·w)`` float in [0, 1]; ``aux`` a dict of intermediates (empty for bicubic).
"""
from __future__ import annotations

from typing import Callable

from refsr_cli.inference.baselines.bicubic import bicubic
from refsr_cli.inference.baselines.patchmatch import patchmatch

BASELINES: dict[str, Callable] = {"bicubic": bicubic, "patchmatch": patchmatch}

DESCRIPTIONS: dict[str, str] = {
    "bicubic": "MATLAB-compatible bicubic upscaling of LR (the degradation's inverse); no reference",
    "patchmatch": "PatchMatch between LR↑ and the blurred reference Ref↓s↑s, sharp Ref patches pasted and "
                  "averaged (Boominathan et al. 2014 style); options patch_size, iterations, search_radius, "
                  "features, subpixel, backproject, seed",
}

__all__ = ["BASELINES", "DESCRIPTIONS", "bicubic", "patchmatch"]

"""MDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017).

Multi-scale single-image SR, following the authors' EDSR-PyTorch ``mdsr.py``::

    x − mean → head conv 3→F (3×3) → scale-specific pre-process (2 ResBlocks, 5×5)
      → shared body (B ResBlocks 3×3 + one 3×3 conv) + long skip → scale-specific pixel-shuffle
      upsampler → shared tail conv F→3 (3×3) → + mean

Paper size: B = 80, F = 64 → 7,953,987 parameters for the ×2/×3/×4 model (published: 7.95 M; the
authors' fixed MeanShift convs add 24 non-trainable numbers we implement as constants). The ×8 path
this project adds has its own pre-process pair and a 3-stage ×2 upsampler: +852,992 parameters
(8,806,979 in all). MDSR ignores the reference: ``forward(lr, ref=None, scale)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from refsr_cli.archs import Recipe, register
from refsr_cli.archs.base import RefSRModel
from refsr_cli.archs.blocks import ResBlock, Upsampler, conv

# DIV2K RGB mean used by EDSR/MDSR (inputs in [0, 1] here instead of [0, 255]).
_RGB_MEAN = (0.4488, 0.4371, 0.4040)


@register("mdsr", paper="Lim et al., EDSR/MDSR, CVPRW 2017",
          summary="multi-scale single-image SR: shared 80×64 residual body, per-scale heads/tails (+×8 path)",
          input_multiple=1, needs_reference=False, scales=(2, 3, 4, 8),
          tiny={"n_resblocks": 2, "features": 16},
          # The paper: L1, Adam 1e-4 halved every 2e5 steps; 192×192 HR crops (48×48 LR patches at ×4).
          recipe=Recipe(preset={"loss": {"l1": 1.0}, "crop": [192, 192], "batch": 16, "lr": 1e-4,
                                "milestones": [0.5], "gamma": 0.5, "parallax_shift": 0}))
class MDSR(RefSRModel):
    """Multi-scale EDSR.

    Args:
        n_resblocks: residual blocks of the shared body (80 in the paper).
        features: feature channels (64).
        scales: scales with their own pre-process blocks and upsampler (2, 3, 4 in the paper; 8 added here).
    Forward: ``lr`` ``N×3×h×w`` → ``sr`` ``N×3×(s·h)×(s·w)``, ``aux = {}``; ``ref`` is ignored.
    """

    scale_specific = True   # a checkpoint trains the pre-process and upsampler of its own scale only

    def __init__(self, n_resblocks: int = 80, features: int = 64, scales=(2, 3, 4, 8)):
        super().__init__()
        scales = [int(s) for s in scales]
        self.config = {"n_resblocks": int(n_resblocks), "features": int(features), "scales": scales}
        self.scales = scales
        f = features
        self.register_buffer("rgb_mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = conv(3, f, 3)
        self.pre_process = nn.ModuleList(nn.Sequential(ResBlock(f, 5), ResBlock(f, 5)) for _ in scales)
        self.body = nn.Sequential(*[ResBlock(f, 3) for _ in range(n_resblocks)], conv(f, f, 3))
        self.upsample = nn.ModuleList(Upsampler(s, f) for s in scales)
        self.tail = conv(f, 3, 3)

    def forward(self, lr: torch.Tensor, ref: torch.Tensor | None = None, scale: int = 4):
        if scale not in self.scales:
            raise ValueError(f"this MDSR has no ×{scale} path (scales: {self.scales})")
        idx = self.scales.index(scale)
        x = self.head(lr - self.rgb_mean.to(lr.dtype))
        x = self.pre_process[idx](x)
        x = x + self.body(x)                      # long skip of EDSR
        x = self.tail(self.upsample[idx](x))
        return x + self.rgb_mean.to(x.dtype), {}

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per part; ``scale_<s>`` = that scale's pre-process + upsampler."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        out = {"shared": count(self.head) + count(self.body) + count(self.tail)}
        for s, pre, up in zip(self.scales, self.pre_process, self.upsample):
            out[f"scale_{s}"] = count(pre) + count(up)
        return out

"""FlowNetS+ — the flow estimator of CrossNet / CrossNet++ (docs/design.md §4).

Input ``cat(A, B)`` (``N×6×H×W``, H and W multiples of 64); outputs backward flows that bring ``B``
onto ``A``: ``B̂(p) = B(p + V(p))`` (see :func:`refsr_cli.ops.warp.backward_warp`). Channel 0 = x, 1 = y,
each flow in pixels of the scale it lives at.

Contracting path (out-ch, kernel, stride), LeakyReLU(0.1) after every conv::

    conv1 64 k7 s2 | conv2 128 k5 s2 | conv3 256 k5 s2 | conv3_1 256 k3 | conv4 512 k3 s2 | conv4_1 512 k3
    conv5 512 k3 s2 | conv5_1 512 k3 | conv6 1024 k3 s2 | conv6_1 1024 k3          (total stride 64)

Expanding path, coarse → fine, one level per contracting scale 1/64 … 1/2 and then full resolution:
a 3×3 linear flow head, a 4×4 stride-2 deconvolution of that flow (2 → 2 ch), a 4×4 stride-2
deconvolution of the features (256, 256, 128, 64, 64, 64 ch, LeakyReLU) and concatenation with the
matching contracting feature. The "+" level at full resolution concatenates the ``B`` image itself
(the reference), runs two 7×7 convs of 16 ch with SELU and a 3×3 flow head.

Parameters at width 1: 33,830,110 (≈ 33.8 M, as published).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from refsr_cli.archs.blocks import conv, deconv, scaled

# (out-ch, kernel, stride) of the contracting path; indices of the convs whose outputs are skip features.
_CONTRACT = ((64, 7, 2), (128, 5, 2), (256, 5, 2), (256, 3, 1), (512, 3, 2), (512, 3, 1), (512, 3, 2),
             (512, 3, 1), (1024, 3, 2), (1024, 3, 1))
_SKIPS = (0, 1, 3, 5, 7)            # conv1 (1/2), conv2 (1/4), conv3_1 (1/8), conv4_1 (1/16), conv5_1 (1/32)
_DECONV = (256, 256, 128, 64, 64, 64)   # feature deconvs 1/64→1/32, …, 1/2→1


class FlowNetSPlus(nn.Module):
    """FlowNetS with an extra full-resolution refinement level ("+").

    Args:
        width: channel multiplier of every layer (1 = paper size; 1/16 builds a tiny copy for tests).
        in_ch: channels of ``cat(A, B)`` (6 for two RGB images).
        ref_ch: channels of the ``B`` image concatenated at the full-resolution level.
        plus_ch: channels of the two 7×7 SELU convs of the "+" level (16 in the paper; scaled by width).
        flow_scale: the heads predict ``flow / flow_scale`` (FlowNet's ``div_flow``, 20 in its code and in
            the shipped CrossNet ×8); outputs are in pixels either way. 1 = off, as the CrossNet paper.
    """

    def __init__(self, width: float = 1.0, in_ch: int = 6, ref_ch: int = 3, plus_ch: int = 16,
                 flow_scale: float = 1.0):
        super().__init__()
        self.flow_scale = float(flow_scale)
        c = [scaled(ch, width) for ch, _, _ in _CONTRACT]
        layers, prev = [], in_ch
        for (ch, k, s), out in zip(_CONTRACT, c):
            layers.append(conv(prev, out, k, stride=s, act="lrelu"))
            prev = out
        self.contract = nn.ModuleList(layers)
        skip_ch = [c[i] for i in _SKIPS][::-1] + [ref_ch]     # 1/32, 1/16, 1/8, 1/4, 1/2, full
        d = [scaled(ch, width) for ch in _DECONV]
        heads, up_flows, deconvs = [], [], []
        prev = c[-1]                                          # conv6_1 at 1/64
        for level in range(6):                                # 1/64 → 1/32, …, 1/2 → full
            heads.append(conv(prev, 2, 3))                    # flow at this level (linear)
            up_flows.append(deconv(2, 2))                     # learned ×2 of that flow
            deconvs.append(deconv(prev, d[level], act="lrelu"))
            prev = skip_ch[level] + d[level] + 2
        self.heads = nn.ModuleList(heads)
        self.up_flows = nn.ModuleList(up_flows)
        self.deconvs = nn.ModuleList(deconvs)
        p = scaled(plus_ch, width)
        self.plus = nn.Sequential(conv(prev, p, 7, act="selu"), conv(p, p, 7, act="selu"))
        self.head0 = conv(p, 2, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
        """Flows ``[V0, V1, …]`` (full, 1/2, 1/4, 1/8), ``levels`` of them (1 … 7).

        Args:
            a: ``N×3×H×W`` target view (LR↑); b: ``N×3×H×W`` view to be warped (Ref); H, W multiples of 64.
        Returns:
            list of ``N×2×(H/2^i)×(W/2^i)``, i = 0 … levels−1. Coarser heads are always computed (their
            upsampled flows feed the next level) — asking for fewer levels only skips returning them.
        """
        h, w = a.shape[-2:]
        if h % 64 or w % 64:
            raise ValueError(f"FlowNetS+ needs H and W multiples of 64, got {h}×{w} (pad with pad_to_multiple)")
        x = torch.cat((a, b), dim=1)
        skips = []
        for i, layer in enumerate(self.contract):
            x = layer(x)
            if i in _SKIPS:
                skips.append(x)
        skips = skips[::-1] + [b]
        flows = []                                            # coarse → fine: 1/64 … 1/2
        for level in range(6):
            flow = self.heads[level](x)
            flows.append(flow)
            x = torch.cat((skips[level], self.deconvs[level](x), self.up_flows[level](flow)), dim=1)
        flows.append(self.head0(self.plus(x)))
        flows = flows[::-1]                                   # V0 (full), V1 (1/2), …, V6 (1/64)
        if self.flow_scale != 1.0:
            return [f * self.flow_scale for f in flows[:levels]]
        return flows[:levels]

"""CrossNet++ (Tan, Zheng et al., "CrossNet++: Cross-scale Large-parallax Warping for Reference-based
Super-resolution", TPAMI 2020), docs/design.md §4.

Two-stage alignment, shared encoder::

    V1⁰      = Flow₁(LR↑, Ref)[full]            stage 1: only the full-resolution flow is used
    Ref̂      = warp(Ref, V1⁰)                   supervised by the warping and landmark losses
    V2⁰…V2³  = Flow₂(LR↑, Ref̂)                  stage 2: flows for feature warping
    F_lr, F_ref̂ = Enc(LRs), Enc(Ref̂)            one encoder, run once on the stacked batch
    SR = Dec(F_lr, warp(F_ref̂_i, V2^i)) (+ LRs)

Paper size: 69,013,951 parameters (2 × FlowNetS+ 33,830,110, encoder 414,720, decoder 939,011;
published ≈ 69 M).
"""
from __future__ import annotations

import torch

from refsr_cli.archs import Recipe, register
from refsr_cli.archs.crossnet import CrossNetBase, Decoder, Encoder, crop_flow_pyramid, match_memory_format
from refsr_cli.archs.flownet import FlowNetSPlus
from refsr_cli.ops.warp import backward_warp, crop_to


@register("crossnetpp", paper="Tan et al., CrossNet++, TPAMI 2020",
          summary="two-stage FlowNetS+ alignment (Ref̂ supervised by warping + landmark losses), shared encoder",
          input_multiple=64, needs_reference=True, scales=(4, 8),
          tiny={"width": 0.0625, "features": 8},
          # The paper's hybrid loss. Stage 1 aligns (warping + landmark losses only), then all terms.
          recipe=Recipe(preset={"loss": {"charbonnier": 1.0, "warping": 1.0, "landmark": 0.01},
                                "stages": [{"until": 0.25,
                                            "loss": {"charbonnier": 0.0, "warping": 1.0, "landmark": 0.01}}]},
                        losses=("warping", "flow", "landmark"), centre_reference=True))
class CrossNetPP(CrossNetBase):
    """CrossNet++.

    Args: as :class:`~refsr_cli.archs.crossnet.CrossNet` (``width``, ``features``, ``sisr``,
    ``sisr_config``, ``global_residual``, ``flow_scale``).
    Forward: ``(lr N×3×h×w, ref N×3×sh×sw, scale) → (sr, aux)``; aux keys:
    ``"flow_stage1"`` (V1⁰, ``N×2×sh×sw``: Ref → LR view), ``"warped_stage1"`` (Ref̂, ``N×3×sh×sw``; the
    warping and landmark losses read these two), ``"flow"`` (V2⁰: Ref̂ → LR view, full resolution),
    ``"flows"`` ([V2⁰…V2³]), ``"warped"`` (Ref̂ warped by V2⁰) and ``"lr_up"``.
    """

    # `refsr train --init` from a CrossNet checkpoint of the same configuration: both flow networks start
    # as CrossNet's (Flow₂ then sees an already aligned Ref̂), the decoder as CrossNet's, and the shared
    # encoder as CrossNet's Ref encoder — before any training that kept far more of CrossNet's validation
    # PSNR than its LR encoder did (weights/README.md).
    init_from = {"crossnet": {"flownet1": "flownet", "flownet2": "flownet", "encoder": "encoder_ref"}}

    def __init__(self, width: float = 1.0, features: int = 64, sisr: str = "bicubic",
                 sisr_config: dict | None = None, global_residual: bool = True, flow_scale: float = 1.0):
        super().__init__(width, features, sisr, sisr_config, global_residual, flow_scale)
        self.flownet1 = FlowNetSPlus(width, flow_scale=flow_scale)
        self.flownet2 = FlowNetSPlus(width, flow_scale=flow_scale)
        self.encoder = Encoder(features)
        self.decoder = Decoder(features)

    def forward(self, lr: torch.Tensor, ref: torch.Tensor, scale: int):
        lr_up_p, lrs_p, ref_p, size = self._prepare(lr, ref, scale)
        n = lr.shape[0]
        flow1 = self.flownet1(lr_up_p, ref_p, levels=1)[0]
        ref_hat = match_memory_format(backward_warp(ref_p, flow1), ref_p)
        flows = self.flownet2(lr_up_p, ref_hat, levels=4)
        # Shared encoder: one call on the stacked batch (bigger GEMMs, one pass over the weights).
        feats = self.encoder(torch.cat((lrs_p, ref_hat), dim=0))
        f_lr = [f[:n] for f in feats]
        warped = [match_memory_format(backward_warp(f[n:], v), f) for f, v in zip(feats, flows)]
        sr = self._finish(self.decoder(f_lr, warped), lrs_p, size)
        aux = {"flow_stage1": crop_to(flow1, size), "warped_stage1": crop_to(ref_hat, size),
               "flow": crop_to(flows[0], size), "flows": crop_flow_pyramid(flows, size),
               "warped": crop_to(backward_warp(ref_hat, flows[0]), size), "lr_up": crop_to(lrs_p, size)}
        return sr, aux

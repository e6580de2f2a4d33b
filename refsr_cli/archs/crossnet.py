"""CrossNet (Zheng et al., "CrossNet: An End-to-end Reference-based Super Resolution Network using
Cross-scale Warping", ECCV 2018), docs/design.md §4.

Pipeline for ``lr`` (``N×3×h×w``), ``ref`` (``N×3×H×W``, H = s·h, W = s·w)::

    LR↑  = bicubic(lr, s)                       flow input (refsr_cli.ops.resize.upscale)
    LRs  = LR↑, or MDSR(lr, s) if sisr="mdsr"   encoder input ("LR↑ from MDSR" in the paper)
    V0…V3 = FlowNetS+(LR↑, Ref)                 full, 1/2, 1/4, 1/8 resolution
    F_lr  = Enc_lr(LRs)   F_ref = Enc_ref(Ref)  4 scales each, 64 ch, 5×5 convs + SELU
    F̂_i  = warp(F_ref_i, V_i)                   backward warp (refsr_cli.ops.warp.backward_warp)
    SR   = Dec(F_lr, F̂) (+ LRs if global_residual)

Inputs of any size: LR↑/Ref are padded (reflection) to multiples of 64 and the outputs cropped back.
Paper size: 35,598,561 parameters with two encoders (FlowNetS+ 33,830,110, encoders 2 × 414,720,
decoder 939,011); the paper states 35.2 M (its FlowNet 33.8 M, encoder 0.4 M, decoder 0.9 M — the
published total matches counting one encoder once).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from refsr_cli.archs import Recipe, register
from refsr_cli.archs.base import RefSRModel
from refsr_cli.archs.blocks import conv, deconv
from refsr_cli.archs.flownet import FlowNetSPlus
from refsr_cli.ops.resize import upscale
from refsr_cli.ops.warp import backward_warp, crop_to, pad_to_multiple

PAPER = "Zheng et al., CrossNet, ECCV 2018"


def match_memory_format(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` in ``ref``'s memory format — grid_sample returns NCHW-contiguous tensors, and mixing formats
    in a ``cat`` would silently drop the following convs off the fast channels_last path."""
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


class Encoder(nn.Module):
    """Multi-scale encoder: ``N×3×H×W`` → 4 maps ``N×F×(H/2^i)×(W/2^i)``, i = 0…3.

    Two 5×5 convs at stride 1 (scale 0), then three 5×5 convs at stride 2 (scales 1–3), SELU after each.
    """

    def __init__(self, features: int = 64, in_ch: int = 3):
        super().__init__()
        self.scale0 = nn.Sequential(conv(in_ch, features, 5, act="selu"), conv(features, features, 5, act="selu"))
        self.down = nn.ModuleList(conv(features, features, 5, stride=2, act="selu") for _ in range(3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.scale0(x)]
        for layer in self.down:
            feats.append(layer(feats[-1]))
        return feats


class Decoder(nn.Module):
    """U-Net-like decoder fusing LR features with warped Ref features, coarse to fine.

    ``cat(LR_3, R̂_3)`` → 4×4 s2 deconv (F) → ``cat(LR_2, R̂_2, ·)`` → deconv → ``cat(LR_1, R̂_1, ·)`` →
    deconv → ``cat(LR_0, R̂_0, ·)`` → 5×5 conv F → 5×5 conv F → 5×5 conv 3 (linear). SELU elsewhere.
    Input: two lists of 4 maps ``N×F×(H/2^i)×(W/2^i)``; output ``N×3×H×W``.
    """

    def __init__(self, features: int = 64, out_ch: int = 3):
        f = features
        super().__init__()
        self.up3 = deconv(2 * f, f, act="selu")
        self.up2 = deconv(3 * f, f, act="selu")
        self.up1 = deconv(3 * f, f, act="selu")
        self.fuse = nn.Sequential(conv(3 * f, f, 5, act="selu"), conv(f, f, 5, act="selu"), conv(f, out_ch, 5))

    def forward(self, lr_feats: list[torch.Tensor], ref_feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.up3(torch.cat((lr_feats[3], ref_feats[3]), dim=1))
        x = self.up2(torch.cat((lr_feats[2], ref_feats[2], x), dim=1))
        x = self.up1(torch.cat((lr_feats[1], ref_feats[1], x), dim=1))
        return self.fuse(torch.cat((lr_feats[0], ref_feats[0], x), dim=1))


def check_pair(lr: torch.Tensor, ref: torch.Tensor, scale: int) -> None:
    """Raise ``ValueError`` unless ``ref`` is ``scale`` × the size of ``lr`` (same batch)."""
    if ref is None:
        raise ValueError("this network needs a reference image")
    n, _, h, w = lr.shape
    if ref.shape[0] != n or ref.shape[-2:] != (scale * h, scale * w):
        raise ValueError(f"reference {tuple(ref.shape)} does not match LR {tuple(lr.shape)} at ×{scale}")


def build_sisr(sisr: str, sisr_config: dict | None) -> nn.Module | None:
    """The optional embedded SISR network producing the encoder's LR↑ (``None`` = bicubic)."""
    if sisr == "bicubic":
        return None
    if sisr == "mdsr":
        from refsr_cli.archs.mdsr import MDSR
        return MDSR(**(sisr_config or {}))
    raise ValueError(f"unknown sisr {sisr!r} (bicubic or mdsr)")


class CrossNetBase(RefSRModel):
    """Shared input handling of CrossNet and CrossNet++ (``crossnetpp`` subclasses it): LR↑, optional SISR, padding to 64."""

    sisr_net: nn.Module | None
    global_residual: bool

    def __init__(self, width: float = 1.0, features: int = 64, sisr: str = "bicubic",
                 sisr_config: dict | None = None, global_residual: bool = True, flow_scale: float = 1.0):
        super().__init__()
        self.config = {"width": float(width), "features": int(features), "sisr": sisr,
                       "sisr_config": dict(sisr_config) if sisr_config else None,
                       "global_residual": bool(global_residual), "flow_scale": float(flow_scale)}
        self.global_residual = bool(global_residual)
        self.sisr_net = build_sisr(sisr, sisr_config)

    def _prepare(self, lr: torch.Tensor, ref: torch.Tensor, scale: int):
        """Returns padded ``(lr_up, lrs, ref)`` (``N×3×H'×W'``, multiples of 64) and the crop size."""
        check_pair(lr, ref, scale)
        lr_up = upscale(lr, scale)
        lrs = lr_up if self.sisr_net is None else self.sisr_net(lr, None, scale)[0]
        lr_up = match_memory_format(lr_up, ref)
        lr_up_p, size = pad_to_multiple(lr_up, 64)
        ref_p, _ = pad_to_multiple(ref, 64)
        lrs_p = lr_up_p if self.sisr_net is None else pad_to_multiple(match_memory_format(lrs, ref), 64)[0]
        return lr_up_p, lrs_p, ref_p, size

    def _finish(self, out: torch.Tensor, lrs_p: torch.Tensor, size) -> torch.Tensor:
        if self.global_residual:
            out = out + lrs_p
        return crop_to(out, size)

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per named child (flow networks, encoders, decoder, sisr)."""
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}


def crop_flow_pyramid(flows: list[torch.Tensor], size) -> list[torch.Tensor]:
    """Crops a flow pyramid (level ``i`` at 1/2^i resolution, padded) back to the unpadded ``size``."""
    h, w = size
    return [crop_to(v, (-(-h // 2 ** i), -(-w // 2 ** i))) for i, v in enumerate(flows)]


@register("crossnet", paper=PAPER,
          summary="FlowNetS+ flows at 4 scales warp Ref encoder features; U-Net decoder fuses them with LR↑",
          input_multiple=64, needs_reference=True, scales=(4, 8),
          tiny={"width": 0.0625, "features": 8},
          # The paper: Charbonnier, Adam 1e-4, ×0.1 after 150k of 200k iterations, parallax ±15 px. Its flows
          # can be supervised by the true flow ("flow") and its warped reference by the warping loss.
          recipe=Recipe(preset={"loss": {"charbonnier": 1.0}}, losses=("warping", "flow"), centre_reference=True))
class CrossNet(CrossNetBase):
    """CrossNet.

    Args:
        width: channel multiplier of FlowNetS+ (1 = paper; 1/16 for tests / CPU training).
        features: encoder/decoder channels (64 in the paper).
        sisr: ``"bicubic"`` (default: the encoder sees the same bicubic LR↑ as the flow net) or ``"mdsr"``
            (embed an MDSR sub-network as in the paper, trained jointly or loaded from MDSR weights).
        sisr_config: MDSR keyword arguments when ``sisr="mdsr"`` (default: paper size).
        global_residual: add the encoder's LR↑ to the decoder output (``SR = LRs + Dec(…)``). Not in the
            paper; on by default because training then starts from bicubic quality instead of from a
            random image, which converges faster and more stably (docs/design.md §4 lists it among our changes).
        flow_scale: FlowNetS+ predicts ``flow / flow_scale`` (see :class:`FlowNetSPlus`); 1 = as published.
    Forward: ``(lr N×3×h×w, ref N×3×sh×sw, scale) → (sr N×3×sh×sw, aux)`` with aux keys
    ``"flow"`` (V0, ``N×2×sh×sw``), ``"flows"`` ([V0…V3], scale i in its own pixels),
    ``"warped"`` (Ref warped by V0, ``N×3×sh×sw``) and ``"lr_up"`` (the encoder's LR↑).
    """

    def __init__(self, width: float = 1.0, features: int = 64, sisr: str = "bicubic",
                 sisr_config: dict | None = None, global_residual: bool = True, flow_scale: float = 1.0):
        super().__init__(width, features, sisr, sisr_config, global_residual, flow_scale)
        self.flownet = FlowNetSPlus(width, flow_scale=flow_scale)
        self.encoder_lr = Encoder(features)
        self.encoder_ref = Encoder(features)
        self.decoder = Decoder(features)

    def forward(self, lr: torch.Tensor, ref: torch.Tensor, scale: int):
        lr_up_p, lrs_p, ref_p, size = self._prepare(lr, ref, scale)
        flows = self.flownet(lr_up_p, ref_p, levels=4)          # only the 4 scales the decoder uses
        f_lr = self.encoder_lr(lrs_p)
        f_ref = self.encoder_ref(ref_p)
        warped = [match_memory_format(backward_warp(f, v), f) for f, v in zip(f_ref, flows)]
        sr = self._finish(self.decoder(f_lr, warped), lrs_p, size)
        aux = {"flow": crop_to(flows[0], size), "flows": crop_flow_pyramid(flows, size),
               "warped": crop_to(backward_warp(ref_p, flows[0]), size), "lr_up": crop_to(lrs_p, size)}
        return sr, aux

"""Building blocks shared by every network: conv helpers, transposed convs, residual blocks, upsamplers.

All blocks take and return ``N×C×H×W`` tensors and work unchanged in ``channels_last`` memory format
(they only use convolutions, element-wise ops and ``cat``), so ``model.to(memory_format=torch.channels_last)``
is all a caller needs for the fast CPU/GPU path.

Names here are a stable interface (other architectures import them): :func:`conv`, :func:`deconv`,
:func:`activation`, :func:`scaled`, :class:`ResBlock`, :class:`Upsampler`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["activation", "conv", "deconv", "scaled", "ResBlock", "Upsampler"]


def activation(act: str | nn.Module | None) -> nn.Module | None:
    """An activation module from a name: ``"relu"``, ``"lrelu"`` (slope 0.1, as FlowNet), ``"selu"``,
    ``"prelu"``, ``"sigmoid"``, ``"tanh"``; a module is passed through; ``None``/``"none"`` → ``None``."""
    if act is None or isinstance(act, nn.Module):
        return act
    name = act.lower()
    table = {
        "none": None,
        "linear": None,
        "relu": lambda: nn.ReLU(inplace=True),
        "lrelu": lambda: nn.LeakyReLU(0.1, inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
        "selu": lambda: nn.SELU(inplace=True),
        "prelu": lambda: nn.PReLU(),
        "sigmoid": lambda: nn.Sigmoid(),
        "tanh": lambda: nn.Tanh(),
    }
    if name not in table:
        raise ValueError(f"unknown activation {act!r} (known: {', '.join(table)})")
    maker = table[name]
    return maker() if maker is not None else None


def conv(in_ch: int, out_ch: int, k: int = 3, stride: int = 1, dilation: int = 1,
         act: str | nn.Module | None = None, bias: bool = True, bn: bool = False,
         groups: int = 1) -> nn.Module:
    """A ``k×k`` convolution with "same" padding (``dilation·(k−1)/2``), optionally + BatchNorm + activation.

    Output size: ``ceil(H/stride) × ceil(W/stride)`` for odd ``k`` (exactly ``H/stride`` when
    ``stride`` divides ``H``). Returns a bare :class:`nn.Conv2d` when there is no BN and no activation,
    else ``nn.Sequential(conv, [bn], [act])`` — state-dict keys are therefore ``weight``/``bias`` or
    ``0.weight``/``0.bias``.
    """
    pad = dilation * (k - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=pad, dilation=dilation,
                                         bias=bias and not bn, groups=groups)]
    if bn:
        layers.append(nn.BatchNorm2d(out_ch))
    a = activation(act)
    if a is not None:
        layers.append(a)
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def fold_batch_norm(model: nn.Module) -> int:
    """Fold every BatchNorm of a :func:`conv` (``Sequential(conv, bn, …)``) into its convolution, in place, for
    inference: in eval mode a BatchNorm is an affine map per channel, which the convolution's weights and bias
    absorb — the same outputs up to float rounding, one full-resolution pass less per layer (RefSR-Net's
    CC-Net: 6 of them at the output's size). Only for a model that is not trained afterwards. Returns how
    many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i].eval(), module[i + 1].eval())
                    module[i + 1] = nn.Identity()
                    folded += 1
    return folded


def deconv(in_ch: int, out_ch: int, k: int = 4, stride: int = 2, act: str | nn.Module | None = None,
           bias: bool = True) -> nn.Module:
    """Transposed convolution that upsamples by exactly ``stride`` (``H → stride·H``).

    The FlowNet/CrossNet ``4×4``, stride-2 deconvolution uses padding 1; in general padding
    ``(k − stride)/2`` (``k − stride`` must be even). Same return convention as :func:`conv`.
    """
    if (k - stride) % 2:
        raise ValueError(f"deconv kernel {k} and stride {stride} do not give an exact ×{stride}")
    layers: list[nn.Module] = [nn.ConvTranspose2d(in_ch, out_ch, k, stride=stride, padding=(k - stride) // 2,
                                                  bias=bias)]
    a = activation(act)
    if a is not None:
        layers.append(a)
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def scaled(channels: int, width: float) -> int:
    """Channel count ``channels`` scaled by a width multiplier (at least 1), for small test/CPU models."""
    return max(1, int(round(channels * width)))


class ResBlock(nn.Module):
    """EDSR-style residual block: ``x + res_scale · conv(act(conv(x)))`` (no BatchNorm by default).

    Args:
        ch: channels in = out.
        k: kernel size of both convs (MDSR's scale heads use 5).
        res_scale: multiplier of the residual branch (EDSR uses 0.1 for very wide nets; MDSR 1.0).
        act: activation between the two convs.
        bn: add BatchNorm after each conv (SRResNet style).
        dilation: dilation of both convs (for ASPP-like bodies).
    Shapes: ``N×ch×H×W → N×ch×H×W``.
    """

    def __init__(self, ch: int, k: int = 3, res_scale: float = 1.0, act: str | nn.Module | None = "relu",
                 bn: bool = False, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv(ch, ch, k, dilation=dilation, act=act, bn=bn),
                                  conv(ch, ch, k, dilation=dilation, bn=bn))
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return x + res


class Upsampler(nn.Sequential):
    """Sub-pixel (pixel-shuffle) upsampler of EDSR/MDSR: ``N×ch×h×w → N×ch×(s·h)×(s·w)``.

    ``s = 2^n`` → ``n`` × (3×3 conv ``ch → 4·ch`` + PixelShuffle(2)); ``s = 3`` → one conv ``ch → 9·ch``
    + PixelShuffle(3). No activation (EDSR's ``act=False``).
    """

    def __init__(self, scale: int, ch: int, k: int = 3, act: str | nn.Module | None = None):
        layers: list[nn.Module] = []
        if scale >= 2 and (scale & (scale - 1)) == 0:
            for _ in range(scale.bit_length() - 1):
                layers += [conv(ch, 4 * ch, k), nn.PixelShuffle(2)]
                a = activation(act)
                if a is not None:
                    layers.append(a)
        elif scale == 3:
            layers += [conv(ch, 9 * ch, k), nn.PixelShuffle(3)]
            a = activation(act)
            if a is not None:
                layers.append(a)
        else:
            raise ValueError(f"Upsampler supports scales 2^n and 3, not {scale}")
        super().__init__(*layers)

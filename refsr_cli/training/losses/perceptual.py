"""VGG-19 perceptual loss from a weights file the user provides (never downloaded)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from refsr_cli.errors import RefsrError

# torchvision's ``vgg19().features`` layout: convs per block; "M" = 2×2 max-pool. Indices of the
# ``nn.Sequential`` (and hence state-dict keys ``features.<i>.weight``) follow from this list.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_VGG19_RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35}   # index in features


class VGGPerceptual(nn.Module):
    """VGG-19 perceptual loss from a user-supplied weights file (never downloaded).

    ``loss(sr, hr)`` = mean over ``layers`` of the mean absolute difference of VGG-19 ReLU features of the
    two images (ImageNet-normalised RGB in [0, 1]; both ``N×3×H×W``). Equal layer weights.

    Args:
        weights: path to a state dict of torchvision's VGG-19 (``torch.save(vgg19().state_dict())``: keys
            ``features.<i>.weight/bias``; a bare ``features`` state dict with keys ``<i>.weight`` also works;
            classifier weights are ignored). Loaded with ``torch.load(weights_only=True)``.
        layers: feature layers used (``relu1_2``, ``relu2_2``, ``relu3_4``, ``relu4_4``, ``relu5_4``).
    Raises:
        RefsrError: the file is missing, unreadable, or not VGG-19 weights.
    The VGG weights are frozen and are not part of any model checkpoint.
    """

    def __init__(self, weights: str | os.PathLike, layers=("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")):
        super().__init__()
        path = Path(weights)
        unknown = [name for name in layers if name not in _VGG19_RELU]
        if unknown:
            raise ValueError(f"unknown VGG-19 layers {unknown} (known: {', '.join(_VGG19_RELU)})")
        if not path.is_file():
            raise RefsrError(f"{path}: no such VGG-19 weights file (it cannot be downloaded here; "
                              "give a torchvision vgg19 state dict)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RefsrError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise RefsrError(f"{path}: not a VGG-19 state dict")
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        last = max(_VGG19_RELU[name] for name in layers)
        modules, c_in = [], 3
        for item in _VGG19_CFG:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = item
        self.features = nn.Sequential(*modules[: last + 1])
        wanted = self.features.state_dict()
        missing = [k for k in wanted if k not in state]
        wrong = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape)]
        if missing or wrong:
            what = f"missing {missing[0]}" if missing else (f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
                                                            f"expected {tuple(wanted[wrong[0]].shape)}")
            raise RefsrError(f"{path}: not VGG-19 weights ({what})")
        self.features.load_state_dict({k: state[k].float() for k in wanted})
        self.features.eval().requires_grad_(False)
        self.taps = sorted(_VGG19_RELU[name] for name in layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # the frozen VGG always stays in eval mode
        return super().train(False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, x = [], (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        # One pass over both images; the target branch needs no graph.
        n = sr.shape[0]
        feats = self._feats(torch.cat((sr, hr.detach()), dim=0))
        return sum((f[:n] - f[n:].detach()).abs().mean() for f in feats) / len(feats)

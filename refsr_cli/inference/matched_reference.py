"""The reference a network takes when its checkpoint says ``reference_matching = N``: the reference
patch-matched onto the LR's view.

A CPU-sized network cannot reach the 30–60 px displacements of real pairs (a stereo baseline, a pan, a
cyclist between two frames), and its synthesis passes little of a misaligned reference's detail through
(docs/real-suite.md, "the networks' ceiling"). With ``reference_matching`` the correspondence is solved
before the network, by the PatchMatch of :mod:`refsr_cli.inference.baselines.patchmatch` with ``N``
iterations (unbounded search: every offset is reachable through propagation): the network sees the
sharp reference patches pasted where the LR says they belong, as the PatchMatch baseline does before its
back-projection, and learns to fuse them with the LR — keep what agrees with it, repair what does not.

The same function prepares the reference in training (each sample of a batch), in validation and at
inference (whole images, before any tiling: the matching must see the whole reference).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from refsr_cli.inference.baselines.patchmatch import patchmatch


def reference_matching(model: nn.Module | None) -> int:
    """PatchMatch iterations of the reference ``model`` was trained to take (0: the raw reference, and for
    ``None``: a baseline has no network)."""
    model = getattr(model, "module", model)          # a DDP-wrapped network
    return int(getattr(model, "reference_matching", 0) or 0)


def matched_reference(lr: torch.Tensor, ref: torch.Tensor, scale: int, iterations: int) -> torch.Tensor:
    """``N×3×H×W``: ``ref`` (``N×3×(s·h)×(s·w)``) patch-matched onto the view of ``lr`` (``N×3×h×w``) —
    PatchMatch's overlap-averaged sharp patches, without its back-projection (the network has the LR)."""
    with torch.no_grad():
        _, aux = patchmatch(lr.float(), ref.float(), scale, iterations=iterations, backproject=0)
    return aux["pasted"].to(ref.dtype)


def reference_for_network(model: nn.Module, lr: torch.Tensor, ref: torch.Tensor, scale: int) -> torch.Tensor:
    """The reference ``model`` takes for the pair ``(lr, ref)``: ``ref`` itself, or its matched version."""
    iterations = reference_matching(model)
    return matched_reference(lr, ref, scale, iterations) if iterations else ref

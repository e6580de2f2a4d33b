"""RefSR-Net's CC-Net loss: the match distribution classified against the true (or best) match."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from refsr_cli.ops.windows import window_sums


@torch.no_grad()
def ccnet_pseudo_offsets(aux: dict, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Best candidate per patch by exhaustive SSD: index ``N×Gy×Gx`` into ``aux["match_offsets"]``.

    For each patch (``aux["patch_size"]`` window at ``aux["match_centers"]``) and each candidate offset
    ``o``, the cost is ``Σ_window |target(q) − source(q + o)|²`` (source clamped at borders); candidates whose
    centre falls outside ``source`` are excluded. ``target``/``source``: ``N×3×H×W``.
    """
    offsets, centers, p = aux["match_offsets"], aux["match_centers"], int(aux["patch_size"])
    valid = aux["match_valid"]                                           # K×Gy×Gx
    n, _, h, w = source.shape
    tops = centers[1][:, 0] - p // 2
    lefts = centers[0][0, :] - p // 2
    radius = int(offsets.abs().max())
    padded = F.pad(source, (radius, radius, radius, radius), mode="replicate")
    costs = []
    for s in range(0, offsets.shape[0], 64):                             # bounded memory: 64 shifts at a time
        chunk = offsets[s:s + 64]
        shifted = torch.stack([padded[:, :, radius + int(oy): radius + int(oy) + h,
                                      radius + int(ox): radius + int(ox) + w] for ox, oy in chunk.tolist()], 1)
        cost = ((shifted - target.unsqueeze(1)) ** 2).sum(2)             # N×k×H×W
        costs.append(window_sums(cost.double(), tops, tops + p, lefts, lefts + p).float())
    cost = torch.cat(costs, 1).masked_fill(~valid.unsqueeze(0), float("inf"))
    return cost.argmin(1)


@torch.no_grad()
def ccnet_true_targets(aux: dict, target_offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate index ``N×Gy×Gx`` of the true match of each patch, and where it is usable (``N×Gy×Gx`` bool).

    ``target_offsets``: ``N×2×Gy×Gx`` offsets (x, y, HR px) per patch centre, or a dense backward flow
    ``N×2×H×W`` (``LR(p) = Ref(p + V(p))``, e.g. a training sample's true flow) sampled at the centres.
    Snapped to the nearest candidate; unusable where it falls outside the search window or outside Ref.
    """
    logits, offsets = aux["match_logits"], aux["match_offsets"]
    n, k, gy, gx = logits.shape
    t = target_offsets.to(logits.dtype)
    if tuple(t.shape[-2:]) != (gy, gx):
        centers = aux["match_centers"]
        t = t[:, :, centers[1], centers[0]]                              # N×2×Gy×Gx
    step = float(offsets[1, 0] - offsets[0, 0]) if k > 1 else 1.0
    radius = float(-offsets[0, 0])
    side = int(round(math.sqrt(k)))
    ix = torch.round((t[:, 0] + radius) / step).long()
    iy = torch.round((t[:, 1] + radius) / step).long()
    inside = (ix >= 0) & (ix < side) & (iy >= 0) & (iy < side)
    index = (iy.clamp(0, side - 1) * side + ix.clamp(0, side - 1))
    valid = aux["match_valid"].unsqueeze(0).expand(n, -1, -1, -1)
    inside &= torch.gather(valid, 1, index.unsqueeze(1)).squeeze(1)
    return index, inside


def ccnet_loss(aux: dict, target_offsets: torch.Tensor | None = None, hr: torch.Tensor | None = None
               ) -> torch.Tensor:
    """CC-Net's classification loss: cross-entropy of the 2-D softmax over the search window.

    Reads ``aux["match_logits"]`` (``N×K×Gy×Gx``), ``"match_offsets"`` (``K×2`` x, y), ``"match_valid"``,
    ``"match_centers"`` (``2×Gy×Gx``), ``"patch_size"``, and for self-supervised targets ``"lr_up"``, ``"ref"``,
    ``"scale"``.

    The true match of each patch comes from, in order of preference:
      * ``target_offsets``: true offsets or a dense true backward flow (:func:`ccnet_true_targets`);
      * ``hr`` (``N×3×H×W``, the ground truth of the LR view): the candidate whose Ref window best matches the
        HR window (exhaustive SSD, :func:`ccnet_pseudo_offsets`);
      * neither: the candidate whose blurred Ref window (``Ref ↓s ↑s``) best matches ``LR↑`` — the classic
        cross-scale matching target, available without ground truth.
    Returns the mean cross-entropy over patches with a valid target (0 with a graph if there are none).
    """
    logits = aux["match_logits"]
    if target_offsets is not None:
        index, inside = ccnet_true_targets(aux, target_offsets)
    else:
        if hr is not None:
            index = ccnet_pseudo_offsets(aux, hr, aux["ref"])
        else:
            from refsr_cli.ops.resize import downscale, upscale
            factor = int(aux["scale"])
            ref_blur = upscale(downscale(aux["ref"], factor), factor)  # same blur as LR↑
            index = ccnet_pseudo_offsets(aux, aux["lr_up"], ref_blur)
        inside = torch.ones_like(index, dtype=torch.bool)
    if not bool(inside.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), index, reduction="none")      # N×Gy×Gx
    return ce[inside].mean()

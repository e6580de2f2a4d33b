"""Losses on correspondence: supervised flow (end-point error) and CrossNet++'s landmark loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from refsr_cli.ops.warp import sampling_grid


def flow_loss(flows: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Supervised flow: mean end-point error against the true flow, in HR pixels, averaged over scales.

    Args:
        flows: predicted flows ``[N×2×h_i×w_i]``, each in its own pixels (CrossNet's V0…V3: scale
            ``1/2^i``); ``target``: the true flow ``N×2×H×W`` at full resolution.
    Scale ``i`` is compared with the target area-averaged to ``h_i×w_i``; errors are converted to HR
    pixels (``× W/w_i``) so that every scale counts alike.
    """
    total = target.new_zeros(())
    for flow in flows:
        h, w = flow.shape[-2:]
        factor = target.shape[-1] / w
        reference = target if (h, w) == tuple(target.shape[-2:]) else F.adaptive_avg_pool2d(target, (h, w)) / factor
        total = total + (flow - reference).square().sum(1).add(1e-6).sqrt().mean() * factor
    return total / len(flows)


def landmark_loss(flow_stage1: torch.Tensor, p, q) -> torch.Tensor:
    """CrossNet++ landmark loss: mean over matched points of ``|p + V(p) − q|²`` (pixels²).

    Args:
        flow_stage1: ``aux["flow_stage1"]`` — ``N×2×H×W`` backward flow from the LR view to Ref
            (``Ref̂(p) = Ref(p + V(p))``), channel 0 = x.
        p, q: matched ``(x, y)`` points in the HR of the LR view and in Ref — for ``N = 1`` one ``M×2``
            array/tensor each; for a batch, sequences of ``N`` such arrays (``M`` may differ or be 0).
    ``V(p)`` is sampled bilinearly (``grid_sample``, ``align_corners=True`` — the convention of
    :func:`refsr_cli.ops.warp.backward_warp`), so the loss is differentiable w.r.t. the flow. Returns a
    scalar; 0 (still attached to the graph) when there are no matches.
    """
    n, _, h, w = flow_stage1.shape
    if n == 1 and not isinstance(p, (list, tuple)):
        p, q = [p], [q]
    if len(p) != n or len(q) != n:
        raise ValueError(f"landmark_loss got matches for {len(p)} samples, flow batch is {n}")
    total = flow_stage1.sum() * 0.0
    count = 0
    for i in range(n):
        pi = torch.as_tensor(p[i], dtype=flow_stage1.dtype, device=flow_stage1.device).reshape(-1, 2)
        qi = torch.as_tensor(q[i], dtype=flow_stage1.dtype, device=flow_stage1.device).reshape(-1, 2)
        if pi.shape[0] == 0:
            continue
        grid = sampling_grid(pi[:, 0], pi[:, 1], h, w)
        v = F.grid_sample(flow_stage1[i:i + 1], grid.view(1, 1, -1, 2), mode="bilinear",
                          padding_mode="border", align_corners=True)[0, :, 0].t()      # M×2
        total = total + ((pi + v - qi) ** 2).sum()
        count += pi.shape[0]
    return total / max(count, 1)

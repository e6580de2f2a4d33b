"""The loss terms a training configuration can weight, and their weighted sum.

Each term is a function ``(sr, aux, batch, context) -> scalar tensor | None``: ``sr`` the output
(``N×3×H×W``), ``aux`` the model's intermediates (the keys :class:`~refsr_cli.archs.base.RefSRModel`
documents), ``batch`` the training batch (``lr``, ``ref``, ``hr`` and what the active terms need: ``flow``,
``landmarks``), ``context`` what a term needs from outside (the VGG-19 of the perceptual term). ``None``
means "nothing to compute for this batch" (a term reading an output the model does not produce).
Which terms a variant may weight is its recipe's ``loss_terms`` (:mod:`refsr_cli.archs`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from refsr_cli.errors import RefsrError
from refsr_cli.training.losses.ccnet import ccnet_loss
from refsr_cli.training.losses.crossmpi import internal_supervision
from refsr_cli.training.losses.flow import flow_loss, landmark_loss
from refsr_cli.training.losses.pixel import charbonnier, warping_loss

# Batch entries a term needs (the training data provides them only when the term is weighted).
NEEDS = {"flow": "flow", "landmark": "landmarks"}


@dataclass
class LossContext:
    perceptual: torch.nn.Module | None = None    # a VGGPerceptual, when the perceptual term is on


def _charbonnier(sr, aux, batch, context):
    return charbonnier(sr, batch["hr"])


def _l1(sr, aux, batch, context):
    return (sr - batch["hr"]).abs().mean()


def _warping(sr, aux, batch, context):
    # CrossNet++ aligns in two stages and the loss is on the first; CrossNet's only warp is V0's.
    warped = aux.get("warped_stage1", aux.get("warped"))
    return None if warped is None else warping_loss(warped, batch["hr"])


def _flow(sr, aux, batch, context):
    if "flow" not in batch:
        return None
    if "match_logits" in aux:
        # A match distribution (RefSR-Net's CC-Net) is classified against the true offset at each centre.
        return ccnet_loss(aux, batch["flow"])
    # The flows that point at Ref itself: CrossNet's V0…V3, CrossNet++'s first stage V1⁰ (its second
    # stage aligns Ref̂, whose true flow is not known).
    predicted = [aux["flow_stage1"]] if "flow_stage1" in aux else aux["flows"]
    return flow_loss(predicted, batch["flow"])


def _landmark(sr, aux, batch, context):
    if "landmarks" not in batch or "flow_stage1" not in aux:
        return None
    return landmark_loss(aux["flow_stage1"], *batch["landmarks"])


def _internal(sr, aux, batch, context):
    return internal_supervision(aux, batch["lr"])


def _perceptual(sr, aux, batch, context):
    return None if context.perceptual is None else context.perceptual(sr, batch["hr"])


def _ccnet(sr, aux, batch, context):
    return ccnet_loss(aux, hr=batch["hr"])


# The order is the order of summation (kept fixed so that a run's losses are reproducible).
TERMS = {"charbonnier": _charbonnier, "l1": _l1, "warping": _warping, "flow": _flow, "landmark": _landmark,
         "internal": _internal, "perceptual": _perceptual, "ccnet": _ccnet}


def compute_loss(variant: str, weights: dict, sr, aux, batch, context: LossContext | None = None
                 ) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the terms weighted in ``weights``; returns ``(total, {term: value})``."""
    context = context or LossContext()
    terms: dict[str, torch.Tensor] = {}
    for name, term in TERMS.items():
        if weights.get(name):
            value = term(sr, aux, batch, context)
            if value is not None:
                terms[name] = value
    total = sum(weights[name] * value for name, value in terms.items())
    if not isinstance(total, torch.Tensor):
        raise RefsrError(f"no loss term of {variant} is active (weights {weights})")
    return total, {k: float(v.detach()) for k, v in terms.items()}

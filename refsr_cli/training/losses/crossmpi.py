"""Cross-MPI's loss: L1, internal supervision of the low-resolution MPI synthesis, optional perceptual."""
from __future__ import annotations

import torch


def internal_supervision(aux: dict, lr: torch.Tensor) -> torch.Tensor:
    """L1 between the low-resolution MPI synthesis ``aux["lr_synth"]`` (``N×3×h×w``) and the LR input."""
    return (aux["lr_synth"] - lr).abs().mean()


def crossmpi_loss(sr: torch.Tensor, hr: torch.Tensor, aux: dict, lr: torch.Tensor, perceptual=None,
                  internal_weight: float = 0.2, perceptual_weight: float = 1.0, return_terms: bool = False):
    """Cross-MPI loss: ``L1(sr, hr) + 0.2·L1(aux["lr_synth"], lr) [+ perceptual(sr, hr)]``.

    Args:
        sr, hr: ``N×3×H×W``. lr: ``N×3×h×w``.
        aux: the model's aux dict; reads ``"lr_synth"`` (``N×3×h×w``, the low-res MPI synthesis).
        perceptual: a :class:`~refsr_cli.training.losses.perceptual.VGGPerceptual` or ``None`` (term off: VGG-19 weights are never downloaded).
    Returns:
        the weighted total, or with ``return_terms=True`` the *unweighted* terms
        ``{"l1", "internal"[, "perceptual"]}`` (the training loop applies its own, staged weights).
    """
    terms = {"l1": (sr - hr).abs().mean(), "internal": internal_supervision(aux, lr)}
    if perceptual is not None:
        terms["perceptual"] = perceptual(sr, hr)
    if return_terms:
        return terms
    total = terms["l1"] + internal_weight * terms["internal"]
    if "perceptual" in terms:
        total = total + perceptual_weight * terms["perceptual"]
    return total
